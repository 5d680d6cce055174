"""A batch as columns: its rows validated once per batch and classified from the first row; the column
operations: the lengths, values and padded buffer of one key across a batch.

Producers that already hold the batch as columns (the adapters: a tokenizer returns columns) hand over a
:class:`ColumnRows`, a plain list of row dicts that also carries the columns, so our collators skip gathering
the rows back into columns; any other collator sees an ordinary list of dicts.

Every column operation takes one *column* (the values of one key, one per row) and returns a fresh NumPy array
that never aliases the caller's data. Lists of ints are converted by ``struct`` in C (which also rejects
floats, strings, ``None`` and nested lists), arrays by one ``np.concatenate``, tensors by one ``torch.cat``;
padding writes into a buffer filled with the pad value.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from itertools import repeat
from struct import Struct, pack_into
from struct import error as StructError
from typing import Any, Literal

import numpy as np

__all__ = [
    "ALIGNED_KEYS",
    "Batch",
    "ColumnRows",
    "KeyKind",
    "Rule",
    "Side",
    "column_lengths",
    "constant_padded",
    "constant_value",
    "filled",
    "flatten_column",
    "gather_columns",
    "is_tensor",
    "key_kind",
    "output_name",
    "pack_rows",
    "padding_mask",
    "raise_bad_element",
    "raise_misaligned",
    "scatter_padded",
    "stack_fixed",
    "stack_scalars",
    "to_torch",
    "truncate_flat",
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
    """The keys and columns of ``features``: a non-empty list of mappings with one set of keys, or raise."""
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
    if [*map(type, features)].count(dict) == n and [*map(len, features)].count(width) == n:
        try:
            return keys, {key: [row[key] for row in features] for key in keys}
        except KeyError:
            pass  # find the row below
    for i, row in enumerate(features):
        if not isinstance(row, Mapping):
            raise TypeError(
                f"every feature row must be a mapping such as a dict; row {i} is {type(row).__name__}"
            )
        if row.keys() != first.keys():
            _raise_key_mismatch(keys, i, row)
    return keys, {key: [row[key] for row in features] for key in keys}


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
    """Classify a key by its value in row 0: dropped, one scalar, one sequence, or a sequence of sequences."""
    kind = type(value)
    if kind is int or kind is float:  # the common case first (a list of ints is caught by the caller)
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


# ------------------------------------------------------------------------------------------ column operations

Side = Literal["left", "right"]
# what a key may hold: token ids (ints, never bools), ints (bools count as 0/1) or numbers
Rule = Literal["ids", "ints", "numbers"]
_INT64_MAX = 2**63 - 1
_ROW_PACKERS: dict[int, Any] = {}  # row length -> a compiled ``pack_into`` of that many int64s
# width -> [width + 1, width] table whose row n is n trues, then falses
_MASK_TABLES: dict[int, np.ndarray] = {}


def is_tensor(value: Any) -> bool:
    if type(value) is list:
        return False
    torch = sys.modules.get("torch")  # never import torch just to ask
    return torch is not None and isinstance(value, torch.Tensor)


def to_torch(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with every NumPy array made a tensor that shares its memory; other values as they are."""
    import torch

    try:
        return dict(zip(batch, map(torch.from_numpy, batch.values())))  # all arrays, as a rule: one C loop
    except TypeError:  # a list of kept strings
        return {k: torch.from_numpy(v) if type(v) is np.ndarray else v for k, v in batch.items()}


def column_lengths(name: str, column: Sequence[Any]) -> list[int]:
    """The per-row lengths of a sequence column (a row that holds no sequence is a ``TypeError``)."""
    try:
        first = column[0]
        return list(map(type(first).numel, column)) if is_tensor(first) else list(map(len, column))
    except (TypeError, AttributeError):
        for i, value in enumerate(column):
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or np.ndim(value) == 0:
                raise TypeError(
                    f"`{name}` must hold a sequence in every row (row 0 does); row {i} holds "
                    f"{type(value).__name__} {value!r:.60}"
                ) from None
        return [len(value) for value in column]  # a mix of tensors and other sequences


def raise_bad_element(name: str, column: Sequence[Any], rule: Rule) -> None:
    """Raise the error that names the first element of a list column that ``rule`` does not allow.

    Returns without raising when every element is allowed (floats in a ``"numbers"`` key).
    """
    want = "numbers" if rule == "numbers" else "integers"
    for i, row in enumerate(column):
        for j, x in enumerate(row):
            if isinstance(x, (list, tuple)) or np.ndim(x) > 0:
                raise ValueError(
                    f"`{name}` has ragged nesting: row 0 holds a flat sequence but row {i} holds a nested "
                    f"sequence at position {j} ({x!r:.60}); every row must have the same nesting depth"
                )
            if rule == "ids" and isinstance(x, (bool, np.bool_)):
                raise TypeError(f"`{name}` must hold token ids, not bools; row {i}, position {j} is {x!r}")
            if isinstance(x, (int, np.integer)) and not -_INT64_MAX - 1 <= x <= _INT64_MAX:
                raise ValueError(
                    f"`{name}` must hold 64-bit integers; row {i}, position {j} is {x}, outside "
                    f"[-2**63, 2**63)"
                )
            if not isinstance(x, (int, np.integer)) and (
                rule != "numbers" or not isinstance(x, (float, np.floating))
            ):
                raise TypeError(
                    f"`{name}` must hold {want}; row {i}, position {j} is {type(x).__name__} {x!r:.60}"
                )


