"""A batch's rows as columns: validated once per batch, classified from the first row.

Producers that already hold the batch as columns (the adapters: a tokenizer returns columns) hand over a
:class:`ColumnRows`, a plain list of row dicts that also carries the columns, so our collators skip gathering
the rows back into columns; any other collator sees an ordinary list of dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

__all__ = [
    "ALIGNED_KEYS",
    "Batch",
    "ColumnRows",
    "KeyKind",
    "gather_columns",
    "key_kind",
    "output_name",
    "raise_misaligned",
    "unnest",
]

# a collated batch: key -> array (or tensor, or a list of kept strings)
Batch = dict[str, Any]
# keys that must be as long as `input_ids` in every row (they describe the same tokens)
ALIGNED_KEYS = frozenset({"attention_mask", "token_type_ids", "special_tokens_mask", "position_ids"})

KeyKind = Literal["skip", "scalar", "seq", "nested"]


class ColumnRows(list[dict[str, Any]]):
    """A list of feature rows built from columns, which it keeps in ``columns``.

    It is an ordinary ``list`` of ``dict`` rows to any code that takes one (HF's collators,
    ``default_collate``). The rows hold the very objects of the columns, so our collators read the columns
    instead of gathering them again; they check first that the rows still match (same keys and lengths, row 0
    and the last row holding the columns' own objects), and read the rows if not. Adding attributes is all
    this subclass does.

    Args:
        columns: key -> one value per row, every column as long as the others.

    Example:
        >>> rows = ColumnRows({"input_ids": [[5, 6], [7]], "label": [1, 0]})
        >>> rows[1], len(rows.columns["input_ids"])
        ({'input_ids': [7], 'label': 0}, 2)
    """

    __slots__ = ("columns",)

    def __init__(self, columns: Mapping[str, Sequence[Any]]) -> None:
        self.columns = dict(columns)
        keys = list(self.columns)
        super().__init__(dict(zip(keys, values)) for values in zip(*self.columns.values()))


def _fresh_columns(features: Any) -> dict[str, Sequence[Any]] | None:
    """The columns of a :class:`ColumnRows` that its rows still match, else ``None``."""
    if type(features) is not ColumnRows or not features:
        return None
    columns = features.columns
    first, last, n = features[0], features[-1], len(features)
    if type(first) is not dict or type(last) is not dict or not len(first) == len(columns) == len(last):
        return None
    for key, column in columns.items():
        if (
            len(column) != n
            or first.get(key, first) is not column[0]
            or last.get(key, last) is not column[-1]
        ):
            return None
    return columns


def gather_columns(features: Any) -> tuple[list[Any], dict[str, Sequence[Any]]]:
    """Check that ``features`` is a non-empty list of mappings with one set of keys; return keys and columns.

    Raises:
        TypeError: ``features`` is not a list/tuple of mappings.
        ValueError: an empty batch, or rows with different sets of keys.
    """
    columns = _fresh_columns(features)
    if columns is not None:
        return list(columns), columns
    if not isinstance(features, (list, tuple)):
        raise TypeError(
            "`features` must be a list of feature rows (mappings such as dicts); got "
            f"{type(features).__name__}"
        )
    if not features:
        raise ValueError("`features` must be a non-empty list of feature rows; got an empty batch")
    first = features[0]
    keys = list(first.keys()) if isinstance(first, Mapping) else []
    n, width = len(features), len(keys)
    # plain dicts with as many keys as row 0 (a defaultdict would invent a missing key): a KeyError while
    # gathering is then the only way rows can differ
    if [*map(type, features)].count(dict) != n or [*map(len, features)].count(width) != n:
        for i, row in enumerate(features):
            if not isinstance(row, Mapping):
                raise TypeError(
                    f"every feature row must be a mapping such as a dict; row {i} is {type(row).__name__}"
                )
            if row.keys() != first.keys():
                _raise_key_mismatch(keys, i, row)
    try:
        return keys, {key: [row[key] for row in features] for key in keys}
    except KeyError:
        for i, row in enumerate(features):
            if row.keys() != first.keys():
                _raise_key_mismatch(keys, i, row)
        raise


def _raise_key_mismatch(keys: list[Any], i: int, row: Mapping[str, Any]) -> None:
    missing = sorted(set(keys) - set(row))
    extra = sorted(set(row) - set(keys))
    raise ValueError(
        f"every row must have the same keys as row 0 ({sorted(keys)}); row {i} "
        + (f"lacks {missing}" if missing else "")
        + (" and " if missing and extra else "")
        + (f"has extra keys {extra}" if extra else "")
    )


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
        if value and type(value[0]) is int:
            return "seq"
    elif kind is int or kind is float:
        return "scalar"
    if value is None or isinstance(value, (str, bytes)):
        return "skip"
    if isinstance(value, (bool, int, float, np.generic)):
        return "scalar"
    ndim = getattr(value, "ndim", None)
    if ndim is not None:  # ndarray or tensor
        if ndim <= 2:
            return ("scalar", "seq", "nested")[ndim]
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


def unnest(name: str, column: Sequence[Any]) -> tuple[int, list[Any]]:
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
        f"`{name}` must be as long as `input_ids` in every row; row {i} has {lengths[i]} vs {ref[i]} "
        "input ids"
    )
