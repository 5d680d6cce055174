"""The batch samplers that cut an ordered list of rows into batches (or pack rows into bins) and shuffle them.

Each draws its epoch from ``(seed, epoch)`` and keeps position, rank share and state in a ``Schedule``.
"""

from __future__ import annotations

import warnings
from bisect import bisect_left, insort
from itertools import chain
from typing import Any, Literal

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_choice, check_positive_int, check_type
from hfbridge.samplers._state import (
    Batches,
    Schedule,
    Uneven,
    descending_key,
    epoch_rng,
    iter_scheduled_batches,
    scheduled_epoch,
    scheduled_len,
    scheduled_load_state_dict,
    scheduled_next_position,
    scheduled_seek,
    scheduled_set_epoch,
    scheduled_state_dict,
    shuffled_batches,
    to_index_array,
)

__all__ = [
    "BinPackingBatchSampler",
    "LengthGroupedBatchSampler",
    "RandomBatchSampler",
    "TokenBudgetBatchSampler",
    "best_fit_decreasing",
    "padded_lengths",
    "token_budget_bounds",
]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of rows of similar length, in a random order of batches.

    Each epoch: shuffle the rows, cut them into megabatches of ``batch_size * megabatch_mult`` rows, sort each
    megabatch by length (longest first) and cut it into batches, then shuffle the batches themselves. The last
    step is what HF's ``LengthGroupedSampler`` lacks: without it every megabatch runs long-to-short and the
    loss saw-tooths (transformers #20810). Everything derives from ``(seed, epoch)``, so ranks agree without
    talking, and a resume draws the epoch again and starts at the saved batch, with no replay.

    Args:
        lengths: one token count per row (list, NumPy array, tensor, Arrow column), e.g. ``adapter.lengths``.
        batch_size: rows per batch.
        shuffle: shuffle rows and batches; ``False`` sorts the whole dataset longest first (for evaluation).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        megabatch_mult: megabatch size in batches. Larger groups pad less but vary less between epochs.
        drop_last: drop ``len(lengths) % batch_size`` random rows so every batch is full.
        longest_first: put each rank's longest batch first, so an out-of-memory shows at step 0.
        num_replicas: number of ranks (default: ``torch.distributed`` world size, else 1).
        rank: this rank (default: ``torch.distributed`` rank, else 0).
        uneven: when the batch count does not split evenly over ranks: ``"pad"`` repeats batches so every rank
            gets the same count (training), ``"drop"`` drops the extra batches, ``"exact"`` yields every row
            once over all ranks (evaluation; counts may differ by one).

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
        self.shuffle = check_type("shuffle", shuffle, bool)
        self.longest_first = check_type("longest_first", longest_first, bool)
        n = len(self._lengths)
        if drop_last and n < batch_size:
            raise ValueError(
                f"`batch_size` must be <= len(lengths)={n} with drop_last=True (no batch would be full); "
                f"got {batch_size}"
            )
        self._num_rows = n - n % batch_size if drop_last else n
        num_batches = -(-self._num_rows // batch_size)
        self._schedule = Schedule(
            type(self).__name__, self._draw, num_batches, seed, num_replicas, rank, uneven
        )
        self.seed, self.uneven = seed, uneven
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        self._key = descending_key(self._lengths)
        config = {"batch_size": batch_size, "megabatch_mult": megabatch_mult, "drop_last": drop_last}
        self._schedule.set_fingerprint(
            {**config, "shuffle": shuffle, "longest_first": longest_first}, self._lengths
        )

    def _draw(self, seed: int, epoch: int) -> Batches:
        if self.shuffle:
            rows = epoch_rng(seed, epoch).permutation(len(self._lengths))[: self._num_rows]
            group = self.batch_size * self.megabatch_mult
            key, full = self._key[rows], (self._num_rows // group) * group
            # every full megabatch sorted longest first in one call, then the short last one
            head = np.argsort(key[:full].reshape(-1, group), axis=1, kind="stable")
            head += np.arange(0, full, group)[:, None]
            rows = rows[np.concatenate([head.ravel(), full + np.argsort(key[full:], kind="stable")])]
        else:
            rows = np.argsort(self._key, kind="stable")[: self._num_rows]
        bounds = np.minimum(np.arange(self._schedule.num_items + 1) * self.batch_size, self._num_rows)
        longest = self._lengths if self.longest_first else None
        return shuffled_batches(rows, bounds, self._schedule, epoch, shuffle=self.shuffle, longest=longest)

    # the sampler protocol, kept by the schedule (see `Scheduled` in samplers/_state.py)
    epoch = scheduled_epoch
    next_position = scheduled_next_position
    __len__ = scheduled_len
    __iter__ = iter_scheduled_batches
    set_epoch = scheduled_set_epoch
    seek = scheduled_seek
    state_dict = scheduled_state_dict
    load_state_dict = scheduled_load_state_dict


class RandomBatchSampler(Sampler[list[int]]):
    """Random fixed-size batches with the same sharding, ``set_epoch`` and resume as the grouped sampler.

    Args:
        num_rows: dataset size.
        batch_size: rows per batch.
        shuffle: shuffle rows (``False``: rows in order).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        drop_last: drop the last incomplete batch.
        num_replicas, rank, uneven: the ranks and their shares, as in :class:`LengthGroupedBatchSampler`.

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
        self.shuffle = check_type("shuffle", shuffle, bool)
        num_batches = num_rows // batch_size if drop_last else -(-num_rows // batch_size)
        self._schedule = Schedule(
            type(self).__name__, self._draw, num_batches, seed, num_replicas, rank, uneven
        )
        self.seed, self.uneven = seed, uneven
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        config = {"num_rows": num_rows, "batch_size": batch_size, "drop_last": drop_last, "shuffle": shuffle}
        self._schedule.set_fingerprint(config)

    def _draw(self, seed: int, epoch: int) -> Batches:
        rows = epoch_rng(seed, epoch).permutation(self.num_rows) if self.shuffle else np.arange(self.num_rows)
        bounds = np.minimum(np.arange(self._schedule.num_items + 1) * self.batch_size, self.num_rows)
        return shuffled_batches(rows, bounds, self._schedule, epoch, shuffle=False)

    # the sampler protocol, kept by the schedule (see `Scheduled` in samplers/_state.py)
    epoch = scheduled_epoch
    next_position = scheduled_next_position
    __len__ = scheduled_len
    __iter__ = iter_scheduled_batches
    set_epoch = scheduled_set_epoch
    seek = scheduled_seek
    state_dict = scheduled_state_dict
    load_state_dict = scheduled_load_state_dict


Oversized = Literal["warn", "error"]


def padded_lengths(lengths: np.ndarray, pad_to_multiple_of: int | None) -> np.ndarray:
    """``lengths`` rounded up to a multiple of ``pad_to_multiple_of`` (unchanged for ``None``)."""
    if pad_to_multiple_of is None:
        return lengths
    return -(-lengths // pad_to_multiple_of) * pad_to_multiple_of


def token_budget_bounds(sorted_padded: np.ndarray, max_tokens: int, max_batch_size: int | None) -> np.ndarray:
    """Batch boundaries over lengths sorted longest first: a batch starting at ``i`` takes
    ``max_tokens // sorted_padded[i]`` rows (at least 1). One Python step per *batch*."""
    n = len(sorted_padded)
    cap = max_batch_size or n
    # rows a batch may take when it starts at each row, computed for all rows at once
    take = np.clip(max_tokens // np.maximum(sorted_padded, 1), 1, cap).tolist()
    bounds = [0]
    start = 0
    while start < n:
        start = min(start + take[start], n)
        bounds.append(start)
    return np.asarray(bounds, dtype=np.int64)


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Variable-size batches whose padded size (rows x longest row) never exceeds ``max_tokens``.

    Rows are sorted longest first, ties broken at random each epoch, and cut greedily into batches; then the
    batches are shuffled. The cut depends only on the multiset of lengths, so ``len(sampler)`` is the same
    every epoch, while batch composition (ties) and batch order change with ``(seed, epoch)``. This is the
    token-based batching HF lacks (transformers #10512, #34406).

    Args:
        lengths: one token count per row, e.g. ``adapter.lengths``.
        max_tokens: budget of padded tokens per batch: ``rows * padded(longest row) <= max_tokens``.
        max_batch_size: optional cap on rows per batch.
        pad_to_multiple_of: the collator's ``pad_to_multiple_of``, so the budget counts the real padded size.
        shuffle: shuffle ties and batch order; ``False`` yields batches longest first.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        oversized: a row longer than ``max_tokens``: ``"warn"`` gives it a batch of its own and warns,
            ``"error"`` raises.
        longest_first: put each rank's batch with the longest row first, so an out-of-memory shows at step 0.
        num_replicas, rank, uneven: the ranks and their shares, as in :class:`LengthGroupedBatchSampler`.

    Raises:
        TypeError: when ``lengths`` is not integer data or an option has the wrong type.
        ValueError: when an option is out of range, or a row exceeds ``max_tokens`` with
            ``oversized="error"``.

    Example:
        >>> sampler = TokenBudgetBatchSampler(adapter.lengths, max_tokens=4096)  # doctest: +SKIP
        >>> loader = DataLoader(adapter, batch_sampler=sampler, collate_fn=adapter.collator)  # doctest: +SKIP
    """

    def __init__(
        self,
        lengths: Any,
        max_tokens: int,
        *,
        max_batch_size: int | None = None,
        pad_to_multiple_of: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        oversized: Oversized = "warn",
        longest_first: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        uneven: Uneven = "pad",
    ) -> None:
        self._lengths = to_index_array("lengths", lengths)
        self.max_tokens = check_positive_int("max_tokens", max_tokens)
        self.max_batch_size = check_positive_int("max_batch_size", max_batch_size, allow_none=True)
        self.pad_to_multiple_of = check_positive_int(
            "pad_to_multiple_of", pad_to_multiple_of, allow_none=True
        )
        self.oversized = check_choice("oversized", oversized, ("warn", "error"))
        self.shuffle = check_type("shuffle", shuffle, bool)
        self.longest_first = check_type("longest_first", longest_first, bool)
        self._padded = padded_lengths(self._lengths, pad_to_multiple_of)
        too_long = np.flatnonzero(self._padded > max_tokens)
        if too_long.size:
            message = (
                f"{too_long.size} row(s) are longer than `max_tokens`={max_tokens} after padding (e.g. row "
                f"{int(too_long[0])} with {int(self._padded[too_long[0]])} tokens)"
            )
            if oversized == "error":
                raise ValueError(
                    f"{message}; raise `max_tokens`, truncate (`max_length`), or pass oversized='warn' to "
                    "give each such row a batch of its own"
                )
            warnings.warn(f"{message}: each gets a batch of its own", UserWarning, stacklevel=2)
        self._key = descending_key(self._padded)
        self._sorted = np.argsort(self._key, kind="stable")  # the cut depends only on the lengths: cut once
        self._bounds = token_budget_bounds(self._padded[self._sorted], max_tokens, max_batch_size)
        self._schedule = Schedule(
            type(self).__name__, self._draw, len(self._bounds) - 1, seed, num_replicas, rank, uneven
        )
        self.seed, self.uneven = seed, uneven
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        config = {"max_tokens": max_tokens, "max_batch_size": max_batch_size, "shuffle": shuffle}
        config.update(pad_to_multiple_of=pad_to_multiple_of, longest_first=longest_first)
        self._schedule.set_fingerprint(config, self._lengths)

    def largest_batch(self) -> int:
        """Rows in the largest batch (the same every epoch: the cut depends only on the lengths)."""
        return int(np.diff(self._bounds).max())

    def _draw(self, seed: int, epoch: int) -> Batches:
        rows = self._sorted
        if self.shuffle:  # the same sort after a random permutation: ties in a random order
            shuffled = epoch_rng(seed, epoch).permutation(len(rows))
            rows = shuffled[np.argsort(self._key[shuffled], kind="stable")]
        longest = self._lengths if self.longest_first else None
        return shuffled_batches(
            rows, self._bounds, self._schedule, epoch, shuffle=self.shuffle, longest=longest
        )

    # the sampler protocol, kept by the schedule (see `Scheduled` in samplers/_state.py)
    epoch = scheduled_epoch
    next_position = scheduled_next_position
    __len__ = scheduled_len
    __iter__ = iter_scheduled_batches
    set_epoch = scheduled_set_epoch
    seek = scheduled_seek
    state_dict = scheduled_state_dict
    load_state_dict = scheduled_load_state_dict


# ------------------------------------------------------------------------------------------------ bin packing


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Pack row indices into bins of total length at most ``capacity``: longest row first, each into the
    fullest bin it fits in, a new bin when none fits.

    Best-fit decreasing needs asymptotically at most 11/9 of the optimal number of bins, and in practice comes
    close to the lower bound ``ceil(sum(lengths) / capacity)``. Ties are broken by row index, so the bins
    depend only on ``lengths``.

    Raises:
        ValueError: a row longer than ``capacity`` (it fits no bin).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    too_long = np.flatnonzero(lengths > capacity)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(
            f"`max_tokens` must fit every row: row {i} has {int(lengths[i])} tokens, more than {capacity}; "
            "truncate the rows (e.g. adapt_chat(max_length=...)) or raise max_tokens"
        )
    order = np.argsort(-lengths, kind="stable")
    bins: list[list[int]] = []
    # (room left, bin id), sorted: the tightest fit is the first with room >= n
    open_bins: list[tuple[int, int]] = []
    for i, n in zip(order.tolist(), lengths[order].tolist()):
        k = bisect_left(open_bins, (n, -1))
        if k == len(open_bins):
            b, room = len(bins), capacity - n
            bins.append([i])
        else:
            room, b = open_bins.pop(k)
            bins[b].append(i)
            room -= n
        if room > 0:
            insort(open_bins, (room, b))
    return bins


class BinPackingBatchSampler(Sampler[list[int]]):
    """Batches that are bins: rows packed by best-fit decreasing into bins of at most ``max_tokens`` tokens.

    The bins are computed once (they depend only on the lengths); every epoch shuffles their order from
    ``(seed, epoch)``. Use it with :class:`hfbridge.collators.PackedCollator` (``row_length=max_tokens``) for
    fixed-shape packed rows with the fewest rows, or with a padding collator for batches of near-equal token
    counts. Like the other samplers it has ``set_epoch``, ``seek``, ``state_dict`` and ``load_state_dict``
    (O(1) resume, no replay).

    Args:
        lengths: token count of every row (e.g. ``adapter.lengths``).
        max_tokens: the capacity of a bin (the row length of the packed rows).
        bins_per_batch: bins per batch (a packed batch of that many rows).
        shuffle: shuffle the bin order every epoch (``False``: fullest bins first).
        seed: the seed of the order.
        num_replicas, rank: shard the batches over ranks (default: ``torch.distributed``'s, else 1 and 0);
            every rank gets the same count: the last batches wrap.
        drop_last: drop a last batch with fewer than ``bins_per_batch`` bins.

    Raises:
        ValueError: a non-positive ``max_tokens``, a row longer than it, a bad rank.
    """

    def __init__(
        self,
        lengths: Any,
        max_tokens: int,
        *,
        bins_per_batch: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
    ) -> None:
        self.max_tokens = check_positive_int("max_tokens", max_tokens)
        self.bins_per_batch = check_positive_int("bins_per_batch", bins_per_batch)
        self.shuffle = check_type("shuffle", shuffle, bool)
        self.drop_last = check_type("drop_last", drop_last, bool)
        lengths = to_index_array("lengths", lengths)
        self.bins = best_fit_decreasing(lengths, max_tokens)
        self.bin_tokens = np.array([int(lengths[b].sum()) for b in self.bins], dtype=np.int64)
        # the bins as one flat array of rows: bin b is _bin_rows[_bin_starts[b]:][:_bin_sizes[b]]
        self._bin_rows = np.fromiter(chain.from_iterable(self.bins), dtype=np.int64, count=len(lengths))
        self._bin_sizes = np.fromiter(map(len, self.bins), dtype=np.int64, count=len(self.bins))
        self._bin_starts = np.cumsum(self._bin_sizes) - self._bin_sizes
        n = len(self.bins)
        num_batches = n // bins_per_batch if drop_last else -(-n // bins_per_batch)
        # every rank gets the same count: the last batches wrap ("pad")
        self._schedule = Schedule(
            type(self).__name__, self._draw, num_batches, seed, num_replicas, rank, "pad"
        )
        self.seed = seed
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        config = {"max_tokens": max_tokens, "bins_per_batch": bins_per_batch, "shuffle": shuffle}
        self._schedule.set_fingerprint({**config, "drop_last": drop_last}, lengths)

    @property
    def padding_share(self) -> float:
        """The share of padding when every bin becomes a row of ``max_tokens`` tokens."""
        return 1.0 - float(self.bin_tokens.sum()) / (len(self.bins) * self.max_tokens)

    def _draw(self, seed: int, epoch: int) -> Batches:
        """The bins in this epoch's order, flattened, cut every ``bins_per_batch`` bins."""
        n = len(self.bins)
        order = epoch_rng(seed, epoch).permutation(n) if self.shuffle else np.arange(n)
        sizes = self._bin_sizes[order]
        ends = np.cumsum(sizes)  # where each bin ends in the epoch's flat order
        # the epoch's k-th row sits at k + (its bin's start in _bin_rows - its bin's start here)
        shift = np.repeat(self._bin_starts[order] - (ends - sizes), sizes)
        rows = self._bin_rows[shift + np.arange(ends[-1])]
        cuts = np.minimum(np.arange(self._schedule.num_items + 1) * self.bins_per_batch, n)
        bounds = np.concatenate([[0], ends])[cuts]
        return shuffled_batches(rows, bounds, self._schedule, epoch, shuffle=False)

    # the sampler protocol, kept by the schedule (see `Scheduled` in samplers/_state.py)
    epoch = scheduled_epoch
    next_position = scheduled_next_position
    __len__ = scheduled_len
    __iter__ = iter_scheduled_batches
    set_epoch = scheduled_set_epoch
    seek = scheduled_seek
    state_dict = scheduled_state_dict
    load_state_dict = scheduled_load_state_dict
