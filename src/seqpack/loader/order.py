"""The sample order of one rank's epoch: a pure function of the settings, the epoch and the row-group sizes.

Nothing here reads data, and nothing depends on the number of DataLoader workers. That is what makes
resuming exact: a position in this order (a count of samples) is the whole state, and any process can
recompute which row sits at any position.

How the order is built, for a split whose shards have been cut into *units* (Parquet row groups or Arrow
record batches):

1. The units are put in a seeded order for the epoch; this shuffles shard order and row-group order at
   once. Their rows, one after the other, form the epoch's *stream*.
2. Each rank takes a contiguous range of ``num_samples`` rows of the stream, so ranks read disjoint row
   groups. With ``equalize="pad"`` the last range wraps round to the stream's start (a few rows repeat);
   with ``"drop"`` the stream's last ``total % world_size`` rows are left out this epoch.
3. A rank's range is cut into ``lanes`` contiguous pieces. Batch ``j`` of the rank comes from lane
   ``j % lanes``, so DataLoader workers can share out the lanes and each read only its own row groups.
4. Within a lane, rows are shuffled inside consecutive windows of ``window`` rows: the bounded
   in-memory shuffle buffer. Its permutations come from a hash of (seed, epoch, rank, lane, window), so
   a restarted process rebuilds exactly the buffer it had.

With ``shuffle=False`` there is one lane and no permutation: a rank reads its range in file order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EQUALIZE = ("pad", "drop")
_MASK64 = (1 << 64) - 1
_UNITS, _WINDOW = 0, 1


@dataclass(frozen=True)
class OrderSpec:
    """Everything besides the data and the epoch that decides the order; saved with the resume state."""

    seed: int = 0
    shuffle: bool = True
    batch_size: int = 1
    lanes: int = 8
    shuffle_buffer: int = 2048
    rank: int = 0
    world_size: int = 1
    equalize: str = "pad"

    def __post_init__(self) -> None:
        if self.equalize not in EQUALIZE:
            raise ValueError(f"equalize must be one of {EQUALIZE}, not {self.equalize!r}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} is not in [0, world_size {self.world_size})")
        for name in ("batch_size", "lanes", "shuffle_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


def samples_per_rank(total: int, world_size: int, equalize: str) -> int:
    """Every rank gets the same count (DDP hangs otherwise): pad by repetition up, or drop the remainder."""
    if total == 0:
        raise ValueError("the split has no rows")
    if equalize == "pad":
        return -(-total // world_size)
    if total < world_size:
        raise ValueError(
            f"the split has {total} rows, fewer than world_size {world_size}: with equalize='drop' some ranks "
            "would get none; use equalize='pad'"
        )
    return total // world_size


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's mixer: a bijection on uint64 with good avalanche, identical on every platform."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def hashed_permutation(size: int, *key: int) -> np.ndarray:
    """A permutation of ``range(size)`` determined by ``key`` alone (not by numpy's RNG version)."""
    state = np.zeros(1, dtype=np.uint64)
    for part in key:
        state = _splitmix(state ^ np.uint64(part & _MASK64))
    keys = _splitmix(state ^ np.arange(size, dtype=np.uint64))
    return np.argsort(keys, kind="stable")


class EpochOrder:
    """Where each of one rank's samples comes from in one epoch.

    ``PackedDataset`` builds one per epoch; tests and tools can ask it which row feeds which sample:

        order = EpochOrder(unit_rows, OrderSpec(seed=0, batch_size=8), epoch=3)
        lane, window, offset = order.locate(np.arange(16))  # the first two batches
    """

    def __init__(self, unit_rows: np.ndarray, spec: OrderSpec, epoch: int) -> None:
        self.spec = spec
        self.epoch = epoch
        unit_rows = np.asarray(unit_rows, dtype=np.int64)
        self.total = int(unit_rows.sum())
        self.num_samples = samples_per_rank(self.total, spec.world_size, spec.equalize)
        if spec.shuffle:
            self.unit_order = hashed_permutation(len(unit_rows), spec.seed, epoch, _UNITS)
        else:
            self.unit_order = np.arange(len(unit_rows))
        self.unit_starts = np.concatenate([[0], np.cumsum(unit_rows[self.unit_order])])
        self.rank_start = spec.rank * self.num_samples
        self._cut_lanes()

    def _cut_lanes(self) -> None:
        spec, n = self.spec, self.num_samples
        batch = spec.batch_size
        batches = -(-n // batch)
        lanes = min(spec.lanes, batches) if spec.shuffle else 1
        per_lane_batches = (batches - np.arange(lanes) + lanes - 1) // lanes
        self.lane_rows = per_lane_batches * batch
        self.lane_rows[(batches - 1) % lanes] -= batches * batch - n  # the one short batch is the last
        self.lane_starts = np.concatenate([[0], np.cumsum(self.lane_rows)[:-1]])
        self.lanes = lanes
        self.window = -(-spec.shuffle_buffer // lanes)

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For sample positions of this rank's epoch: their lane, window in that lane, and place in it."""
        positions = np.asarray(positions, dtype=np.int64)
        batch = self.spec.batch_size
        batch_index, within = np.divmod(positions, batch)
        lane = batch_index % self.lanes
        in_lane = (batch_index // self.lanes) * batch + within
        window, offset = np.divmod(in_lane, self.window)
        return lane, window, offset

    def window_rows(self, lane: int, window: int) -> np.ndarray:
        """The stream rows of one window, in the order the window yields them."""
        size = min(self.window, int(self.lane_rows[lane]) - window * self.window)
        if size <= 0:
            raise IndexError(f"lane {lane} has no window {window}")
        if self.spec.shuffle:
            spec = self.spec
            shuffled = hashed_permutation(size, spec.seed, self.epoch, _WINDOW, spec.rank, lane, window)
        else:
            shuffled = np.arange(size)
        first = self.rank_start + int(self.lane_starts[lane]) + window * self.window
        return (first + shuffled) % self.total

    def units_of(self, stream_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which unit (index into the split's unit list) and which row of it each stream row is."""
        slot = np.searchsorted(self.unit_starts, stream_rows, side="right") - 1
        return self.unit_order[slot], stream_rows - self.unit_starts[slot]

    def stream_rows(self, positions: np.ndarray) -> np.ndarray:
        """The stream row at each sample position (for tests and tools; the loader works window by window)."""
        lanes, windows, offsets = self.locate(positions)
        out = np.empty(len(lanes), dtype=np.int64)
        for key in set(zip(lanes.tolist(), windows.tolist(), strict=True)):
            chosen = (lanes == key[0]) & (windows == key[1])
            out[chosen] = self.window_rows(*key)[offsets[chosen]]
        return out
