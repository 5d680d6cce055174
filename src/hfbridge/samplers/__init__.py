"""Length-aware batch samplers, class balance, rank sharding and exact O(1) resume; ``build_dataloader``.

Every sampler and the loader from :func:`build_dataloader` has ``set_epoch``, ``state_dict`` and
``load_state_dict``; every random choice derives from ``(seed, epoch)``. ``BatchingTrainerMixin`` (which
imports ``transformers``) is loaded on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hfbridge.samplers._balanced import BatchedSampler, ClassBalancedSampler
from hfbridge.samplers._batch_samplers import (
    BinPackingBatchSampler,
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
    best_fit_decreasing,
)
from hfbridge.samplers._loader import (
    EpochSyncedCollator,
    ResumableDataLoader,
    build_batch_sampler,
    build_dataloader,
    dataset_labels,
    dataset_lengths,
    seed_worker,
)
from hfbridge.samplers._streaming import BucketedIterable

if TYPE_CHECKING:
    from hfbridge.trainer import BatchingTrainerMixin

__all__ = [
    "BatchedSampler",
    "BatchingTrainerMixin",
    "BinPackingBatchSampler",
    "BucketedIterable",
    "ClassBalancedSampler",
    "EpochSyncedCollator",
    "LengthGroupedBatchSampler",
    "RandomBatchSampler",
    "ResumableDataLoader",
    "TokenBudgetBatchSampler",
    "best_fit_decreasing",
    "build_batch_sampler",
    "build_dataloader",
    "dataset_labels",
    "dataset_lengths",
    "seed_worker",
]


def __getattr__(name: str) -> Any:
    if name == "BatchingTrainerMixin":
        from hfbridge.trainer import BatchingTrainerMixin  # moved there; this old path stays

        return BatchingTrainerMixin
    raise AttributeError(f"module 'hfbridge.samplers' has no attribute {name!r}")
