"""Every name a dataset directory holds, defined once for the writer and every reader.

    OUT/
      manifest.json          the pointer: names the committed revision and every file of it; replaced last
      v000001/               one committed revision; its files never change once the manifest names them
        stats.json
        train/part-00000-of-00002.parquet
        rejected/rejected.jsonl
        tokenizer/           (with --add-special-tokens)
      report.html            (seqpack run --report)
      .seqpack-lock          held while a run writes here
      .seqpack-staging/      a run's scratch space (spill files, metadata); removed at commit
      .seqpack-watch.json    `seqpack watch`'s status (last poll, last generation, backlog), if one watches here

A new run writes its revision beside the committed one and switches the manifest to it in one atomic step,
so a reader holding the old manifest keeps reading old files until they are deleted; it never sees a mix.
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
REPORT_NAME = "report.html"
"""``seqpack run --report`` writes the dataset's report here; a commit removes the previous dataset's."""
RUN_MARKER_SUFFIX = ".run"
"""``STAGING_NAME/v000002.run``: which revision a run in progress writes, so a crashed run's files are found."""

_REVISION = re.compile(r"v(\d{6,})")


def revision_dir(revision: int) -> str:
    """The directory of revision ``revision`` (1, 2, ...), relative to the dataset directory."""
    return f"v{revision:06d}"


def revision_of(directory: str) -> int | None:
    """The revision number a directory name stands for, or None if it is not a revision directory."""
    match = _REVISION.fullmatch(directory)
    return int(match.group(1)) if match else None
