"""hfbridge batching inside ``transformers.Trainer`` (one function builds the training loader); length-sorted
evaluation and the way back to dataset order."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler

from hfbridge._checks import check_choice, check_positive_int
from hfbridge.samplers import (
    BucketedIterable,
    EpochSyncedCollator,
    build_batch_sampler,
    dataset_lengths,
    seed_worker,
)
from hfbridge.samplers._loader import BATCHINGS

__all__ = [
    "BatchingTrainerMixin",
    "MetricsInDatasetOrder",
    "SortedOrder",
    "find_sorted_order",
    "in_dataset_order",
    "model_input_name",
    "train_dataloader",
    "train_lengths",
]

logger = logging.getLogger(__name__)


def train_lengths(dataset: Any, *, length_column: str, input_name: str) -> np.ndarray:
    """Token counts per row, as :func:`hfbridge.samplers.dataset_lengths` finds them (it raises ``TypeError``
    when there are none). A length column that disagrees with the Arrow lengths of ``input_name`` wins (HF's
    ``length_column_name`` meaning), with a warning that says in how many rows."""
    lengths = dataset_lengths(dataset, length_column=length_column, input_name=input_name)
    columns = getattr(dataset, "column_names", None) or ()
    if getattr(dataset, "lengths", None) is None and length_column in columns and input_name in columns:
        from_ids = dataset_lengths(dataset.select_columns([input_name]), input_name=input_name)
        differ = int(np.sum(lengths != from_ids))
        if differ:
            warnings.warn(
                f"the `{length_column}` column (length_column_name) disagrees with the lengths of "
                f"`{input_name}` in {differ} rows; batching by `{length_column}`",
                UserWarning,
                stacklevel=2,
            )
    return lengths


def model_input_name(trainer: Any) -> str:
    """The first of ``processing_class.model_input_names`` (``"input_ids"`` without one)."""
    names = getattr(trainer.processing_class, "model_input_names", None)
    return names[0] if names else "input_ids"


def _set_epochs(set_epoch: Callable[[int], None], collator: Any, epoch: int) -> None:
    set_epoch(epoch)
    collator.set_epoch(epoch)


def _forward_epoch(stateful: Any, collator: Any) -> None:
    """Make ``stateful.set_epoch`` (a batch sampler or bucketing stream) also reach ``collator.set_epoch``:
    Trainer calls it on the loader and the batch sampler each epoch, never on the collator (the masked-LM
    one needs it for its masks). A partial, so a stream still pickles into workers."""
    if callable(getattr(collator, "set_epoch", None)):
        setattr(stateful, "set_epoch", partial(_set_epochs, stateful.set_epoch, collator))  # noqa: B010


def train_dataloader(
    trainer: Any, batching: str, max_tokens: int | None, sampler_kwargs: dict[str, Any], fallback: Any
) -> DataLoader:
    """``trainer``'s training loader, batched by hfbridge as :class:`BatchingTrainerMixin` describes;
    ``fallback()`` is Trainer's own loader, for an iterable dataset hfbridge cannot bucket (several
    processes, or random/balanced batching)."""
    dataset = trainer.train_dataset
    if dataset is None:
        raise ValueError("Trainer: training requires a train_dataset.")
    args = trainer.args
    seed = int(args.data_seed if args.data_seed is not None else args.seed)
    if isinstance(dataset, IterableDataset):
        if args.world_size > 1 or batching not in ("length", "tokens"):
            logger.warning(
                "hfbridge bucketing of an iterable dataset is single-process; using Trainer's loader"
            )
            return fallback()
        collator = trainer._get_collator_with_removed_columns(trainer.data_collator, description="Training")
        stream = BucketedIterable(
            dataset,
            batch_size=trainer._train_batch_size if batching == "length" else None,
            max_tokens=max_tokens,
            seed=seed,
            **sampler_kwargs,
        )
        _forward_epoch(stream, trainer.data_collator)
        return trainer.accelerator.prepare(DataLoader(stream, batch_size=None, collate_fn=collator))
    input_name = model_input_name(trainer)
    lengths = None
    if batching in ("length", "tokens"):
        lengths = train_lengths(dataset, length_column=args.length_column_name, input_name=input_name)
    batch_sampler = build_batch_sampler(
        dataset,
        batching=batching,  # type: ignore[arg-type]
        batch_size=trainer._train_batch_size,
        max_tokens=max_tokens,
        lengths=lengths,
        seed=seed,
        drop_last=args.dataloader_drop_last and batching != "tokens",
        num_replicas=max(1, args.world_size),
        rank=args.process_index if args.world_size > 1 else 0,
        length_column=args.length_column_name,
        input_name=input_name,
        **sampler_kwargs,
    )
    num_workers = args.dataloader_num_workers
    persistent = args.dataloader_persistent_workers and num_workers > 0
    collator = trainer.data_collator
    if persistent and callable(getattr(collator, "set_epoch", None)):
        collator = EpochSyncedCollator(collator)  # persistent workers keep their copy: share its epoch
    _forward_epoch(batch_sampler, collator)
    import datasets

    if isinstance(dataset, datasets.Dataset):
        dataset = trainer._remove_unused_columns(dataset, description="Training")
    else:
        collator = trainer._get_collator_with_removed_columns(collator, description="Training")
    loader = DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        collate_fn=collator,
        num_workers=num_workers,
        pin_memory=args.dataloader_pin_memory and torch.cuda.is_available(),
        persistent_workers=persistent,
        prefetch_factor=args.dataloader_prefetch_factor if num_workers > 0 else None,
        worker_init_fn=partial(seed_worker, seed=seed, epoch=0, rank=args.process_index, user_fn=None),
    )
    prepared = trainer.accelerator.prepare(loader)
    # the sampler is rank-aware already: make accelerate's BatchSamplerShard a passthrough
    shard = getattr(prepared, "batch_sampler", None)
    if shard is not None and getattr(shard, "batch_sampler", None) is batch_sampler:
        shard.num_processes = 1
        shard.process_index = 0
    return prepared


class BatchingTrainerMixin:
    """Mix into ``transformers.Trainer`` to train with hfbridge batching (see :func:`train_dataloader`).

    The sampler is sharded by ``args.world_size``/``args.process_index`` (accelerate's re-sharding is
    switched off), seeded by ``args.data_seed`` (else ``args.seed``) and takes ``per_device_train_batch_size``
    rows (a row cap for ``"tokens"``); Trainer's ``set_epoch`` also reaches ``data_collator.set_epoch``. An
    iterable training set is bucketed through :class:`~hfbridge.samplers.BucketedIterable` (single process).
    This mixin overrides ``train_sampling_strategy``; :class:`hfbridge.Trainer` reads its arguments instead.

    Args:
        batching: ``"length"``, ``"tokens"``, ``"random"`` or ``"balanced"``.
        max_tokens: token budget per batch for ``batching="tokens"`` (the batch size caps the rows).
        sampler_kwargs: further sampler options (``megabatch_mult``, ``longest_first``...).

    Raises:
        ValueError: for an unknown ``batching`` or a missing ``max_tokens``.

    Example:
        >>> from transformers import Trainer
        >>> class MyTrainer(BatchingTrainerMixin, Trainer):
        ...     pass
        >>> MyTrainer(model=model, args=args, train_dataset=train, batching="length")  # doctest: +SKIP
    """

    def __init__(
        self,
        *args: Any,
        batching: str = "length",
        max_tokens: int | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.batching = check_choice("batching", batching, BATCHINGS)
        self.max_tokens = check_positive_int("max_tokens", max_tokens, allow_none=True)
        if batching == "tokens" and max_tokens is None:
            raise ValueError("`max_tokens` is required with batching='tokens'; got None")
        self.sampler_kwargs = dict(sampler_kwargs or {})
        super().__init__(*args, **kwargs)

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's training loader, batched by hfbridge (see the class docstring)."""
        fallback = super().get_train_dataloader  # type: ignore[misc]
        return train_dataloader(self, self.batching, self.max_tokens, self.sampler_kwargs, fallback)


