"""The examples digest of a committed generation, recomputed from its shards (``seqpack.examples_digest``).

``seqpack compact`` records, as the new generation's ``examples_digest``, the digest of the examples of the
generations it replaced; ``seqpack verify`` recomputes it here from the new shards. Equal digests prove that
compaction kept every example (tokens, labels and split), none lost, none added. No Beam, no torch.

    str(generation_digest(location, manifest, manifest.generation(4))) == manifest.generation(4).examples_digest
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from seqpack.dataset.footers import shard_errors
from seqpack.dataset.location import Location
from seqpack.examples_digest import ExamplesDigest
from seqpack.schemas import Manifest, ShardInfo
from seqpack.schemas.manifest import GenerationInfo

DIGEST_COLUMNS = ["input_ids", "labels", "seq_lens"]


def generation_digest(location: Location, manifest: Manifest, generation: GenerationInfo) -> ExamplesDigest:
    """The digest of every example in ``generation``'s shards, all splits, read a row group at a time."""
    digest = ExamplesDigest()
    for split, info in sorted(generation.splits.items()):
        for shard in info.shards:
            digest.merge(shard_digest(location, manifest.file_format, shard, split))
    return digest


def shard_digest(location: Location, file_format: str, shard: ShardInfo, split: str) -> ExamplesDigest:
    """The digest of one shard's examples; a ``DatasetFormatError`` naming the shard if it cannot be read."""
    digest = ExamplesDigest()
    with shard_errors(location, file_format, shard), location.fs.open(location.path(shard.path), "rb") as handle:
        if file_format == "parquet":
            reader = pq.ParquetFile(handle, page_checksum_verification=True)
            for index in range(reader.num_row_groups):  # a row group at a time: memory stays one row group
                digest.add_table(split, reader.read_row_group(index, columns=DIGEST_COLUMNS))
        else:
            reader = pa.ipc.open_file(handle)
            for index in range(reader.num_record_batches):
                digest.add_table(split, reader.get_batch(index))
    return digest
