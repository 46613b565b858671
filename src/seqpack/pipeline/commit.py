"""Where a run may write, and the job's last step: publish the new revision with one atomic switch.

A run writes its files into a new revision directory beside the committed one (``OUT/v000002/``, see
``schemas.layout``) and its scratch files under ``OUT/.seqpack-staging/``. The launcher prepares the output
(:func:`prepare_output`); the job's final step (``pipeline.commit_step``, on a worker, once every shard is
written) publishes the revision only when the statistics add up:

1. ``stats.json`` is written into the revision directory, and the run's marker in staging records which
   files of the previous revision the commit makes obsolete;
2. the run checks that it still holds the output lock (fencing);
3. ``manifest.json`` is replaced atomically: readers switch from the old revision to the new one at once;
4. the previous revision's files (exactly those its manifest lists), the old ``report.html`` and the
   staging directory are removed.

A crash before step 3 leaves the previous dataset as it was; a crash after it leaves the new one. Either way
the next run finds the run's marker in staging and removes what the crashed run left. A runner that retries
the commit step after step 3 only finishes step 4 (:func:`commit` is idempotent). Nothing is ever deleted
that no seqpack manifest or marker names: a directory holding other files is refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from apache_beam.io.filesystems import FileSystems

import seqpack
from seqpack.config import RunConfig
from seqpack.errors import RunFailedError, UsageError
from seqpack.faults import checkpoint
from seqpack.pipeline.commit_checks import check_audit, check_enough_written
from seqpack.pipeline.lock import OutputLock
from seqpack.pipeline.output_files import (
    delete_existing,
    delete_tree,
    match_paths,
    read_bytes,
    remove_empty_directories,
)
from seqpack.schemas import (
    LOCK_NAME,
    MANIFEST_NAME,
    REJECTED_FILE,
    REPORT_NAME,
    STAGING_NAME,
    STATS_NAME,
    TOKENIZER_DIR,
    DatasetFormatError,
    Manifest,
    ShardInfo,
    SplitInfo,
    TokenizerInfo,
    revision_dir,
    revision_of,
)
from seqpack.schemas import stats as stats_format
from seqpack.schemas.layout import DEDUP_DIR, DEDUP_KEY_FILES, MIXTURE_FILE, RUN_MARKER_SUFFIX, WATCH_STATUS_NAME
from seqpack.schemas.manifest import ConsumedInput, GenerationInfo, merged_splits, schema_description
from seqpack.transforms.write import write_atomically


@dataclass(frozen=True)
class Destination:
    """Where one run writes: its new revision directory, its staging directory, and what it replaces."""

    output: str
    revision: int
    previous: Manifest | None
    kept: tuple[int, ...] = ()
    """The previous generations the commit keeps beside the new one: all of them for ``--append``, those not
    compacted for ``seqpack compact``, none when the dataset is replaced."""

    @property
    def kept_generations(self) -> list[GenerationInfo]:
        if self.previous is None:
            return []
        return [g for g in self.previous.generations if g.id in self.kept]

    @property
    def obsolete(self) -> list[str]:
        """The previous dataset's files that the commit makes obsolete (deleted after the switch)."""
        if self.previous is None:
            return []
        kept = {path for g in self.kept_generations for path in [*g.shard_paths(), *g.files]}
        return sorted(_owned(self.previous) - kept)

    @property
    def directory(self) -> str:
        """The revision directory, relative to the dataset directory."""
        return revision_dir(self.revision)

    @property
    def root(self) -> str:
        """The revision directory's full path: the pipeline writes shards and rejected records here."""
        return FileSystems.join(self.output, self.directory)

    @property
    def staging(self) -> str:
        """Scratch space of this run only (spill files, metadata), removed at commit."""
        return FileSystems.join(self.output, STAGING_NAME, self.directory)

    @property
    def marker(self) -> str:
        return FileSystems.join(self.output, STAGING_NAME, self.directory + RUN_MARKER_SUFFIX)


# ------------------------------------------------------------------------------------ before the run


