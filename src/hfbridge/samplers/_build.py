"""``build_batch_sampler``: the one place a batching configuration becomes a batch sampler."""

from __future__ import annotations

import warnings
from typing import Any, Literal, cast

import numpy as np
from torch.utils.data import IterableDataset, Sampler

from hfbridge._checks import check_choice, check_positive_int
from hfbridge.samplers._balanced import BatchedSampler, ClassBalancedSampler
from hfbridge.samplers._batch_samplers import (
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
)
from hfbridge.samplers._state import Uneven

__all__ = [
    "BATCHINGS",
    "Batching",
    "build_batch_sampler",
    "dataset_labels",
    "dataset_lengths",
    "resolve_batching",
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
        num_replicas: ranks (default from ``torch.distributed``).
        rank: this rank (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"`` (see :class:`LengthGroupedBatchSampler`).
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
    _warn_uncapped(sampler, max_tokens or 0)
    return sampler


def _warn_uncapped(sampler: TokenBudgetBatchSampler, max_tokens: int) -> None:
    if sampler.max_batch_size is not None:
        return
    largest = int(sampler.largest_batch())
    if largest > UNCAPPED_ROWS_WARNING:
        warnings.warn(
            f"`max_tokens`={max_tokens} without a row cap puts up to {largest} rows in one batch; pass "
            "`batch_size` to cap rows per batch",
            UserWarning,
            stacklevel=3,
        )