# ----------------------------------------------------------------------------------- length-sorted evaluation


class SortedOrder(Sampler[int]):
    """Row indices by decreasing length (ties in dataset order), so each evaluation batch pads little.

    Args:
        lengths: token count of every row.
    """

    def __init__(self, lengths: np.ndarray) -> None:
        self.order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
        self.inverse = np.empty_like(self.order)
        self.inverse[self.order] = np.arange(len(self.order))

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())

    def __len__(self) -> int:
        return len(self.order)


def find_sorted_order(loader: Any) -> SortedOrder | None:
    """The :class:`SortedOrder` inside a (possibly accelerate-prepared) loader, or ``None``."""
    seen: list[Any] = [loader]
    while seen:
        obj = seen.pop()
        if isinstance(obj, SortedOrder):
            return obj
        for name in ("sampler", "batch_sampler", "base_dataloader"):
            inner = getattr(obj, name, None)
            if inner is not None and inner is not obj:
                seen.append(inner)
    return None


def in_dataset_order(value: Any, inverse: np.ndarray) -> Any:
    """``value`` (an array, or a tuple/list/dict of them, rows in sorted order) with rows in dataset order.

    Arrays whose first axis is not the number of rows (e.g. a scalar) are returned unchanged.
    """
    if isinstance(value, np.ndarray) and value.ndim > 0 and len(value) == len(inverse):
        return value[inverse]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(in_dataset_order(v, inverse) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(in_dataset_order(v, inverse) for v in value)
    if isinstance(value, dict):
        return {k: in_dataset_order(v, inverse) for k, v in value.items()}
    return value


class MetricsInDatasetOrder:
    """``compute_metrics`` that sees predictions, labels, inputs and losses in dataset order."""

    def __init__(self, compute_metrics: Callable[..., Any], inverse: np.ndarray) -> None:
        self.compute_metrics, self.inverse = compute_metrics, inverse

    def __call__(self, eval_pred: Any, **kwargs: Any) -> Any:
        from transformers import EvalPrediction

        fields = {
            name: in_dataset_order(getattr(eval_pred, name, None), self.inverse)
            for name in ("predictions", "label_ids", "inputs", "losses")
        }
        return self.compute_metrics(EvalPrediction(**fields), **kwargs)
