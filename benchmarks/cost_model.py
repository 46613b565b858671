"""The shuffle's cost model: object-store requests, bytes read and memory as functions of the data size.

    python benchmarks/cost_model.py            # the tables of docs/scaling.md, in markdown

Every figure follows from the formulas in docs/scaling.md and the constants below (seqpack's own, imported, so a
change to them changes the tables). The numbers are what the design implies, not measurements: the measured
counterpart at small scale is ``benchmarks/scale.py``.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from seqpack.config import RunConfig
from seqpack.transforms.shuffle import SPILL_BATCH_ROWS, SPILL_TOKENS

TOKENS = (10**9, 10**10, 10**11, 10**12)
WORKERS = (10, 100, 1000)
BYTES_PER_TOKEN = 4
"""int32 ids; keys, offsets and masks add about 24 bytes per example (counted separately)."""
EXAMPLE_BYTES = 24
DESCRIPTION_BYTES = 200
"""One pickled ``SpillFile`` description (split, path, counts)."""
OPEN_SECONDS = 0.03
"""One object-store request's latency (GCS, S3: tens of milliseconds)."""
READ_BYTES_PER_SECOND = 100e6
"""What one worker reads from an object store (or a runner's shuffle) per second."""


@dataclass(frozen=True)
class Assumptions:
    """The data and run shape the tables assume: instruction-tuning examples of ``mean_length`` tokens."""

    mean_length: int = 512
    bucket_tokens: int = RunConfig.__dataclass_fields__["bucket_tokens"].default
    spill_tokens: int = SPILL_TOKENS
    batch_rows: int = SPILL_BATCH_ROWS


@dataclass(frozen=True)
class Costs:
    """One shuffle path at ``tokens`` tokens: totals over the whole job."""

    spill_files: int
    buckets: int
    requests: float
    """Object-store requests on the spill files: writes, footer reads, record-batch reads."""
    bytes_read: float
    runner_elements: float
    side_input_bytes: float
    """What every pack worker holds besides its bucket: the spill descriptions (spill path only)."""


def shape(tokens: int, a: Assumptions) -> tuple[int, int, int, int]:
    """(examples, spill files, buckets, record batches per spill file)."""
    examples = tokens // a.mean_length
    files = max(1, math.ceil(tokens / a.spill_tokens))
    buckets = max(1, math.ceil(tokens / a.bucket_tokens))
    rows_per_file = math.ceil(examples / files)
    batches = max(1, math.ceil(rows_per_file / a.batch_rows))
    return examples, files, buckets, batches


def data_bytes(tokens: int, a: Assumptions) -> float:
    return tokens * BYTES_PER_TOKEN + tokens / a.mean_length * EXAMPLE_BYTES


def spill_path(tokens: int, a: Assumptions) -> Costs:
    """Each bucket opens every spill file and reads every record batch that overlaps its key range.

    A bucket's rows in a file of R record batches lie in about ceil(R / K) of them (one more at a seam, not
    counted: the model is a lower bound for this path)."""
    _, files, buckets, batches = shape(tokens, a)
    spill_bytes = data_bytes(tokens, a)
    batches_per_bucket = min(batches, math.ceil(batches / buckets))
    return Costs(
        spill_files=files,
        buckets=buckets,
        requests=files + buckets * files * (1 + batches_per_bucket),  # writes; then footer + batches per pair
        bytes_read=buckets * files * (spill_bytes / files) * batches_per_bucket / batches,
        runner_elements=files,
        side_input_bytes=files * DESCRIPTION_BYTES,
    )


def runner_path(tokens: int, a: Assumptions) -> Costs:
    """Each spill file is read once and cut into per-bucket chunks; the runner's shuffle groups them by bucket."""
    examples, files, buckets, _ = shape(tokens, a)
    rows_per_file = math.ceil(examples / files)
    return Costs(
        spill_files=files,
        buckets=buckets,
        requests=2 * files,  # one write and one read per spill file
        bytes_read=data_bytes(tokens, a) * 2,  # the spill files once, the runner's shuffle once
        runner_elements=files * min(buckets, rows_per_file) + buckets,  # chunks, and one marker per bucket
        side_input_bytes=0.0,
    )


def _si(value: float) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.3g}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 360 else f"{seconds:.0f} s"


def totals_table(a: Assumptions) -> list[str]:
    lines = [
        "| tokens | spill files F | buckets K | path | requests | bytes read | read / data | requests per 10⁹ tokens |"
        " elements through the runner | side input per pack worker |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tokens in TOKENS:
        for name, costs in (("spill", spill_path(tokens, a)), ("runner", runner_path(tokens, a))):
            data = data_bytes(tokens, a)
            lines.append(
                f"| {tokens:.0e} | {costs.spill_files:,} | {costs.buckets:,} | {name} | {_si(costs.requests)} | "
                f"{_si(costs.bytes_read)}B | {costs.bytes_read / data:,.1f}× | {_si(costs.requests / tokens * 1e9)} | "
                f"{_si(costs.runner_elements)} | {_si(costs.side_input_bytes)}B |"
            )
    return lines


def time_table(a: Assumptions) -> list[str]:
    """Shuffle time per worker: its share of the opens at one latency each, plus its share of the bytes read."""
    header = " | ".join(f"{w:,} workers: spill / runner" for w in WORKERS)
    lines = [f"| tokens | {header} |", "|---|" + "---|" * len(WORKERS)]
    for tokens in TOKENS:
        cells = []
        for workers in WORKERS:
            spill, runner = spill_path(tokens, a), runner_path(tokens, a)
            cells.append(" / ".join(_hours((c.requests * OPEN_SECONDS + c.bytes_read / READ_BYTES_PER_SECOND) / workers)
                                    for c in (spill, runner)))
        lines.append(f"| {tokens:.0e} | " + " | ".join(cells) + " |")
    return lines


def tables(a: Assumptions | None = None) -> str:
    a = a or Assumptions()
    return "\n".join(
        [
            f"Assumptions: examples of {a.mean_length} tokens, `--bucket-tokens` {a.bucket_tokens:,}, a spill file "
            f"per {a.spill_tokens:,} tokens, record batches of {a.batch_rows:,} rows, {BYTES_PER_TOKEN} bytes per "
            f"token + {EXAMPLE_BYTES} per example.",
            "",
            *totals_table(a),
            "",
            f"Shuffle time per worker ({OPEN_SECONDS * 1000:.0f} ms a request, {READ_BYTES_PER_SECOND / 1e6:.0f} MB/s "
            "read per worker; the runner's shuffle counted like a read):",
            "",
            *time_table(a),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mean-length", type=int, default=Assumptions.mean_length)
    args = parser.parse_args()
    print(tables(Assumptions(mean_length=args.mean_length)))


if __name__ == "__main__":
    main()
