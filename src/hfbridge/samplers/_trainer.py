"""Make ``transformers.Trainer`` batch with our samplers: a mixin that overrides ``get_train_dataloader``."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from hfbridge._checks import check_choice, check_positive_int
from hfbridge.samplers._balanced import BatchedSampler, ClassBalancedSampler
from hfbridge.samplers._epoch_sync import EpochSyncedCollator, set_collator_epoch
from hfbridge.samplers._grouped import LengthGroupedBatchSampler, RandomBatchSampler
from hfbridge.samplers._loader import _BATCHINGS, seed_worker
from hfbridge.samplers._streaming import BucketedIterable
from hfbridge.samplers._token_budget import TokenBudgetBatchSampler

__all__ = ["BatchingTrainerMixin", "dataset_lengths"]

logger = logging.getLogger(__name__)


def dataset_lengths(
    dataset: Any, *, length_column: str = "length", input_name: str = "input_ids"
) -> np.ndarray:
    """Token counts per row without tokenizing: ``.lengths`` (hfbridge adapters), a ``length`` column, or the Arrow
    list lengths of ``input_ids`` (a pre-tokenized ``datasets.Dataset``).

    Raises:
        TypeError: when none of these is available.
    """
    if getattr(dataset, "lengths", None) is not None:
        return np.asarray(dataset.lengths, dtype=np.int64)
    columns = getattr(dataset, "column_names", None)
    if columns is not None and (length_column in columns or input_name in columns):
        import pyarrow.compute as pc

        arrow = dataset.with_format("arrow")
        if length_column in columns:
            return np.asarray(arrow[length_column], dtype=np.int64)
        return np.asarray(
            pc.list_value_length(arrow[input_name]).to_numpy(zero_copy_only=False), dtype=np.int64
        )
    raise TypeError(
        f"cannot find lengths for {type(dataset).__name__}: give it a `.lengths` array (hfbridge adapters do), a "
        f"`{length_column}` column, or an `{input_name}` column"
    )


class _EpochToCollator:
    """A sampler's ``set_epoch`` that also sets the collator's epoch: Trainer calls ``set_epoch`` on the loader
    and the batch sampler each epoch, never on the collator (which the masked-LM collator needs for per-epoch
    masks)."""

    def __init__(self, set_epoch: Any, collator: Any) -> None:
        self.set_epoch, self.collator = set_epoch, collator

    def __call__(self, epoch: int) -> None:
        self.set_epoch(epoch)
        set_collator_epoch(self.collator, epoch)


def _forward_epoch(stateful: Any, collator: Any) -> None:
    """Make ``stateful.set_epoch`` (a batch sampler or a bucketing stream) also reach ``collator.set_epoch``."""
    if callable(getattr(collator, "set_epoch", None)):
        setattr(stateful, "set_epoch", _EpochToCollator(stateful.set_epoch, collator))  # noqa: B010


class BatchingTrainerMixin:
    """Mix into ``transformers.Trainer`` to train with hfbridge batching.

    ``get_train_dataloader`` builds a :class:`LengthGroupedBatchSampler` (or token-budget, random, class-balanced)
    sharded by ``args.world_size``/``args.process_index`` and seeded by ``args.data_seed``/``args.seed``; the Trainer
    calls its ``set_epoch`` each epoch, which also reaches ``data_collator.set_epoch`` when the collator has one
    (per-epoch masks of the masked-LM collator). Accelerate's extra re-sharding is switched off (the sampler is already
    rank-aware), exactly as Trainer does for its own ``BatchRebalanceSampler``. An iterable training set is bucketed
    through :class:`BucketedIterable` (single process). On ``resume_from_checkpoint`` the Trainer skips the batches
    already seen by drawing their indices from the sampler (no data is loaded for them).

    Args:
        batching: ``"length"``, ``"tokens"``, ``"random"`` or ``"balanced"``.
        max_tokens: token budget per batch for ``batching="tokens"`` (``per_device_train_batch_size`` caps rows).
        sampler_kwargs: further sampler options (``megabatch_mult``, ``longest_first``, ``pad_to_multiple_of``...).

    Raises:
        ValueError: for an unknown ``batching`` or a missing ``max_tokens``.

    Example:
        >>> from transformers import Trainer
        >>> class MyTrainer(BatchingTrainerMixin, Trainer):
        ...     pass
        >>> trainer = MyTrainer(model=model, args=args, train_dataset=train, batching="tokens", max_tokens=4096)  # doctest: +SKIP
    """

    def __init__(
        self,
        *args: Any,
        batching: str = "length",
        max_tokens: int | None = None,
        sampler_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.batching = check_choice("batching", batching, _BATCHINGS)
        self.max_tokens = check_positive_int("max_tokens", max_tokens, allow_none=True)
        if batching == "tokens" and max_tokens is None:
            raise ValueError("`max_tokens` is required with batching='tokens'; got None")
        self.sampler_kwargs = dict(sampler_kwargs or {})
        super().__init__(*args, **kwargs)

    def _hfbridge_batch_sampler(self, dataset: Any) -> Any:
        trainer: Any = self
        args = trainer.args
        common = {
            "seed": common_seed(args),
            "num_replicas": max(1, args.world_size),
            "rank": args.process_index if args.world_size > 1 else 0,
            **self.sampler_kwargs,
        }
        batch_size = trainer._train_batch_size
        input_name = "input_ids"
        if trainer.processing_class is not None and getattr(
            trainer.processing_class, "model_input_names", None
        ):
            input_name = trainer.processing_class.model_input_names[0]
        if self.batching == "random":
            return RandomBatchSampler(len(dataset), batch_size, drop_last=args.dataloader_drop_last, **common)
        if self.batching == "balanced":
            labels = getattr(dataset, "label_ids", None)
            if labels is None:
                labels = np.asarray(dataset.with_format("numpy")["label"], dtype=np.int64)
            inner = ClassBalancedSampler(labels, **common)
            return BatchedSampler(inner, batch_size, drop_last=args.dataloader_drop_last)
        lengths = dataset_lengths(dataset, length_column=args.length_column_name, input_name=input_name)
        if self.batching == "tokens":
            common.setdefault("max_batch_size", batch_size)
            return TokenBudgetBatchSampler(lengths, self.max_tokens or 0, **common)
        return LengthGroupedBatchSampler(lengths, batch_size, drop_last=args.dataloader_drop_last, **common)

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's training loader, batched by hfbridge (see the class docstring)."""
        trainer: Any = self
        dataset = trainer.train_dataset
        if dataset is None:
            raise ValueError("Trainer: training requires a train_dataset.")
        args = trainer.args
        if isinstance(dataset, IterableDataset):
            if args.world_size > 1 or self.batching not in ("length", "tokens"):
                logger.warning(
                    "hfbridge bucketing of an iterable dataset is single-process; using Trainer's loader"
                )
                return super().get_train_dataloader()  # type: ignore[misc]
            collator = trainer._get_collator_with_removed_columns(
                trainer.data_collator, description="Training"
            )
            stream = BucketedIterable(
                dataset,
                batch_size=trainer._train_batch_size if self.batching == "length" else None,
                max_tokens=self.max_tokens,
                seed=common_seed(args),
                **self.sampler_kwargs,
            )
            _forward_epoch(stream, trainer.data_collator)
            return trainer.accelerator.prepare(DataLoader(stream, batch_size=None, collate_fn=collator))
        batch_sampler = self._hfbridge_batch_sampler(dataset)
        num_workers = args.dataloader_num_workers
        persistent = args.dataloader_persistent_workers and num_workers > 0
        collator = trainer.data_collator
        if persistent and callable(getattr(collator, "set_epoch", None)):
            collator = EpochSyncedCollator(collator)  # persistent workers keep their copy: share its epoch
        _forward_epoch(batch_sampler, collator)
        try:
            import datasets

            is_hf_dataset = isinstance(dataset, datasets.Dataset)
        except ImportError:  # pragma: no cover - datasets is a dependency
            is_hf_dataset = False
        if is_hf_dataset:
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
            worker_init_fn=partial(
                seed_worker, seed=common_seed(args), epoch=0, rank=args.process_index, user_fn=None
            ),
        )
        prepared = trainer.accelerator.prepare(loader)
        # the sampler is rank-aware already: make accelerate's BatchSamplerShard a passthrough
        shard = getattr(prepared, "batch_sampler", None)
        if shard is not None and getattr(shard, "batch_sampler", None) is batch_sampler:
            shard.num_processes = 1
            shard.process_index = 0
        return prepared


def common_seed(args: Any) -> int:
    """The Trainer's data seed: ``args.data_seed`` when set, else ``args.seed``."""
    return int(args.data_seed if args.data_seed is not None else args.seed)
