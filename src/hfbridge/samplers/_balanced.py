"""Class-balanced sampling: ``WeightedRandomSampler`` with weights from label counts, sharded and resumable."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_choice, check_non_negative_int, check_positive_int, check_real, check_type
from hfbridge._distributed import resolve_replicas
from hfbridge.samplers._base import Uneven, shard_len
from hfbridge.samplers._state import Cursor, epoch_rng, fingerprint, to_index_array, uneven_options
from hfbridge.samplers._weighted_order import ORDER_VERSION, WeightedOrder

__all__ = ["BatchedSampler", "ClassBalancedSampler"]

_CHUNK = 16384  # draws with replacement come from one generator per chunk of positions


class ClassBalancedSampler(Sampler[int]):
    """Draw row indices so classes appear in balanced proportions: each row weighs ``count(label) ** -power``.

    With ``replacement=True`` this is ``WeightedRandomSampler`` with weights computed for you; with
    ``replacement=False`` it draws a weighted permutation (Efraimidis-Spirakis keys), so each row appears at most once
    per epoch and rare classes come early. The draw depends only on ``(seed, epoch)``; ranks take disjoint shares.

    Resume: with replacement, draws come from one generator per chunk of 16384 positions, seeded by
    ``(seed, epoch, chunk)``, so resuming draws only the current chunk (O(1) in the position). Without replacement,
    rows of equal weight are exchangeable, so the permutation is drawn as a sequence of weight groups (binomial
    counts per interval of the key axis, drawn down a binary tree over the intervals, then one interval's keys
    sorted) and a keyed uniform order within each group: resuming draws one path down the tree
    (``log2(len(labels) / 8192)`` splits, one binomial per distinct class size each) and sorts one interval of
    ~8192 keys, whatever the position and the power.

    Args:
        labels: one class id per row (e.g. ``adapter.label_ids``).
        num_samples: indices per epoch over all ranks (default ``len(labels)``; ``<= len(labels)`` without
            replacement).
        replacement: draw with replacement.
        power: 1.0 balances classes fully, 0.5 takes the square root of the imbalance, 0.0 is uniform.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        num_replicas: number of ranks (default from ``torch.distributed``).
        rank: this rank (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"``: how ``num_samples`` is split when it does not divide evenly.

    Raises:
        TypeError: when ``labels`` is not integer data or an option has the wrong type.
        ValueError: when an option is out of range.

    Example:
        >>> sampler = ClassBalancedSampler(adapter.label_ids, seed=0)  # doctest: +SKIP
        >>> loader = DataLoader(adapter, batch_size=32, sampler=sampler, collate_fn=adapter.collator)  # doctest: +SKIP
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
        self.num_samples = check_positive_int("num_samples", num_samples, allow_none=True) or len(
            self._labels
        )
        if not replacement and self.num_samples > len(self._labels):
            raise ValueError(
                f"`num_samples` must be <= len(labels)={len(self._labels)} when replacement=False; "
                f"got {self.num_samples}"
            )
        self.power = check_real("power", power, low=0)  # 1.0 balances fully, 0.0 is uniform
        self.seed = check_non_negative_int("seed", seed)
        self.uneven = check_choice("uneven", uneven, uneven_options)
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.class_counts = counts = np.bincount(self._labels)
        if replacement:  # rows grouped by class and each class's share of the total weight, for O(1) draws
            self._rows_by_class = np.argsort(self._labels, kind="stable")
            self._class_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            class_weight = np.zeros(len(counts))  # an absent class id weighs 0 (0 ** negative would warn)
            present = counts > 0
            class_weight[present] = counts[present].astype(np.float64) ** (1 - self.power)
            self._class_cdf = np.cumsum(class_weight)
        else:  # a weighted permutation with random access: see _weighted_order
            self._order = WeightedOrder(self._labels, self.power)
        self._cursor = Cursor()
        config = {
            "class": type(self).__name__,
            "num_samples": self.num_samples,
            "replacement": replacement,
            "power": self.power,
            "num_replicas": self.num_replicas,
            "uneven": uneven,
        }
        if not replacement:  # a state saved with an earlier order must not resume into this one's
            config["order"] = ORDER_VERSION
        self._fingerprint = fingerprint(config, self._labels)

    def _draw_chunk(self, chunk: int) -> np.ndarray:
        """Draws (with replacement) at global positions ``chunk * _CHUNK ...``: they depend only on
        ``(seed, epoch, chunk)``, so resuming draws one chunk, not the epoch. A row's weight depends only on its
        class, so each draw picks a class (by class mass) and then a row of it uniformly: O(1) per draw."""
        size = min(_CHUNK, self.num_samples - chunk * _CHUNK)
        uniform = epoch_rng(self.seed, self.epoch, stream=1 + chunk).random((2, size))
        cdf = self._class_cdf
        classes = np.minimum(np.searchsorted(cdf, uniform[0] * cdf[-1], side="right"), len(cdf) - 1)
        counts = self.class_counts[classes]
        within = np.minimum((uniform[1] * counts).astype(np.int64), counts - 1)
        return self._rows_by_class[self._class_starts[classes] + within]

    def _indices(self, start: int, stop: int) -> np.ndarray:
        """This rank's indices at its positions ``start..stop-1`` (sharded as :func:`shard` does)."""
        positions = self.rank + np.arange(start, stop, dtype=np.int64) * self.num_replicas
        if self.uneven == "pad":
            positions %= self.num_samples
        if not self.replacement:
            return self._order(self.seed, self.epoch, positions)
        chunks = positions // _CHUNK
        drawn = np.empty_like(positions)
        for chunk in np.unique(chunks).tolist():
            mask = chunks == chunk
            drawn[mask] = self._draw_chunk(chunk)[positions[mask] - chunk * _CHUNK]
        return drawn

    def clear_cache(self) -> None:
        """Drop what was drawn for the current epoch, as a new process starts (e.g. to time a resume)."""
        if not self.replacement:
            self._order.clear_cache()

    @property
    def weights(self) -> np.ndarray:
        """Each row's weight, ``count(label) ** -power`` (computed on request: sampling uses class weights)."""
        return self.class_counts[self._labels].astype(np.float64) ** -self.power

    def __len__(self) -> int:
        return shard_len(self.num_samples, self.num_replicas, self.rank, self.uneven)

    def __iter__(self) -> Iterator[int]:
        start = self._cursor.start()
        total = len(self)
        low, size = start, 64  # a small first slice: resuming draws only the chunk it needs
        while low < total:
            high = min(low + size, total)
            for position, index in enumerate(self._indices(low, high).tolist(), low):
                self._cursor.yielded = position + 1
                yield index
            low, size = high, min(size * 4, _CHUNK)

    @property
    def epoch(self) -> int:
        """The epoch whose draw is used (see :meth:`set_epoch`)."""
        return self._cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Draw the indices of ``epoch``; a position loaded for the same epoch is kept."""
        self._cursor.set_epoch(epoch)

    @property
    def next_position(self) -> int:
        return self._cursor.next_position

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Seed, epoch, position (indices of this epoch already yielded) and a configuration fingerprint."""
        return self._cursor.state(type(self).__name__, self._fingerprint, self.seed, position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields exactly the indices the saved run had not yet yielded.

        Raises:
            ValueError: when the state belongs to another sampler or configuration.
        """
        self.seed = self._cursor.load(state, type(self).__name__, self._fingerprint, len(self))


class BatchedSampler(Sampler[list[int]]):
    """Group a resumable index sampler (e.g. :class:`ClassBalancedSampler`) into batches, keeping O(1) resume.

    Args:
        sampler: an index sampler with ``set_epoch``, ``state_dict(position=...)`` and ``load_state_dict``.
        batch_size: indices per batch.
        drop_last: drop the last incomplete batch.

    Raises:
        TypeError: when ``sampler`` lacks the state methods.

    Example:
        >>> batches = BatchedSampler(ClassBalancedSampler(labels), batch_size=32)  # doctest: +SKIP
    """

    def __init__(self, sampler: Any, batch_size: int, *, drop_last: bool = False) -> None:
        for method in ("set_epoch", "state_dict", "load_state_dict"):
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
    def num_replicas(self) -> int:
        return int(getattr(self.sampler, "num_replicas", 1))

    @property
    def rank(self) -> int:
        return int(getattr(self.sampler, "rank", 0))

    @property
    def next_position(self) -> int:
        return self._cursor.next_position

    def clear_cache(self) -> None:
        """Drop the inner sampler's per-epoch draws (when it has a ``clear_cache``), as a new process starts."""
        clear = getattr(self.sampler, "clear_cache", None)
        if callable(clear):
            clear()

    def set_epoch(self, epoch: int) -> None:
        self._cursor.epoch = int(self.sampler.epoch)  # the inner sampler may have been moved directly
        self._cursor.set_epoch(epoch)
        self.sampler.set_epoch(epoch)

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """The inner sampler's state, with ``position`` counted in batches."""
        position = self._cursor.position(position)
        state = self.sampler.state_dict(position=min(position * self.batch_size, len(self.sampler)))
        state["position"] = int(position)
        state["batch_size"] = self.batch_size
        return dict(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume after ``state['position']`` batches."""
        batch_size = state.get("batch_size") if isinstance(state, dict) else None
        if batch_size != self.batch_size:
            raise ValueError(
                f"`state['batch_size']` must equal batch_size={self.batch_size}; got {batch_size!r}"
            )
        position = int(state["position"])
        inner = dict(state)
        inner.pop("batch_size")
        inner["position"] = min(position * self.batch_size, len(self.sampler))
        self.sampler.load_state_dict(inner)
        self._cursor.resume(int(self.sampler.epoch), position, len(self))
