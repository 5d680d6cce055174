"""splitmix64's finalizer, for NumPy arrays and for Python ints: the one bit mixer of the package.

A bijection on 64-bit values in which every input bit changes about half the output bits. The samplers key
and run their Feistel permutations with it; the masked-LM collator derives its fingerprint weights and
per-batch generator states from it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOLDEN", "mix64", "mix64_array"]

GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2**64 / golden ratio), also its usual pre-multiplier
_M2 = 0xBF58476D1CE4E5B9
_M3 = 0x94D049BB133111EB
_MASK = (1 << 64) - 1


def mix64_array(x: np.ndarray) -> np.ndarray:
    """The finalizer of every uint64 in ``x``, as a new array (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x *= np.uint64(_M2)
    x ^= x >> np.uint64(27)
    x *= np.uint64(_M3)
    x ^= x >> np.uint64(31)
    return x


def mix64(x: int) -> int:
    """The finalizer of one int in ``[0, 2**64)``, equal to :func:`mix64_array` on it."""
    x = ((x ^ (x >> 30)) * _M2) & _MASK
    x = ((x ^ (x >> 27)) * _M3) & _MASK
    return x ^ (x >> 31)
