"""Start-up hook of ``benchmarks/scale.py``: in every Python process started with this directory on
``PYTHONPATH`` and ``SEQPACK_COUNT_DIR`` set (the ``seqpack run`` driver, Beam SDK workers, Dask workers), count
the shuffle's I/O with ``benchmarks/countio.py``. Without ``SEQPACK_COUNT_DIR`` it does nothing."""

import os
import sys

if os.environ.get("SEQPACK_COUNT_DIR"):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import countio

    countio.install(os.environ["SEQPACK_COUNT_DIR"], float(os.environ.get("SEQPACK_OPEN_LATENCY_MS", "0")),
                    int(os.environ.get("SEQPACK_SPILL_TOKENS", "0")) or None,
                    int(os.environ.get("SEQPACK_RECORDS_PER_BATCH", "0")) or None)
