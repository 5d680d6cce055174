"""``BinPackingBatchSampler``: best-fit-decreasing bins of at most ``max_tokens`` tokens, shuffled per epoch,
with exact O(1) resume."""

from __future__ import annotations

import hashlib
from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_non_negative_int, check_positive_int, check_type

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
    counts. Like the other samplers it has ``set_epoch``, ``state_dict`` and ``load_state_dict``; resuming
    costs O(1) (no
    replay of the batches already seen), and it plugs into ``ResumableDataLoader``.

    Args:
        lengths: token count of every row (e.g. ``adapter.lengths``).
        max_tokens: the capacity of a bin (the row length of the packed rows).
        bins_per_batch: bins per batch (a packed batch of that many rows).
        shuffle: shuffle the bin order every epoch (``False``: fullest bins first).
        seed: the seed of the order.
        num_replicas, rank: shard the batches over ranks (every rank gets the same count: the last batches
        wrap).
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
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
    ) -> None:
        check_positive_int("max_tokens", max_tokens)
        check_positive_int("bins_per_batch", bins_per_batch)
        check_type("shuffle", shuffle, bool)
        check_type("drop_last", drop_last, bool)
        check_non_negative_int("seed", seed)
        check_positive_int("num_replicas", num_replicas)
        check_non_negative_int("rank", rank)
        if rank >= num_replicas:
            raise ValueError(f"`rank` must be in [0, num_replicas={num_replicas}); got {rank}")
        lengths = np.asarray(lengths, dtype=np.int64)
        if lengths.ndim != 1 or lengths.size == 0:
            raise ValueError(
                f"`lengths` must be a non-empty 1-D array of token counts; got shape {lengths.shape}"
            )
        self.bins = best_fit_decreasing(lengths, max_tokens)
        self.bin_tokens = np.array([int(lengths[b].sum()) for b in self.bins], dtype=np.int64)
        self.max_tokens = max_tokens
        self.bins_per_batch = bins_per_batch
        self.shuffle = shuffle
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        n = len(self.bins)
        self._num_batches = n // bins_per_batch if drop_last else -(-n // bins_per_batch)
        self._epoch = 0
        self._position = 0
        digest = hashlib.blake2b(digest_size=8)
        digest.update(repr((max_tokens, bins_per_batch, shuffle, num_replicas, rank, drop_last)).encode())
        digest.update(lengths.tobytes())
        self._fingerprint = digest.hexdigest()
        self._order: tuple[int, int, np.ndarray] | None = None

    @property
    def padding_share(self) -> float:
        """The share of padding when every bin becomes a row of ``max_tokens`` tokens."""
        return 1.0 - float(self.bin_tokens.sum()) / (len(self.bins) * self.max_tokens)

    def _bin_order(self) -> np.ndarray:
        """This epoch's bin order (computed once per epoch and seed)."""
        if self._order is None or self._order[:2] != (self.seed, self._epoch):
            n = len(self.bins)
            if self.shuffle:
                rng = np.random.default_rng(np.random.SeedSequence([self.seed, self._epoch]))
                order = rng.permutation(n)
            else:
                order = np.arange(n)
            self._order = (self.seed, self._epoch, order)
        return self._order[2]

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
        return -(-self._num_batches // self.num_replicas)

    def _batch(self, position: int) -> list[int]:
        global_batch = (self.rank + position * self.num_replicas) % self._num_batches
        order = self._bin_order()
        first = global_batch * self.bins_per_batch
        return [i for b in order[first : first + self.bins_per_batch].tolist() for i in self.bins[b]]

    def __iter__(self) -> Iterator[list[int]]:
        start, self._position = self._position, 0
        for position in range(start, len(self)):
            self._position = position + 1
            yield self._batch(position)
        self._position = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def next_position(self) -> int:
        """The batch (within this rank's epoch) the next ``__iter__`` starts from."""
        return self._position

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s order; a position loaded for the same epoch is kept."""
        check_non_negative_int("epoch", epoch)
        if epoch != self._epoch:
            self._epoch, self._position = epoch, 0

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Seed, epoch, position (batches yielded this epoch) and a fingerprint of lengths and options."""
        return {
            "sampler": type(self).__name__,
            "fingerprint": self._fingerprint,
            "seed": self.seed,
            "epoch": self._epoch,
            "position": self._position if position is None else int(position),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields exactly the batches the saved run had not yet yielded.

        Raises:
            ValueError: a state of another sampler, of other lengths or options, or a position past the epoch.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"`state` must be a dict from state_dict(); got {type(state).__name__}")
        if state.get("sampler") != type(self).__name__:
            raise ValueError(f"`state` was saved by {state.get('sampler')!r}, not a {type(self).__name__}")
        if state.get("fingerprint") != self._fingerprint:
            raise ValueError(
                "`state` was saved by a BinPackingBatchSampler over other lengths or options (max_tokens, "
                "bins_per_batch, shuffle, num_replicas, rank, drop_last); they must match the saving run"
            )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"`state` position must be in [0, {len(self)}]; got {position}")
        self.seed, self._epoch, self._position = int(state["seed"]), int(state["epoch"]), position
