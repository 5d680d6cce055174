"""A random permutation of ``range(n)`` that maps any slice of positions in O(slice), not O(n).

A balanced Feistel network over ``2 * half`` bits is a bijection; cycle-walking (re-encrypting values ``>= n``)
restricts it to ``range(n)``. Keys come from ``(seed, epoch, stream)``, so every rank computes the same permutation,
and resuming at position ``p`` maps only the positions it needs instead of shuffling the whole epoch again.
"""

from __future__ import annotations

import numpy as np

from hfbridge._mixing import GOLDEN, mix64_array

__all__ = ["Permutation", "Permutations"]

_ROUNDS = 6
_M1 = np.uint64(GOLDEN)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 of ``x`` (its golden-ratio multiply, then its finalizer)."""
    return mix64_array(x * _M1)


def _feistel(
    x: np.ndarray, half: np.ndarray | np.uint64, mask: np.ndarray | np.uint64, keys: np.ndarray
) -> np.ndarray:
    """One pass of the Feistel network over ``2 * half`` bits, one round per row of ``keys``; ``half``, ``mask`` and
    each round key are a scalar or one value per element of ``x``."""
    left, right = x >> half, x & mask
    for key in keys:
        left, right = right, left ^ (_mix(right ^ key) & mask)
    return (left << half) | right


def _half_bits(n: int) -> int:
    """Half the (even) bit width of the Feistel domain for ``range(n)``: ``2 ** (2 * half) < 4 n`` (n > 1)."""
    bits = max(2, (n - 1).bit_length())
    return (bits + bits % 2) // 2


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
        self._half = np.uint64(_half_bits(n))
        self._mask = np.uint64((1 << _half_bits(n)) - 1)
        self._keys = np.random.SeedSequence(list(entropy)).generate_state(_ROUNDS, dtype=np.uint64)

    def _encrypt(self, x: np.ndarray) -> np.ndarray:
        return _feistel(x, self._half, self._mask, self._keys)

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


class Permutations:
    """Independent random permutations of ``range(sizes[d])``, one per domain ``d``, mapped together:
    ``perms(domains, positions)`` costs one vectorised pass whatever the mix of domains.

    Args:
        sizes: size of each permuted range (non-negative ints).
        entropy: seeds of the whole family, e.g. ``(seed, epoch, stream)``; domain ``d``'s round keys are hashed
            from them and ``d``.
    """

    def __init__(self, sizes: np.ndarray, entropy: tuple[int, ...]) -> None:
        self.sizes = np.asarray(sizes, dtype=np.uint64)
        # _half_bits of every size at once: frexp's exponent of n - 1 is its bit length (exact below 2**53)
        bits = np.maximum(2, np.frexp(np.asarray(sizes, dtype=np.int64) - 1.0)[1])
        self._half = ((bits + bits % 2) // 2).astype(np.uint64)
        self._mask = (np.uint64(1) << self._half) - np.uint64(1)
        base = np.random.SeedSequence(list(entropy)).generate_state(_ROUNDS, dtype=np.uint64)
        domains = np.arange(len(self.sizes), dtype=np.uint64)[:, None]
        self._keys = _mix(base[None, :] + (domains + np.uint64(1)) * _M1)  # (domains, rounds)

    def __call__(self, domains: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Map ``positions[i]`` (in ``[0, sizes[domains[i]])``) through the permutation of ``domains[i]`` (int64)."""
        domains = np.asarray(domains, dtype=np.int64)
        values = np.array(positions, dtype=np.uint64)  # a copy: the walk writes into it
        walking = np.arange(len(values))
        while walking.size:  # cycle-walk values outside their domain: a domain is < 4 n, so few rounds
            of = domains[walking]
            values[walking] = _feistel(values[walking], self._half[of], self._mask[of], self._keys[of].T)
            walking = walking[values[walking] >= self.sizes[of]]
        return values.astype(np.int64)
