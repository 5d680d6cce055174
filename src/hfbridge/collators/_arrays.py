"""Low-level column operations: lengths, flattening and padding of one key across a batch.

Every function takes one *column* (the values of one key, one per row) and returns a fresh NumPy array that
never aliases the caller's data. The fast paths avoid per-element Python: lists go through one ``list.extend`` per row
and one ``struct.pack_into`` conversion into the NumPy buffer (which also rejects non-integers), arrays through one ``np.concatenate``,
tensors through one ``torch.cat``; padding is a single boolean-mask scatter into a preallocated buffer.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from struct import error as StructError
from struct import pack_into
from typing import Any, Literal

import numpy as np

__all__ = [
    "Side",
    "aligned_constant",
    "column_lengths",
    "constant_padded",
    "filled",
    "flatten_column",
    "ints_array",
    "join_rows",
    "padded_dtype",
    "padding_mask",
    "scatter_padded",
    "stack_fixed",
    "stack_scalars",
    "to_torch",
    "truncate_flat",
    "uniform_value",
]

Side = Literal["left", "right"]
_ARANGE = np.arange(8192)  # sliced, not rebuilt, for padding masks wider than the tables below
# table width -> a [width + 1, width] bool table whose row n is n trues, then falses
_MASK_TABLES: dict[int, np.ndarray] = {}


def _is_tensor(value: Any) -> bool:
    torch = sys.modules.get("torch")  # never import torch just to ask
    return torch is not None and isinstance(value, torch.Tensor)


def to_torch(batch: dict[str, Any]) -> dict[str, Any]:
    """``batch`` with every NumPy array made a tensor that shares its memory; other values as they are."""
    torch: Any = sys.modules.get("torch")
    if torch is None:
        import torch
    from_numpy = torch.from_numpy
    try:
        return dict(zip(batch, map(from_numpy, batch.values())))  # all arrays, as a rule: one C loop
    except TypeError:
        return {k: from_numpy(v) if type(v) is np.ndarray else v for k, v in batch.items()}


def column_lengths(name: str, column: Sequence[Any]) -> list[int]:
    """Return the per-row lengths of a sequence column.

    Raises:
        TypeError: a row holds a scalar where row 0 holds a sequence.
    """
    try:
        if _is_tensor(column[0]):
            return [value.numel() for value in column]  # len() of a tensor costs ~1 us, numel() ~0.1 us
        return [len(value) for value in column]
    except (TypeError, AttributeError):
        for i, value in enumerate(column):
            if (
                isinstance(value, (str, bytes))
                or not hasattr(value, "__len__")
                or getattr(value, "ndim", 1) == 0
            ):
                raise TypeError(
                    f"`{name}` must hold a sequence in every row (row 0 does); row {i} holds "
                    f"{type(value).__name__} {value!r:.60}"
                ) from None
        return [len(value) for value in column]  # a mix of tensors and other sequences


def _diagnose_elements(name: str, column: Sequence[Any], integer: bool) -> None:
    """Find the first bad element of a list column and raise an error that names it (slow path)."""
    want = "integers" if integer else "numbers"
    for i, row in enumerate(column):
        for j, x in enumerate(row):
            if isinstance(x, (list, tuple)) or getattr(x, "ndim", 0) > 0:
                raise ValueError(
                    f"`{name}` has ragged nesting: row 0 holds a flat sequence but row {i} holds a nested "
                    f"sequence at position {j} ({x!r:.60}); every row must have the same nesting depth"
                )
            ok = isinstance(x, (int, np.integer)) or (not integer and isinstance(x, (float, np.floating)))
            if not ok:
                raise TypeError(
                    f"`{name}` must hold {want}; row {i}, position {j} is {type(x).__name__} {x!r:.60}"
                )


def flatten_column(
    name: str, column: Sequence[Any], *, integer: bool, lengths: Sequence[int] | None = None
) -> np.ndarray:
    """Concatenate the rows of a 1-D sequence column into one flat array.

    Args:
        name: the key, for error messages.
        column: one list, tuple, 1-D array or 1-D tensor per row.
        integer: whether the key must hold integers (result int64); otherwise floats are allowed too
            (result float32 when any row holds floats, else int64).
        lengths: the rows' lengths when already known (saves a pass over tensor rows).

    Returns:
        A new 1-D array of all the rows' elements, row after row.

    Raises:
        TypeError: a non-integer in an integer key, or a non-number anywhere.
        ValueError: rows of different nesting depth.
    """
    first = column[0]
    if isinstance(first, (list, tuple)):
        flat = join_rows(column)
        try:
            return ints_array(flat)
        except (StructError, TypeError, OverflowError):
            if not integer:
                floats = np.empty(len(flat), dtype=np.float64)
                try:
                    pack_into(f"={len(flat)}d", floats.data, 0, *flat)
                    return floats.astype(np.float32)
                except (StructError, TypeError):
                    pass
            _diagnose_elements(name, column, integer)
            raise
    # empty rows are left out: np.asarray([]) is float64 and would make the whole batch float
    if lengths is None:
        lengths = column_lengths(name, column)
    parts = [row for row, n in zip(column, lengths) if n] if 0 in lengths else list(column)
    if not parts:
        return np.zeros(0, dtype=np.int64)
    if _is_tensor(first):
        import torch

        try:
            arr = torch.cat(parts).detach().cpu().numpy()
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"`{name}` must hold 1-D tensors of one kind in every row; could not concatenate: {err}"
            ) from None
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
    if kind in "iub":
        return arr.astype(np.int64, copy=False)
    if kind == "f" and not integer:
        return arr.astype(np.float32, copy=False)
    raise TypeError(f"`{name}` must hold {'integers' if integer else 'numbers'}; got dtype {arr.dtype}")


def truncate_flat(flat: np.ndarray, lengths: np.ndarray, max_length: int, side: Side) -> np.ndarray:
    """Keep at most ``max_length`` elements of every row of ``flat``, cutting on ``side``."""
    starts = np.cumsum(lengths) - lengths
    offsets = np.arange(flat.shape[0]) - np.repeat(starts, lengths)
    keep = offsets < max_length if side == "right" else offsets >= np.repeat(lengths - max_length, lengths)
    return flat[keep]


def padding_mask(lengths: Sequence[int] | np.ndarray, width: int, side: Side) -> np.ndarray:
    """Return the ``[B, width]`` boolean mask of real (non-pad) positions (``lengths`` at most ``width``).

    Up to width 512 the mask is one gather of precomputed rows (a few times cheaper than comparing against
    ``arange``); the result may then be a non-contiguous view of a fresh array, never shared with another call.
    """
    if width > 512:
        positions = _ARANGE[:width] if width <= _ARANGE.shape[0] else np.arange(width)
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


def padded_dtype(dtype: np.dtype, pad_value: float) -> np.dtype:
    """The dtype that holds both a key's values and its pad value.

    An integer (or bool) key padded with a non-integral float (``pad_values={"w": 0.5}``) becomes float32, the
    float dtype the collators return; otherwise the key keeps its dtype.
    """
    if dtype.kind in "iub" and isinstance(pad_value, float) and not pad_value.is_integer():
        return np.dtype(np.float32)
    return dtype


def join_rows(column: Sequence[Any]) -> list[Any]:
    """All rows' elements in one list, row after row (one C-level ``extend`` per row)."""
    flat: list[Any] = []
    extend = flat.extend  # not `flat += row`: a NumPy row would hijack `+=` and refuse
    for row in column:
        extend(row)
    return flat


