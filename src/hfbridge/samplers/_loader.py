"""``build_batch_sampler``, the one place a batching configuration becomes a batch sampler, and
``build_dataloader``: a DataLoader over an adapter, with our batching, seeded workers, exact state and
per-epoch collators that reach persistent workers.
"""

from __future__ import annotations

import multiprocessing
import random
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Literal, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from hfbridge._checks import check_choice, check_non_negative_int, check_positive_int, check_type
from hfbridge._distributed import resolve_replicas
from hfbridge.samplers._balanced import BatchedSampler, ClassBalancedSampler
from hfbridge.samplers._batch_samplers import (
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
)
from hfbridge.samplers._state import Uneven, uneven_options
from hfbridge.samplers._streaming import BucketedIterable, agreed_batches, ranks_must_agree

__all__ = [
    "BATCHINGS",
    "Batching",
    "EpochSyncedCollator",
    "ResumableDataLoader",
    "build_batch_sampler",
    "build_dataloader",
    "dataset_labels",
    "dataset_lengths",
    "resolve_batching",
    "seed_worker",
    "set_collator_epoch",
]

Batching = Literal["length", "tokens", "random", "balanced"]
BATCHINGS: tuple[str, ...] = ("length", "tokens", "random", "balanced")
# a token budget without a row cap warns when its shortest rows would make a batch larger than this
UNCAPPED_ROWS_WARNING = 256


def resolve_batching(batching: str | None, batch_size: int | None, max_tokens: int | None) -> Batching:
    """The batching a configuration asks for: ``max_tokens`` alone means ``"tokens"``, neither ``"length"``.

    Raises:
        ValueError: for an unknown ``batching``, a ``max_tokens`` that contradicts it, or a missing size.
    """
    if batching is None:
        batching = "length" if max_tokens is None else "tokens"
    check_choice("batching", batching, BATCHINGS)
    check_positive_int("batch_size", batch_size, allow_none=True)
    check_positive_int("max_tokens", max_tokens, allow_none=True)
    if batching == "tokens" and max_tokens is None:
        raise ValueError("`max_tokens` is required with batching='tokens'; got None")
    if batching != "tokens" and max_tokens is not None:
        raise ValueError(
            f"`max_tokens`={max_tokens} conflicts with `batching`={batching!r}: a token budget means "
            "batching='tokens' (or leave `batching` unset), or drop `max_tokens`"
        )
    if batching != "tokens" and batch_size is None:
        raise ValueError(f"`batch_size` is required with batching={batching!r}; got None")
    return cast(Batching, batching)


