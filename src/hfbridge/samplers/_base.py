"""The machinery every batch sampler shares: an epoch plan computed from ``(seed, epoch)``, rank sharding and
O(1) resume.

A subclass describes one epoch as ``(order, bounds)``: ``order`` is a permutation of row indices and batch ``b`` is
``order[bounds[b]:bounds[b + 1]]``. The base class shuffles the batches, shards them over ranks and yields them from
the saved position on. Nothing is replayed: the plan is a few vectorised NumPy calls, then indexed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_choice, check_non_negative_int, check_type
from hfbridge._distributed import resolve_replicas
from hfbridge.samplers._state import check_state, epoch_rng, fingerprint, make_state, uneven_options

__all__ = ["EpochBatchSampler", "Uneven", "shard"]

Uneven = Literal["pad", "drop", "exact"]


def shard(num_items: int, num_replicas: int, rank: int, uneven: str) -> np.ndarray:
    """Positions ``0..num_items-1`` owned by ``rank``.

    ``"pad"`` repeats items from the start so every rank gets ``ceil(n / R)``; ``"drop"`` drops the tail so every
    rank gets ``n // R``; ``"exact"`` gives each item to exactly one rank (counts may differ by one).
    """
    if uneven == "pad":
        total = -(-num_items // num_replicas) * num_replicas
        positions = np.arange(total) % max(num_items, 1)
    elif uneven == "drop":
        positions = np.arange((num_items // num_replicas) * num_replicas)
    else:
        positions = np.arange(num_items)
    return positions[rank::num_replicas]


def shard_len(num_items: int, num_replicas: int, rank: int, uneven: str) -> int:
    if uneven == "pad":
        return -(-num_items // num_replicas)
    if uneven == "drop":
        return num_items // num_replicas
    return len(range(rank, num_items, num_replicas))


class EpochBatchSampler(Sampler[list[int]]):
    """Base class: epoch planning, sharding, ``set_epoch`` and exact, O(1) ``state_dict``/``load_state_dict``."""

    _lengths: np.ndarray  # per-row lengths, set by subclasses that group by length

    def __init__(
        self,
        *,
        shuffle: bool,
        seed: int,
        num_replicas: int | None,
        rank: int | None,
        uneven: Uneven,
        longest_first: bool,
    ) -> None:
        check_type("shuffle", shuffle, bool)
        check_type("longest_first", longest_first, bool)
        check_non_negative_int("seed", seed)
        check_choice("uneven", uneven, uneven_options)
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = seed
        self.uneven = uneven
        self.longest_first = longest_first
        self.epoch = 0
        self._yielded = 0  # batches of the current epoch handed out by the running iterator
        self._resume_at: int | None = None  # set by load_state_dict, consumed by the next __iter__
        self._plan_cache: tuple[int, int, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._fingerprint = ""

    # -- to implement ---------------------------------------------------------------------------------------------
    def _global_plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(order, bounds)`` for all ranks' batches of ``epoch``, before the batch shuffle."""
        raise NotImplementedError

    def _num_global_batches(self) -> int:
        raise NotImplementedError

    def _batch_sizes_for_ordering(self, order: np.ndarray, bounds: np.ndarray) -> np.ndarray:
        """Per-batch cost used by ``longest_first`` (default: the longest row of the batch)."""
        return np.maximum.reduceat(self._lengths[order], bounds[:-1])

    def _config(self) -> dict[str, Any]:
        return {
            "shuffle": self.shuffle,
            "num_replicas": self.num_replicas,
            "uneven": self.uneven,
            "longest_first": self.longest_first,
        }

    def _set_fingerprint(self, *arrays: np.ndarray) -> None:
        self._fingerprint = fingerprint({"class": type(self).__name__, **self._config()}, *arrays)

    # -- the epoch plan ---------------------------------------------------------------------------------------------
    def _plan(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(order, bounds, batch_ids)`` for this rank and epoch; cached, so resume and iteration share it."""
        cache = self._plan_cache
        if cache is not None and cache[0] == self.epoch and cache[1] == self.seed:
            return cache[2], cache[3], cache[4]
        order, bounds = self._global_plan(self.epoch)
        num_batches = len(bounds) - 1
        if self.shuffle:
            batch_order = epoch_rng(self.seed, self.epoch, stream=1).permutation(num_batches)
        else:
            batch_order = np.arange(num_batches)
        batch_ids = batch_order[shard(num_batches, self.num_replicas, self.rank, self.uneven)]
        if self.longest_first and len(batch_ids) > 1:
            cost = self._batch_sizes_for_ordering(order, bounds)[batch_ids]
            top = int(np.argmax(cost))
            batch_ids = batch_ids.copy()
            batch_ids[[0, top]] = batch_ids[[top, 0]]
        self._plan_cache = (self.epoch, self.seed, order, bounds, batch_ids)
        return order, bounds, batch_ids

    def __len__(self) -> int:
        """Batches this rank yields per epoch (deterministic: the same every epoch)."""
        return shard_len(self._num_global_batches(), self.num_replicas, self.rank, self.uneven)

    def __iter__(self) -> Iterator[list[int]]:
        start = self._resume_at if self._resume_at is not None else 0
        self._resume_at = None
        order, bounds, batch_ids = self._plan()
        self._yielded = start
        for position in range(start, len(batch_ids)):
            batch = int(batch_ids[position])
            self._yielded = position + 1
            yield order[bounds[batch] : bounds[batch + 1]].tolist()

    # -- epochs and state -------------------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``; a position loaded by ``load_state_dict`` for the same epoch is kept."""
        check_non_negative_int("epoch", epoch)
        if epoch != self.epoch:
            self._resume_at = None
            self._yielded = 0
        self.epoch = epoch

    @property
    def next_position(self) -> int:
        """Index (within this rank's epoch) of the batch the next ``__iter__`` starts from."""
        return self._resume_at if self._resume_at is not None else 0

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Seed, epoch, position (batches of this epoch already yielded) and a configuration fingerprint.

        Args:
            position: override the position (a loader passes the batches it handed to the user, which is fewer
                than the sampler yielded when workers prefetch).
        """
        if position is None:
            position = self._resume_at if self._resume_at is not None else self._yielded
        return make_state(type(self).__name__, self._fingerprint, self.seed, self.epoch, position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields exactly the batches the saved run had not yet yielded.

        Raises:
            ValueError: when the state belongs to another sampler class or configuration, or the position is past
                the end of the epoch.
        """
        seed, epoch, position = check_state(state, type(self).__name__, self._fingerprint)
        if position > len(self):
            raise ValueError(f"`state['position']` must be <= {len(self)} batches per epoch; got {position}")
        self.seed, self.epoch, self._resume_at, self._yielded = seed, epoch, position, position