def prepare_output(config: RunConfig, lock: OutputLock, *, keep: Callable[[Manifest], list[int]] | None = None
                   ) -> Destination:
    """Refuse outputs that are not ours to write; clear what a crashed run left; choose the new revision.

    A run writes only into a missing or empty directory, over a seqpack dataset with ``--overwrite``, or beside
    its generations with ``--append`` (all kept). ``keep`` chooses the generations kept otherwise (compaction).
    """
    output = config.output
    check_output(config)
    previous = committed_manifest(output)
    if previous is not None and not (config.overwrite or config.append or keep):
        raise UsageError(
            f"{output} already holds a seqpack dataset: pass --append to add the inputs it has not consumed as a "
            "new generation, or --overwrite (--rebuild) to replace it"
        )
    leftover = _clear_crashed_runs(output, previous)
    files = _list_files(output)
    foreign = [path for path in files if not _is_ours(path, previous)]
    if foreign:
        raise UsageError(_foreign_message(output, foreign, previous))
    used = [leftover, previous.revision if previous else 0]
    used += [revision_of(path.split("/", 1)[0]) or 0 for path in files]
    kept: list[int] = []
    if previous is not None and keep is not None:
        kept = keep(previous)
    elif previous is not None and config.append:
        kept = [g.id for g in previous.generations]
    destination = Destination(output=output, revision=max(used) + 1, previous=previous, kept=tuple(kept))
    _write_marker(destination, lock, obsolete=[])
    return destination


def check_output(config: RunConfig) -> None:
    """``--output`` must be a directory (or not exist yet); checked before anything is created."""
    output = config.output
    if "://" not in output and os.path.exists(output) and not os.path.isdir(output):
        raise UsageError(f"--output {output} is a file, not a directory: choose a directory (new or empty)")
    manifest = FileSystems.join(output, MANIFEST_NAME)
    if "://" not in output and os.path.isdir(manifest):
        raise UsageError(f"{manifest} is a directory, so {output} is not a seqpack dataset: choose another --output")


def committed_manifest(output: str) -> Manifest | None:  # whole even without the lock: a commit swaps it atomically
    path = FileSystems.join(output, MANIFEST_NAME)
    if not FileSystems.exists(path):
        return None
    try:
        return Manifest.from_json(read_bytes(path).decode("utf-8", errors="replace"), where=path)
    except DatasetFormatError as error:
        raise UsageError(
            f"{error}. seqpack will not write over a directory it cannot read as its own: "
            f"remove {path} if the directory is yours to replace, or choose another --output"
        ) from error


def _clear_crashed_runs(output: str, previous: Manifest | None) -> int:
    """Remove what runs that crashed (or lost their lock) left; return the highest revision they used."""
    staging = FileSystems.join(output, STAGING_NAME)
    if not FileSystems.exists(staging):
        return 0
    highest = 0
    for path in match_paths(FileSystems.join(staging, "*" + RUN_MARKER_SUFFIX)):
        name = path.rsplit("/", 1)[-1].removesuffix(RUN_MARKER_SUFFIX)
        revision = revision_of(name)
        if revision is None:
            continue
        highest = max(highest, revision)
        if previous is not None and previous.revision == revision:  # it committed, then died cleaning up
            obsolete = _marker_obsolete(path)
            delete_existing([FileSystems.join(output, p) for p in obsolete if p not in _owned(previous)])
        else:  # it never committed: the revision directory is its own, made by it, named by its marker
            delete_tree(FileSystems.join(output, name))
    delete_tree(staging)
    return highest


def _marker_obsolete(path: str) -> list[str]:
    try:
        return [str(p) for p in json.loads(read_bytes(path))["obsolete"]]
    except (ValueError, KeyError, TypeError):
        return []  # torn by the crash before the commit switched: nothing to remove


def _write_marker(destination: Destination, lock: OutputLock, *, obsolete: list[str]) -> None:
    marker = {"revision": destination.revision, "token": lock.token, "obsolete": obsolete}
    write_atomically(destination.marker, json.dumps(marker, sort_keys=True).encode())


def _is_ours(path: str, previous: Manifest | None) -> bool:
    """Files seqpack may find in an output: the dataset's own, its report, the lock, a watcher's status."""
    if path == MANIFEST_NAME and previous is not None:
        return True
    if path.startswith((LOCK_NAME, WATCH_STATUS_NAME)):  # also a status a killed watcher left half-written
        return True
    if path == REPORT_NAME and previous is not None:
        return True
    return previous is not None and path in _owned(previous)


def _owned(manifest: Manifest) -> set[str]:
    """The files a committed dataset consists of (besides its manifest): what replacing it may delete."""
    owned = set(manifest.shard_paths()) | set(manifest.files)
    if manifest.revision == 0:  # the flat layout of older seqpack: its other files were not listed
        owned |= {STATS_NAME, REJECTED_FILE}
        if manifest.config.get("add_special_tokens"):
            owned |= {f"{TOKENIZER_DIR}/{name}" for name in _LEGACY_TOKENIZER_FILES}
    return owned


