"""Batch-level checks and key classification, done once per batch from the first row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

__all__ = [
    "ALIGNED_KEYS",
    "INTEGER_KEYS",
    "KeyKind",
    "check_rows",
    "gather",
    "is_float_sequence",
    "key_kind",
    "output_name",
    "raise_misaligned",
    "unnest",
]

# keys that must be as long as `input_ids` in every row (they describe the same tokens)
ALIGNED_KEYS = frozenset({"attention_mask", "token_type_ids", "special_tokens_mask", "position_ids"})
# sequence keys that hold integer ids or flags: a float in them is a bug, never a value to keep
INTEGER_KEYS = frozenset(
    {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "special_tokens_mask",
        "position_ids",
        "decoder_input_ids",
        "decoder_attention_mask",
        "labels",
    }
)

KeyKind = Literal["skip", "scalar", "seq", "nested"]


def check_rows(features: Any) -> list[Any]:
    """Check that ``features`` is a non-empty list of mappings that all have the same keys; return its keys.

    Raises:
        TypeError: ``features`` is not a list/tuple of mappings.
        ValueError: an empty batch, or rows with different sets of keys.
    """
    if not isinstance(features, (list, tuple)):
        raise TypeError(
            f"`features` must be a list of feature rows (mappings such as dicts); got {type(features).__name__}"
        )
    if not features:
        raise ValueError("`features` must be a non-empty list of feature rows; got an empty batch")
    first = features[0]
    if not isinstance(first, Mapping):
        raise TypeError(
            f"every feature row must be a mapping such as a dict; row 0 is {type(first).__name__}"
        )
    keys = list(first.keys())
    width = len(keys)
    for i, row in enumerate(features):
        if type(row) is not dict and not isinstance(row, Mapping):
            raise TypeError(
                f"every feature row must be a mapping such as a dict; row {i} is {type(row).__name__}"
            )
        if len(row) != width:
            _raise_key_mismatch(keys, i, row)
    return keys


def _raise_key_mismatch(keys: list[Any], i: int, row: Mapping[str, Any]) -> None:
    missing = sorted(set(keys) - set(row))
    extra = sorted(set(row) - set(keys))
    raise ValueError(
        f"every row must have the same keys as row 0 ({sorted(keys)}); row {i} "
        + (f"lacks {missing}" if missing else "")
        + (" and " if missing and extra else "")
        + (f"has extra keys {extra}" if extra else "")
    )


def gather(features: Sequence[Mapping[str, Any]], key: str, keys: list[Any]) -> list[Any]:
    """Return ``[row[key] for row in features]``, with an error naming the first row that lacks ``key``."""
    try:
        return [row[key] for row in features]
    except KeyError:
        for i, row in enumerate(features):
            if key not in row:
                _raise_key_mismatch(keys, i, row)
        raise


def output_name(key: str) -> str:
    """HF's renaming: ``label`` and ``label_ids`` become ``labels`` (what models take)."""
    return "labels" if key in ("label", "label_ids") else key


def key_kind(name: str, value: Any) -> KeyKind:
    """Classify a key from its value in row 0: dropped, one scalar, one sequence, or a sequence of sequences.

    Raises:
        TypeError: a value that is neither a number, a sequence, a string nor ``None``.
    """
    kind = type(value)
    if kind is list:  # the common case first: a list of ints
        inner = value[0] if value else None
        if type(inner) is int:
            return "seq"
    elif kind is int or kind is float:
        return "scalar"
    if value is None or isinstance(value, (str, bytes)):
        return "skip"
    if isinstance(value, (bool, int, float, np.generic)):
        return "scalar"
    ndim = getattr(value, "ndim", None)
    if ndim is not None:  # ndarray or tensor
        if ndim == 0:
            return "scalar"
        if ndim == 1:
            return "seq"
        if ndim == 2:
            return "nested"
        raise ValueError(f"`{name}` must be a scalar, 1-D or 2-D per row; row 0 has {ndim} dimensions")
    if isinstance(value, (list, tuple)):
        inner = next((x for x in value if x is not None), None)
        if isinstance(inner, (list, tuple)) or getattr(inner, "ndim", 0) == 1:
            return "nested"
        return "seq"
    raise TypeError(
        f"`{name}` must be a number, a sequence (list, NumPy array, tensor), a string or None; "
        f"row 0 holds {type(value).__name__}"
    )


def is_float_sequence(value: Any) -> bool:
    """Whether a 1-D row holds floats (multi-hot labels), judged from its dtype or first element."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return bool(getattr(dtype, "is_floating_point", False)) or getattr(dtype, "kind", "") == "f"
    return bool(value) and isinstance(value[0], (float, np.floating))


def unnest(name: str, column: list[Any]) -> tuple[int, list[Any]]:
    """Flatten a column of ``[C, L]`` rows into ``B * C`` rows; every row must have the same ``C``."""
    counts = [len(row) for row in column]
    if min(counts) != max(counts):
        i = next(i for i, c in enumerate(counts) if c != counts[0])
        raise ValueError(
            f"`{name}` is nested (one sequence per choice) but ragged: row 0 has {counts[0]} sequences, "
            f"row {i} has {counts[i]}; every row needs the same number"
        )
    if counts[0] == 0:
        raise ValueError(f"`{name}` is nested (one sequence per choice) but row 0 holds no sequence")
    return counts[0], [seq for row in column for seq in row]


def raise_misaligned(name: str, lengths: list[int], ref: list[int]) -> None:
    if len(lengths) != len(ref):
        raise ValueError(
            f"`{name}` and `input_ids` must have the same nesting; got {len(lengths)} vs {len(ref)} rows"
        )
    i = next(i for i, (a, b) in enumerate(zip(lengths, ref)) if a != b)
    raise ValueError(
        f"`{name}` must be as long as `input_ids` in every row; row {i} has {lengths[i]} vs {ref[i]} input ids"
    )
