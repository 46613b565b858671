"""Flipped bits in a shard's pages: the default loader (no ``verify=True``) raises, never yields other token ids.

The writer stores a CRC32 in every Parquet page header and the reader checks it as it decodes a page. Without
that, about a third of single-bit flips in a shard decoded into other token ids, silently.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shardgen import blocks_table, make_examples, pack, write_dataset

from seqpack.dataset import COLUMNS
from seqpack.dataset.arrow_footer import _Flatbuffer
from seqpack.loader import PackedDataset
from seqpack.schemas import DatasetFormatError

pytest.importorskip("apache_beam")
from seqpack.schemas import serialize_shard  # noqa: E402

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


EXAMPLES = make_examples(40, seed=1, vocab_size=50_000)


def shard_bytes() -> bytes:
    """A shard as the pipeline writes it (its own serialize, so its options are what is tested)."""
    return serialize_shard(blocks_table(pack(EXAMPLES, 64), 64), "parquet", row_group_size=4)


@dataclass(frozen=True)
class Page:
    column: str
    header: range
    body: range
    """The compressed values, which the page CRC covers."""


def pages(data: bytes) -> list[Page]:
    """Every data page of a shard, split into its header and its body.

    The shards have no dictionary pages and one zstd-compressed data page per column chunk, so a chunk is a
    page header followed by one zstd frame, which starts with the zstd magic number.
    """
    metadata = pq.ParquetFile(pa.BufferReader(data)).metadata
    found = []
    for group in range(metadata.num_row_groups):
        for column in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(column)
            assert chunk.dictionary_page_offset is None
            start, end = chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size
            body = data.find(ZSTD_MAGIC, start, end)
            assert body > start and data.find(ZSTD_MAGIC, body + 1, end) == -1, "expected one page per chunk"
            column_name = chunk.path_in_schema.split(".")[0]
            found.append(Page(column=column_name, header=range(start, body), body=range(body, end)))
    return found


@dataclass(frozen=True)
class Shard:
    root: Path
    path: Path
    data: bytes
    pages: list[Page]

    @property
    def positions(self) -> list[int]:
        """Every byte of the shard that lies in a page's data."""
        return [p for page in self.pages for p in page.body]

    def flipped(self, position: int, bit: int) -> None:
        data = bytearray(self.data)
        data[position] ^= 1 << bit
        self.path.write_bytes(bytes(data))

    def restore(self) -> None:
        self.path.write_bytes(self.data)


@pytest.fixture(scope="module")
def one_shard(tmp_path_factory: pytest.TempPathFactory) -> Shard:
    """A dataset of one shard written by the pipeline's serializer."""
    root = tmp_path_factory.mktemp("bitflips")
    manifest = write_dataset(str(root), {"train": EXAMPLES}, rows_per_shard=99, row_group_size=4)
    path = root / manifest.splits["train"].shards[0].path
    data = shard_bytes()
    assert path.read_bytes() == data, "shardgen must write shards as the pipeline does"
    return Shard(root=root, path=path, data=data, pages=pages(data))


def read_all(root: Path) -> list[tuple[bytes, ...]]:
    """Every sample the default loader yields, every column of it."""
    samples = PackedDataset(str(root), shuffle=False)
    return [tuple(np.asarray(sample[name]).tobytes() for name in COLUMNS) for sample in samples]


def test_the_writer_is_deterministic_with_page_checksums() -> None:
    assert shard_bytes() == shard_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_bit_in_page_data_is_an_error_not_other_token_ids(
    one_shard: Shard, choice: int, bit: int
) -> None:
    positions = one_shard.positions
    one_shard.flipped(positions[choice % len(positions)], bit)
    try:
        with pytest.raises(DatasetFormatError, match=r"unit \d+ cannot be decoded .*CRC.*the file is corrupt"):
            read_all(one_shard.root)
    finally:
        one_shard.restore()