_LEGACY_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                           "merges.txt", "added_tokens.json", "chat_template.jinja", "tokenizer.model")
"""What ``save_pretrained`` writes: the files an older seqpack put in ``tokenizer/`` without listing them."""


def _foreign_message(output: str, foreign: list[str], previous: Manifest | None) -> str:
    first = FileSystems.join(output, foreign[0])
    more = f" (and {len(foreign) - 1:,} more)" if len(foreign) > 1 else ""
    if previous is None:
        return (
            f"{output} is not empty and is not a seqpack dataset (it holds {first}{more}). "
            "seqpack writes only into a new or empty directory, or over its own dataset with --overwrite: "
            "choose another --output"
        )
    return (
        f"{output} holds a seqpack dataset and files it did not write: {first}{more}. seqpack never deletes "
        "files it did not write and never mixes them into a dataset: move them out, or choose another --output"
    )


def _list_files(output: str) -> list[str]:
    """Every file under ``output``, relative to it, sorted (seqpack's staging excluded)."""
    if "://" not in output:
        if not os.path.isdir(output):
            return []
        found = []
        for directory, subdirectories, names in os.walk(output):
            subdirectories[:] = sorted(d for d in subdirectories if d != STAGING_NAME or directory != output)
            relative = os.path.relpath(directory, output)
            found += [name if relative == "." else f"{relative}/{name}".replace(os.sep, "/") for name in names]
        return sorted(found)
    prefix = output.rstrip("/") + "/"
    return sorted(
        path[len(prefix) :] for path in match_paths(prefix + "**") if not path[len(prefix) :].startswith(STAGING_NAME)
    )


# ---------------------------------------------------------------------------------------------- commit


def save_tokenizer(tokenizer: Any, destination: Destination) -> None:
    """Save the (extended) tokenizer into the new revision's ``tokenizer/``."""
    import tempfile

    with tempfile.TemporaryDirectory() as local:
        tokenizer.save_pretrained(local)
        for name in sorted(os.listdir(local)):
            with open(os.path.join(local, name), "rb") as handle:
                write_atomically(FileSystems.join(destination.root, TOKENIZER_DIR, name), handle.read())


def _revision_files(destination: Destination) -> list[str]:
    """The revision's files besides the shards, relative to the dataset directory."""
    names = [STATS_NAME]
    for name in (REJECTED_FILE, MIXTURE_FILE):  # rejected records, a mixture's plan: when there are any
        if FileSystems.exists(FileSystems.join(destination.root, name)):
            names.append(name)
    for directory, pattern in ((TOKENIZER_DIR, "*"), (DEDUP_DIR, DEDUP_KEY_FILES)):  # --add-special-tokens, --dedup
        prefix = FileSystems.join(destination.root, directory) + "/"
        names += sorted(directory + "/" + path[len(prefix) :] for path in match_paths(prefix + pattern))
    return [f"{destination.directory}/{name}" for name in names]


def _splits(shards: list[dict[str, Any]], directory: str) -> dict[str, SplitInfo]:
    by_split: dict[str, list[ShardInfo]] = defaultdict(list)
    for shard in sorted(shards, key=lambda s: s["path"]):
        fields = {k: v for k, v in shard.items() if k != "split"}
        by_split[shard["split"]].append(ShardInfo(**{**fields, "path": f"{directory}/{shard['path']}"}))
    return {name: SplitInfo.of(infos) for name, infos in sorted(by_split.items())}


def build_manifest(
    config: RunConfig, tokenizer: TokenizerInfo, shards: list[dict[str, Any]], destination: Destination,
    files: list[str], *, inputs: list[ConsumedInput], replaces: list[int] | None = None, examples_digest: str = "",
) -> Manifest:
    """The manifest of the dataset once the new generation is committed: the kept generations, then the new one."""
    created_by = f"seqpack {seqpack.__version__}"
    generation = GenerationInfo(
        id=destination.revision,
        directory=destination.directory,
        splits=_splits(shards, destination.directory),
        files=files,
        inputs=sorted(inputs, key=lambda i: (i.path, i.start)),
        created_by=created_by,
        committed_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        replaces=sorted(replaces or []),
        examples_digest=examples_digest,
    )
    generations = [*destination.kept_generations, generation]
    return Manifest(
        max_length=config.max_length,
        packing=config.packing,
        file_format=config.file_format,
        tokenizer=tokenizer,
        splits=merged_splits(generations),
        config=config.to_dict(),
        created_by=created_by,
        revision=destination.revision,
        directory=destination.directory,
        files=[path for g in generations for path in g.files],
        generations=generations,
        sources=[{"id": index, **source.to_dict()} for index, source in enumerate(config.sources)],
        schema=schema_description(bool(config.sources)),
    )


