"""A random permutation of ``range(n)`` that maps any slice of positions in O(slice), not O(n).

A balanced Feistel network over ``2 * half`` bits is a bijection; cycle-walking (re-encrypting values ``>= n``)
restricts it to ``range(n)``. Keys come from ``(seed, epoch, stream)``, so every rank computes the same permutation,
and resuming at position ``p`` maps only the positions it needs instead of shuffling the whole epoch again.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Permutation"]

_ROUNDS = 6
_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)


class Permutation:
    """``perm(positions)`` -> the values at those positions of a random permutation of ``range(n)``.

    Args:
        n: size of the permuted range.
        entropy: seeds of the permutation, e.g. ``(seed, epoch, stream)``.
        shuffle: ``False`` gives the identity.
    """

    def __init__(self, n: int, entropy: tuple[int, ...], *, shuffle: bool = True) -> None:
        self.n = n
        self.shuffle = shuffle
        bits = max(2, (n - 1).bit_length())
        bits += bits % 2
        self._half = np.uint64(bits // 2)
        self._mask = np.uint64((1 << (bits // 2)) - 1)
        self._keys = np.random.SeedSequence(list(entropy)).generate_state(_ROUNDS, dtype=np.uint64)

    def _round(self, right: np.ndarray, key: np.uint64) -> np.ndarray:
        h = (right ^ key) * _M1  # splitmix64-style mixing; uint64 arithmetic wraps
        h ^= h >> np.uint64(30)
        h *= _M2
        h ^= h >> np.uint64(27)
        h *= _M3
        h ^= h >> np.uint64(31)
        return h & self._mask

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        left, right = x >> self._half, x & self._mask
        for key in self._keys:
            left, right = right, left ^ self._round(right, key)
        return (left << self._half) | right

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        """Map ``positions`` (ints in ``[0, n)``) to their permuted values (int64)."""
        if not self.shuffle:
            return np.asarray(positions, dtype=np.int64)
        values = self._encrypt(np.asarray(positions, dtype=np.uint64))
        n = np.uint64(self.n)
        outside = np.flatnonzero(values >= n)
        while outside.size:  # cycle-walk: at most a few rounds, as 2 ** bits < 4 n
            values[outside] = self._encrypt(values[outside])
            outside = outside[values[outside] >= n]
        return values.astype(np.int64)

    def all(self) -> np.ndarray:
        """The whole permutation."""
        return self(np.arange(self.n))
