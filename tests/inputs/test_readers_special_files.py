"""A FIFO or a device given as input is refused up front by name; before, reading it hung the run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import write_jsonl

from seqpack.inputs import InputError
from seqpack.transforms.read import resolve_inputs

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo") or not os.path.exists("/dev/zero"), reason="POSIX only")


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    """A good file beside a FIFO and a link to /dev/zero, both named like JSON lines files."""
    directory = tmp_path / "in"
    directory.mkdir()
    write_jsonl(directory / "good.jsonl", [{"source": "a", "target": "b"}])
    os.mkfifo(directory / "fifo.jsonl")
    (directory / "zero.jsonl").symlink_to("/dev/zero")
    return directory


@pytest.mark.parametrize(
    ("pattern", "name", "kind"),
    [
        ("{}/fifo.jsonl", "fifo.jsonl", "a named pipe (FIFO)"),
        ("{}/zero.jsonl", "zero.jsonl", "a character device"),
        ("{}/*.jsonl", "fifo.jsonl", "a named pipe (FIFO)"),
        ("{}", "fifo.jsonl", "a named pipe (FIFO)"),
    ],
)
def test_a_fifo_or_device_is_refused_by_name(inputs: Path, pattern: str, name: str, kind: str) -> None:
    """Resolution only lists and stats: nothing here opens the FIFO, so a broken check fails, it cannot hang."""
    with pytest.raises(InputError, match="is not a regular file") as raised:
        resolve_inputs([pattern.format(inputs)])
    message = str(raised.value)
    assert message.startswith(f"{inputs}/{name}") and kind in message and "regular file first" in message
    assert "good.jsonl" not in message
    if "fifo" not in pattern and "zero" not in pattern:  # every such file is named at once, in path order
        assert message.index("fifo.jsonl") < message.index("zero.jsonl (matched by")


def test_dev_zero_itself_is_refused_as_a_device() -> None:
    with pytest.raises(InputError, match=r"^/dev/zero is not a regular file but a character device"):
        resolve_inputs(["/dev/zero"])


def test_regular_files_and_links_to_them_still_resolve(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "good.jsonl", [{"source": "a", "target": "b"}])
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "good.jsonl")
    assert [Path(f.path).name for f in resolve_inputs([str(tmp_path / "*.jsonl")])] == ["good.jsonl", "link.jsonl"]


@pytest.mark.parametrize("name", ["fifo.jsonl", "zero.jsonl"])
def test_the_cli_exits_2_instead_of_hanging(inputs: Path, tmp_path: Path, tokenizer_dir: Path, name: str) -> None:
    """In a subprocess with a timeout: without the check the run blocks on the FIFO, or reads /dev/zero forever."""
    command = [sys.executable, "-m", "seqpack.cli", "run", "-q", "-i", str(inputs / name)]
    command += ["-o", str(tmp_path / "out"), "-t", str(tokenizer_dir), "--direct_running_mode=in_memory"]
    # its own process group, so that a hung run is ended with everything it started
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            _, stderr = process.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"seqpack run hung reading {name}")
    assert process.returncode == 2, stderr
    assert "is not a regular file" in stderr and name in stderr
