"""The audit's checks over many blocks at once (``audit_columns``, what the run's shard writers call) find exactly
what ``audit.audit_block`` finds row by row, example by example, for every setting that changes the checks."""

from __future__ import annotations

import numpy as np
import pytest

from seqpack import IGNORE_INDEX
from seqpack.audit import FINDINGS, AuditFacts, audit_block
from seqpack.audit_columns import audit_columns, example_rows
from seqpack.masking import OVERLONG_POLICIES
from seqpack.packing import PackedBlocks

BOS, EOS, TURN = 1, 2, 3
TOKENS, WEIGHTS = [BOS, EOS, TURN, 5, 7, 9], [0.1, 0.15, 0.1, 0.25, 0.2, 0.2]


def random_blocks(rng: np.random.Generator, max_length: int, rows: int, *, pad: bool) -> PackedBlocks:
    """Rows of up to four examples with random ids (BOS and EOS frequent), labels (mostly target-like, some all
    trained, some mismatched) and position ids (a few shifted or broken); padded to ``max_length`` or not."""
    columns: dict[str, list[int]] = {name: [] for name in ("ids", "labels", "mask", "positions", "seq_lens")}
    row_offsets, seq_len_offsets = [0], [0]
    for _ in range(rows):
        room, lengths = max_length, []
        for _ in range(rng.integers(0, 5)):
            if room <= 0:
                break
            lengths.append(int(rng.integers(1, room + 1)) if rng.random() < 0.9 else room)
            room -= lengths[-1]
        for length in lengths:
            ids = rng.choice(TOKENS, size=length, p=WEIGHTS)
            labels = np.where(rng.random(length) < (0.9 if rng.random() < 0.2 else 0.6), ids, IGNORE_INDEX)
            if rng.random() < 0.05:
                labels[rng.integers(0, length)] = 4
            positions = np.arange(length) + (rng.integers(0, 3) if rng.random() < 0.1 else 0)
            if rng.random() < 0.05 and length > 2:
                positions[rng.integers(1, length)] = 0
            columns["ids"] += ids.tolist()
            columns["labels"] += labels.tolist()
            columns["positions"] += positions.tolist()
        real = sum(lengths)
        padding = (max_length if pad else real) - real
        columns["ids"] += [0] * padding
        columns["labels"] += [IGNORE_INDEX] * padding
        columns["positions"] += [0] * padding
        columns["mask"] += [1] * real + [0] * padding
        columns["seq_lens"] += lengths
        row_offsets.append(len(columns["ids"]))
        seq_len_offsets.append(len(columns["seq_lens"]))
    return PackedBlocks(
        row_offsets=np.asarray(row_offsets, np.int64), input_ids=np.asarray(columns["ids"], np.int32),
        labels=np.asarray(columns["labels"], np.int32), attention_mask=np.asarray(columns["mask"], np.int8),
        position_ids=np.asarray(columns["positions"], np.int32),
        seq_len_offsets=np.asarray(seq_len_offsets, np.int64), seq_lens=np.asarray(columns["seq_lens"], np.int32),
    )


def row_by_row(facts: AuditFacts, blocks: PackedBlocks) -> set[tuple[str, int]]:
    """``audit_block``'s findings, as (code, index of the example among all of ``blocks``)."""
    found = set()
    for row in range(blocks.rows):
        tokens = slice(blocks.row_offsets[row], blocks.row_offsets[row + 1])
        first, last = blocks.seq_len_offsets[row], blocks.seq_len_offsets[row + 1]
        for finding in audit_block(facts, input_ids=blocks.input_ids[tokens], labels=blocks.labels[tokens],
                                   attention_mask=blocks.attention_mask[tokens],
                                   position_ids=blocks.position_ids[tokens], seq_lens=blocks.seq_lens[first:last]):
            found.add((finding.code, int(first + finding.example)))
    return found


@pytest.mark.parametrize("overlong", OVERLONG_POLICIES)
@pytest.mark.parametrize("chat", [False, True])
def test_the_same_findings_as_example_by_example(overlong: str, chat: bool) -> None:
    rng = np.random.default_rng(sum(map(ord, overlong)) + chat)
    seen: set[str] = set()
    for trial in range(40):
        max_length = int(rng.integers(2, 12))
        facts = AuditFacts(
            max_length=max_length, bos_id=None if trial % 5 == 0 else BOS,
            eos_ids=frozenset([[EOS], [EOS, TURN], []][trial % 3]), masks_prompts=bool(rng.integers(0, 2)),
            expects_eos=trial % 3 != 2 and bool(rng.integers(0, 2)), chat=chat, wrap=bool(rng.integers(0, 2)),
            overlong=overlong,
        )
        blocks = random_blocks(rng, max_length, int(rng.integers(1, 6)), pad=bool(rng.integers(0, 2)))

        found = {(code, int(i)) for code, indices in audit_columns(facts, blocks).items() for i in indices}

        assert found == row_by_row(facts, blocks), (trial, facts)
        seen |= {code for code, _ in found}
    # The random blocks make most kinds of finding (split pieces get no start and end checks): the comparison
    # means something.
    assert len(seen) >= (3 if overlong == "split" else 6)


def test_codes_come_in_findings_order_with_sorted_examples() -> None:
    rng = np.random.default_rng(7)
    facts = AuditFacts(max_length=10, bos_id=BOS, eos_ids=frozenset({EOS}))
    flagged = audit_columns(facts, random_blocks(rng, 10, 40, pad=True))

    assert list(flagged) == [code for code in FINDINGS if code in flagged]
    assert all(np.array_equal(indices, np.sort(indices)) for indices in flagged.values())


def test_example_rows_says_where_each_example_lies() -> None:
    blocks = random_blocks(np.random.default_rng(3), 8, 6, pad=True)
    rows, index = example_rows(blocks)

    expected = [(row, i) for row in range(blocks.rows)
                for i in range(blocks.seq_len_offsets[row + 1] - blocks.seq_len_offsets[row])]
    assert list(zip(rows.tolist(), index.tolist(), strict=True)) == expected


def test_no_examples_no_findings() -> None:
    empty = random_blocks(np.random.default_rng(0), 8, 0, pad=True)
    assert audit_columns(AuditFacts(max_length=8, bos_id=BOS, eos_ids=frozenset({EOS})), empty) == {}


def test_position_ids_that_wrap_around_int32_are_not_taken_for_a_step_of_one() -> None:
    """A damaged file's position ids may lie anywhere in int32: 2**31 - 1 followed by -2**31 is a step of one
    only in wrapped int32 arithmetic, and is found as the example-by-example audit finds it."""
    top, bottom = np.iinfo(np.int32).max, np.iinfo(np.int32).min
    blocks = PackedBlocks(
        row_offsets=np.array([0, 3], np.int64), input_ids=np.array([5, 7, EOS], np.int32),
        labels=np.array([IGNORE_INDEX, 7, EOS], np.int32), attention_mask=np.ones(3, np.int8),
        position_ids=np.array([top - 1, top, bottom], np.int32),
        seq_len_offsets=np.array([0, 1], np.int64), seq_lens=np.array([3], np.int32),
    )
    facts = AuditFacts(max_length=3, eos_ids=frozenset({EOS}), wrap=True)  # a row's first piece may start anywhere

    found = {(code, int(i)) for code, indices in audit_columns(facts, blocks).items() for i in indices}

    assert ("positions", 0) in found
    assert found == row_by_row(facts, blocks)
