"""``seqpack inspect``: decoded blocks, masked text marked, one line per example, safe and exact plain output."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import dataset_file, write_jsonl
from shardgen import Example, write_dataset
from transformers import AutoTokenizer

from seqpack.cli.main import main
from seqpack.pipeline.run_summary import summary
from seqpack.schemas import Manifest
from seqpack.tools.blocks import (
    MASK_CLOSE,
    MASK_OPEN,
    block_view,
    decode_runs,
    escape_text,
    render_block,
    tokenizer_spec,
)

EXAMPLE_LINE = re.compile(r"^ +#(\d+) ⟦<s>(.*) = ⟧(.*)</s>$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path, pairs: list[dict[str, str]]) -> Path:
    """A real dataset made by the CLI: plain template, <s> prepended, </s> appended to targets."""
    root = tmp_path_factory.mktemp("inspect")
    source = write_jsonl(root / "pairs.jsonl", pairs[:120])
    out = root / "ds"
    code = main(["run", "-q", "-i", str(source), "-o", str(out), "-t", str(tokenizer_dir), "--max-length", "96",
                 "--bucket-tokens", "1024", "--direct_running_mode=in_memory"])
    assert code == 0
    return out


def inspect_plain(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args, "--plain"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def shard_rows(dataset: Path) -> list[dict]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    return [row for shard in manifest["splits"]["train"]["shards"]
            for row in pq.read_table(dataset / shard["path"]).to_pylist()]


# ------------------------------------------------------------------------------ a hand-made dataset, golden


def test_plain_output_of_a_hand_made_dataset_is_exact(
    tmp_path: Path, tokenizer_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def example(source: str, target: str) -> Example:
        src = tokenizer("<s>" + source, add_special_tokens=False)["input_ids"]
        tgt = tokenizer(target + "</s>", add_special_tokens=False)["input_ids"]
        return Example(np.asarray(src + tgt, dtype=np.int64), len(src))

    first = example("Hello world = ", "Bonjour le monde")
    second = example("Line one\nline two = ", "Ligne\tdeux \x1b[31mrouge")
    write_dataset(str(tmp_path / "ds"), {"train": [first, second]}, max_length=64)

    code, out, err = inspect_plain(capsys, str(tmp_path / "ds"), "--tokenizer", str(tokenizer_dir))

    real = len(first.ids) + len(second.ids)
    assert code == 0
    assert out == (
        f"{tmp_path / 'ds'} · split train · 1 block · tokenizer {tokenizer_dir}\n"
        "⟦…⟧: no loss (label -100: source, example starts) · other text: trained · #N starts example N · "
        "↵ newline in the data\n"
        "\n"
        f"block 0 (train): 2 examples, {real} of 64 tokens real, fill {real / 64:.1%}\n"
        "  #1 ⟦<s>Hello world = ⟧Bonjour le monde</s>\n"
        "  #2 ⟦<s>Line one↵\n"
        "     line two = ⟧Ligne\\tdeux \\x1b[31mrouge</s>\n"
    )
    assert "not the one that made this dataset" in err  # the hand-made manifest names a fake tokenizer


# ------------------------------------------------------------------------------------------ pure pieces


def test_runs_are_decoded_whole_so_multibyte_characters_survive() -> None:
    def byte_decode(ids: list[int]) -> str:  # a byte-level tokenizer: one token per byte
        return bytes(ids).decode("utf-8", errors="replace")

    ids = list("Né = élève".encode())
    cut = len("Né = ".encode())
    assert decode_runs(byte_decode, ids, [0, cut, len(ids)]) == ["Né = ", "élève"]
    # token by token the same text would be mojibake
    assert "".join(byte_decode([i]) for i in ids) != "Né = élève"


def test_a_run_keeps_the_leading_space_a_sentencepiece_decoder_drops() -> None:
    words = {1: "▁Le", 2: "▁chat"}

    def spm_decode(ids: list[int]) -> str:
        return "".join(words[i] for i in ids).replace("▁", " ").removeprefix(" ")

    assert decode_runs(spm_decode, [1, 2], [0, 1, 2]) == ["Le", " chat"]


def test_block_view_cuts_examples_and_padding() -> None:
    view = block_view(lambda ids: "".join(chr(96 + i) for i in ids), input_ids=[1, 2, 3, 4, 5, 0, 0, 0],
                      labels=[-100, 2, 3, -100, 5, -100, -100, -100], seq_lens=[3, 2], split="train", index=4)
    assert [[(s.trained, s.text) for s in e.spans] for e in view.examples] == [
        [(False, "a"), (True, "bc")], [(False, "d"), (True, "e")]
    ]
    assert (view.real_tokens, view.length, view.fill) == (5, 8, 5 / 8)
    assert render_block(view, color=False) == [
        "block 4 (train): 2 examples, 5 of 8 tokens real, fill 62.5%",
        "  #1 ⟦a⟧bc",
        "  #2 ⟦d⟧e",
    ]


def test_data_cannot_drive_the_terminal() -> None:
    assert escape_text("a\x1b[2Jb\rc\x07d\u202ee\x85") == "a\\x1b[2Jb\\rc\\x07d\\u202ee\\x85"
    assert escape_text("line\nnext") == "line\nnext"


def test_colour_mode_uses_ansi_and_no_brackets() -> None:
    view = block_view(lambda ids: "x" * len(ids), input_ids=[1, 2], labels=[-100, 2], seq_lens=[2],
                      split="train", index=0)
    lines = render_block(view, color=True)
    assert "\x1b[2mx\x1b[0m\x1b[1;32mx\x1b[0m" in lines[1]
    assert MASK_OPEN not in lines[1] and MASK_CLOSE not in lines[1]


# ------------------------------------------------------------------------------------ on a real dataset


def test_plain_blocks_match_the_shards_and_the_input_pairs(
    dataset: Path, pairs: list[dict[str, str]], capsys: pytest.CaptureFixture
) -> None:
    rows = shard_rows(dataset)
    code, out, _ = inspect_plain(capsys, str(dataset), "--block", "0", "--block", "-1")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"{dataset} · split train · {len(rows)} blocks · tokenizer ")
    known = {(p["source"], p["target"]) for p in pairs}
    blocks = "\n".join(lines[2:]).split("\n\n")
    assert len(blocks) == 2
    for text, row in zip(blocks, [rows[0], rows[-1]], strict=True):
        head, *examples = text.strip("\n").splitlines()
        real = sum(row["seq_lens"])
        count = len(row["seq_lens"])
        assert head.endswith(f": {count} examples, {real} of 96 tokens real, fill {real / 96:.1%}")
        assert len(examples) == count
        for number, line in enumerate(examples, start=1):
            match = EXAMPLE_LINE.match(line)
            assert match, line
            assert int(match.group(1)) == number
            assert (match.group(2), match.group(3)) in known


def test_random_blocks_are_distinct_sorted_and_seeded(dataset: Path, capsys: pytest.CaptureFixture) -> None:
    heads = []
    for _ in range(2):
        code, out, _ = inspect_plain(capsys, str(dataset), "--random", "3", "--seed", "7")
        assert code == 0
        heads.append([int(line.split()[1]) for line in out.splitlines() if line.startswith("block ")])
    assert heads[0] == heads[1] == sorted(set(heads[0])) and len(heads[0]) == 3


def test_errors_are_one_line_with_the_right_exit_code(dataset: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    code, _, err = inspect_plain(capsys, str(dataset), "--block", "100000")
    assert code == 2 and "block 100000 does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = inspect_plain(capsys, str(tmp_path / "nowhere"))
    assert code == 1 and "does not exist" in err and len(err.strip().splitlines()) == 1
    code, _, err = inspect_plain(capsys, str(dataset), "--split", "validation")
    assert code == 1 and "no split 'validation'" in err
    code, _, err = inspect_plain(capsys, str(dataset), "--tokenizer", str(tmp_path / "no-tokenizer"))
    assert code == 1 and "cannot load tokenizer" in err
    with pytest.raises(SystemExit) as usage:
        main(["inspect", str(dataset), "--block", "1", "--random", "2"])
    assert usage.value.code == 2


def test_a_block_past_the_end_does_not_hide_the_blocks_that_exist(dataset: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    code, out, err = inspect_plain(capsys, str(dataset), "--block", "0", "--block", "100000", "--block", "-1",
                                   "--block", "-100000")
    rows = len(shard_rows(dataset))
    assert [line.split(" (")[0] for line in out.splitlines() if line.startswith("block ")] == [
        "block 0", f"block {rows - 1}"
    ]
    assert code == 2
    assert err.strip().splitlines() == [
        f"seqpack: error: blocks 100000, -100000 do not exist: the split has {rows:,} blocks (0 to {rows - 1:,}, "
        f"or -1 to -{rows:,})"
    ]


def test_color_is_off_when_piped_and_on_when_asked(dataset: Path, capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["inspect", str(dataset)]) == 0
    assert "\x1b[" not in capsys.readouterr().out
    assert main(["inspect", str(dataset), "--color"]) == 0
    assert "\x1b[1;32m" in capsys.readouterr().out


def test_a_tokenizer_shipped_in_the_dataset_is_preferred(dataset: Path, tokenizer_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(dataset, copy)
    manifest = Manifest.from_json((copy / "manifest.json").read_text())
    assert tokenizer_spec(str(copy), manifest) == str(tokenizer_dir)
    shutil.copytree(tokenizer_dir, copy / manifest.path_of("tokenizer"))
    assert tokenizer_spec(str(copy), manifest) == f"{copy}/{manifest.path_of('tokenizer')}"
    assert tokenizer_spec(str(copy), manifest, "other") == "other"


def test_the_run_summary_is_short_and_says_how_to_look(dataset: Path) -> None:
    manifest = Manifest.from_json((dataset / "manifest.json").read_text())
    stats = json.loads(dataset_file(dataset, "stats.json").read_text())
    text = summary(manifest, stats, str(dataset))
    lines = text.splitlines()
    assert lines[0] == f"seqpack: wrote {dataset}"
    assert f"fill {stats['fill']:.1%}" in text
    assert f"{stats['records_read']:,} records read: " in text
    assert lines[-1] == f"  look at it: seqpack inspect {dataset}"
    assert "rejected:" not in text and len(lines) <= 6
    stats = {**stats, "rejected_by_reason": {"invalid_json": 2}, "records_rejected": 2}
    rejected = dataset_file(dataset, "rejected/rejected.jsonl")
    assert f"rejected: invalid_json 2 → {rejected}" in summary(manifest, stats, str(dataset))