def flatten_column(name: str, column: Sequence[Any], lengths: Sequence[int], rule: Rule) -> np.ndarray:
    """Concatenate the rows of a 1-D sequence column into one new flat array: ints as int64, floats (allowed
    only by ``rule="numbers"``) as float32."""
    first = column[0]
    if isinstance(first, (list, tuple)):
        flat: list[Any] = []
        extend = flat.extend  # not `flat += row`: a NumPy row would hijack `+=`
        for row in column:
            extend(row)
        out = np.empty(len(flat), dtype=np.int64)
        try:
            pack_into(f"={len(flat)}q", out.data, 0, *flat)
            return out
        except (StructError, TypeError):
            raise_bad_element(name, column, rule)  # returns only for floats in a "numbers" key
        floats = np.empty(len(flat), dtype=np.float64)
        pack_into(f"={len(flat)}d", floats.data, 0, *flat)
        return floats.astype(np.float32)
    # empty rows are left out: np.asarray([]) is float64 and would make the whole batch float
    parts = [row for row, n in zip(column, lengths) if n] if 0 in lengths else list(column)
    if not parts:
        return np.zeros(0, dtype=np.int64)
    if is_tensor(first):
        import torch

        try:
            joined = torch.cat(parts)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"`{name}` must hold 1-D tensors of one kind in every row; could not concatenate: {err}"
            ) from None
        # is_cpu: ~0.3 us less than comparing device.type, once per key and batch
        arr = joined.numpy() if joined.is_cpu and not joined.requires_grad else joined.detach().cpu().numpy()
    else:
        try:
            arr = np.concatenate(parts)
        except ValueError as err:
            raise ValueError(
                f"`{name}` has ragged nesting: rows must all be 1-D sequences; could not concatenate: {err}"
            ) from None
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must hold 1-D sequences per row; got rows of shape {first.shape}")
    kind = arr.dtype.kind
    if kind == "b" and rule == "ids":
        raise TypeError(f"`{name}` must hold token ids, not bools; got rows of dtype {arr.dtype}")
    if kind in "iub":
        if kind == "u" and arr.dtype == np.uint64 and arr.size and int(arr.max()) > _INT64_MAX:
            raise ValueError(f"`{name}` must hold 64-bit integers; got {int(arr.max())}, over 2**63 - 1")
        return arr.astype(np.int64, copy=False)
    if kind == "f" and rule == "numbers":
        return arr.astype(np.float32, copy=False)
    want = "numbers" if rule == "numbers" else "integers"
    raise TypeError(f"`{name}` must hold {want}; got dtype {arr.dtype}")


def pack_rows(column: Sequence[Any], lengths: list[int], width: int, pad: int, side: Side) -> np.ndarray:
    """Write rows of ints into a new ``[B, width]`` int64 buffer filled with ``pad``, one compiled
    ``pack_into`` per row; a ``struct.error`` (an element not an int64) is left to the caller to name."""
    out = filled((len(column), width), pad)
    if not width:
        return out
    packers: list[Any] = list(map(_ROW_PACKERS.get, lengths))
    if None in packers:
        if len(_ROW_PACKERS) > 4096:
            _ROW_PACKERS.clear()
        for n in lengths:
            if n not in _ROW_PACKERS:
                _ROW_PACKERS[n] = Struct(f"{n}q").pack_into
        packers = list(map(_ROW_PACKERS.__getitem__, lengths))
    step = width * 8
    if side == "right":
        offsets: Any = range(0, len(lengths) * step, step)
    else:
        offsets = [i * step + (width - n) * 8 for i, n in enumerate(lengths)]
    buffer = out.data
    for packer, offset, row in zip(packers, offsets, column):
        packer(buffer, offset, *row)
    return out


def constant_value(column: Sequence[Any], lengths: list[int]) -> int | None:
    """``v`` when row ``i`` is a list of ``lengths[i]`` copies of one int ``v`` (an all-ones mask), else None.

    ``list.count`` runs in C, so this costs far less than converting the rows.
    """
    first = column[0]
    if type(first) is not list or not first or type(first[0]) is not int:
        return None
    value = first[0]
    # row 0 first, end then whole: ids ([CLS] ... [SEP]) are turned down after one comparison
    if (
        first[-1] != value
        or first.count(value) != len(first)
        or [*map(type, column)].count(list) != len(column)
    ):
        return None
    return value if list(map(list.count, column, repeat(value))) == lengths else None


def truncate_flat(flat: np.ndarray, lengths: np.ndarray, max_length: int, side: Side) -> np.ndarray:
    """Keep at most ``max_length`` elements of every row of ``flat``, cutting on ``side``."""
    starts = np.cumsum(lengths) - lengths
    offsets = np.arange(flat.shape[0]) - np.repeat(starts, lengths)
    keep = offsets < max_length if side == "right" else offsets >= np.repeat(lengths - max_length, lengths)
    return flat[keep]


