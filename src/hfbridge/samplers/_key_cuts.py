"""Where to cut the key axis of a weighted order so that every interval expects the same number of keys.

Group ``g`` has ``sizes[g]`` keys, each ``Exp(weights[g])``; ``F(t) = sum_g sizes[g] (1 - exp(-weights[g] t))`` keys
are expected below ``t``. The cuts solve ``F(t_j) = j * sum(sizes) / intervals``. Any cuts give the same order's
distribution; these only bound the work of one interval, so they need to be close, not exact, and cheap whatever
the number of groups and however far apart the weights are (they may span ``e^600``):

* everything is done on ``s = log t``, where each group's term is one smooth step about one nat wide wherever its
  weight puts it (a linear scale cannot place cuts at the scale of both ``w = 1`` and ``w = 1e-50``);
* groups whose log-weights lie within ``step`` are merged into one of their total size and size-weighted mean
  log-weight, which moves ``F`` only to second order: by at most ``0.16 * sum(sizes) * step ** 2`` keys, as
  ``|d^2 F / ds^2| <= 0.31 * sum(sizes)`` (each term is ``n x e^-x (1 - x)`` with ``x = w t``);
* ``F`` on a grid at half-nat steps brackets every target, bisection narrows each bracket to ``step`` and linear
  interpolation inside it errs by at most ``0.04 * sum(sizes) * step ** 2`` keys.

With ``step = 0.5 / sqrt(intervals)`` each cut's ``F`` is within 5% of an interval's keys of its target. The work
is ``(grid points + intervals * bisections) * merged groups``, merged groups ``<= log-weight range / step``: no
``intervals x groups`` table over all groups.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["expected_keys", "key_cuts"]

_GRID = 0.5  # nats between the points of the bracketing grid
_BLOCK = 1 << 20  # elements of one (points x groups) block when evaluating F


def expected_keys(t: np.ndarray, sizes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``F(t)``: the expected number of keys below each ``t`` (finite, >= 0), in blocks of bounded memory."""
    out = np.empty(len(t))
    rows = max(1, _BLOCK // max(1, len(sizes)))
    for start in range(0, len(t), rows):
        block = t[start : start + rows]
        out[start : start + rows] = (sizes * -np.expm1(-np.outer(block, weights))).sum(axis=1)
    return out


def key_cuts(sizes: np.ndarray, weights: np.ndarray, intervals: int) -> np.ndarray:
    """The inner cuts ``0 < t_1 < ... < t_k`` (``k <= intervals - 1``) of the key axis, each interval expecting
    ``sum(sizes) / intervals`` keys within 10% (see the module docstring).

    Args:
        sizes: keys per group (positive).
        weights: each group's rate, in ``(0, 1]`` and not under ``e^-700``.
        intervals: how many intervals to cut the key axis into.

    Returns:
        The cuts, strictly increasing (cuts that round to the same float are merged, so there may be fewer).
    """
    total = float(sizes.sum())
    if intervals <= 1:
        return np.empty(0)
    step = min(_GRID, 0.5 / math.sqrt(intervals))
    # merge groups of nearly equal weight: F only moves to second order
    log_weights = np.log(weights)
    _, bucket = np.unique(np.floor((log_weights - log_weights.min()) / step), return_inverse=True)
    merged_sizes = np.bincount(bucket, weights=sizes.astype(np.float64))
    merged = np.exp(np.bincount(bucket, weights=sizes * log_weights) / merged_sizes)

    def keys_below(s: np.ndarray) -> np.ndarray:
        return expected_keys(np.exp(s), merged_sizes, merged)

    targets = np.arange(1, intervals) * (total / intervals)
    # F(t) <= t * sum(n w), so the first target lies above `low`; past `high` under 1/2 key in all is expected
    low = math.log(targets[0] / float((merged_sizes * merged).sum()))
    high = float(np.max(np.log(np.log(2.0 * len(merged) * merged_sizes) / merged)))
    grid = np.linspace(low, high, max(2, math.ceil((high - low) / _GRID) + 1))
    below_grid = keys_below(grid)
    right = np.clip(np.searchsorted(below_grid, targets), 1, len(grid) - 1)
    lo, hi = grid[right - 1], grid[right]
    f_lo, f_hi = below_grid[right - 1], below_grid[right]
    for _ in range(max(0, math.ceil(math.log2((grid[1] - grid[0]) / step)))):
        mid = (lo + hi) / 2
        f_mid = keys_below(mid)
        under = f_mid < targets
        lo, f_lo = np.where(under, mid, lo), np.where(under, f_mid, f_lo)
        hi, f_hi = np.where(under, hi, mid), np.where(under, f_hi, f_mid)
    spread = f_hi - f_lo
    fraction = np.divide(targets - f_lo, spread, out=np.full_like(spread, 0.5), where=spread > 0)
    cuts = np.exp(lo + np.clip(fraction, 0.0, 1.0) * (hi - lo))
    return np.unique(np.maximum.accumulate(cuts))
