"""Weighted sampling without replacement where rows come in few distinct weights; any position in O(interval).

The order is that of Efraimidis-Spirakis keys ``E_i / w_i`` (``E_i ~ Exp(1)``), i.e. successive sampling without
replacement with probabilities proportional to the weights. A row's weight depends only on its class's size, so the
rows fall into few groups of equal weight (at most ``sqrt(2 n)``: one per distinct class size; one group when the
weights are uniform). The order then splits into two independent parts, each computable a piece at a time:

* the order of a group's rows among themselves is uniform and independent of when the group is drawn: the ``k``-th
  row drawn from group ``g`` is ``rows_of_g[perm_g(k)]``, with keyed Feistel :class:`Permutations`, one per group;
* which group comes at each position is the merged order of all keys. The key axis is cut once, from the sizes and
  weights alone, into intervals expected to hold ``_INTERVAL`` keys each. A group's keys are independent
  exponentials, so how many fall in each interval is a chain of binomials (memoryless: of the ``r`` keys left at
  ``t_j``, each falls before ``t_{j+1}`` with probability ``1 - exp(-w (t_{j+1} - t_j))``), and given those counts an
  interval's keys are independent truncated exponentials, drawn from that interval's own seed and sorted.

Per epoch the count table (intervals x groups binomials) is drawn once; a position then needs only its interval's
sorted keys and one Feistel pass. Resuming costs the table and one interval sort, whatever the position, instead of
a sort of every row.
"""

from __future__ import annotations

import numpy as np

from hfbridge.samplers._permutation import Permutations
from hfbridge.samplers._state import epoch_rng

__all__ = ["ORDER_VERSION", "WeightedOrder"]

# in the samplers' fingerprints: a state saved with another order (an earlier version, unversioned) is refused
ORDER_VERSION = 2
_INTERVAL = 8192  # expected keys per interval of the key axis: the work of a resume
_MAX_CELLS = 1 << 16  # bound on intervals x groups, the per-epoch count table
_LOG_WEIGHT_FLOOR = -600.0  # weights under e^-600 (~1e-261) of the largest are raised to it: exp() stays > 0
_PERMUTATION_STREAM = 2**32 - 1  # row orders are keyed (seed, epoch, this); interval j uses stream 1 + j


def _interval_hits(sizes: np.ndarray, weights: np.ndarray, intervals: int) -> np.ndarray:
    """Cut the key axis into ``intervals`` intervals, each expected to hold ``sum(sizes) / intervals`` keys.

    Returns ``(intervals - 1, groups)``: the probability that a key of group ``g`` not before interval ``j`` falls
    in it (the last interval is unbounded and takes the rest). Any cuts give the exact distribution; these only
    balance the work per interval. Bisection on the expected number of keys before each cut, all cuts at once.
    """
    targets = np.arange(1, intervals) * (sizes.sum() / intervals)
    low = np.zeros(len(targets))
    # past `high`, under 1/2 key in all is expected, so every target is reached below it
    high = np.full(len(targets), np.max(np.log(2.0 * len(sizes) * sizes) / weights))
    for _ in range(64):
        mid = (low + high) / 2
        below = (sizes * -np.expm1(-np.outer(mid, weights))).sum(axis=1) < targets
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    widths = np.diff(high, prepend=0.0)
    return -np.expm1(-np.outer(widths, weights))


