"""``BinPackingBatchSampler``: best-fit-decreasing bins of at most ``max_tokens`` tokens, shuffled per epoch,
with exact O(1) resume."""

from __future__ import annotations

from bisect import bisect_left, insort
from itertools import chain
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_positive_int, check_type
from hfbridge.samplers._state import (
    Batches,
    Schedule,
    epoch_rng,
    iter_scheduled_batches,
    scheduled_len,
    scheduled_load_state_dict,
    scheduled_seek,
    scheduled_set_epoch,
    scheduled_state_dict,
    shuffled_batches,
    to_index_array,
)

__all__ = ["BinPackingBatchSampler", "best_fit_decreasing"]


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Pack row indices into bins of total length at most ``capacity``: longest row first, each into the bin
    it fills most tightly (the fullest bin it fits in), a new bin when none fits.

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
    open_bins: list[
        tuple[int, int]
    ] = []  # (room left, bin id), sorted: the tightest fit is the first with room >= n
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
    counts. Like the other samplers it keeps its position, rank share and state in a ``Schedule``: it has
    ``set_epoch``, ``seek``, ``state_dict`` and ``load_state_dict``, resuming costs O(1) (no replay of the
    batches already seen), and it plugs into ``ResumableDataLoader``.

    Args:
        lengths: token count of every row (e.g. ``adapter.lengths``).
        max_tokens: the capacity of a bin (the row length of the packed rows).
        bins_per_batch: bins per batch (a packed batch of that many rows).
        shuffle: shuffle the bin order every epoch (``False``: fullest bins first).
        seed: the seed of the order.
        num_replicas, rank: shard the batches over ranks (default: ``torch.distributed``'s world size and
        rank, else 1 and 0); every rank gets the same count: the last batches wrap.
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
            type(self).__name__,
            self._draw,
            num_batches,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            uneven="pad",
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

    @property
    def epoch(self) -> int:
        """The epoch whose order is used (see ``set_epoch``)."""
        return self._schedule.cursor.epoch

    @property
    def next_position(self) -> int:
        """Index (within this rank's epoch) of the batch the next ``__iter__`` starts from."""
        return self._schedule.cursor.next_position

    # the sampler protocol, kept by the schedule (see `Scheduled` in samplers/_state.py)
    __len__ = scheduled_len
    __iter__ = iter_scheduled_batches
    set_epoch = scheduled_set_epoch
    seek = scheduled_seek
    state_dict = scheduled_state_dict
    load_state_dict = scheduled_load_state_dict