def commit(
    config: RunConfig, tokenizer: TokenizerInfo, destination: Destination, lock: OutputLock, *,
    stats: Mapping[str, Any], shards: list[dict[str, Any]], inputs: list[ConsumedInput] | None = None,
    replaces: list[int] | None = None, examples_digest: str = "",
) -> tuple[Manifest, dict[str, Any]]:
    """Check the accounting identity, then switch the dataset to the new revision (manifest replaced last).

    ``stats`` are the job's merged statistics, ``shards`` what its shard writers reported. Called again after
    the switch (a retried step), it only finishes removing the previous revision and returns what was committed.
    """
    if is_committed(destination):
        _finish_after_switch(config.output, destination)
        return read_committed(destination)
    lock.check()  # a launcher that was stopped gave its lock back: its job must not commit
    stats = stats_format.finalize(json.loads(json.dumps(stats)))  # as a reader sees them: string keys
    stats_format.check_identity(stats)
    check_enough_written(stats, config.max_reject_fraction, FileSystems.join(destination.root, REJECTED_FILE),
                         appending=bool(destination.kept))
    check_audit(stats, config.audit)
    write_atomically(FileSystems.join(destination.root, STATS_NAME), stats_format.to_json(stats).encode())
    manifest = build_manifest(config, tokenizer, shards, destination, _revision_files(destination),
                              inputs=list(inputs or []), replaces=replaces, examples_digest=examples_digest)

    _write_marker(destination, lock, obsolete=destination.obsolete)
    checkpoint("commit_manifest")
    lock.check()
    write_atomically(FileSystems.join(config.output, MANIFEST_NAME), manifest.to_json().encode())
    _finish_after_switch(config.output, destination)
    return manifest, stats


def _finish_after_switch(output: str, destination: Destination) -> None:
    try:
        _clean_up_after_switch(output, destination)
    except Exception as error:  # noqa: BLE001 - the dataset is committed; the next run removes the rest
        logging.getLogger("seqpack").warning(
            "the dataset is committed, but removing the previous revision's files failed (%s); "
            "the next run into %s removes them", error, output,
        )


def _clean_up_after_switch(output: str, destination: Destination) -> None:
    """Remove what the switch made obsolete; what is already gone is skipped, so a retry may run it again."""
    checkpoint("commit_cleanup")
    obsolete = destination.obsolete
    delete_existing([FileSystems.join(output, path) for path in obsolete])
    if destination.previous is not None:
        delete_existing([FileSystems.join(output, REPORT_NAME)])  # it describes another dataset
        remove_empty_directories(output, obsolete)
    delete_tree(FileSystems.join(output, STAGING_NAME))


def read_committed(destination: Destination) -> tuple[Manifest, dict[str, Any]]:
    """The manifest and statistics the job committed; an error if the output does not name its revision."""
    manifest = committed_manifest(destination.output)
    if manifest is None or manifest.directory != destination.directory:
        found = "no manifest" if manifest is None else f"the manifest of {manifest.directory}"
        raise RunFailedError(
            f"the job finished, but {destination.output} holds {found}, not {destination.directory}: the job's "
            "commit step did not commit (see the runner's log). Run it again."
        )
    path = FileSystems.join(destination.root, STATS_NAME)
    return manifest, stats_format.parse(read_bytes(path), where=path)


def abandon(destination: Destination) -> None:
    """A run that fails or is stopped removes its own revision directory and scratch space (best effort),
    unless the manifest already names its revision (it failed or was stopped after committing)."""
    try:
        if is_committed(destination):
            return
        delete_tree(destination.root)
        delete_tree(destination.staging)
        delete_existing([destination.marker])
        delete_existing([FileSystems.join(destination.output, STAGING_NAME)], only_if_empty=True)
    except Exception:  # noqa: BLE001 - the next run clears what is left, from the marker
        pass


def is_committed(destination: Destination) -> bool:
    """Whether the output's manifest names this run's revision: then it is committed, whatever failed after."""
    return _committed_directory(destination.output) == destination.directory


def _committed_directory(output: str) -> str | None:
    try:
        return committed_manifest(output).directory  # type: ignore[union-attr]
    except (UsageError, AttributeError):
        return None
