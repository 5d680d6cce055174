"""Class-balanced sampling: ``WeightedRandomSampler`` with weights from label counts, sharded, resumable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_positive_int, check_real, check_type
from hfbridge.samplers._state import (
    Cursor,
    Schedule,
    Uneven,
    epoch_rng,
    scheduled_epoch,
    scheduled_len,
    scheduled_load_state_dict,
    scheduled_next_position,
    scheduled_seek,
    scheduled_set_epoch,
    scheduled_state_dict,
    to_index_array,
)

__all__ = ["BatchedSampler", "ClassBalancedSampler"]


class ClassBalancedSampler(Sampler[int]):
    """Draw row indices so classes appear in balanced proportions: each row weighs ``count(label) ** -power``.

    With ``replacement=True`` this is ``WeightedRandomSampler`` with weights computed for you; with
    ``replacement=False`` it draws a weighted permutation (Efraimidis-Spirakis keys), so each row appears at
    most once per epoch and rare classes come early. The draw depends only on ``(seed, epoch)``; ranks take
    interleaved shares of it, and a resume draws the epoch again and starts at the saved position, with no
    replay.

    Args:
        labels: one class id per row (e.g. ``adapter.label_ids``).
        num_samples: indices per epoch over all ranks (default ``len(labels)``; ``<= len(labels)`` without
            replacement).
        replacement: draw with replacement.
        power: 1.0 balances classes fully, 0.5 takes the square root of the imbalance, 0.0 is uniform.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        num_replicas, rank: as in :class:`LengthGroupedBatchSampler` (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"``: how ``num_samples`` is split when it does not divide
            evenly.

    Raises:
        TypeError: when ``labels`` is not integer data or an option has the wrong type.
        ValueError: when an option is out of range.

    Example:
        >>> sampler = ClassBalancedSampler(adapter.label_ids, seed=0)  # doctest: +SKIP
        >>> loader = DataLoader(adapter, batch_size=32, sampler=sampler)  # doctest: +SKIP
    """

    def __init__(
        self,
        labels: Any,
        *,
        num_samples: int | None = None,
        replacement: bool = True,
        power: float = 1.0,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        uneven: Uneven = "pad",
    ) -> None:
        self._labels = to_index_array("labels", labels)
        self.replacement = check_type("replacement", replacement, bool)
        check_positive_int("num_samples", num_samples, allow_none=True)
        self.num_samples = num_samples or len(self._labels)
        if not replacement and self.num_samples > len(self._labels):
            raise ValueError(
                f"`num_samples` must be <= len(labels)={len(self._labels)} when replacement=False; "
                f"got {self.num_samples}"
            )
        self.power = check_real("power", power, low=0)  # 1.0 balances fully, 0.0 is uniform
        self.class_counts = np.bincount(self._labels)
        # rows grouped by class, for draws with replacement (a class first, then one of its rows)
        self._rows_by_class = np.argsort(self._labels, kind="stable") if replacement else self._labels
        self._schedule = Schedule(
            type(self).__name__, self._draw, self.num_samples, seed, num_replicas, rank, uneven
        )
        self.seed, self.uneven = seed, uneven
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        config = {"num_samples": self.num_samples, "replacement": replacement, "power": self.power}
        self._schedule.set_fingerprint(config, self._labels)

    def _draw(self, seed: int, epoch: int) -> np.ndarray:
        """This rank's indices of the epoch ``(seed, epoch)``, drawn whole in one vectorised pass."""
        rng = epoch_rng(seed, epoch, 1)
        counts = self.class_counts
        if self.replacement:  # pick a class by its total weight, then one of its rows uniformly
            present = counts > 0  # an absent class id weighs 0 (0 ** negative would warn)
            class_weight = np.zeros(len(counts))
            class_weight[present] = counts[present].astype(np.float64) ** (1 - self.power)
            cdf = np.cumsum(class_weight)
            uniform = rng.random((2, self.num_samples))
            classes = np.minimum(np.searchsorted(cdf, uniform[0] * cdf[-1], side="right"), len(cdf) - 1)
            within = np.minimum((uniform[1] * counts[classes]).astype(np.int64), counts[classes] - 1)
            drawn = self._rows_by_class[(np.cumsum(counts) - counts)[classes] + within]
        else:  # Efraimidis-Spirakis: ascending Exp(1) / weight, in logs so that any power stays finite
            log_keys = np.log(rng.exponential(size=len(self._labels)))
            log_keys += self.power * np.log(counts[self._labels].astype(np.float64))
            drawn = np.argsort(log_keys)[: self.num_samples]  # continuous keys: no ties to break
        return drawn[self._schedule.positions()]

    @property
    def weights(self) -> np.ndarray:
        """Each row's weight, ``count(label) ** -power`` (computed on request, not used to sample)."""
        return self.class_counts[self._labels].astype(np.float64) ** -self.power

    def __iter__(self) -> Iterator[int]:
        indices = self._schedule.drawn()
        for position in self._schedule.steps():
            yield int(indices[position])

    # the sampler protocol, kept by the schedule (see `Scheduled` in samplers/_state.py)
    epoch = scheduled_epoch
    next_position = scheduled_next_position
    __len__ = scheduled_len
    set_epoch = scheduled_set_epoch
    seek = scheduled_seek
    state_dict = scheduled_state_dict
    load_state_dict = scheduled_load_state_dict


class BatchedSampler(Sampler[list[int]]):
    """Group a resumable index sampler (e.g. :class:`ClassBalancedSampler`) into batches, keeping its resume.

    Its ``seed``, ``num_replicas``, ``rank`` and ``uneven`` are those of the sampler it wraps (set them
    there).

    Args:
        sampler: an index sampler with ``set_epoch``, ``seek``, ``state_dict(position=...)`` and
            ``load_state_dict``.
        batch_size: indices per batch.
        drop_last: drop the last incomplete batch.

    Raises:
        TypeError: when ``sampler`` lacks the state methods.

    Example:
        >>> batches = BatchedSampler(ClassBalancedSampler(labels, seed=1), batch_size=32)  # doctest: +SKIP
    """

    def __init__(self, sampler: Any, batch_size: int, *, drop_last: bool = False) -> None:
        for method in ("set_epoch", "seek", "state_dict", "load_state_dict"):
            if not callable(getattr(sampler, method, None)):
                raise TypeError(f"`sampler` must have a `{method}` method; got {type(sampler).__name__}")
        self.sampler = sampler
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.drop_last = check_type("drop_last", drop_last, bool)
        self._cursor = Cursor()  # positions counted in batches; the epoch is the inner sampler's

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        cursor = self._cursor
        cursor.start()
        batch: list[int] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                cursor.yielded += 1
                yield batch
                batch = []
        if batch and not self.drop_last:
            cursor.yielded += 1
            yield batch

    @property
    def epoch(self) -> int:
        return int(self.sampler.epoch)

    @property
    def seed(self) -> int:
        return int(self.sampler.seed)

    @property
    def num_replicas(self) -> int:
        return int(getattr(self.sampler, "num_replicas", 1))

    @property
    def rank(self) -> int:
        return int(getattr(self.sampler, "rank", 0))

    @property
    def uneven(self) -> str:
        return str(getattr(self.sampler, "uneven", "pad"))

    @property
    def next_position(self) -> int:
        return self._cursor.next_position

    def set_epoch(self, epoch: int) -> None:
        self._cursor.epoch = int(self.sampler.epoch)  # the inner sampler may have been moved directly
        self._cursor.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def seek(self, epoch: int, position: int) -> None:
        """Start the next ``__iter__`` at batch ``position`` of ``epoch``, its first ``position`` skipped.

        Raises:
            ValueError: when ``position`` is past the epoch's end.
        """
        self._cursor.resume(epoch, position, len(self))
        self.sampler.seek(epoch, min(position * self.batch_size, len(self.sampler)))

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """The inner sampler's state, with ``position`` counted in batches."""
        position = self._cursor.position(position)
        state = self.sampler.state_dict(position=min(position * self.batch_size, len(self.sampler)))
        return {**state, "position": int(position), "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume after ``state['position']`` batches."""
        batch_size = state.get("batch_size") if isinstance(state, dict) else None
        if batch_size != self.batch_size:
            raise ValueError(
                f"`state['batch_size']` must equal batch_size={self.batch_size}; got {batch_size!r}"
            )
        position = int(state["position"])
        inner = {**state, "position": min(position * self.batch_size, len(self.sampler))}
        del inner["batch_size"]
        self.sampler.load_state_dict(inner)
        self._cursor.resume(int(self.sampler.epoch), position, len(self))
