"""Which input files each source of a mixture reads (``RunConfig.sources``), decided in the driver.

The driver lists every source's inputs as one list (``RunConfig.inputs`` is their union): it locks, hashes and
for ``--append`` selects new files across the whole mixture. Here each selected file goes back to the source whose
inputs name it; a file two sources name is refused, since its records would be read twice.

    >>> parts = files_by_source(config, files)     # parts[i]: the files of config.sources[i]
"""

from __future__ import annotations

from collections.abc import Sequence

from seqpack.config import RunConfig
from seqpack.errors import UsageError
from seqpack.inputs.records import InputFile


def files_by_source(config: RunConfig, files: Sequence[InputFile]) -> list[list[InputFile]]:
    """``files`` (resolved from ``config.inputs``, possibly only the new ones) cut by source, in source order;
    ``[files]`` without sources. Raises ``UsageError`` for a file two sources name."""
    if not config.sources:
        return [list(files)]
    from seqpack.transforms.read import resolve_inputs

    owner: dict[str, int] = {}
    for source_id, source in enumerate(config.sources):
        try:
            resolved = resolve_inputs(list(source.inputs))
        except ValueError as error:
            raise UsageError(f"source {source.name!r}: {error}") from error
        for path in sorted({unit.path for unit in resolved}):
            other = owner.setdefault(path, source_id)
            if other != source_id:
                raise UsageError(
                    f"{path} is an input of source {config.sources[other].name!r} and of source {source.name!r}: "
                    "its records would be read twice; make the sources' input globs name different files"
                )
    unowned = sorted({unit.path for unit in files} - owner.keys())
    if unowned:
        raise UsageError(f"{unowned[0]} was listed for the run but no source names it now: run again")
    return [[unit for unit in files if owner[unit.path] == source_id] for source_id in range(len(config.sources))]
