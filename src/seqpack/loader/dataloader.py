"""``PackedDataLoader``: a ``torch.utils.data.DataLoader`` that knows how far the training loop got.

With workers, samples are produced in other processes ahead of time, so only the main process knows
which batches the loop has actually received. This DataLoader counts them and keeps the dataset's
position up to date, so that, in the style of ``torchdata``'s ``StatefulDataLoader``:

    dl = PackedDataLoader(ds, batch_size=8, num_workers=4, collate_fn=collate_padding_free)
    ...
    torch.save({"model": model.state_dict(), "data": dl.state_dict()}, path)
    # after a restart, with any num_workers:
    dl.load_state_dict(torch.load(path)["data"])      # the next batch is the one that would have come

At the end of a full pass it moves to the next epoch (a new order), so a plain ``for batch in dl`` loop
per epoch needs no ``set_epoch`` call (calling it with the current epoch is harmless).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader

from seqpack.loader.packed import PackedDataset


class PackedDataLoader(DataLoader):
    """A DataLoader over a :class:`PackedDataset` with ``state_dict()``/``load_state_dict()``.

    Takes the DataLoader's usual keyword arguments. ``batch_size`` defaults to the dataset's; the two
    must agree, because the dataset cuts its order into batches of that size. ``in_order=False`` is
    refused: it would make the order depend on worker timing.
    """

    def __init__(self, dataset: PackedDataset, batch_size: int | None = None, **kwargs: Any) -> None:
        if not isinstance(dataset, PackedDataset):
            raise TypeError(f"PackedDataLoader needs a PackedDataset, not {type(dataset).__name__}")
        if kwargs.get("in_order", True) is False:
            raise ValueError("in_order=False makes the batch order depend on worker timing; resume would not be exact")
        batch_size = batch_size or dataset.batch_size or 1
        dataset.bind_batch_size(batch_size)
        super().__init__(dataset, batch_size=batch_size, **kwargs)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        dataset: PackedDataset = self.dataset  # type: ignore[assignment]
        epoch, seen = dataset.start_pass()
        total = len(dataset)
        if self._IterableDataset_len_called is not None:
            # An epoch may cover more generations than the last (a dataset that grows): torch compares the
            # batches it yields with the length it last reported and would warn.
            self._IterableDataset_len_called = total
        step = self.batch_size or 1
        for batch in super().__iter__():
            seen = min(seen + step, total)
            dataset.mark_received(epoch, seen)
            yield batch
        dataset.finish_pass(epoch)

    def state_dict(self) -> dict[str, Any]:
        """The dataset's state: epoch, samples the loop has received, and the settings that fix the order."""
        return self.dataset.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)  # type: ignore[attr-defined]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
