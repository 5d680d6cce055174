"""List rows of ints into int64 arrays with as few Python-level steps as possible: the list half of the fast path.

``struct`` does the conversion in C and rejects anything that is not an int (floats, strings, ``None``, nested
lists), so a bad row costs nothing to detect: the caller falls back to the general path, which names it.
"""

from __future__ import annotations

from struct import Struct
from typing import Any

import numpy as np

from hfbridge.collators._arrays import filled, ints_array, join_rows

__all__ = ["FLAG_KEYS", "pack_flags", "pack_ints", "pack_rows"]

FLAG_KEYS = frozenset({"attention_mask", "token_type_ids", "special_tokens_mask"})  # small ints, as a rule
_ROW_PACKERS: dict[int, Any] = {}  # row length -> a compiled ``pack_into`` for that many int64s


def pack_rows(column: list[Any], lens: list[int], width: int, pad: int, side: str) -> np.ndarray:
    """Write list rows of ints into a new ``[B, width]`` int64 buffer filled with ``pad``: one ``pack_into``
    per row at the row's offset, which also rejects floats, strings, None and nested lists."""
    out = filled((len(column), width), pad)
    packers: list[Any] = list(map(_ROW_PACKERS.get, lens))
    if None in packers:
        packers = [_packer(n) for n in lens]
    step = width * 8
    if side == "right":
        offsets: Any = range(0, len(lens) * step, step)
    else:
        offsets = [i * step + (width - n) * 8 for i, n in enumerate(lens)]
    buffer = out.data
    for packer, offset, row in zip(packers, offsets, column):
        packer(buffer, offset, *row)
    return out


def _packer(n: int) -> Any:
    """A compiled ``pack_into`` of ``n`` int64s, cached by ``n``."""
    packer = _ROW_PACKERS.get(n)
    if packer is None:
        if len(_ROW_PACKERS) >= 4096:
            _ROW_PACKERS.clear()
        packer = _ROW_PACKERS[n] = Struct(f"{n}q").pack_into
    return packer


def pack_flags(column: list[Any]) -> np.ndarray:
    """Concatenate list rows of ints in [0, 255] (masks, segment ids) into uint8: ``bytes`` converts them about
    twice as fast as ``pack_into``; any other value (or row type) goes through :func:`pack_ints`."""
    if [*map(type, column)].count(list) == len(column):
        try:
            return np.frombuffer(b"".join(map(bytes, column)), dtype=np.uint8)
        except (ValueError, TypeError):
            pass  # a value outside [0, 255] or not an int
    return pack_ints(column)


def pack_ints(column: list[Any]) -> np.ndarray:
    """Concatenate list rows into an int64 array with one C loop that rejects anything but ints."""
    return ints_array(join_rows(column))
