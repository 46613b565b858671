"""A file name that is not UTF-8 is read like any other; origins and rejected.jsonl name it escaped, as text."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import dataset_file, flat, write_jsonl

from seqpack.cli.main import main
from seqpack.inputs import Record, Rejected, expand_inputs, iter_input_lists, printable_path
from seqpack.transforms.read import beam_match, beam_open

BAD_NAME = b"bad\xff\xfename.jsonl"
ESCAPED_NAME = "bad\\xff\\xfename.jsonl"


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """A directory holding a file whose name is not UTF-8 (one good and one bad record) beside a good file."""
    directory = tmp_path / "nu"
    directory.mkdir()
    try:
        with open(os.path.join(os.fsencode(directory), BAD_NAME), "wb") as bad:
            bad.write(b'{"source": "hi", "target": "there"}\n{"source": }\n')
    except OSError:  # pragma: no cover - a filesystem that only takes UTF-8 names (macOS)
        pytest.skip("this filesystem refuses file names that are not UTF-8")
    write_jsonl(directory / "good.jsonl", [{"source": "a", "target": "b"}])
    return directory


def test_printable_path_escapes_only_what_is_not_utf8() -> None:
    assert printable_path(os.fsdecode(BAD_NAME)) == ESCAPED_NAME
    assert printable_path("données/été.jsonl") == "données/été.jsonl"
    assert printable_path("x\ud800") == "x\\ud800"  # a surrogate no file name decodes to
    assert printable_path(ESCAPED_NAME) == ESCAPED_NAME


@pytest.mark.parametrize("pattern", ["{}/*.jsonl", "{}", "{}/"])
def test_a_non_utf8_name_is_read_with_an_escaped_label(inputs: Path, pattern: str) -> None:
    files = expand_inputs([pattern.format(inputs)], match=beam_match, open_binary=beam_open)
    items = [item for input_file in files for item in flat(iter_input_lists(input_file, beam_open))]
    origins = [item.origin for item in items]
    assert origins == [f"{inputs}/{ESCAPED_NAME}:1", f"{inputs}/{ESCAPED_NAME}:2", f"{inputs}/good.jsonl:1"]
    assert [type(item) for item in items] == [Record, Rejected, Record]
    for origin in origins:
        origin.encode("utf-8")  # strict: Beam's coders and the rejected file encode origins so


def test_a_non_utf8_file_name_does_not_stop_the_run(inputs: Path, tmp_path: Path, tokenizer_dir: Path) -> None:
    """Before the fix: a UnicodeEncodeError in the Render step, exit 1, nothing committed."""
    outputs = []
    for attempt in range(2):
        output = tmp_path / f"out{attempt}"
        args = ["run", "-q", "-i", f"{inputs}/*.jsonl", "-o", str(output), "-t", str(tokenizer_dir)]
        assert main([*args, "--max-length", "256", "--direct_running_mode=in_memory"]) == 0
        outputs.append(output)
    stats = json.loads(dataset_file(outputs[0], "stats.json").read_text())
    assert stats["records_read"] == 3 and stats["records_rejected"] == 1
    assert sum(stats["examples_by_split"].values()) == 2
    text = dataset_file(outputs[0], "rejected/rejected.jsonl").read_bytes().decode("utf-8")  # strict: valid UTF-8
    [entry] = [json.loads(line) for line in text.splitlines()]
    assert entry["file"] == f"{inputs}/{ESCAPED_NAME}" and entry["line"] == 2 and entry["reason"] == "invalid_json"
    manifests = [json.loads((output / "manifest.json").read_text()) for output in outputs]
    assert manifests[0]["splits"] == manifests[1]["splits"], "the output is the same on every run"
