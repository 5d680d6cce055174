"""Fixed-size batches: length-grouped (shuffle, sort within megabatches, shuffle the batches) and plain random."""

from __future__ import annotations

from typing import Any

import numpy as np

from hfbridge._checks import check_positive_int, check_type
from hfbridge.samplers._base import EpochBatchSampler, SlicedPlan, Uneven
from hfbridge.samplers._permutation import Permutation
from hfbridge.samplers._state import to_index_array

__all__ = ["LengthGroupedBatchSampler", "RandomBatchSampler"]


def _sort_key(lengths: np.ndarray) -> np.ndarray:
    """Negated lengths in the smallest signed dtype, so NumPy's stable sort is a radix sort when it can be."""
    top = int(lengths.max()) if lengths.size else 0
    dtype = np.int16 if top < 2**15 else np.int32 if top < 2**31 else np.int64
    return (-lengths).astype(dtype)


class MegabatchPlan:
    """Rows in a random order (a :class:`Permutation`, first ``num_rows`` positions) cut into megabatches; a
    megabatch is gathered and sorted (longest first) only when one of its batches is asked for, so resuming at any
    position touches one megabatch, not the epoch."""

    def __init__(
        self,
        rows: Permutation,
        num_rows: int,
        key: np.ndarray,
        lengths: np.ndarray,
        batch_size: int,
        group: int,
    ) -> None:
        self.rows, self.num_rows, self.key, self.lengths = rows, num_rows, key, lengths
        self.batch_size, self.group = batch_size, group
        self._sorted: dict[int, np.ndarray] = {}
        self._order: np.ndarray | None = None  # every megabatch sorted, once more than a few are needed

    def _megabatch(self, index: int) -> np.ndarray:
        start = index * self.group
        if self._order is not None:
            return self._order[start : start + self.group]
        local = self._sorted.get(index)
        if local is None:
            if len(self._sorted) >= 8:  # iterating, not resuming: sort every megabatch at once, vectorised
                self._order = self._sort_all()
                return self._order[start : start + self.group]
            rows = self.rows(np.arange(start, min(start + self.group, self.num_rows)))
            local = self._sorted[index] = rows[np.argsort(self.key[rows], kind="stable")]
        return local

    def _sort_all(self) -> np.ndarray:
        rows = self.rows(np.arange(self.num_rows))
        n_full = (self.num_rows // self.group) * self.group
        key = self.key[rows]
        head = np.argsort(key[:n_full].reshape(-1, self.group), axis=1, kind="stable")
        head += (np.arange(n_full // self.group) * self.group)[:, None]
        tail = n_full + np.argsort(key[n_full:], kind="stable")
        return rows[np.concatenate([head.ravel(), tail])]

    def batch(self, index: int) -> np.ndarray:
        megabatch, offset = divmod(index * self.batch_size, self.group)
        return self._megabatch(megabatch)[offset : offset + self.batch_size]

    def longest(self) -> np.ndarray:
        if self._order is None:
            self._order = self._sort_all()
        starts = np.arange(-(-self.num_rows // self.batch_size)) * self.batch_size
        return np.maximum.reduceat(self.lengths[self._order], starts)


class RowChunkPlan:
    """Batch ``b`` is positions ``[b * batch_size, ...)`` of a row :class:`Permutation`: O(batch) per batch."""

    def __init__(self, rows: Permutation, num_rows: int, batch_size: int) -> None:
        self.rows, self.num_rows, self.batch_size = rows, num_rows, batch_size

    def batch(self, index: int) -> np.ndarray:
        start = index * self.batch_size
        return self.rows(np.arange(start, min(start + self.batch_size, self.num_rows)))

    def longest(self) -> np.ndarray:  # pragma: no cover - random batches have no longest_first
        return np.zeros(-(-self.num_rows // self.batch_size), dtype=np.int64)


class LengthGroupedBatchSampler(EpochBatchSampler):
    """Batches of rows of similar length, in a random order of batches.

    Each epoch: shuffle the rows, cut them into megabatches of ``batch_size * megabatch_mult`` rows, sort each
    megabatch by length (longest first) and cut it into batches, then shuffle the batches themselves. The last step
    is what HF's ``LengthGroupedSampler`` lacks: without it every megabatch runs long-to-short and the loss
    saw-tooths (transformers #20810). Everything derives from ``(seed, epoch)``, so ranks agree without talking.

    Args:
        lengths: one token count per row (list, NumPy array, tensor or Arrow column), e.g. ``adapter.lengths``.
        batch_size: rows per batch.
        shuffle: shuffle rows and batches; ``False`` sorts the whole dataset by length (longest first), which is
            what you want for evaluation.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        megabatch_mult: megabatch size in batches. Larger groups pad less but vary less between epochs.
        drop_last: drop ``len(lengths) % batch_size`` random rows so every batch is full.
        longest_first: put each rank's longest batch first, so an out-of-memory shows at step 0.
        num_replicas: number of ranks (default: ``torch.distributed`` world size, else 1).
        rank: this rank (default: ``torch.distributed`` rank, else 0).
        uneven: when the batch count does not split evenly over ranks: ``"pad"`` repeats batches so every rank gets
            the same count (training), ``"drop"`` drops the extra batches, ``"exact"`` yields every row once over
            all ranks (evaluation; counts may differ by one).

    Raises:
        TypeError: when ``lengths`` is not integer data or an option has the wrong type.
        ValueError: when ``lengths`` is empty or negative, or an option is out of range.

    Example:
        >>> sampler = LengthGroupedBatchSampler(adapter.lengths, batch_size=32, seed=0)  # doctest: +SKIP
        >>> loader = DataLoader(adapter, batch_sampler=sampler, collate_fn=adapter.collator)  # doctest: +SKIP
        >>> sampler.set_epoch(epoch)  # doctest: +SKIP
    """

    def __init__(
        self,
        lengths: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        megabatch_mult: int = 256,
        drop_last: bool = False,
        longest_first: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        uneven: Uneven = "pad",
    ) -> None:
        self._lengths = to_index_array("lengths", lengths)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.megabatch_mult = check_positive_int("megabatch_mult", megabatch_mult)
        self.drop_last = check_type("drop_last", drop_last, bool)
        super().__init__(
            shuffle=shuffle,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            uneven=uneven,
            longest_first=longest_first,
        )
        if drop_last and len(self._lengths) < batch_size:
            raise ValueError(
                f"`batch_size` must be <= len(lengths)={len(self._lengths)} with drop_last=True (no batch would be "
                f"full); got {batch_size}"
            )
        self._key = _sort_key(self._lengths)
        self._set_fingerprint(self._lengths)

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "batch_size": self.batch_size,
            "megabatch_mult": self.megabatch_mult,
            "drop_last": self.drop_last,
        }

    def _num_rows(self) -> int:
        n = len(self._lengths)
        return n - n % self.batch_size if self.drop_last else n

    def _num_global_batches(self) -> int:
        return -(-self._num_rows() // self.batch_size)

    def _global_plan(self, epoch: int) -> MegabatchPlan | SlicedPlan:
        n_rows = self._num_rows()
        if self.shuffle:
            rows = Permutation(len(self._lengths), (self.seed, epoch, 0))
            group = self.batch_size * self.megabatch_mult
            return MegabatchPlan(rows, n_rows, self._key, self._lengths, self.batch_size, group)
        order = np.argsort(self._key, kind="stable")[:n_rows]
        bounds = np.minimum(np.arange(self._num_global_batches() + 1) * self.batch_size, n_rows)
        return SlicedPlan(order, bounds, self._lengths)


class RandomBatchSampler(EpochBatchSampler):
    """Random fixed-size batches with the same sharding, ``set_epoch`` and O(1) resume as the grouped sampler.

    Args:
        num_rows: dataset size.
        batch_size: rows per batch.
        shuffle: shuffle rows (``False``: rows in order).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        drop_last: drop the last incomplete batch.
        num_replicas: number of ranks (default from ``torch.distributed``).
        rank: this rank (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"``, as in :class:`LengthGroupedBatchSampler`.

    Raises:
        TypeError: when an option has the wrong type.
        ValueError: when an option is out of range.

    Example:
        >>> sampler = RandomBatchSampler(len(dataset), batch_size=32, seed=0)
        >>> len(sampler) == -(-len(dataset) // 32)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        uneven: Uneven = "pad",
    ) -> None:
        self.num_rows = check_positive_int("num_rows", num_rows)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.drop_last = check_type("drop_last", drop_last, bool)
        super().__init__(
            shuffle=shuffle,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            uneven=uneven,
            longest_first=False,
        )
        self._set_fingerprint()

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "num_rows": self.num_rows,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
        }

    def _num_global_batches(self) -> int:
        if self.drop_last:
            return self.num_rows // self.batch_size
        return -(-self.num_rows // self.batch_size)

    def _global_plan(self, epoch: int) -> RowChunkPlan:
        n_used = min(self._num_global_batches() * self.batch_size, self.num_rows)
        return RowChunkPlan(
            Permutation(self.num_rows, (self.seed, epoch, 0), shuffle=self.shuffle), n_used, self.batch_size
        )