def test_a_flipped_bit_in_a_seq_lens_page_header_is_an_error_or_changes_nothing(one_shard: Shard) -> None:
    """Every bit of the headers that CRCs do not cover, in the one column whose shortening decodes cleanly.

    A lower value count in a header drops the last lengths of a row; the unit checks (every token column's rows
    as long as the others, seq_lens adding up to the real tokens) catch it.
    """
    reference = read_all(one_shard.root)
    headers = [p for page in one_shard.pages if page.column == "seq_lens" for p in page.header]
    assert len(headers) > 20
    silent = []
    for position in headers:
        for bit in range(8):
            one_shard.flipped(position, bit)
            try:
                if read_all(one_shard.root) != reference:
                    silent.append((position, bit))
            except DatasetFormatError:
                pass
            finally:
                one_shard.restore()
    assert not silent, f"flips at (byte, bit) {silent} changed the samples without an error"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.integers(min_value=0), bit=st.integers(0, 7))
def test_a_flipped_bit_in_any_page_header_is_an_error_or_changes_nothing(
    one_shard: Shard, choice: int, bit: int
) -> None:
    headers = [p for page in one_shard.pages for p in page.header]
    reference = read_all(one_shard.root)
    one_shard.flipped(headers[choice % len(headers)], bit)
    try:
        assert read_all(one_shard.root) == reference
    except DatasetFormatError:
        pass
    finally:
        one_shard.restore()


def test_the_unflipped_shard_reads_whole(one_shard: Shard) -> None:
    rows = pq.read_table(pa.BufferReader(one_shard.data)).column("input_ids").to_pylist()
    input_ids = [sample[COLUMNS.index("input_ids")] for sample in read_all(one_shard.root)]
    assert input_ids == [np.asarray(row, dtype=np.int32).tobytes() for row in rows]


# ------------------------------------------------------------------------------------------- Arrow IPC

CHILD = """
import sys
from seqpack.dataset import ShardSet
from seqpack.schemas import DatasetFormatError

root, path, flips = sys.argv[1], sys.argv[2], [tuple(map(int, f.split(":"))) for f in sys.argv[3].split(",")]
data = open(path, "rb").read()
for position, bit in flips:
    flipped = bytearray(data)
    flipped[position] ^= 1 << bit
    open(path, "wb").write(flipped)
    try:
        shards = ShardSet.open(root)
        for unit in range(shards.num_units):
            shards.read_unit(unit)
    except DatasetFormatError:
        pass
    except Exception as exc:
        print(f"flip {position}:{bit}: {type(exc).__name__}: {exc}")
        sys.exit(1)
open(path, "wb").write(data)
"""


def arrow_length_fields(data: bytes) -> list[int]:
    """File offsets of every int64 that sizes something in the record batches: node lengths and null counts,
    buffer offsets and lengths (message headers), and each compressed buffer's uncompressed-length prefix."""
    footer_length = int.from_bytes(data[-10:-6], "little")
    footer = _Flatbuffer(data[len(data) - 10 - footer_length : len(data) - 10])
    fields = []
    for block in footer.struct_vector(footer.root(), field=3, struct_size=24):
        offset, metadata_length = footer.i64(block), footer.i32(block + 8)
        message = _Flatbuffer(data[offset + 8 : offset + metadata_length])
        header = message.table_field(message.root(), field=2)
        for vector in (1, 2):  # RecordBatch.nodes, RecordBatch.buffers: structs of two int64
            for struct in message.struct_vector(header, field=vector, struct_size=16):
                fields += [offset + 8 + struct, offset + 8 + struct + 8]
        body = offset + metadata_length
        for struct in message.struct_vector(header, field=2, struct_size=16):
            if message.i64(struct + 8) > 0:
                fields.append(body + message.i64(struct))
    return fields


def test_a_corrupt_arrow_shard_raises_a_format_error_and_never_crashes(tmp_path: Path) -> None:
    """Arrow IPC has no checksums; a size field flipped in a batch used to abort the process inside Arrow (a C++
    check) or raise IndexError. Every decoded batch is now validated first. Run in a child: an abort kills it."""
    manifest = write_dataset(str(tmp_path), {"train": EXAMPLES}, rows_per_shard=99, file_format="arrow")
    path = tmp_path / manifest.splits["train"].shards[0].path
    fields = arrow_length_fields(path.read_bytes())
    assert len(fields) > 40
    flips = [f"{field + byte}:{bit}" for field in fields for byte in (0, 7) for bit in (0, 7)]
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(path), ",".join(flips)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert child.returncode == 0, child.stdout + child.stderr[-2000:]