def ints_array(flat: list[Any]) -> np.ndarray:
    """``flat`` as a new int64 array, converted by one ``struct.pack_into`` C loop straight into the array's
    buffer; it raises on floats, strings, ``None`` and nested lists (about twice as fast as ``array.fromlist`` or
    ``np.fromiter``)."""
    out = np.empty(len(flat), dtype=np.int64)
    pack_into(f"{len(flat)}q", out.data, 0, *flat)
    return out


def filled(shape: tuple[int, ...], value: float, dtype: Any = np.int64) -> np.ndarray:
    """A new array of ``shape`` holding ``value`` everywhere: ``np.zeros``, or ``np.empty`` then ``fill`` (``np.full``'s
    Python wrapper costs more than the fill)."""
    if value == 0:
        return np.zeros(shape, dtype=dtype)
    out = np.empty(shape, dtype=dtype)
    out.fill(value)
    return out


def scatter_padded(flat: np.ndarray, mask: np.ndarray, pad_value: float, dtype: Any = None) -> np.ndarray:
    """Write ``flat`` into a new ``mask.shape`` buffer at ``mask``'s true positions; the rest is ``pad_value``.

    The buffer's dtype is ``dtype`` (default ``flat.dtype``), widened by :func:`padded_dtype` to hold the pad.
    """
    out_dtype = padded_dtype(flat.dtype if dtype is None else np.dtype(dtype), pad_value)
    if flat.shape[0] == mask.size:  # nothing to pad: every row already has the full width
        return flat.astype(out_dtype, copy=False).reshape(mask.shape)
    out = filled(mask.shape, pad_value, out_dtype)
    out[mask] = flat
    return out


