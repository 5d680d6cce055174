"""Sampler state: seeding from ``(seed, epoch)``, configuration fingerprints and state validation.

A sampler state is a plain dict of python scalars and strings, so ``json.dumps`` and
``torch.load(weights_only=True)`` both take it::

    {"sampler": "LengthGroupedBatchSampler", "fingerprint": "3f1c...", "seed": 0, "epoch": 2, "position": 117}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from hfbridge._checks import check_non_negative_int

__all__ = [
    "Cursor",
    "check_state",
    "epoch_rng",
    "fingerprint",
    "make_state",
    "to_index_array",
    "uneven_options",
]

uneven_options = ("pad", "drop", "exact")
_STATE_KEYS = ("sampler", "fingerprint", "seed", "epoch", "position")


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """A NumPy generator that depends only on ``(seed, epoch, stream)``: every rank draws the same numbers."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


def fingerprint(config: Mapping[str, Any], *arrays: np.ndarray) -> str:
    """A short hash of a configuration dict and the data arrays (lengths, labels) it was built over."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()


def make_state(name: str, fp: str, seed: int, epoch: int, position: int) -> dict[str, Any]:
    return {
        "sampler": name,
        "fingerprint": fp,
        "seed": int(seed),
        "epoch": int(epoch),
        "position": int(position),
    }


def check_state(state: Any, name: str, fp: str) -> tuple[int, int, int]:
    """Validate a state for the sampler ``name`` with fingerprint ``fp``; return ``(seed, epoch, position)``.

    Raises:
        TypeError: when ``state`` is not a mapping or a field has the wrong type.
        ValueError: when a key is missing, the state belongs to another sampler, or the configuration differs.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"`state` must be a dict from `state_dict()`; got {type(state).__name__}")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"`state` is missing keys {missing}; a sampler state has keys {list(_STATE_KEYS)}")
    if state["sampler"] != name:
        raise ValueError(f"`state` was saved by a {state['sampler']!r}, cannot load it into a {name!r}")
    if state["fingerprint"] != fp:
        raise ValueError(
            f"`state` was saved by a {name} configured differently (fingerprint {state['fingerprint']!r}, "
            f"this one is {fp!r}): lengths/labels, batch size or token budget, shuffle, drop_last, num_replicas "
            "or uneven must match the run that saved it, and so must the order's algorithm (a state from an "
            "hfbridge version that drew another order is refused too)"
        )
    values = []
    for key in ("seed", "epoch", "position"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise TypeError(f"`state[{key!r}]` must be a non-negative integer; got {value!r}")
        values.append(int(value))
    return values[0], values[1], values[2]


def to_index_array(name: str, values: Any) -> np.ndarray:
    """Convert lengths/labels (list, NumPy array, tensor, Arrow column) to a 1-D int64 array, or raise.

    Raises:
        TypeError: when ``values`` is not integer data.
        ValueError: when ``values`` is not 1-D, is empty, or holds negative numbers.
    """
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        values = values.to_numpy()
    elif hasattr(values, "numpy") and hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except Exception as exc:  # ragged or odd input
        raise TypeError(f"`{name}` must be a 1-D sequence of integers; got {type(values).__name__}") from exc
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one value per row); got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"`{name}` must not be empty; got 0 values")
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0):
            array = array.astype(np.int64)
        else:
            raise TypeError(f"`{name}` must hold integers; got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.min() < 0:
        raise ValueError(
            f"`{name}` must be non-negative; got {int(array.min())} at index {int(array.argmin())}"
        )
    return array


class Cursor:
    """Where a sampler stands: its epoch, what the running iterator has yielded, and a position loaded by
    ``load_state_dict`` for the next iterator. The one implementation of ``set_epoch``/``next_position``/
    ``state_dict``/``load_state_dict`` bookkeeping that every sampler delegates to.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self.yielded = 0  # items (batches or indices) of this epoch handed out by the running iterator
        self.resume_at: int | None = None  # set by `load`, consumed by the next `start`

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; a position loaded for the same epoch is kept."""
        check_non_negative_int("epoch", epoch)
        if epoch != self.epoch:
            self.resume_at = None
            self.yielded = 0
        self.epoch = epoch

    @property
    def next_position(self) -> int:
        """The position the next iterator starts from."""
        return self.resume_at if self.resume_at is not None else 0

    def start(self) -> int:
        """Begin an iterator: consume a loaded position and return where to start."""
        start = self.next_position
        self.resume_at = None
        self.yielded = start
        return start

    def position(self, override: int | None = None) -> int:
        """The position to save: ``override``, else a loaded one not yet consumed, else what was yielded."""
        if override is not None:
            return override
        return self.resume_at if self.resume_at is not None else self.yielded

    def resume(self, epoch: int, position: int, limit: int) -> None:
        """Make the next iterator start at ``position`` of ``epoch``.

        Raises:
            ValueError: when ``position`` is past ``limit`` (the items per epoch).
        """
        if position > limit:
            raise ValueError(f"`state['position']` must be <= {limit} per epoch; got {position}")
        self.epoch, self.resume_at, self.yielded = epoch, position, position

    def state(self, name: str, fp: str, seed: int, position: int | None = None) -> dict[str, Any]:
        """The state dict of a sampler ``name`` with fingerprint ``fp`` (see :func:`make_state`)."""
        return make_state(name, fp, seed, self.epoch, self.position(position))

    def load(self, state: Any, name: str, fp: str, limit: int) -> int:
        """Validate ``state`` (:func:`check_state`), resume from it and return its seed."""
        seed, epoch, position = check_state(state, name, fp)
        self.resume(epoch, position, limit)
        return seed
