"""Reading a rank's shuffle windows: decoded row groups whose rows become tensors without copying.

``PackedDataset`` asks ``WindowReader`` for the sample at (lane, window, offset) of its order; the reader keeps
only the row groups of the windows that are live, so memory is bounded by the shuffle buffer.
"""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import torch

from seqpack.dataset import COLUMNS, ShardSet
from seqpack.loader.order import EpochOrder

Sample = dict[str, torch.Tensor]
_NUMPY_TYPES = {pa.int32(): np.dtype(np.int32), pa.int8(): np.dtype(np.int8), pa.int16(): np.dtype(np.int16)}


class Unit:
    """A decoded row group whose rows become tensor views without copying.

    pyarrow marks its buffers read-only, and torch warns when wrapping those; these buffers are private heap
    memory that this reader alone holds (Arrow IPC shards are read, not memory-mapped, for that reason), so
    wrapping them is safe, and it saves copying every row group once more.
    """

    def __init__(self, table: pa.Table) -> None:
        self.columns: dict[str, tuple[list[int], torch.Tensor]] = {}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not writable.*")
            # A mixture's units also have ``source_id`` (aligned with ``seq_lens``): samples carry it too.
            for name in COLUMNS + tuple(n for n in table.column_names if n not in COLUMNS):
                offsets, values = list_arrays(table.column(name).combine_chunks())
                self.columns[name] = (offsets.tolist(), torch.from_numpy(values))

    def row(self, row: int) -> Sample:
        return {name: values[offsets[row] : offsets[row + 1]] for name, (offsets, values) in self.columns.items()}


def list_arrays(array: pa.ListArray) -> tuple[np.ndarray, np.ndarray]:
    """Zero-copy numpy views of a list array's offsets (into ``values``) and values.

    Read from the Arrow buffers directly: ``Array.to_numpy`` imports pandas on first use, which costs every
    DataLoader worker a third of a second.
    """
    offsets = _view(array.buffers()[1], np.dtype(np.int32), len(array) + 1, array.offset)
    child = array.values
    return offsets, _view(child.buffers()[1], _NUMPY_TYPES[child.type], len(child), child.offset)


def _view(buffer: pa.Buffer | None, dtype: np.dtype, count: int, offset: int) -> np.ndarray:
    if buffer is None or count == 0:
        return np.zeros(count, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=count, offset=offset * dtype.itemsize)


class Window:
    def __init__(self, index: int, units: np.ndarray, rows: np.ndarray) -> None:
        self.index = index
        self.units = units.tolist()
        self.rows = rows.tolist()
        self.needed = set(self.units)


class WindowReader:
    """Reads the shuffle windows one process needs; holds only its live windows' row groups in memory."""

    def __init__(self, shards: ShardSet, order: EpochOrder) -> None:
        self.shards = shards
        self.order = order
        self.windows: dict[int, Window] = {}
        self.units: dict[int, Unit] = {}

    def sample(self, lane: int, window: int, offset: int) -> Sample:
        current = self.windows.get(lane)
        if current is None or current.index != window:
            current = self._load(lane, window)
        return self.units[current.units[offset]].row(current.rows[offset])

    def _load(self, lane: int, window: int) -> Window:
        units, rows = self.order.units_of(self.order.window_rows(lane, window))
        loaded = Window(window, units, rows)
        self.windows[lane] = loaded
        live = set().union(*(w.needed for w in self.windows.values()))
        for unit in [u for u in self.units if u not in live]:
            del self.units[unit]
        for unit in sorted(loaded.needed - self.units.keys()):
            self.units[unit] = Unit(self.shards.read_unit(unit))
        return loaded
