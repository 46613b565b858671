"""Every name a dataset directory holds, defined once for the writer and every reader.

    OUT/
      manifest.json          the pointer: lists the committed generations and every file of them; replaced last
      v000001/               generation 1 (the first run's); its files never change once the manifest names them
        stats.json
        train/part-00000-of-00002.parquet
        rejected/rejected.jsonl
        mixture.json         (a mixture: the weighting's plan and the shares asked and met)
        tokenizer/           (with --add-special-tokens)
        dedup/keys-00003.bin (with --dedup exact: the content keys of its records, see schemas.dedup_keys)
      v000002/               generation 2: the inputs a ``seqpack run --append`` found that generation 1 had not
        stats.json           consumed (the same layout; each generation has its own stats and rejected records)
        train/part-00000-of-00001.parquet
      report.html            (seqpack run --report)
      .seqpack-lock          held while a run writes here
      .seqpack-staging/      a run's scratch space (spill files, metadata); removed at commit
      .seqpack-watch.json    `seqpack watch`'s status (last poll, last generation, backlog), if one watches here

A generation's directory is ``revision_dir(id)``; ids only grow, so a directory name is never reused. Every run
writes its generation beside the committed ones and switches the manifest to the new list in one atomic step:
``--append`` keeps every previous generation, ``--rebuild`` (``--overwrite``) none, ``seqpack compact`` those it
did not replace; the files of the generations dropped are deleted after the switch. A reader holding the old
manifest keeps reading old files until they are deleted; it never sees a mix.
"""

from __future__ import annotations

import re

STAGING_NAME = ".seqpack-staging"
LOCK_NAME = ".seqpack-lock"
WATCH_STATUS_NAME = ".seqpack-watch.json"
"""``seqpack watch --status-file``'s default: beside the data it describes, on the same volume or bucket. Not part
of the dataset (no manifest names it): a run leaves it alone and a reader never sees it."""
TOKENIZER_DIR = "tokenizer"
REJECTED_FILE = "rejected/rejected.jsonl"
MIXTURE_FILE = "mixture.json"
"""A mixture's generation: the weighting's plan (``seqpack.mixing.MixturePlan.to_dict``) and the shares it met."""
REPORT_NAME = "report.html"
"""``seqpack run --report`` writes the dataset's report here; a commit removes the previous dataset's."""
RUN_MARKER_SUFFIX = ".run"
"""``STAGING_NAME/v000002.run``: which revision a run in progress writes, so a crashed run's files are found."""

DEDUP_DIR = "dedup"
"""With ``--dedup exact``: a generation's content keys, so a later ``--append`` drops what it already holds."""
DEDUP_PARTITIONS = 64
"""Key files per generation (at most: an empty partition has no file). Fixed, so the same keys give the same
files whatever the workers; 64 keeps a partition of a billion-record generation (16 GB of keys) near 250 MB on
the one worker that sorts it, and a small generation at a few dozen files."""

_REVISION = re.compile(r"v(\d{6,})")


def revision_dir(revision: int) -> str:
    """The directory of revision ``revision`` (1, 2, ...), relative to the dataset directory."""
    return f"v{revision:06d}"


def revision_of(directory: str) -> int | None:
    """The revision number a directory name stands for, or None if it is not a revision directory."""
    match = _REVISION.fullmatch(directory)
    return int(match.group(1)) if match else None


DEDUP_KEY_FILES = "keys-*.bin"
"""The key files in ``DEDUP_DIR``, as a glob (a writer's temporary ``keys-00003.bin.tmp-...`` is not one)."""


def dedup_key_file(partition: int) -> str:
    """The key file of ``partition`` (0 ... ``DEDUP_PARTITIONS - 1``), relative to its generation's directory."""
    return f"{DEDUP_DIR}/keys-{partition:05d}.bin"


_DEDUP_KEY_FILE = re.compile(rf"(?:.*/)?{DEDUP_DIR}/keys-\d{{5}}\.bin")


def is_dedup_key_file(path: str) -> bool:
    """Whether a path of a manifest's ``files`` (``v000002/dedup/keys-00003.bin``) is a dedup key file."""
    return _DEDUP_KEY_FILE.fullmatch(path) is not None
