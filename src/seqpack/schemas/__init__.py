"""The on-disk contract between the writer (Beam pipeline) and the reader (loader, verify, inspect).

Everything that both sides need to agree on is defined here once: the Arrow schema of a shard, the
manifest that marks a dataset as complete, the statistics file, and the reason codes of rejected records.
"""

from seqpack.schemas.columns import (
    BLOCK_SCHEMA,
    FORMAT_NAME,
    FORMAT_VERSION,
    blocks_to_table,
    check_schema,
    serialize_shard,
)
from seqpack.schemas.layout import (
    LOCK_NAME,
    REJECTED_FILE,
    REPORT_NAME,
    STAGING_NAME,
    TOKENIZER_DIR,
    WATCH_STATUS_NAME,
    revision_dir,
    revision_of,
)
from seqpack.schemas.manifest import (
    MANIFEST_NAME,
    STATS_NAME,
    DatasetFormatError,
    Manifest,
    ShardInfo,
    SplitInfo,
    TokenizerInfo,
    safe_relative_path,
)
from seqpack.schemas.rejected import REASONS, RejectedLine

__all__ = [
    "BLOCK_SCHEMA",
    "LOCK_NAME",
    "REJECTED_FILE",
    "REPORT_NAME",
    "STAGING_NAME",
    "TOKENIZER_DIR",
    "WATCH_STATUS_NAME",
    "revision_dir",
    "revision_of",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "STATS_NAME",
    "DatasetFormatError",
    "Manifest",
    "ShardInfo",
    "SplitInfo",
    "TokenizerInfo",
    "blocks_to_table",
    "check_schema",
    "safe_relative_path",
    "serialize_shard",
    "REASONS",
    "RejectedLine",
]
