"""Which input files a run reads: all of them, or for ``--append`` those no generation consumed.

Runs in the driver under the output lock, so two appends never pick the same new files.

    selection = select_inputs(config, files, destination.previous, tokenizer_info)
    selection.files     # what the job reads; empty: the dataset is up to date
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from seqpack.config import RunConfig
from seqpack.errors import UsageError
from seqpack.generations import FoundFile, InputPlan, changed_setting, plan_inputs
from seqpack.inputs.records import InputFile
from seqpack.schemas import Manifest, TokenizerInfo
from seqpack.transforms.hash_inputs import file_metadata, sha256_file

_log = logging.getLogger("seqpack")


@dataclass(frozen=True)
class Selection:
    files: list[InputFile]
    """What the job reads (byte ranges of a big file count as that file)."""
    found: list[FoundFile]
    """The files read, as listed now: the job hashes them and records them as consumed."""
    plan: InputPlan | None = None
    """For ``--append`` onto a dataset: every input sorted into new, consumed, copied and changed."""


def select_inputs(config: RunConfig, files: list[InputFile], previous: Manifest | None,
                  tokenizer: TokenizerInfo, *, only: Mapping[str, tuple[int, float]] | None = None) -> Selection:
    """Every input for a new dataset; for ``--append`` only the new ones, once the dataset accepts them.

    ``only`` (``seqpack watch``) restricts the run to these files, ``path -> (size, modified)`` as the caller saw
    them settle: a file that is not listed, or no longer so, is left for a later run, never read half-written."""
    if only is not None:
        files = [f for f in files if f.path in only]
    metadata = file_metadata(sorted({f.path for f in files}))
    missing = sorted({f.path for f in files} - metadata.keys())
    if missing and only is None:
        raise UsageError(f"input {missing[0]} disappeared after it was listed: run again")
    if only is not None:
        moved = sorted(path for path, now in metadata.items() if now != only[path]) + missing
        for path in moved:
            _log.info("input %s changed since it settled: left for a later generation", path)
        metadata = {path: now for path, now in metadata.items() if now == only[path]}
        files = [f for f in files if f.path in metadata]
    found = [FoundFile(path, *metadata[path]) for path in sorted(metadata)]
    if not config.append:
        return Selection(files, found)
    if previous is not None:
        check_can_append(previous, config, tokenizer)
    generations = previous.generations if previous is not None else []
    plan = plan_inputs(found, generations, sha256_of=lambda path: sha256_file(path)[0])
    for changed in plan.changed:
        _log.warning(
            "input %s changed since generation %d consumed it (%s bytes then, %s now): it is not read again; "
            "`seqpack status %s` lists such files, --rebuild starts the dataset over from every input",
            changed.path, changed.generation, f"{changed.consumed.size:,}", f"{changed.size:,}", config.output,
        )
    for empty in plan.empty:
        _log.warning("input %s is empty: not read, and not recorded as consumed, until it has content", empty.path)
    new = {f.path for f in plan.new}
    return Selection([f for f in files if f.path in new], plan.new, plan)


def check_can_append(previous: Manifest, config: RunConfig, tokenizer: TokenizerInfo) -> None:
    """A generation must be built as the dataset's others were, and the dataset must know what it consumed."""
    if not previous.inputs_recorded:
        raise UsageError(
            f"{config.output} was written by a seqpack that did not record which inputs it consumed (format "
            f"version {previous.format_version}): --append cannot tell new inputs from old. Pass --rebuild once"
        )
    reason = changed_setting(previous, config.to_dict(), tokenizer.fingerprint)
    if reason is not None:
        raise UsageError(
            f"--append refused: {reason}. Every generation of a dataset is built the same way: pass the dataset's "
            "setting, or --rebuild to start over from every input"
        )