class WeightedOrder:
    """``order(seed, epoch, positions)``: the rows at ``positions`` of a weighted permutation without replacement.

    A row's weight is ``count(label) ** -power``; the permutation of ``(seed, epoch)`` is drawn as the module
    docstring describes, so any position costs one interval (~``_INTERVAL`` keys), not a sort of all rows.

    Args:
        labels: one non-negative class id per row.
        power: the weight exponent (0 is uniform).
        num_samples: positions in use (``<=`` the number of rows); later ones are never drawn.
    """

    def __init__(self, labels: np.ndarray, power: float, num_samples: int) -> None:
        class_sizes = np.bincount(labels)
        present = np.flatnonzero(class_sizes)
        # rows of equal weight form one group: one per distinct class size (just one when power is 0)
        distinct, group_of_present = np.unique(class_sizes[present] if power else [1], return_inverse=True)
        group_of_class = np.zeros(len(class_sizes), dtype=np.min_scalar_type(len(distinct)))
        group_of_class[present] = group_of_present
        group_of_row = group_of_class[labels]  # 8 or 16 bits: a stable sort of it is a radix sort
        self._sizes = np.bincount(group_of_row, minlength=len(distinct))
        self._rows = np.argsort(group_of_row, kind="stable")
        self._starts = np.cumsum(self._sizes) - self._sizes
        log_weights = -power * np.log(distinct.astype(np.float64))
        self._weights = np.exp(np.maximum(log_weights - log_weights.max(), _LOG_WEIGHT_FLOOR))
        self.num_samples = num_samples
        intervals = min(-(-len(labels) // _INTERVAL), max(1, _MAX_CELLS // len(distinct)))
        self._hits = _interval_hits(self._sizes, self._weights, intervals)
        self._epoch_cache: tuple[tuple[int, int], np.ndarray, np.ndarray, Permutations] | None = None
        self._interval_cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def clear_cache(self) -> None:
        """Drop what was drawn for the current epoch (the count table and the latest intervals)."""
        self._epoch_cache = None
        self._interval_cache.clear()

    def _epoch(self, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray, Permutations]:
        """``(prefix, starts, row orders)`` of an epoch: ``prefix[j, g]`` keys of group ``g`` fall before interval
        ``j``, which starts at position ``starts[j]``; the chain stops at the interval that reaches
        ``num_samples``. Row orders: one uniform permutation of each group's rows."""
        if self._epoch_cache is None or self._epoch_cache[0] != (seed, epoch):
            rng = epoch_rng(seed, epoch)
            remaining = self._sizes
            taken = [np.zeros_like(remaining)]
            drawn = 0
            for hit in self._hits:
                counts = rng.binomial(remaining, hit)
                taken.append(counts)
                remaining = remaining - counts
                drawn += int(counts.sum())
                if drawn >= self.num_samples:
                    break
            else:
                taken.append(remaining)  # the unbounded last interval
            prefix = np.cumsum(taken, axis=0)
            orders = Permutations(self._sizes, (seed, epoch, _PERMUTATION_STREAM))
            self._epoch_cache = ((seed, epoch), prefix, prefix.sum(axis=1), orders)
            self._interval_cache.clear()
        return self._epoch_cache[1:]

    def _interval(self, seed: int, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(groups, draws)`` at the positions of interval ``index``: the group drawn and how many of that group
        were drawn before it in the epoch. The latest two intervals are cached."""
        key = (seed, epoch, index)
        if key in self._interval_cache:
            return self._interval_cache[key]
        prefix = self._epoch(seed, epoch)[0]
        taken = prefix[index + 1] - prefix[index]
        groups = np.repeat(np.arange(len(taken)), taken)
        unbounded = index == len(self._hits)  # the last interval
        hit = np.ones(len(taken)) if unbounded else self._hits[index]
        uniform = epoch_rng(seed, epoch, stream=1 + index).random(len(groups))
        keys = -np.log1p(-uniform * hit[groups]) / self._weights[groups]  # Exp(w) truncated to the interval
        groups = groups[np.argsort(keys, kind="stable")]
        by_group = np.argsort(groups, kind="stable")  # each group's draws in this interval, in draw order
        draws = np.empty(len(groups), dtype=np.int64)
        first = np.cumsum(taken) - taken  # where each group's run starts in `by_group`
        draws[by_group] = np.arange(len(groups)) - np.repeat(first - prefix[index], taken)
        if len(self._interval_cache) >= 2:
            del self._interval_cache[next(iter(self._interval_cache))]
        self._interval_cache[key] = (groups, draws)
        return groups, draws

    def __call__(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions`` (ints in ``[0, num_samples)``) of the order of ``(seed, epoch)``."""
        _, starts, orders = self._epoch(seed, epoch)
        intervals = np.searchsorted(starts, positions, side="right") - 1
        groups = np.empty(len(positions), dtype=np.int64)
        draws = np.empty(len(positions), dtype=np.int64)
        for index in np.unique(intervals).tolist():
            mask = intervals == index
            offsets = positions[mask] - starts[index]
            interval_groups, interval_draws = self._interval(seed, epoch, index)
            groups[mask], draws[mask] = interval_groups[offsets], interval_draws[offsets]
        return self._rows[self._starts[groups] + orders(groups, draws)]