def dataset_lengths(
    dataset: Any, *, length_column: str = "length", input_name: str = "input_ids"
) -> np.ndarray:
    """Token counts per row without reading rows: ``.lengths`` (hfbridge adapters), a ``length`` column, or
    the Arrow list lengths of ``input_ids`` (a ``datasets.Dataset`` tokenized by ``.map``).

    Raises:
        TypeError: when none of these is available.
    """
    lengths = getattr(dataset, "lengths", None)
    if lengths is not None:
        return np.asarray(lengths, dtype=np.int64)
    columns = getattr(dataset, "column_names", None)
    if columns is not None and (length_column in columns or input_name in columns):
        import pyarrow.compute as pc

        arrow = dataset.with_format("arrow")
        if length_column in columns:
            return np.asarray(arrow[length_column], dtype=np.int64)
        offsets = pc.list_value_length(arrow[input_name])
        return np.asarray(offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
    raise TypeError(
        f"cannot find lengths for {type(dataset).__name__}: give it a `.lengths` array (as adapters have), "
        f"a `{length_column}` column or an `{input_name}` column, or pass `lengths=`"
    )


def dataset_labels(dataset: Any, *, label_column: str = "label") -> np.ndarray:
    """Class ids per row without reading rows: ``.label_ids`` (hfbridge adapters) or an integer label column.

    Raises:
        TypeError: when neither is available.
    """
    labels = getattr(dataset, "label_ids", None)
    if labels is not None:
        return np.asarray(labels, dtype=np.int64)
    columns = getattr(dataset, "column_names", None) or ()
    for name in (label_column, "labels"):
        if name in columns:
            return np.asarray(dataset.with_format("arrow")[name])  # the sampler checks it holds ints
    raise TypeError(
        f"cannot find labels for {type(dataset).__name__}: give it a `.label_ids` array (hfbridge adapters "
        f"do) or a `{label_column}` column, or pass `labels=`"
    )


def build_batch_sampler(
    dataset: Any,
    *,
    batching: Batching | None = None,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    lengths: Any = None,
    labels: Any = None,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    num_replicas: int | None = None,
    rank: int | None = None,
    uneven: Uneven = "pad",
    length_column: str = "length",
    input_name: str = "input_ids",
    label_column: str = "label",
    **sampler_kwargs: Any,
) -> Sampler[list[int]]:
    """Build the batch sampler a batching configuration asks for, over a map-style dataset.

    Args:
        dataset: a map-style dataset: an hfbridge adapter, a ``datasets.Dataset`` or anything with ``len()``.
        batching: ``"length"`` (:class:`LengthGroupedBatchSampler`), ``"tokens"``
            (:class:`TokenBudgetBatchSampler`), ``"random"`` (:class:`RandomBatchSampler`) or ``"balanced"``
            (:class:`ClassBalancedSampler` in a :class:`BatchedSampler`). Default: ``"tokens"`` when
            ``max_tokens`` is given, else ``"length"``.
        batch_size: rows per batch; with ``"tokens"`` a cap on rows per batch.
        max_tokens: padded-token budget per batch (implies ``"tokens"``).
        lengths: token counts per row; default from the dataset, cheaply (:func:`dataset_lengths`).
        labels: class ids per row for ``"balanced"``; default from the dataset (:func:`dataset_labels`).
        shuffle: shuffle (``False`` for evaluation; not with ``"balanced"``).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        drop_last: drop incomplete batches (not with ``"tokens"``, whose batches have no fixed size).
        num_replicas, rank, uneven: the ranks and their shares, as in :class:`LengthGroupedBatchSampler`.
        length_column: the column read for lengths when the dataset has no ``.lengths``.
        input_name: the list column whose Arrow lengths are the row lengths otherwise.
        label_column: the column read for labels when the dataset has no ``.label_ids``.
        **sampler_kwargs: further options of the chosen sampler (``megabatch_mult``, ``longest_first``,
            ``max_batch_size``, ``pad_to_multiple_of``, ``oversized``, ``power``, ``replacement``).

    Returns:
        A batch sampler with ``set_epoch``, ``state_dict``, ``load_state_dict`` and ``seek``.

    Raises:
        TypeError: when the dataset is a stream or lacks what the batching needs.
        ValueError: for an unknown ``batching``, a ``max_tokens`` that contradicts it, or a missing size.

    Warns:
        UserWarning: for a token budget without a row cap whose shortest rows fill a batch of over 256 rows.

    Example:
        >>> sampler = build_batch_sampler(train, max_tokens=4096, batch_size=64)  # doctest: +SKIP
        >>> loader = DataLoader(train, batch_sampler=sampler, collate_fn=train.collator)  # doctest: +SKIP
    """
    batching = resolve_batching(batching, batch_size, max_tokens)
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "`dataset` must be map-style (len() and indexing) for a batch sampler; got an IterableDataset "
            f"({type(dataset).__name__}): bucket a stream with BucketedIterable, or build_dataloader"
        )
    common: dict[str, Any] = {"seed": seed, "num_replicas": num_replicas, "rank": rank, "uneven": uneven}
    if batching == "balanced":
        if not shuffle:
            raise ValueError(
                "`shuffle` must be True with batching='balanced' (it draws rows at random); got False"
            )
        if labels is None:
            labels = dataset_labels(dataset, label_column=label_column)
        inner = ClassBalancedSampler(labels, **common, **sampler_kwargs)
        return BatchedSampler(inner, batch_size or 0, drop_last=drop_last)
    common["shuffle"] = shuffle
    if batching == "random":
        return RandomBatchSampler(
            len(dataset), batch_size or 0, drop_last=drop_last, **common, **sampler_kwargs
        )
    if lengths is None:
        lengths = dataset_lengths(dataset, length_column=length_column, input_name=input_name)
    if batching == "length":
        return LengthGroupedBatchSampler(
            lengths, batch_size or 0, drop_last=drop_last, **common, **sampler_kwargs
        )
    if drop_last:
        raise ValueError(
            "`drop_last` must be False with batching='tokens' (its batches have no fixed size); got True"
        )
    if batch_size is not None:
        if sampler_kwargs.get("max_batch_size") not in (None, batch_size):
            raise ValueError(
                f"`batch_size`={batch_size} and `max_batch_size`={sampler_kwargs['max_batch_size']} both cap "
                "rows per batch with batching='tokens': give one"
            )
        sampler_kwargs["max_batch_size"] = batch_size
    sampler = TokenBudgetBatchSampler(lengths, max_tokens or 0, **common, **sampler_kwargs)
    if sampler.max_batch_size is None and (largest := sampler.largest_batch()) > UNCAPPED_ROWS_WARNING:
        warnings.warn(
            f"`max_tokens`={max_tokens} without a row cap puts up to {largest} rows in one batch; pass "
            "`batch_size` to cap rows per batch",
            UserWarning,
            stacklevel=2,
        )
    return sampler


