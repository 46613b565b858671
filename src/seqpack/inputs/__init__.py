"""Input files to records, without ever letting bad input crash a run.

Every record of every file comes out as exactly one ``Record`` (parsed fields and where they came from) or one
``Rejected`` (a reason code from ``seqpack.schemas.REASONS``, the raw bytes and a human detail). Nothing here
imports Beam: files are listed through an injected ``match`` and opened through an injected ``open_binary``, so
the same code reads local files and ``gs://``/``s3://`` objects (``seqpack.transforms.read`` passes Beam's).

    >>> files = split_inputs(expand_inputs(["data/*.jsonl"], match=beam_match, open_binary=beam_open))
    >>> for items in iter_input_lists(files[0], beam_open):
    ...     print([item.origin if isinstance(item, Record) else item.reason for item in items])

One module per concern: ``records`` (what comes out, and the limits), ``formats`` (a file's format from its
name), ``resolve`` (files, globs, directories and saved datasets to a list of files), ``ranges`` (big JSON lines
files cut into byte ranges), ``read`` (a file or range to records), and one parser per format family: ``jsonl``,
``json_array``, ``delimited`` (CSV/TSV) and ``columnar`` (Parquet/Arrow), on the byte streams of ``streams``.
"""

from seqpack.inputs.formats import COMPRESSION_SUFFIXES, FORMATS, detect_format
from seqpack.inputs.ranges import split_inputs
from seqpack.inputs.read import iter_file_lists, iter_input_lists
from seqpack.inputs.records import (
    DEFAULT_MAX_RECORD_BYTES,
    InputError,
    InputFile,
    Item,
    Match,
    OpenBinary,
    Record,
    Rejected,
    printable_path,
)
from seqpack.inputs.resolve import expand_inputs

__all__ = [
    "COMPRESSION_SUFFIXES",
    "DEFAULT_MAX_RECORD_BYTES",
    "FORMATS",
    "InputError",
    "InputFile",
    "Item",
    "Match",
    "OpenBinary",
    "Record",
    "Rejected",
    "detect_format",
    "expand_inputs",
    "iter_file_lists",
    "iter_input_lists",
    "printable_path",
    "split_inputs",
]
