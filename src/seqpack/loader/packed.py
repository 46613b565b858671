"""``PackedDataset``: stream a seqpack split to PyTorch, split across ranks and workers, resumable exactly.

    ds = PackedDataset("out/", split="train", seed=0, batch_size=8)
    dl = PackedDataLoader(ds, num_workers=4, collate_fn=collate_padding_free)

How the work is shared: the order of a rank's samples is fixed by :mod:`seqpack.loader.order` (seed,
epoch, rank, world size, batch size; never the number of workers). DataLoader worker ``k`` of ``K``
yields batches ``k, k + K, k + 2K, ...`` of that order, and the DataLoader hands batches to the training
loop round-robin by worker, so the loop sees the same batches in the same order for any ``num_workers``.
Because the rank's batches come from ``lanes`` independent parts of the data in turn, a worker count that
divides ``lanes`` (1, 2, 4 or 8 with the default 8) means each worker decodes only its own row groups;
other counts stay exact but decode some row groups in more than one worker.

The state is ``(epoch, samples_seen)``: restarting at a position recomputes which row groups and which
shuffle window hold it, reads them again, and continues with exactly the samples that would have come.

A dataset that grows (``seqpack run --append`` adds generations): an epoch covers the generations present when
it starts, decided in the main process and shared with the workers, and never changes in its middle; new
generations join at the next epoch. The state names the generations it covers, so a resumed run finishes its
epoch over exactly those.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from seqpack.dataset import ShardSet, open_manifest
from seqpack.dataset.manifest_io import changed_error
from seqpack.loader import coverage
from seqpack.loader.order import EpochOrder, OrderSpec, samples_per_rank
from seqpack.loader.state import ORDER_KEYS, check_epoch, check_state, state_generations
from seqpack.loader.windows import Sample
from seqpack.loader.windows import WindowReader as _WindowReader
from seqpack.schemas import Manifest, TokenizerInfo


class PackedDataset(IterableDataset):
    """One split of a seqpack dataset as a stream of block samples (dicts of 1-D tensors).

    Each sample holds ``input_ids``, ``labels``, ``position_ids`` (int32), ``attention_mask`` (int8) and
    ``seq_lens`` (int32), as stored, and in a mixture ``source_id`` (int16, one per example, aligned with
    ``seq_lens``: an index into ``manifest.sources``). Pass them to one of the collates in
    :mod:`seqpack.loader.collate`.

    Args:
        url: the dataset directory: a local path or any fsspec URL (``gs://``, ``s3://``, ``memory://``).
        split: which split to read.
        seed: with ``epoch``, decides the order; the same seed and epoch give the same order.
        shuffle: shuffle shard and row-group order and rows inside a bounded buffer; False reads in order.
        batch_size: the DataLoader's batch size. Needed so that the order is the same for any
            ``num_workers``; ``PackedDataLoader`` sets it for you. Default: 1.
        shuffle_buffer: rows held for shuffling per rank (split across the lanes); bounds memory.
        lanes: independent parts of a rank's data read in turn; worker counts dividing it read no row
            group twice.
        rank, world_size: this process's place in data-parallel training. Default: from
            ``torch.distributed`` when it is initialised, else a single process.
        equalize: ``"pad"`` (default; repeat a few rows) or ``"drop"`` (leave out up to world_size - 1
            rows) so that every rank yields the same number of samples, as DDP needs.
        verify: check every shard's sha256 against the manifest before reading (again when generations join).
        storage_options: passed to fsspec (credentials, endpoints).
        generations: read only these generations (ids), always. Default: every generation, following the
            dataset as it grows: each epoch covers the generations present when it starts.
    """

    def __init__(
        self,
        url: str,
        *,
        split: str = "train",
        seed: int = 0,
        shuffle: bool = True,
        batch_size: int | None = None,
        shuffle_buffer: int = 2048,
        lanes: int = 8,
        rank: int | None = None,
        world_size: int | None = None,
        equalize: str = "pad",
        verify: bool = False,
        storage_options: dict[str, Any] | None = None,
        generations: list[int] | None = None,
    ) -> None:
        rank, world_size = _resolve_ranks(rank, world_size)
        self.url = str(url)
        self.split = split
        self._verify = verify
        self._storage_options = storage_options
        self._generations = None if generations is None else coverage.generation_ids(generations)
        """The generations asked for, or None to follow the dataset as it grows."""
        self._batch_size_given = batch_size is not None
        self.spec = OrderSpec(
            seed=seed,
            shuffle=shuffle,
            batch_size=batch_size or 1,
            lanes=lanes,
            shuffle_buffer=shuffle_buffer,
            rank=rank,
            world_size=world_size,
            equalize=equalize,
        )
        # Where the next pass starts, (epoch, sample), and what it covers, (newest generation id, digest of the
        # covered generations), in shared memory so that DataLoader workers, persistent ones included, see
        # set_epoch(), load_state_dict() and generations that joined. It changes only between passes: workers
        # read it when they start, and some start after the main process has received its first batches.
        self._start = torch.zeros(4, dtype=torch.int64).share_memory_()
        # Where the training loop is, (epoch, samples received); known only in the main process.
        self._progress = (0, 0)
        self._order: EpochOrder | None = None
        self._cover(self._open(self._generations, verify=verify))
        self._covered_epoch: int | None = 0
        """The epoch whose generations are decided (the main process decides at an epoch's start)."""

    # ------------------------------------------------------------------ what a trainer needs to know

    @property
    def manifest(self) -> Manifest:
        return self.shards.manifest

    @property
    def tokenizer(self) -> TokenizerInfo:
        return self.manifest.tokenizer

    @property
    def vocab_size(self) -> int:
        """Embedding rows the model needs: ``model.resize_token_embeddings(ds.vocab_size)`` if it has fewer."""
        added = self.tokenizer.added_tokens.values()
        return max([self.tokenizer.vocab_size, *(token_id + 1 for token_id in added)])

    @property
    def added_tokens(self) -> dict[str, int]:
        return dict(self.tokenizer.added_tokens)

    @property
    def max_length(self) -> int:
        return self.manifest.max_length

    @property
    def batch_size(self) -> int | None:
        return self.spec.batch_size if self._batch_size_given else None

    def bind_batch_size(self, batch_size: int) -> None:
        """Fix the batch size the order is cut into (``PackedDataLoader`` calls this); only once."""
        if self._batch_size_given and batch_size != self.spec.batch_size:
            raise ValueError(
                f"the dataset was built with batch_size={self.spec.batch_size} but the DataLoader uses "
                f"{batch_size}: pass the same batch size to both"
            )
        self.spec = OrderSpec(**{**asdict(self.spec), "batch_size": batch_size})
        self._batch_size_given = True
        self._order = None

    def __len__(self) -> int:
        """Samples this rank yields per epoch (the same on every rank), over the generations the epoch covers."""
        return self.num_samples

    @property
    def generations(self) -> list[int]:
        """The ids of the generations the current epoch covers, oldest first."""
        return self.shards.generations

    # ------------------------------------------------------------------------------ epochs and state

    @property
    def epoch(self) -> int:
        return self._position()[0]

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its beginning, unless it is the current one (then keep the position).

        Keeping the position makes the usual ``for epoch in ...: ds.set_epoch(epoch)`` loop safe after a
        resume in the middle of an epoch.
        """
        epoch = check_epoch(epoch)
        if epoch != self.epoch:
            self._set(epoch, 0)
        if self._position()[1] == 0:
            self._follow_new_generations(epoch)

    def state_dict(self) -> dict[str, Any]:
        """Where the training loop is, as plain JSON-able data; see ``load_state_dict``.

        ``generations`` lists the generations the epoch covers; ``data`` and ``num_samples`` are theirs.
        """
        return self._state_over(self.shards, self.num_samples)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``: the next sample is the one that would have followed. Settings must match.

        The rest of the state's epoch covers the generations it names (they must still be there, unchanged);
        generations appended since join at the next epoch. Every field is checked first
        (``seqpack.loader.state``): a bad state raises and changes nothing.
        """
        shards = self._shards_for_state(state)
        num_samples = self._samples_of(shards)
        epoch, seen = check_state(
            state, self._state_over(shards, num_samples), legacy_data=coverage.path_fingerprint(shards.shards)
        )
        self._cover(shards, num_samples)
        # Mid-epoch the state's generations hold to the epoch's end; at an epoch's start they are decided then.
        self._covered_epoch = epoch if seen > 0 else None
        self._set(epoch, seen)

    def fingerprint(self) -> str:
        """Identifies the covered data by content (each shard's sha256 and rows, in order), not by where it lies.

        So a state still applies after the same data is committed again into a new revision directory, and
        never to other data.
        """
        return coverage.fingerprint(self.shards.shards)

    def _path_fingerprint(self) -> str:
        """What seqpack 0.1 called the fingerprint (paths and checksums): states saved by it still apply."""
        return coverage.path_fingerprint(self.shards.shards)

    def _state_over(self, shards: ShardSet, num_samples: int) -> dict[str, Any]:
        epoch, seen = self._position()
        return {
            "epoch": epoch,
            "samples_seen": seen,
            "num_samples": num_samples,
            "split": self.split,
            "data": coverage.fingerprint(shards.shards),
            "generations": shards.generations,
            **{key: getattr(self.spec, key) for key in ORDER_KEYS},
        }

    # ----------------------------------------------------------------------------- the generations read

    def _open(self, generations: list[int] | None, *, verify: bool = False) -> ShardSet:
        return ShardSet.open(
            self.url, split=self.split, generations=generations, verify=verify, storage_options=self._storage_options
        )

    def _samples_of(self, shards: ShardSet) -> int:
        try:
            return samples_per_rank(shards.num_rows, self.spec.world_size, self.spec.equalize)
        except ValueError as exc:
            raise ValueError(f"{self.url} split {self.split!r} generations {shards.generations}: {exc}") from exc

    def _cover(self, shards: ShardSet, num_samples: int | None = None) -> None:
        """Read ``shards`` from now on, and tell the workers (at their next pass) which generations they are."""
        if getattr(self, "shards", None) is not None and self.shards is not shards:
            self.shards.close()
        self.num_samples = self._samples_of(shards) if num_samples is None else num_samples
        self.shards = shards
        self._order = None
        start = self._start.numpy()
        start[2], start[3] = coverage.cover_key(shards)

    def _follow_new_generations(self, epoch: int) -> None:
        """At the start of ``epoch`` (main process): cover every generation the dataset has now.

        The covered ones must still be there unchanged (else :class:`DatasetChangedError`); once per epoch.
        """
        if self._generations is not None or self._covered_epoch == epoch:
            return
        listed = self.shards.listed_generations()
        if listed != self.shards.generations:
            self._cover(self._open(listed, verify=self._verify))
        self._covered_epoch = epoch

    def _follow_main_process(self) -> None:
        """In a worker: cover the generations the main process chose for this pass, if this copy covers others
        (a persistent worker, after generations joined or ``load_state_dict``)."""
        newest, digest = (int(v) for v in self._start[2:].tolist())
        if (newest, digest) == coverage.cover_key(self.shards):
            return
        # The main process covers every generation up to ``newest`` (load_state_dict allows no other choice).
        chosen = [i for i in self.shards.listed_generations() if i <= newest]
        shards = self._open(chosen)
        if coverage.cover_key(shards) != (newest, digest):
            shards.close()
            raise changed_error(shards.location, f"generations {chosen} are not the ones the loader chose")
        self._cover(shards)

    def _shards_for_state(self, state: Any) -> ShardSet:
        """The shards of the generations ``state`` covers; raises naming the problem if they cannot be read."""
        wanted = state_generations(state)
        if self._generations is not None:
            if wanted is not None and wanted != self._generations:
                raise ValueError(
                    f"the loader state covers generations {wanted}, but this dataset reads generations "
                    f"{self._generations}: build it with generations={wanted}"
                )
            return self.shards
        manifest = open_manifest(self.url, storage_options=self._storage_options)
        wanted = coverage.generations_for_state(wanted, state, manifest, split=self.split, url=self.url)
        return self.shards if wanted == self.shards.generations else self._open(wanted)

    # ------------------------------------------------------- for a DataLoader that counts the batches

    # With workers, only the main process knows which samples the loop has received. A DataLoader that counts
    # them (``PackedDataLoader``) keeps the position with these three calls, so that ``state_dict()`` is right:
    #
    #     epoch, seen = ds.start_pass()             # before the workers start
    #     ds.mark_received(epoch, seen + n)         # after each batch of n samples reaches the loop
    #     ds.finish_pass(epoch)                     # after the last batch of the epoch

    def start_pass(self) -> tuple[int, int]:
        """Make the loop's position (epoch, samples received) the point where the next pass starts; return it.

        Call it before the pass starts its workers: they read the start when they begin.
        """
        epoch, seen = self._position()
        if seen == 0:
            self._follow_new_generations(epoch)
        self._set(epoch, seen)
        return epoch, seen

    def mark_received(self, epoch: int, samples_seen: int) -> None:
        """The loop has received the first ``samples_seen`` samples of ``epoch``: ``state_dict()`` reports it.

        Workers already running are not moved: they go on from where the pass started.
        """
        self._progress = (epoch, samples_seen)

    def finish_pass(self, epoch: int) -> None:
        """The loop has received the whole of ``epoch``: the next pass starts epoch + 1 from its beginning."""
        self._set(epoch + 1, 0)

    def _set(self, epoch: int, seen: int) -> None:
        """Move both the loop's position and the next pass's start (between passes only)."""
        self._progress = (epoch, seen)
        start = self._start.numpy()  # a numpy view writes in 0.2 µs, a tensor item in 3 µs
        start[0] = epoch
        start[1] = seen

    def _normalized(self, epoch: int, seen: int) -> tuple[int, int]:
        """A finished epoch is the start of the next one."""
        return (epoch + 1, 0) if seen >= self.num_samples else (epoch, seen)

    def _position(self) -> tuple[int, int]:
        return self._normalized(*self._progress)

    def order(self, epoch: int) -> EpochOrder:
        if self._order is None or self._order.epoch != epoch:
            self._order = EpochOrder(self.shards.unit_rows, self.spec, epoch)
        return self._order

    # -------------------------------------------------------------------------------------- iterate

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        if info is None:
            self.start_pass()  # a no-op after PackedDataLoader's own call
        else:
            self._follow_main_process()
        # Each pass (in each worker) starts by checking that the covered generations were not replaced since they
        # were opened; shards opened during the pass are checked as they are opened.
        self.shards.check_unchanged()
        epoch, start = self._normalized(*(int(v) for v in self._start[:2].tolist()))
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        return self._samples(epoch, start, worker, workers)

    def _samples(self, epoch: int, start: int, worker: int, workers: int) -> Iterator[Sample]:
        """Worker ``worker`` of ``workers`` yields batches ``worker``, ``worker + workers``, ... from ``start``."""
        order = self.order(epoch)
        in_main = get_worker_info() is None
        batch = self.spec.batch_size
        reader = _WindowReader(self.shards, order)
        for first in range(start + worker * batch, order.num_samples, workers * batch):
            positions = np.arange(first, min(first + batch, order.num_samples))
            lanes, windows, offsets = order.locate(positions)
            for position, lane, window, offset in zip(
                positions.tolist(), lanes.tolist(), windows.tolist(), offsets.tolist(), strict=True
            ):
                sample = reader.sample(lane, window, offset)
                if in_main:
                    self._set(epoch, position + 1)
                yield sample
        if in_main:
            self._set(epoch + 1, 0)


def _resolve_ranks(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None and world_size is None:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1
    if rank is None or world_size is None:
        raise ValueError("pass both rank and world_size, or neither (then torch.distributed decides)")
    return rank, world_size
