"""Resolve what the user passed as inputs (files, globs, directories, ``datasets.save_to_disk`` directories) to
the sorted list of files to read, before any work starts; refuse what cannot be read (nothing matches, an
unsupported format, a FIFO or device that would hang the run) with an error that says how to fix it.

Nothing here imports Beam: files are listed through an injected ``match`` and opened through an injected
``open_binary``, so the same code resolves local paths and ``gs://``/``s3://`` objects.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import re
import stat
from collections.abc import Sequence
from typing import Any

from seqpack.inputs.formats import FORMATS, detect_format, format_or_none
from seqpack.inputs.json_values import json_type
from seqpack.inputs.records import InputError, InputFile, Match, NoInputFound, OpenBinary, printable_path

_GLOB_CHARS = re.compile(r"[*?\[]")
_HF_METADATA = ("state.json", "dataset_info.json", "dataset_dict.json")


def expand_inputs(patterns: Sequence[str], *, match: Match, open_binary: OpenBinary) -> list[InputFile]:
    """Resolve files, globs and directories to a sorted, de-duplicated list of files, before any work starts.

        >>> expand_inputs(["data/*.jsonl", "hf_saved/"], match=beam_match, open_binary=beam_open)  # transforms.read

    ``match(pattern)`` lists the files (not directories) a glob matches, like Beam's ``FileSystems.match``.
    A directory is read non-recursively (names starting with ``_`` or ``.`` are skipped, as Hadoop/Spark
    write ``_SUCCESS`` and ``.crc`` files), unless ``datasets.save_to_disk`` wrote it: then its Arrow files,
    of every split. Raises ``InputError`` for a pattern that matches nothing, a file seqpack cannot read, or a
    local path that is not a regular file (a FIFO or a device such as ``/dev/zero`` would hang the run).
    """
    if not patterns:
        raise InputError("no input given: pass --input with a file, a glob or a directory")
    found: dict[str, tuple[InputFile, str]] = {}
    for pattern in patterns:
        if not _GLOB_CHARS.search(pattern) and not os.path.isdir(pattern):  # /dev/zero has no known suffix
            _refuse_special([_not_regular(pattern, pattern)])
        for input_file in _expand_pattern(pattern, match, open_binary):
            found.setdefault(input_file.path, (input_file, pattern))
    files = sorted(found.values(), key=lambda pair: pair[0].path)
    _refuse_special([_not_regular(input_file.path, pattern) for input_file, pattern in files])
    return [input_file for input_file, _ in files]


def _refuse_special(problems: list[str]) -> None:
    if any(problems):
        raise InputError(
            f"{'; '.join(filter(None, problems))}: seqpack cannot read such a file to a known end (a FIFO waits "
            "for a writer, a device such as /dev/zero never ends); write the data to a regular file first and "
            "pass that file"
        )


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _not_regular(path: str, pattern: str) -> str:
    """What is wrong with a local input that is not a regular file ('' if nothing is): reading it would hang the
    run instead of failing it. A path that cannot be examined is left to the reader (an ``unreadable_file``)."""
    if "://" in path:
        return ""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode):
        return ""
    kind = next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")
    source = "" if pattern == path else f" (matched by {printable_path(pattern)!r})"
    return f"{printable_path(path)}{source} is not a regular file but {kind}"


def _expand_pattern(pattern: str, match: Match, open_binary: OpenBinary) -> list[InputFile]:
    if _GLOB_CHARS.search(pattern):
        return _expand_glob(pattern, match)
    matched = [] if pattern.endswith("/") else _list(match, pattern)
    if matched and (fmt := format_or_none(matched[0])) is not None:
        return [InputFile(matched[0], fmt, matched[0])]
    listing = _list(match, _join(pattern, "*"))
    if listing:
        return _expand_directory(pattern.rstrip("/"), listing, open_binary)
    if matched:
        detect_format(matched[0])  # raises, naming the unsupported type
    raise NoInputFound(f"no file or directory {pattern!r}: check the path (and that it is readable)")


def _expand_glob(pattern: str, match: Match) -> list[InputFile]:
    keep_hidden = posixpath.basename(pattern).startswith(("_", "."))
    paths = [p for p in _list(match, pattern) if keep_hidden or not _is_hidden(p)]
    if not paths:
        raise NoInputFound(f"no file matches {pattern!r}: check the path, and quote the glob so the shell leaves it")
    files = []
    for path in paths:
        if posixpath.basename(path) in _HF_METADATA:
            raise InputError(
                f"{pattern!r} matches {path}, part of a dataset saved by datasets.save_to_disk: pass the "
                f"dataset's directory ({posixpath.dirname(path)}) instead of a glob"
            )
        try:
            files.append(InputFile(path, detect_format(path), path))
        except InputError as error:
            raise InputError(f"{error} (matched by {pattern!r}; narrow the glob, e.g. '*.jsonl')") from None
    return files


def _expand_directory(directory: str, listing: Sequence[str], open_binary: OpenBinary) -> list[InputFile]:
    names = {posixpath.basename(path) for path in listing}
    if "dataset_dict.json" in names:
        splits = _read_metadata(_join(directory, "dataset_dict.json"), "splits", open_binary)
        return [
            f
            for split in splits
            for f in _hf_dataset(_join(directory, _safe_name(split, directory)), directory, split, open_binary)
        ]
    if {"state.json", "dataset_info.json"} <= names:
        return _hf_dataset(directory, directory, None, open_binary)
    files, skipped = [], []
    for path in sorted(p for p in listing if not _is_hidden(p)):
        fmt = format_or_none(path)
        if fmt is None:
            skipped.append(posixpath.basename(path))
        else:
            files.append(InputFile(path, fmt, path))
    if not files:
        has = f" (it holds {_some(skipped)})" if skipped else ""
        raise NoInputFound(
            f"directory {directory!r} holds no file seqpack reads ({', '.join(sorted(FORMATS))}){has}; "
            "subdirectories are not searched: use a glob such as 'dir/**/*.jsonl'"
        )
    if skipped:
        # Said, not silent: a corpus file with an unexpected suffix (.txt, .jsonl.txt) would otherwise go missing.
        logging.getLogger("seqpack").warning(
            "skipped %d file%s in %s that %s not in a format seqpack reads (%s): only %s files, compressed or not, "
            "are read from a directory; rename a file to its format's suffix to read it",
            len(skipped), "" if len(skipped) == 1 else "s", printable_path(directory),
            "is" if len(skipped) == 1 else "are", _some(skipped), ", ".join(sorted(FORMATS)),
        )
    return files


def _some(names: Sequence[str], shown: int = 3) -> str:
    """A few names for a message: ``a, b, c, ... (7 in all)``."""
    listed = ", ".join(printable_path(name) for name in names[:shown])
    return listed if len(names) <= shown else f"{listed}, ... ({len(names):,} in all)"


def _hf_dataset(data_dir: str, label_dir: str, split: str | None, open_binary: OpenBinary) -> list[InputFile]:
    """The Arrow files a ``datasets`` ``state.json`` lists; origins read ``dir[split]:row``."""
    entries = _read_metadata(_join(data_dir, "state.json"), "_data_files", open_binary)
    try:
        names = [_safe_name(entry["filename"], data_dir) for entry in entries]
    except (KeyError, TypeError):
        raise InputError(f"{_join(data_dir, 'state.json')} lists _data_files without file names") from None
    base = f"{label_dir}[{split}]" if split else label_dir
    return [
        InputFile(_join(data_dir, name), "arrow", base if len(names) == 1 else f"{base}/{name}", split)
        for name in names
    ]


def _read_metadata(path: str, key: str, open_binary: OpenBinary) -> list[Any]:
    try:
        stream = open_binary(path)
        try:
            value = json.loads(stream.read())[key]
        finally:
            stream.close()
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"cannot read {key!r} from {path} ({type(error).__name__}: {error}); was the dataset saved "
            "completely with datasets' save_to_disk?"
        ) from None
    if not isinstance(value, list):
        raise InputError(f"{path}: {key!r} should be a list, got {json_type(value)}")
    return value


def _safe_name(name: Any, directory: str) -> str:
    """A split or file name from dataset metadata must stay inside the dataset directory."""
    if not isinstance(name, str) or not name or name in (".", "..") or any(c in name for c in "/\\:"):
        raise InputError(f"{directory}: dataset metadata names {name!r}, which is not a plain file name")
    return name


def _list(match: Match, pattern: str) -> list[str]:
    try:
        return list(match(pattern))
    except InputError:
        raise
    except (OSError, ValueError) as error:
        raise InputError(f"cannot list {pattern!r}: {error}") from None


def _is_hidden(path: str) -> bool:
    return posixpath.basename(path.rstrip("/")).startswith(("_", "."))


def _join(directory: str, name: str) -> str:
    return f"{directory.rstrip('/')}/{name}"