def constant_padded(mask: np.ndarray, value: int, pad_value: float) -> np.ndarray:
    """A padded int key whose every real position holds ``value`` (e.g. an all-ones attention mask)."""
    dtype = padded_dtype(np.dtype(np.int64), pad_value)
    if value == 1 and pad_value == 0:
        return mask.astype(dtype)
    if value == pad_value:
        out = np.zeros(mask.shape, dtype=dtype)
        if value:
            out.fill(value)
        return out
    return np.where(mask, dtype.type(value), dtype.type(pad_value))


def stack_scalars(name: str, column: Sequence[Any], hint: str = "") -> np.ndarray:
    """Stack one scalar per row: ints as int64, floats as float32, bools as bool.

    Raises:
        ValueError: a row holds a sequence where row 0 holds a scalar (``hint`` is appended to the message).
        TypeError: a row holds something that is not a number.
    """
    if type(column[0]) is int:  # the usual class ids: one C loop, which also rejects floats and lists
        out = np.empty(len(column), dtype=np.int64)
        try:
            pack_into(f"={len(column)}q", out.data, 0, *column)
            return out
        except (StructError, TypeError, OverflowError):
            pass  # the general path below names the bad row
    if _is_tensor(column[0]):
        import torch

        try:
            arr = torch.stack(list(column)).detach().cpu().numpy()
        except RuntimeError as err:
            raise ValueError(f"`{name}` must be one scalar per row (row 0 is); {err}{hint}") from None
    else:
        try:
            arr = np.array(column)
        except ValueError:
            arr = np.array(column, dtype=object)
    if arr.ndim != 1 or arr.dtype.kind == "O":
        for i, value in enumerate(column):
            if isinstance(value, (list, tuple)) or np.ndim(value) != 0:
                raise ValueError(
                    f"`{name}` must be one scalar per row, as row 0 is; row {i} holds {value!r:.60}{hint}"
                )
    return _numeric(name, arr)


def _numeric(name: str, arr: np.ndarray) -> np.ndarray:
    kind = arr.dtype.kind
    if kind in "iu":
        return arr.astype(np.int64, copy=False)
    if kind == "f":
        return arr.astype(np.float32, copy=False)
    if kind == "b":
        return arr
    raise TypeError(f"`{name}` must hold numbers; got values of dtype {arr.dtype} ({arr.ravel()[:3]!r:.80})")


def stack_fixed(name: str, column: Sequence[Any], lengths: list[int]) -> np.ndarray:
    """Stack fixed-length rows (e.g. multi-hot labels) into ``[B, n]``.

    Raises:
        ValueError: the rows have different lengths.
    """
    if min(lengths) != max(lengths):
        i = next(i for i, n in enumerate(lengths) if n != lengths[0])
        raise ValueError(
            f"`{name}` has variable length (row 0 has {lengths[0]}, row {i} has {lengths[i]}) but no known pad "
            f"value; pass `pad_values={{{name!r}: value}}` to pad it (fixed-length keys such as multi-hot labels "
            "must have the same length in every row)"
        )
    flat = flatten_column(name, column, integer=False, lengths=lengths)
    return flat.reshape(len(column), -1)


def uniform_value(column: Sequence[Any]) -> int | None:
    """Return ``v`` when every row is a list made only of the int ``v`` (an all-ones mask), else ``None``.

    ``list.count`` runs in C, so this costs far less than converting the rows, and lets constant keys such as
    ``attention_mask`` and single-segment ``token_type_ids`` skip conversion entirely.
    """
    first = column[0]
    if not isinstance(first, list) or not first:
        return None
    value = first[0]
    if type(value) is not int:
        return None
    try:
        for row in column:
            if row.count(value) != len(row):
                return None
    except (AttributeError, TypeError):
        return None
    return value


def aligned_constant(column: Sequence[Any], lengths: list[int]) -> int | None:
    """Like :func:`uniform_value`, for a key that must also be exactly as long as ``input_ids`` in every row.

    Returns ``None`` (so the caller takes the general path, which names any misaligned row) unless every row is
    a list of ``lengths[i]`` copies of one int.
    """
    first = column[0]
    if type(first) is not list or not first or type(first[0]) is not int:
        return None
    value = first[0]
    try:
        for row, n in zip(column, lengths):
            if len(row) != n or row.count(value) != n:
                return None
    except (AttributeError, TypeError):
        return None
    return value
