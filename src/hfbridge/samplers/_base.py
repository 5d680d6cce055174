"""The machinery every batch sampler shares: an epoch plan computed from ``(seed, epoch)``, rank sharding and
O(1) resume.

A subclass describes one epoch as an :class:`EpochPlan` (usually :class:`SlicedPlan`: ``order`` is a permutation of
row indices and batch ``b`` is ``order[bounds[b]:bounds[b + 1]]``). The base class shuffles the batches, shards them
over ranks and yields them from the saved position on. Nothing is replayed: the plan is a few vectorised NumPy calls,
then indexed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal, Protocol

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_choice, check_non_negative_int, check_type
from hfbridge._distributed import resolve_replicas
from hfbridge.samplers._permutation import Permutation
from hfbridge.samplers._state import Cursor, fingerprint, uneven_options

__all__ = ["EpochBatchSampler", "EpochPlan", "SlicedPlan", "Uneven", "shard", "shard_len"]

Uneven = Literal["pad", "drop", "exact"]


class EpochPlan(Protocol):
    """One epoch's batches over all ranks, before the batch shuffle."""

    def batch(self, index: int) -> np.ndarray:
        """Row indices of batch ``index``."""
        ...

    def longest(self) -> np.ndarray:
        """The longest row of every batch (for ``longest_first``)."""
        ...


class SlicedPlan:
    """Batch ``b`` is ``order[bounds[b]:bounds[b + 1]]``."""

    def __init__(self, order: np.ndarray, bounds: np.ndarray, lengths: np.ndarray | None) -> None:
        self.order, self.bounds, self.lengths = order, bounds, lengths

    def batch(self, index: int) -> np.ndarray:
        return self.order[self.bounds[index] : self.bounds[index + 1]]

    def longest(self) -> np.ndarray:
        if self.lengths is None:
            return np.zeros(len(self.bounds) - 1, dtype=np.int64)
        return np.maximum.reduceat(self.lengths[self.order], self.bounds[:-1])


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
        self._cursor = Cursor()
        self._plan_cache: tuple[int, int, tuple[EpochPlan, Permutation, tuple[int, int] | None]] | None = None
        self._fingerprint = ""

    # -- to implement ---------------------------------------------------------------------------------------------
    def _global_plan(self, epoch: int) -> EpochPlan:
        """Return all ranks' batches of ``epoch``, before the batch shuffle."""
        raise NotImplementedError

    def _num_global_batches(self) -> int:
        raise NotImplementedError

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
    def _plan(self) -> tuple[EpochPlan, Permutation, tuple[int, int] | None]:
        """``(plan, batch order, longest-first swap)`` of this epoch; cached, so resume and iteration share it.

        Nothing here is O(epoch) unless the subclass's plan is (the token budget sorts) or ``longest_first`` is set.
        """
        cache = self._plan_cache
        if cache is not None and cache[0] == self.epoch and cache[1] == self.seed:
            return cache[2]
        plan = self._global_plan(self.epoch)
        order = Permutation(self._num_global_batches(), (self.seed, self.epoch, 1), shuffle=self.shuffle)
        swap = None
        if self.longest_first and len(self) > 1:
            ids = order(self._global_positions(np.arange(len(self))))
            swap = (0, int(np.argmax(plan.longest()[ids])))
        self._plan_cache = (self.epoch, self.seed, (plan, order, swap))
        return plan, order, swap

    def clear_cache(self) -> None:
        """Drop the epoch plan computed so far, as a new process starts (e.g. to time a resume)."""
        self._plan_cache = None

    def _global_positions(self, positions: np.ndarray) -> np.ndarray:
        """This rank's positions -> positions in the all-ranks batch sequence (see :func:`shard`)."""
        global_positions = self.rank + positions * self.num_replicas
        if self.uneven == "pad":
            global_positions %= max(self._num_global_batches(), 1)
        return global_positions

    def _batch_ids(self, start: int, stop: int) -> np.ndarray:
        _, order, swap = self._plan()
        positions = np.arange(start, stop)
        if swap is not None:
            first, top = swap
            positions = np.where(positions == first, top, np.where(positions == top, first, positions))
        return order(self._global_positions(positions))

    def __len__(self) -> int:
        """Batches this rank yields per epoch (deterministic: the same every epoch)."""
        return shard_len(self._num_global_batches(), self.num_replicas, self.rank, self.uneven)

    def __iter__(self) -> Iterator[list[int]]:
        start = self._cursor.start()
        plan, _, _ = self._plan()
        total = len(self)
        # batch ids are mapped a growing chunk at a time: resuming maps one small chunk, not the epoch
        chunk_start, chunk = start, 64
        while chunk_start < total:
            chunk_stop = min(chunk_start + chunk, total)
            for offset, batch in enumerate(self._batch_ids(chunk_start, chunk_stop).tolist()):
                self._cursor.yielded = chunk_start + offset + 1
                yield plan.batch(batch).tolist()
            chunk_start, chunk = chunk_stop, min(chunk * 4, 65536)

    # -- epochs and state (kept by a Cursor) ---------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch whose order is used (see :meth:`set_epoch`)."""
        return self._cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``; a position loaded by ``load_state_dict`` for the same epoch is kept."""
        self._cursor.set_epoch(epoch)

    @property
    def next_position(self) -> int:
        """Index (within this rank's epoch) of the batch the next ``__iter__`` starts from."""
        return self._cursor.next_position

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Seed, epoch, position (batches of this epoch already yielded) and a configuration fingerprint.

        Args:
            position: override the position (a loader passes the batches it handed to the user, which is fewer
                than the sampler yielded when workers prefetch).
        """
        return self._cursor.state(type(self).__name__, self._fingerprint, self.seed, position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields exactly the batches the saved run had not yet yielded.

        Raises:
            ValueError: when the state belongs to another sampler class or configuration, or the position is past
                the end of the epoch.
        """
        self.seed = self._cursor.load(state, type(self).__name__, self._fingerprint, len(self))