# --------------------------------------------------------------------------------------------- the DataLoader


def set_collator_epoch(collate_fn: Any, epoch: int) -> None:
    """Call ``collate_fn.set_epoch(epoch)`` when the collator has one (e.g. per-epoch masked-LM masks)."""
    set_epoch = getattr(collate_fn, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


class EpochSyncedCollator:
    """``collator`` with its epoch shared between the main process and persistent DataLoader workers.

    A worker holds its own copy of ``collate_fn``. Without persistent workers the copy is made anew every
    epoch, after ``set_epoch``; persistent workers keep theirs, so ``set_epoch`` in the main process would
    never reach it. This wrapper keeps the epoch in shared memory: every call in a worker reads it and passes
    a change on to the worker's collator.

    Args:
        collator: a collator with ``set_epoch(epoch)``.
        context: the multiprocessing context the workers start from (the loader's); the shared value is made
            in it, so ``fork``, ``spawn`` and ``forkserver`` workers all see it.
    """

    def __init__(self, collator: Any, context: Any = None) -> None:
        self.collator = collator
        ctx = context if context is not None else multiprocessing.get_context()
        self._shared = ctx.RawValue("q", -1)  # the epoch set last; -1: none yet
        self._applied = -1  # the epoch this process's copy of the collator has

    def set_epoch(self, epoch: int) -> None:
        """Set ``epoch`` here and, through shared memory, in every worker's copy at its next batch."""
        self._shared.value = epoch
        self.collator.set_epoch(epoch)
        self._applied = epoch

    def __call__(self, features: Any) -> Any:
        epoch = self._shared.value
        if epoch != self._applied and epoch >= 0:
            self.collator.set_epoch(epoch)
            self._applied = epoch
        return self.collator(features)


def seed_worker(
    worker_id: int, *, seed: int, epoch: int, rank: int, user_fn: Callable[[int], None] | None
) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` in a worker from ``(seed, epoch, rank, worker_id)``."""
    worker_seed = int(np.random.SeedSequence([seed, epoch, rank, worker_id]).generate_state(1)[0])
    random.seed(worker_seed)
    np.random.seed(worker_seed)  # noqa: NPY002 - the legacy global generator is what user code in workers uses
    torch.manual_seed(worker_seed)
    if user_fn is not None:
        user_fn(worker_id)


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` whose ``state_dict`` counts the batches it handed to *you*, not those workers
    prefetched.

    Built by :func:`build_dataloader`; ``set_epoch``, ``state_dict`` and ``load_state_dict`` go to its batch
    sampler (or bucketing stream), with the position replaced by the loader's own count, so a state saved
    mid-epoch with ``num_workers > 0`` resumes at exactly the next batch.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        seed: int,
        rank: int,
        num_replicas: int = 1,
        uneven: Uneven = "pad",
        **kwargs: Any,
    ) -> None:
        self._user_worker_init_fn = kwargs.pop("worker_init_fn", None)
        # Without a generator of its own, every new iterator draws its base seed from the *global* torch RNG,
        # which shifts dropout after a mid-epoch resume; a loader-owned generator keeps resumed runs bitwise
        # exact.
        if kwargs.get("generator") is None:
            kwargs["generator"] = torch.Generator().manual_seed(seed)
        super().__init__(dataset, **kwargs)
        self.seed = seed
        self.rank = rank
        self.num_replicas = num_replicas
        self.uneven = uneven
        self._count: int | None = None  # batches handed out by the live iterator, from the epoch's start

    @property
    def _stateful(self) -> Any:
        return self.dataset if isinstance(self.dataset, BucketedIterable) else self.batch_sampler

    @property
    def epoch(self) -> int:
        return int(self._stateful.epoch)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        stateful = self._stateful
        # read the resume position before workers start pulling batches from the sampler
        start = 0 if isinstance(stateful, BucketedIterable) else stateful.next_position
        self.worker_init_fn = partial(
            seed_worker, seed=self.seed, epoch=self.epoch, rank=self.rank, user_fn=self._user_worker_init_fn
        )
        batches: Iterator[Any] = super().__iter__()
        if isinstance(stateful, BucketedIterable) and ranks_must_agree(self.num_replicas, self.uneven):
            # a stream's ranks hold different batch counts
            batches = agreed_batches(batches, self.uneven, previous=self._last_stream_batch)
        return self._counting(batches, start)

    def _last_stream_batch(self) -> Any | None:
        """The stream's last batch this epoch, collated: what ``uneven="pad"`` repeats on a resumed rank."""
        rows = self._stateful.last_batch()
        return None if rows is None else self.collate_fn(rows)

    def _counting(self, iterator: Any, start: int) -> Iterator[Any]:
        self._count = start
        for batch in iterator:
            self._count += 1
            yield batch
        self._count = None

    def set_epoch(self, epoch: int) -> None:
        """Switch to ``epoch``'s order (a mid-epoch position just loaded for the same epoch is kept) and pass
        the epoch on to the collator when it has a ``set_epoch`` (per-epoch masks of the masked-LM
        collator)."""
        if epoch != self.epoch:
            self._count = None
        self._stateful.set_epoch(epoch)
        set_collator_epoch(self.collate_fn, epoch)

    def state_dict(self) -> dict[str, Any]:
        """The sampler state at the last batch this loader yielded (plain python values).

        Raises:
            RuntimeError: for a streaming loader with ``num_workers > 0`` (the stream lives in the workers).
        """
        stateful = self._stateful
        if isinstance(stateful, BucketedIterable):
            if self.num_workers > 0:
                raise RuntimeError(
                    "a streaming loader's state lives in its workers: use num_workers=0 to save and resume "
                    "it, or torchdata's StatefulDataLoader"
                )
            return stateful.state_dict()
        if self._count is None:
            return dict(stateful.state_dict())
        return dict(stateful.state_dict(position=self._count))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next iteration yields exactly the batches the saved run had not yet yielded."""
        self._count = None
        self._stateful.load_state_dict(state)

    def seek(self, epoch: int, position: int) -> None:
        """Resume from a step count: the next iteration yields batch ``position`` of ``epoch`` and what
        follows, as if the first ``position`` batches of that epoch had been yielded (no replay; a stream only
        takes 0).

        Raises:
            ValueError: when ``position`` is past the epoch's end, or not 0 for a stream.
        """
        self._count = None
        self._stateful.seek(epoch, position)
        set_collator_epoch(self.collate_fn, epoch)


def build_dataloader(
    adapter: Any,
    *,
    batch_size: int | None = None,
    max_tokens: int | None = None,
    batching: Batching | None = None,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    pin_memory: bool | Literal["auto"] = "auto",
    drop_last: bool = False,
    persistent_workers: bool = False,
    timeout: float = 0,
    prefetch_factor: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    uneven: Uneven = "pad",
    **sampler_kwargs: Any,
) -> ResumableDataLoader:
    """Build a DataLoader over an adapter with length-aware batching, seeded workers and exact, O(1) resume.

    Args:
        adapter: a map adapter (``.lengths``, ``.label_ids``, ``.collator``) or an iterable adapter (yields
            rows with ``input_ids``; bucketed through a shuffling buffer).
        batch_size: rows per batch (with ``"tokens"``, a cap on them).
        max_tokens: padded-token budget per batch (given alone, it means ``batching="tokens"``).
        batching: ``"length"``, ``"tokens"``, ``"random"`` or ``"balanced"``, each sampler as in
            :func:`build_batch_sampler`; default ``"tokens"`` with ``max_tokens``, else ``"length"``.
        shuffle: shuffle (``False`` for evaluation).
        seed: seed for the sampler and the workers.
        num_workers: DataLoader worker processes; each is seeded from ``(seed, epoch, rank, worker_id)``.
        pin_memory: ``"auto"`` pins only when CUDA is available.
        drop_last: drop incomplete batches.
        persistent_workers: keep workers between epochs (they are then seeded once, with the first epoch); a
            collator with ``set_epoch`` still gets every epoch (through an :class:`EpochSyncedCollator`).
        timeout: seconds to wait for a worker's batch.
        prefetch_factor: batches each worker loads ahead.
        collate_fn: overrides ``adapter.collator``.
        num_replicas, rank: the ranks (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"`` (each row once over all ranks, for evaluation). For an
            iterable adapter in a process group of several ranks (whose shards give different batch counts),
            the ranks agree every step: ``"drop"`` stops all when any runs out, ``"pad"`` lets ranks that ran
            out repeat their last batch until all are done, ``"exact"`` leaves each rank its own count (only
            for loops that do not synchronise per step).
        **sampler_kwargs: further options of the chosen sampler (see :func:`build_batch_sampler`), or of
            :class:`BucketedIterable` (e.g. ``buffer_size``) for an iterable adapter.

    Returns:
        A :class:`ResumableDataLoader` with ``set_epoch``, ``state_dict``, ``load_state_dict`` and ``seek``.

    Raises:
        TypeError: when ``adapter`` lacks what the batching needs, or an option has the wrong type.
        ValueError: for an unknown ``batching`` or missing/contradictory sizes.

    Example:
        >>> loader = build_dataloader(train, batch_size=32, num_workers=2)  # doctest: +SKIP
        >>> for epoch in range(3):  # doctest: +SKIP
        ...     loader.set_epoch(epoch)
        ...     for batch in loader:
        ...         ...
    """
    batching = resolve_batching(batching, batch_size, max_tokens)
    check_non_negative_int("num_workers", num_workers)
    check_non_negative_int("seed", seed)
    check_choice("uneven", uneven, uneven_options)
    if pin_memory != "auto":
        check_type("pin_memory", pin_memory, bool, what="a bool or 'auto'")
    if collate_fn is None:
        collate_fn = getattr(adapter, "collator", None)
        if collate_fn is None:
            raise TypeError(
                f"`adapter` must have a `.collator` (or pass `collate_fn`); got {type(adapter).__name__}"
            )
    if persistent_workers and num_workers > 0 and callable(getattr(collate_fn, "set_epoch", None)):
        collate_fn = EpochSyncedCollator(collate_fn)  # persistent workers keep their copy: share its epoch
    num_replicas, rank = resolve_replicas(num_replicas, rank)
    loader_kwargs: dict[str, Any] = {
        "seed": seed,
        "rank": rank,
        "collate_fn": collate_fn,
        "num_workers": num_workers,
        "pin_memory": torch.cuda.is_available() if pin_memory == "auto" else pin_memory,
        "persistent_workers": persistent_workers and num_workers > 0,
        "timeout": timeout,
        "prefetch_factor": prefetch_factor if num_workers > 0 else None,
    }
    if isinstance(adapter, IterableDataset):
        if batching not in ("length", "tokens"):
            raise ValueError(
                f"`batching` must be 'length' or 'tokens' for an iterable adapter; got {batching!r}"
            )
        if batching == "tokens" and batch_size is not None:
            sampler_kwargs.setdefault("max_batch_size", batch_size)
        bucketed = BucketedIterable(
            adapter,
            batch_size=batch_size if batching == "length" else None,
            max_tokens=max_tokens,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
            **sampler_kwargs,
        )
        return ResumableDataLoader(
            bucketed, num_replicas=num_replicas, uneven=uneven, batch_size=None, **loader_kwargs
        )
    batch_sampler = build_batch_sampler(
        adapter,
        batching=batching,
        batch_size=batch_size,
        max_tokens=max_tokens,
        shuffle=shuffle,
        seed=seed,
        drop_last=drop_last,
        num_replicas=num_replicas,
        rank=rank,
        uneven=uneven,
        **sampler_kwargs,
    )
    return ResumableDataLoader(adapter, batch_sampler=batch_sampler, **loader_kwargs)