def padding_mask(lengths: Sequence[int] | np.ndarray, width: int, side: Side) -> np.ndarray:
    """The ``[B, width]`` boolean mask of real (non-pad) positions (``lengths`` at most ``width``).

    Up to width 512 the mask is one gather of rows of a precomputed table; the result may then be a
    non-contiguous view of a fresh array, never shared with another call.
    """
    if width > 512:
        positions = np.arange(width)
        lengths = np.asarray(lengths, dtype=np.int64)
        if side == "right":
            return positions < lengths[:, None]
        return positions >= (width - lengths)[:, None]
    size = 1 << max(int(width) - 1, 63).bit_length()  # the table width: 64, 128, 256 or 512
    table = _MASK_TABLES.get(size)
    if table is None:
        table = _MASK_TABLES[size] = np.arange(size) < np.arange(size + 1)[:, None]
    rows = table.take(lengths, axis=0)
    if side == "right":
        return rows[:, :width]
    return rows[:, width - 1 :: -1] if width else rows[:, :0]  # row n reversed: falses, then n trues


def _padded_dtype(dtype: np.dtype, pad_value: float) -> np.dtype:
    """An int key padded with a non-integral float (``pad_values={"w": 0.5}``) becomes float32."""
    if dtype.kind in "iub" and isinstance(pad_value, float) and not pad_value.is_integer():
        return np.dtype(np.float32)
    return dtype


def filled(shape: tuple[int, ...], value: float, dtype: Any = np.int64) -> np.ndarray:
    """A new array of ``shape`` holding ``value`` everywhere."""
    if value == 0:
        return np.zeros(shape, dtype=dtype)
    out = np.empty(shape, dtype=dtype)
    out.fill(value)
    return out


def scatter_padded(flat: np.ndarray, mask: np.ndarray, pad_value: float) -> np.ndarray:
    """Write ``flat`` into a new ``mask.shape`` buffer where ``mask`` is true, ``pad_value`` elsewhere."""
    dtype = _padded_dtype(flat.dtype, pad_value)
    if flat.shape[0] == mask.size:  # nothing to pad: every row already has the full width
        return flat.astype(dtype).reshape(mask.shape)  # astype copies: never a view of the caller's data
    out = filled(mask.shape, pad_value, dtype)
    out[mask] = flat
    return out


def constant_padded(mask: np.ndarray, value: int, pad_value: float) -> np.ndarray:
    """A padded int key whose every real position holds ``value`` (e.g. an all-ones attention mask)."""
    dtype = _padded_dtype(np.dtype(np.int64), pad_value)
    if value == 1 and pad_value == 0:
        return mask.astype(dtype)
    if value == pad_value:
        return filled(mask.shape, value, dtype)
    return np.where(mask, dtype.type(value), dtype.type(pad_value))


def stack_scalars(name: str, column: Sequence[Any], hint: str = "") -> np.ndarray:
    """Stack one scalar per row (Python, NumPy or tensor scalars): ints as int64, floats as float32, bools as
    bool; ``hint`` ends the error for a row that holds a sequence."""
    if type(column[0]) is int:  # the usual class ids: one C loop, which also rejects floats and lists
        out = np.empty(len(column), dtype=np.int64)
        try:
            pack_into(f"={len(column)}q", out.data, 0, *column)
            return out
        except (StructError, TypeError):
            pass  # other numbers, or a bad row: read each row below
    values = [value.item() if getattr(value, "ndim", None) == 0 else value for value in column]
    for i, value in enumerate(values):
        if isinstance(value, (list, tuple)) or np.ndim(value) != 0:
            raise ValueError(
                f"`{name}` must be one scalar per row, as row 0 is; row {i} holds {value!r:.60}{hint}"
            )
    arr = np.array(values)
    kind = arr.dtype.kind
    if kind in "iu":
        return arr.astype(np.int64)
    if kind == "f":
        return arr.astype(np.float32)
    if kind == "b":
        return arr
    bad = next((i for i, v in enumerate(values) if not isinstance(v, (int, float, np.number, np.bool_))), 0)
    raise TypeError(
        f"`{name}` must hold numbers; row {bad} holds {type(values[bad]).__name__} {values[bad]!r:.60}"
    )


def stack_fixed(name: str, column: Sequence[Any], lengths: list[int]) -> np.ndarray:
    """Stack fixed-length rows (multi-hot labels, say) into ``[B, n]``."""
    if min(lengths) != max(lengths):
        i = next(i for i, n in enumerate(lengths) if n != lengths[0])
        raise ValueError(
            f"`{name}` has variable length (row 0 has {lengths[0]}, row {i} has {lengths[i]}) but no known "
            f"pad value; pass `pad_values={{{name!r}: value}}` to pad it (fixed-length keys such as "
            "multi-hot labels must have the same length in every row)"
        )
    return flatten_column(name, column, lengths, "numbers").reshape(len(column), -1)
