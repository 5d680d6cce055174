"""The fast path of ``PaddingCollator``: the common batch shape, planned once, collated with few Python calls.

Most batches look alike: ``input_ids`` plus keys aligned with it (``attention_mask``, ``token_type_ids``, ...),
maybe further padded keys with their own length (seq2seq ``labels``), and scalar labels, every sequence a list,
an array or a tensor. A :class:`Plan` for such a batch is worked out once per key set and value types (row 0's)
and cached on the collator. Each call then gathers a column per key and takes the lengths once. List rows are
written straight into each key's padded buffer (one compiled ``pack_into`` per row, see ``_packing``), and a key
that is one int throughout (an all-ones mask) is built from the lengths; array and tensor rows are concatenated
for all keys at once and written with one boolean-mask scatter per key.

The fast path never raises and never guesses: whatever it cannot verify cheaply (a key without a pad value, a row
over ``max_length``, a float in an id key, misaligned or ragged rows, mixed containers) makes it return ``None``,
and the general path collates the batch or raises its error. Both paths give identical arrays.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from itertools import repeat
from struct import error as StructError
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from hfbridge.collators._arrays import constant_padded, padding_mask, scatter_padded, stack_scalars
from hfbridge.collators._packing import FLAG_KEYS, pack_flags, pack_ints, pack_rows

if TYPE_CHECKING:
    from hfbridge.collators._padding import PaddingCollator

__all__ = ["FALLBACK", "Plan", "fast_collate", "flatten_ints", "make_plan", "same_dict_rows"]

Batch = dict[str, Any]


class Plan(NamedTuple):
    """How one kind of batch (key set and row-0 value types) is collated."""

    container: type  # list, np.ndarray or torch.Tensor: what every sequence key holds in row 0
    scalars: tuple[tuple[str, str], ...]  # (key, output name) of keys stacked one value per row, in key order
    sequences: tuple[tuple[str, str, int, bool], ...]  # (key, name, int pad, aligned), input_ids first


class _Fallback(Exception):
    """Raised inside the fast path for input it leaves to the general path."""


# what a fast-path step may raise on input it does not handle: the general path then collates or names the problem
FALLBACK = (
    _Fallback,
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    AttributeError,
    OverflowError,
    RuntimeError,
    StructError,
)
_MAX_PLANS = 32


def _is_tensor_type(kind: type) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and issubclass(kind, torch.Tensor)


def make_plan(c: PaddingCollator, first: dict[str, Any], aligned: frozenset[str]) -> Plan | None:
    """Plan a batch whose row 0 is ``first`` from its key names and value *types* only, never its values.

    Returns ``None`` for anything the fast path does not take (the general path handles it).
    """
    if "input_ids" not in first:
        return None
    container: type | None = None
    scalars: list[tuple[str, str]] = []
    sequences: list[tuple[str, str, int, bool]] = []
    names: set[str] = set()
    for key, value in first.items():
        name = "labels" if key in ("label", "label_ids") else key
        if name in names:
            return None  # two keys that both become `labels`: the general path explains
        names.add(name)
        kind = type(value)
        if kind is int or kind is float:
            if name in c._pad and (name != "labels" or c.label_mode == "sequence"):
                return None  # a scalar where a sequence belongs: an error
            scalars.append((key, name))
            continue
        if kind is not list and kind is not np.ndarray and not _is_tensor_type(kind):
            return None  # strings, None, tuples, numpy scalars, ...
        if container is None:
            container = kind
        elif kind is not container:
            return None
        pad = c._pad.get(name)
        if pad is None or (name == "labels" and c.label_mode == "classification"):
            return None  # no pad value (maybe an error, maybe a fixed-length key) or multi-hot labels
        if not float(pad).is_integer():
            return None  # a fractional pad makes the key float32: the general path widens it
        pad = int(pad)
        # `labels` in "auto" mode: int sequences are padded; float ones (multi-hot) fail the int check per batch
        entry = (key, name, pad, name in aligned and name != "input_ids")
        if name == "input_ids":
            sequences.insert(0, entry)
        else:
            sequences.append(entry)
    if container is None or sequences[0][1] != "input_ids":
        return None
    return Plan(container, tuple(scalars), tuple(sequences))


def fast_collate(c: PaddingCollator, features: Sequence[Any], aligned: frozenset[str]) -> Batch | None:
    """Collate ``features`` into NumPy arrays on the fast path, or return ``None`` for the general path."""
    if type(features) is not list or not features:
        return None
    first = features[0]
    if type(first) is not dict:
        return None
    plans = c._plans
    signature = (tuple(first), tuple(map(type, first.values())), aligned)
    try:
        plan = plans[signature]
    except KeyError:
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plan = plans[signature] = make_plan(c, first, aligned)
    if plan is None or not same_dict_rows(features, len(first)):
        return None
    out: Batch = {}
    try:
        for key, name in plan.scalars:
            out[name] = stack_scalars(name, [row[key] for row in features])
        mask = (_pad_lists if plan.container is list else _pad_arrays)(c, plan, features, out)
    except FALLBACK:
        return None
    if "attention_mask" not in out:
        if c.return_attention_mask:
            bool_mask = c.attention_mask_dtype == "bool"
            out["attention_mask"] = np.ascontiguousarray(mask) if bool_mask else mask.astype(np.int64)
    elif c.attention_mask_dtype == "bool":
        out["attention_mask"] = out["attention_mask"].astype(bool)
    return out


def same_dict_rows(features: list[Any], keys: int) -> bool:
    """Every row a plain dict (a defaultdict would invent missing keys) with ``keys`` keys, as row 0: gathering a
    column then proves they are the same keys."""
    rows = len(features)
    return [*map(type, features)].count(dict) == rows and [*map(len, features)].count(keys) == rows


def _pad_lists(c: PaddingCollator, plan: Plan, features: list[dict[str, Any]], out: Batch) -> np.ndarray:
    """List rows: each key's rows written straight into its padded buffer (one ``pack_into`` per row), or, for
    a key that is one int throughout (an all-ones mask), built from the mask; returns the ``input_ids`` mask."""
    lens: list[int] = []
    width = 0
    mask = None
    side: str = c.padding_side  # type: ignore[assignment]  # set in __post_init__
    for key, name, pad, is_aligned in plan.sequences:
        column = [row[key] for row in features]
        if not is_aligned:
            key_lens = list(map(len, column))
            key_width = _width(c, key_lens)
            out[name] = pack_rows(column, key_lens, key_width, pad, side)
            if name == "input_ids":
                lens, width = key_lens, key_width
            continue
        if list(map(len, column)) != lens:
            raise _Fallback  # misaligned: the general path names the row
        head = column[0]
        value = head[0] if head else None
        # every row is `lens[i]` copies of one int (an all-ones mask, one segment): nothing to convert
        if type(value) is int and list(map(list.count, column, repeat(value))) == lens:
            if value == pad == 0:
                out[name] = np.zeros((len(lens), width), dtype=np.int64)
                continue
            if mask is None:
                mask = padding_mask(lens, width, side)  # type: ignore[arg-type]
            out[name] = (
                mask.astype(np.int64) if value == 1 and pad == 0 else constant_padded(mask, value, pad)
            )
        elif name in FLAG_KEYS:  # 0/1 values: converting all rows at once as bytes beats a pack per row
            if mask is None:
                mask = padding_mask(lens, width, side)  # type: ignore[arg-type]
            out[name] = scatter_padded(pack_flags(column), mask, pad, np.int64)  # uint8 flags, int64 out
        else:
            out[name] = pack_rows(column, lens, width, pad, side)
    return padding_mask(lens, width, side) if mask is None else mask  # type: ignore[arg-type]


def _pad_arrays(c: PaddingCollator, plan: Plan, features: list[dict[str, Any]], out: Batch) -> np.ndarray:
    """Array or tensor rows: one concatenation of every sequence key's rows, then lengths, then a scatter per key.

    Concatenating first walks every row in one C loop, so the lengths read afterwards come from cache (tensor
    rows are scattered in memory: after other work has evicted them, each first touch is a cache miss).
    Returns the ``input_ids`` mask.
    """
    rows = len(features)
    parts = [row[key] for key, _, _, _ in plan.sequences for row in features]  # key after key
    if plan.container is np.ndarray:
        flat = np.concatenate(parts)
        all_lens = list(map(len, parts))
    else:
        flat = _tensors_to_numpy(parts)
        all_lens = list(map(plan.container.numel, parts))  # type: ignore[attr-defined]  # len()'s cost / 10
    if flat.ndim != 1 or flat.dtype.kind not in "iub":
        raise _Fallback  # nested rows, floats, or an empty float64 row that promoted the rest
    flat = flat.astype(np.int64, copy=False)
    lens: list[int] = []
    mask = _EMPTY_MASK
    start = 0
    for i, (_, name, pad, is_aligned) in enumerate(plan.sequences):
        key_lens = all_lens[i * rows : (i + 1) * rows]
        if is_aligned:
            if key_lens != lens:
                raise _Fallback  # misaligned: the general path names the row
            key_mask = mask
        else:
            key_mask = _mask(c, key_lens)
            if name == "input_ids":
                lens, mask = key_lens, key_mask
        end = start + sum(key_lens)
        out[name] = scatter_padded(flat[start:end], key_mask, pad)
        start = end
    return mask


def flatten_ints(column: list[Any]) -> tuple[np.ndarray, list[int]] | None:
    """Concatenate a column of 1-D int rows (all lists, all arrays or all tensors) into int64; also its lengths.

    Returns ``None`` for anything else (floats, nested or mixed rows, empty rows), which the caller leaves to
    the general path.
    """
    kind = type(column[0])
    try:
        if kind is list:
            return pack_ints(column), list(map(len, column))
        if kind is np.ndarray:
            flat = np.concatenate(column)
            count: Any = len
        elif _is_tensor_type(kind):
            flat = _tensors_to_numpy(column)
            count = kind.numel
        else:
            return None
        if flat.ndim != 1 or flat.dtype.kind not in "iub":
            return None
        return flat.astype(np.int64, copy=False), list(map(count, column))
    except FALLBACK:
        return None


def _tensors_to_numpy(parts: list[Any]) -> np.ndarray:
    """``torch.cat`` as an array (dtype checked by the caller); a CUDA or grad-tracking result raises, and the
    general path (``.detach().cpu()``) takes it: integer tensors never track gradients."""
    return sys.modules["torch"].cat(parts).numpy()


_EMPTY_MASK = np.zeros((0, 0), dtype=bool)


def _width(c: PaddingCollator, lens: list[int]) -> int:
    """The padded width of a key with these row lengths, as ``PaddingCollator._layout`` has it."""
    width = max(lens)
    limit = c.max_length
    if limit is not None:
        if width > limit:
            raise _Fallback  # an error or a truncation
        if c.padding == "max_length":
            width = limit
    multiple = c.pad_to_multiple_of
    if multiple is not None and width % multiple:
        width += multiple - width % multiple
    return width


def _mask(c: PaddingCollator, lens: list[int]) -> np.ndarray:
    """The ``[B, width]`` mask of real positions, as ``PaddingCollator._layout`` has it for untruncated rows."""
    return padding_mask(lens, _width(c, lens), c.padding_side)  # type: ignore[arg-type]
