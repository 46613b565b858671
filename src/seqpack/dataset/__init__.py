"""Open a finished seqpack dataset on any fsspec filesystem, check it, and read it one row group at a time.

This package needs no torch: ``seqpack verify`` and ``seqpack inspect`` use it, and so does the PyTorch
loader (:mod:`seqpack.loader`), which only adds the ordering and the tensors.

    manifest = open_manifest("gs://bucket/out")        # refuses unfinished and foreign directories
    summary = verify_dataset("gs://bucket/out")         # sha256 of every shard, names the bad one
    files = data_files("gs://bucket/out", "train")      # the committed shards, for other readers
    shards = ShardSet.open("gs://bucket/out", split="train")

Every reader here pins the generations it opened and reads the manifest again whenever it opens a shard, so a
dataset replaced by ``seqpack run --overwrite`` (or compacted) while it is being read raises
:class:`DatasetChangedError` instead of mixing two datasets. ``seqpack run --append`` only adds a generation:
readers of the older ones read on (``ShardSet.open(url, generations=[1])`` reads generation 1 only).

- :mod:`~seqpack.dataset.location`: where a dataset lies (``Location``).
- :mod:`~seqpack.dataset.manifest_io`: the manifest, the messages for a missing one, ``data_files``.
- :mod:`~seqpack.dataset.verify`: ``verify_dataset``.
- :mod:`~seqpack.dataset.digest`: a compacted generation's examples digest, recomputed from its shards.
- :mod:`~seqpack.dataset.footers`: a shard's footer (schema and unit sizes).
- :mod:`~seqpack.dataset.shards`: ``ShardSet``, reading units and noticing a new commit.
- :mod:`~seqpack.dataset.arrow_footer`: Arrow IPC batch sizes from the file footer.
"""

from seqpack.dataset.arrow_footer import ipc_batch_rows as ipc_batch_rows
from seqpack.dataset.footers import COLUMNS as COLUMNS
from seqpack.dataset.footers import ShardLayout as ShardLayout
from seqpack.dataset.location import Location
from seqpack.dataset.manifest_io import FILE_FORMATS as FILE_FORMATS
from seqpack.dataset.manifest_io import DatasetChangedError, data_files, open_manifest
from seqpack.dataset.shards import ShardSet
from seqpack.dataset.verify import VerifySummary, verify_dataset

# The names above imported ``as`` themselves stay importable from here, as before the package was split; their
# home is the module named.
__all__ = [
    "DatasetChangedError",
    "Location",
    "ShardSet",
    "VerifySummary",
    "data_files",
    "open_manifest",
    "verify_dataset",
]
