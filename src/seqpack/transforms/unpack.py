"""Read committed shards back as examples, for ``seqpack compact``: each shard's blocks are cut back into their
examples (``seqpack.unpacking``) and spilled, keyed, exactly as the tokenize step spills new examples, so the same
``ShuffleAndPack`` and ``WriteShards`` steps pack them again.

Each shard is read one record batch at a time, and its examples are spilled whenever ``SPILL_TOKENS`` are held,
so a worker's memory stays bounded whatever the shard's size. Alongside the spill files, each shard's examples
digest (``seqpack.examples_digest``) goes out under ``DIGEST_TAG``: the commit compares it with the digest of
what was packed again.

    cut = shards | "CutShards" >> beam.ParDo(CutShardDoFn(options, spill_dir)).with_outputs(DIGEST_TAG, main="spills")
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from seqpack.example_columns import ExampleColumns
from seqpack.examples_digest import ExamplesDigest, block_arrays
from seqpack.transforms.pack import ShardBlocks
from seqpack.transforms.shuffle import SPILL_TOKENS, SpillFile, spill_path, write_spill
from seqpack.unpacking import NotWholeExamples, examples_of_blocks

DIGEST_TAG = "digest"
DIGEST_COLUMNS = ["input_ids", "labels", "seq_lens"]
"""What an example is made of: its tokens, its labels, and where it lies in its block."""


@dataclass(frozen=True)
class UnpackOptions:
    """What cutting shards back into examples needs of the dataset's configuration."""

    file_format: str
    seed: int
    with_trained: bool
    """Examples carry a per-token loss mask (conversations), not a masked prefix."""


@dataclass(frozen=True)
class ShardToCut:
    split: str
    path: str
    """Full path (or URL) of a committed shard."""


def shard_batches(path: str, file_format: str) -> Iterator[pa.Table | pa.RecordBatch]:
    """A shard's rows, a row group (record batch) at a time, through Beam's filesystems: memory stays one row
    group of ``--row-group-size`` blocks."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
        if file_format == "parquet":
            shard = pq.ParquetFile(handle, page_checksum_verification=True)
            for index in range(shard.num_row_groups):
                yield shard.read_row_group(index, columns=DIGEST_COLUMNS)
        else:
            reader = pa.ipc.open_file(pa.PythonFile(handle, mode="r"))
            for index in range(reader.num_record_batches):
                yield reader.get_batch(index)


class CutShardDoFn(beam.DoFn):
    """A ``ShardToCut`` in; ``SpillFile`` descriptions of its examples out, and its ``ExamplesDigest`` under
    ``DIGEST_TAG``."""

    def __init__(self, options: UnpackOptions, spill_dir: str) -> None:
        self.options = options
        self.spill_dir = spill_dir

    def process(self, shard: ShardToCut) -> Iterator[Any]:
        digest = ExamplesDigest()
        held: list[ExampleColumns] = []
        for batch in shard_batches(shard.path, self.options.file_format):
            arrays = block_arrays(batch)
            digest.add_blocks(shard.split, *arrays)
            try:
                columns = examples_of_blocks(*arrays, seed=self.options.seed, with_trained=self.options.with_trained)
            except ValueError as error:  # NotWholeExamples, or seq_lens that overrun their rows
                raise NotWholeExamples(f"{shard.path}: {error}") from error
            held.append(columns)
            if sum(part.tokens for part in held) >= SPILL_TOKENS:
                yield self._spill(shard.split, held)
                held = []
        if any(len(part) for part in held):
            yield self._spill(shard.split, held)
        yield beam.pvalue.TaggedOutput(DIGEST_TAG, digest)

    def _spill(self, split: str, parts: list[ExampleColumns]) -> SpillFile:
        """The held examples as one key-sorted spill file."""
        columns = ExampleColumns.concat(parts).sorted_by_key()
        path = spill_path(self.spill_dir, split)
        write_spill(path, columns)
        return SpillFile(split, path, len(columns), columns.tokens)


def digest_of_packed(shard: ShardBlocks) -> ExamplesDigest:
    """The examples digest of one packed bucket: what the new shards will hold."""
    blocks = shard.blocks
    digest = ExamplesDigest()
    digest.add_blocks(shard.split, blocks.input_ids, blocks.labels, blocks.row_offsets, blocks.seq_len_offsets,
                      blocks.seq_lens)
    return digest
