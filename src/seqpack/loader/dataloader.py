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

For gradient accumulation, ``dl.accumulation_steps(n)`` hands the loop n batches at a time with the trained
tokens of all n, the divisor that makes the accumulated loss the per-token mean of the whole step.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader

from seqpack import IGNORE_INDEX
from seqpack.loader.packed import PackedDataset


class AccumulationStep(NamedTuple):
    """The micro-batches of one optimizer step and the trained tokens of all of them together.

    ``num_items_in_batch`` (an int, like the collates') is what to pass to the model with each micro-batch,
    ``model(**{**batch, "num_items_in_batch": step.num_items_in_batch})``, so that the summed losses are the mean
    over every trained token of the step rather than a mean of per-batch means.
    """

    batches: list[Any]
    num_items_in_batch: int


def trained_tokens(batch: Mapping[str, Any]) -> int:
    """The label positions a causal LM's loss counts in ``batch``: its ``num_items_in_batch``, as seqpack's
    collates give it, or else ``labels[..., 1:]`` that are not -100 (the count transformers' Trainer makes)."""
    if "num_items_in_batch" in batch:
        return int(batch["num_items_in_batch"])
    if "labels" not in batch:
        raise KeyError(
            f"cannot count the trained tokens of a batch with neither 'num_items_in_batch' nor 'labels' (it has "
            f"{sorted(batch)}): use one of seqpack.loader's collates, or a collate_fn that returns labels"
        )
    return int((torch.as_tensor(batch["labels"])[..., 1:] != IGNORE_INDEX).sum())


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

    def accumulation_steps(self, n: int) -> Iterator[AccumulationStep]:
        """One pass, n batches at a time, each group with the trained tokens of its n batches (the last may
        be shorter).

        The n batches are taken from the loader before the group is handed over, so they count as received
        then: save ``state_dict()`` between groups (after the optimizer step), and a resumed run starts at
        the next group. Saved in the middle of a group, the state would skip the group's unused batches.

            for step in dl.accumulation_steps(4):
                for batch in step.batches:
                    model(**{**batch, "num_items_in_batch": step.num_items_in_batch}).loss.backward()
                optimizer.step(); optimizer.zero_grad()
        """
        if n < 1:
            raise ValueError(f"accumulation_steps needs n >= 1 batches per step, not {n}")
        batches = iter(self)
        while group := list(itertools.islice(batches, n)):
            yield AccumulationStep(group, sum(trained_tokens(batch) for batch in group))

    def state_dict(self) -> dict[str, Any]:
        """The dataset's state: epoch, samples the loop has received, and the settings that fix the order."""
        return self.dataset.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)  # type: ignore[attr-defined]

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
