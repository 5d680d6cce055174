"""Weighted sampling without replacement where rows come in few distinct weights; any position in O(interval).

The order is that of Efraimidis-Spirakis keys ``E_i / w_i`` (``E_i ~ Exp(1)``), i.e. successive sampling without
replacement with probabilities proportional to the weights. A row's weight depends only on its class's size, so the
rows fall into few groups of equal weight (at most ``sqrt(2 n)``: one per distinct class size; one group when the
weights are uniform). The order then splits into two independent parts, each computable a piece at a time:

* the order of a group's rows among themselves is uniform and independent of when the group is drawn: the ``k``-th
  row drawn from group ``g`` is ``rows_of_g[perm_g(k)]``, with keyed Feistel :class:`Permutations`, one per group;
* which group comes at each position is the merged order of all keys. The key axis is cut once, from the sizes and
  weights alone (:func:`key_cuts`), into intervals expected to hold ``_INTERVAL`` keys each. How many keys of each
  group fall in each interval is drawn down a binary tree over the intervals: a node knows its counts per group,
  and of the ``c`` keys of a group in ``[a, b)``, each falls before the node's middle cut ``m`` with probability
  ``(1 - exp(-w (m - a))) / (1 - exp(-w (b - a)))`` (the keys are independent exponentials), so the left child's
  counts are binomials drawn from the node's own seed. Given its counts, an interval's keys are independent
  truncated exponentials, drawn from the interval's own seed and sorted.

A position thus needs the path to its interval (``log2(intervals)`` splits of ``groups`` binomials), that
interval's sorted keys (~``_INTERVAL``) and one Feistel pass: resuming costs that, whatever the position and however
many groups there are, instead of a sort of every row. Iterating keeps the current path, so an epoch draws each
split once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hfbridge.samplers._key_cuts import key_cuts
from hfbridge.samplers._permutation import Permutations
from hfbridge.samplers._state import epoch_rng

__all__ = ["ORDER_VERSION", "WeightedOrder"]

# in the samplers' fingerprints: a state saved with another order (an earlier version, unversioned) is refused
ORDER_VERSION = 2
_INTERVAL = 8192  # expected keys per interval of the key axis: the work of a resume
_LOG_WEIGHT_FLOOR = -600.0  # weights under e^-600 (~1e-261) of the largest are raised to it: exp() stays > 0
_PERMUTATION_STREAM = 2**32 - 1  # row orders are keyed (seed, epoch, this); interval j uses stream 1 + j
# node k of the tree (root 1, children 2k and 2k + 1) splits with stream _SPLIT_STREAM + k
_SPLIT_STREAM = 2**32


@dataclass
class _Node:
    """Intervals ``lo..hi-1`` of one epoch: ``counts[g]`` keys of group ``g`` fall in them, ``before[g]`` before
    them, so they fill the positions ``start .. start + counts.sum() - 1``. ``left``: the left child's counts, once
    drawn."""

    index: int
    lo: int
    hi: int
    counts: np.ndarray
    before: np.ndarray
    start: int
    stop: int
    left: np.ndarray | None = None


class WeightedOrder:
    """``order(seed, epoch, positions)``: the rows at ``positions`` of a weighted permutation without replacement.

    A row's weight is ``count(label) ** -power``; the permutation of ``(seed, epoch)`` is drawn as the module
    docstring describes, so any position costs one path down the tree and one interval (~``_INTERVAL`` keys), not a
    sort of all rows.

    Args:
        labels: one non-negative class id per row.
        power: the weight exponent (0 is uniform).
    """

    def __init__(self, labels: np.ndarray, power: float) -> None:
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
        cuts = key_cuts(self._sizes, self._weights, -(-len(labels) // _INTERVAL))
        self._bounds = np.concatenate([[0.0], cuts, [np.inf]])
        self.intervals = len(cuts) + 1
        self._epoch_cache: tuple[tuple[int, int], Permutations, list[_Node]] | None = None
        self._interval_cache: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def clear_cache(self) -> None:
        """Drop what was drawn for the current epoch (the path down the tree and the latest intervals)."""
        self._epoch_cache = None
        self._interval_cache.clear()

    def _epoch(self, seed: int, epoch: int) -> tuple[Permutations, list[_Node]]:
        """``(row orders, path)`` of an epoch: one uniform permutation of each group's rows, and the latest path
        from the root of the tree (the root alone at first)."""
        if self._epoch_cache is None or self._epoch_cache[0] != (seed, epoch):
            zero = np.zeros_like(self._sizes)
            root = _Node(1, 0, self.intervals, self._sizes, zero, 0, int(self._sizes.sum()))
            orders = Permutations(self._sizes, (seed, epoch, _PERMUTATION_STREAM))
            self._epoch_cache = ((seed, epoch), orders, [root])
            self._interval_cache.clear()
        return self._epoch_cache[1:]

    def _split(self, seed: int, epoch: int, node: _Node) -> tuple[_Node, _Node]:
        """The children of ``node``, its left counts drawn (once) from the node's own stream."""
        mid = (node.lo + node.hi) // 2
        if node.left is None:
            bounds, weights = self._bounds, self._weights
            drawn = np.flatnonzero(node.counts)  # only groups with keys here: deep nodes hold few
            rate = weights[drawn]
            part = np.expm1(-rate * (bounds[mid] - bounds[node.lo]))
            whole = np.expm1(-rate * (bounds[node.hi] - bounds[node.lo]))  # -1 for the unbounded last node
            ratio = (bounds[mid] - bounds[node.lo]) / (bounds[node.hi] - bounds[node.lo])
            chance = np.divide(part, whole, out=np.full(len(drawn), ratio), where=whole != 0)
            node.left = np.zeros_like(node.counts)
            rng = epoch_rng(seed, epoch, stream=_SPLIT_STREAM + node.index)
            node.left[drawn] = rng.binomial(node.counts[drawn], chance)
        left_stop = node.start + int(node.left.sum())
        left = _Node(2 * node.index, node.lo, mid, node.left, node.before, node.start, left_stop)
        right_counts, right_before = node.counts - node.left, node.before + node.left
        right = _Node(2 * node.index + 1, mid, node.hi, right_counts, right_before, left_stop, node.stop)
        return left, right

    def _leaf(self, seed: int, epoch: int, position: int) -> _Node:
        """The interval holding ``position`` (in ``[0, rows)``), walking from the latest path."""
        path = self._epoch(seed, epoch)[1]
        while len(path) > 1 and not path[-1].start <= position < path[-1].stop:
            path.pop()
        node = path[-1]
        while node.hi - node.lo > 1:
            left, right = self._split(seed, epoch, node)
            node = left if position < left.stop else right
            path.append(node)
        return node

    def interval_counts(self, seed: int, epoch: int) -> np.ndarray:
        """``(intervals, groups)``: how many keys of each group fall in each interval (draws the whole tree)."""
        table = np.zeros((self.intervals, len(self._sizes)), dtype=np.int64)
        stack = [self._epoch(seed, epoch)[1][0]]
        while stack:
            node = stack.pop()
            if node.hi - node.lo == 1:
                table[node.lo] = node.counts
            else:
                stack.extend(self._split(seed, epoch, node))
        return table

    def _interval(self, seed: int, epoch: int, leaf: _Node) -> tuple[np.ndarray, np.ndarray]:
        """``(groups, draws)`` at the positions of interval ``leaf``: the group drawn and how many of that group
        were drawn before it in the epoch. The latest two intervals are cached."""
        key = (seed, epoch, leaf.lo)
        if key in self._interval_cache:
            return self._interval_cache[key]
        taken = leaf.counts
        groups = np.repeat(np.arange(len(taken)), taken)
        width = self._bounds[leaf.lo + 1] - self._bounds[leaf.lo]  # inf for the last interval: hit = 1
        hit = -np.expm1(-self._weights * width)
        uniform = epoch_rng(seed, epoch, stream=1 + leaf.lo).random(len(groups))
        keys = -np.log1p(-uniform * hit[groups]) / self._weights[groups]  # Exp(w) truncated to the interval
        groups = groups[np.argsort(keys, kind="stable")]
        by_group = np.argsort(groups, kind="stable")  # each group's draws in this interval, in draw order
        draws = np.empty(len(groups), dtype=np.int64)
        first = np.cumsum(taken) - taken  # where each group's run starts in `by_group`
        draws[by_group] = np.arange(len(groups)) - np.repeat(first - leaf.before, taken)
        if len(self._interval_cache) >= 2:
            del self._interval_cache[next(iter(self._interval_cache))]
        self._interval_cache[key] = (groups, draws)
        return groups, draws

    def __call__(self, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
        """The rows at ``positions`` (ints in ``[0, rows)``) of the order of ``(seed, epoch)``."""
        positions = np.asarray(positions, dtype=np.int64)
        orders = self._epoch(seed, epoch)[0]
        ranked = np.argsort(positions, kind="stable")
        ordered = positions[ranked]
        groups = np.empty(len(positions), dtype=np.int64)
        draws = np.empty(len(positions), dtype=np.int64)
        done = 0
        while done < len(ordered):  # one interval at a time, in position order
            leaf = self._leaf(seed, epoch, int(ordered[done]))
            end = done + int(np.searchsorted(ordered[done:], leaf.stop))
            at = ranked[done:end]
            interval_groups, interval_draws = self._interval(seed, epoch, leaf)
            groups[at] = interval_groups[positions[at] - leaf.start]
            draws[at] = interval_draws[positions[at] - leaf.start]
            done = end
        return self._rows[self._starts[groups] + orders(groups, draws)]
