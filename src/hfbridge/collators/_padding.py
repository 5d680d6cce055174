"""``PaddingCollator``: pad every variable-length key of a batch with its own pad value, fast.

One path for every batch: the rows become columns (or arrive as columns, see ``ColumnRows``), each key is
classified from row 0, ``input_ids`` is laid out first (lengths, padded width, mask of real positions) and the
keys aligned with it share that layout. List rows are written straight into their padded buffer, a key that is
one int throughout (an all-ones mask) is built from the mask, array and tensor rows are concatenated and
scattered into theirs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from struct import error as StructError
from typing import Any, Literal, NamedTuple

import numpy as np

from hfbridge._checks import check_choice, check_positive_int, check_type
from hfbridge.collators._arrays import (
    ALIGNED_KEYS,
    Batch,
    Rule,
    Side,
    column_lengths,
    constant_padded,
    constant_value,
    flatten_column,
    gather_columns,
    key_kind,
    output_name,
    pack_rows,
    padding_mask,
    raise_bad_element,
    raise_misaligned,
    scatter_padded,
    stack_fixed,
    stack_scalars,
    to_torch,
    truncate_flat,
    unnest,
)

__all__ = ["PADDING_OPTIONS", "PaddingCollator", "padding_collator", "padding_option", "task_options"]

Padding = Literal["longest", "max_length", "do_not_pad"]
_ID_KEYS = frozenset({"input_ids", "decoder_input_ids"})
_FIXED_PADS = {"attention_mask": 0, "decoder_attention_mask": 0, "special_tokens_mask": 1, "position_ids": 0}
# the keys with a pad value by default: they hold ints (ids or flags), where a float is a bug
_INT_KEYS = _ID_KEYS | {"token_type_ids", "labels", *_FIXED_PADS}
_NO_PAD = object()  # a key with no known pad value
_LONGEST_MODEL_MAX_LENGTH = 1 << 20  # a larger `model_max_length` means "unset" (HF's default is 1e30)
_CLASSIFICATION_HINT = (
    "; sequence-classification labels are one int (class id) or float (regression) per row, or a "
    "fixed-length list (multi-label); use TokenClassificationCollator for one label per token"
)


@dataclass
class PaddingCollator:
    """Pad a list of feature rows into a batch of tensors, every key with its own pad value.

    ``input_ids`` get the tokenizer's pad id, ``attention_mask`` 0, ``token_type_ids`` the pad type id,
    ``special_tokens_mask`` 1, sequence ``labels`` ``label_pad_token_id``, ``position_ids`` 0, and any other
    variable-length key the value given in ``pad_values``. Scalars are stacked (ints as int64, floats as
    float32), fixed-length lists (multi-label labels) are stacked, nested sequences (multiple choice) are
    padded to ``[B, C, L]``, strings and ``None`` are dropped (or kept as lists with ``keep_non_numeric``),
    except where they cannot be right (a string in ``input_ids`` or ``labels`` is an error). ``label`` and
    ``label_ids`` are renamed ``labels``, as in ``DataCollatorWithPadding``. The features are never modified.

    The pad id, pad type id, padding side and truncation side not given here are read from the tokenizer at
    every call, as HF's collators do. Token ids are checked against the tokenizer's size (``len(tokenizer)``).

    Args:
        tokenizer: where the pad id, pad type id, padding side and vocabulary size come from (optional).
        padding: ``"longest"`` (or ``True``) pads to the longest row of the batch, ``"max_length"`` always to
            ``max_length``, ``"do_not_pad"`` (or ``False``) requires rows of one length, as HF.
        max_length: the longest row allowed; longer rows are an error or truncated, see ``overflow``. With
            ``padding="max_length"`` it defaults to the tokenizer's ``model_max_length``.
        overflow: what a row longer than ``max_length`` does: ``"error"`` or ``"truncate"``.
        truncation_side: which end ``"truncate"`` cuts; defaults to the tokenizer's, else ``"right"``.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        padding_side: ``"left"`` or ``"right"``; defaults to the tokenizer's, else ``"right"``.
        pad_token_id: overrides the tokenizer's pad id for ``input_ids`` and ``decoder_input_ids``.
        pad_token_type_id: overrides the tokenizer's pad type id for ``token_type_ids``.
        label_pad_token_id: the pad value of sequence ``labels``.
        pad_values: pad values for further keys, e.g. ``{"pixel_mask": 0}``; they also override the defaults.
        label_mode: how list ``labels`` are read. ``"auto"``: float lists and fixed-length int lists not
            aligned with ``input_ids`` are multi-label and stacked (as HF), other int lists are padded.
            ``"classification"``: scalars or fixed-length lists only. ``"sequence"``: always padded.
        return_attention_mask: build ``attention_mask`` from the lengths when the rows have none.
        attention_mask_dtype: ``"int64"`` (as HF) or ``"bool"``.
        keep_non_numeric: pass string and ``None`` keys through as lists instead of dropping them.
        return_tensors: ``"pt"`` for ``torch.Tensor`` values, ``"np"`` for NumPy arrays.

    Raises:
        ValueError: an option out of range; ``padding="max_length"`` with no ``max_length`` and no usable
            ``model_max_length``.
        TypeError: an option of the wrong type.

    Example:
        >>> collate = PaddingCollator(tokenizer)  # doctest: +SKIP
        >>> rows = [{"input_ids": [2, 7, 3], "label": 1}, {"input_ids": [2, 3], "label": 0}]
        >>> batch = collate(rows)  # doctest: +SKIP
        >>> batch["attention_mask"].tolist()  # doctest: +SKIP
        [[1, 1, 1], [1, 1, 0]]
    """

    tokenizer: Any = None
    padding: Padding | bool = "longest"
    max_length: int | None = None
    overflow: Literal["error", "truncate"] = "error"
    truncation_side: Side | None = None
    pad_to_multiple_of: int | None = None
    padding_side: Side | None = None
    pad_token_id: int | None = None
    pad_token_type_id: int | None = None
    label_pad_token_id: int = -100
    pad_values: Mapping[str, int | float] | None = None
    label_mode: Literal["auto", "classification", "sequence"] = "auto"
    return_attention_mask: bool = True
    attention_mask_dtype: Literal["int64", "bool"] = "int64"
    keep_non_numeric: bool = False
    return_tensors: Literal["pt", "np"] = "pt"
    _pads: dict[str, int | float] = field(init=False, repr=False, compare=False)
    _padded: frozenset[str] = field(init=False, repr=False, compare=False)  # keys with a pad value

    def __post_init__(self) -> None:
        padding = self.padding
        check_choice("padding", padding, ("longest", "max_length", "do_not_pad", True, False))
        if isinstance(padding, bool):
            self.padding = "longest" if padding else "do_not_pad"
        else:
            self.padding = getattr(padding, "value", padding)  # HF's PaddingStrategy members are strs too
        check_positive_int("max_length", self.max_length, allow_none=True)
        check_choice("overflow", self.overflow, ("error", "truncate"))
        check_positive_int("pad_to_multiple_of", self.pad_to_multiple_of, allow_none=True)
        check_choice("label_mode", self.label_mode, ("auto", "classification", "sequence"))
        check_choice("attention_mask_dtype", self.attention_mask_dtype, ("int64", "bool"))
        check_choice("return_tensors", self.return_tensors, ("pt", "np"))
        for name in ("padding_side", "truncation_side"):
            if getattr(self, name) is not None:
                check_choice(name, getattr(self, name), ("left", "right"))
        check_type("pad_token_id", self.pad_token_id, (int, type(None)), what="an int or None")
        check_type("pad_token_type_id", self.pad_token_type_id, (int, type(None)), what="an int or None")
        check_type("label_pad_token_id", self.label_pad_token_id, int)
        check_type("return_attention_mask", self.return_attention_mask, bool)
        check_type("keep_non_numeric", self.keep_non_numeric, bool)
        self._pads = dict(self.pad_values or {})
        for key, value in self._pads.items():
            check_type(f"pad_values[{key!r}]", value, (int, float), what="an int or float")
        self._padded = _INT_KEYS | set(self._pads)
        if self.padding == "max_length" and self.max_length is None:
            limit = getattr(self.tokenizer, "model_max_length", None)
            if type(limit) is not int or not 0 < limit <= _LONGEST_MODEL_MAX_LENGTH:
                raise ValueError(
                    "`padding='max_length'` needs `max_length`; got max_length=None, and the tokenizer's "
                    f"model_max_length ({limit!r:.30}) is unset or over 2**20: pass max_length="
                )
            self.max_length = limit

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        """Collate ``features`` (a list of rows) into tensors (or arrays with ``return_tensors="np"``).

        Raises:
            ValueError: an empty batch, rows with different keys, ragged nesting, a row over ``max_length``
                with ``overflow="error"``, a variable-length key without a pad value, a token id outside the
                tokenizer's vocabulary, a NaN or infinite label.
            TypeError: a non-integer (or bool) in an id key, a string in ``input_ids`` or ``labels``, a value
                that is not a number, sequence, string or None.
        """
        return self.to_output(self.collate_arrays(features))

    def to_output(self, batch: Batch) -> Batch:
        """Turn a NumPy batch into the requested output type (one ``torch.from_numpy`` per key)."""
        return batch if self.return_tensors == "np" else to_torch(batch)

    def collate_arrays(
        self, features: Sequence[Mapping[str, Any]], *, aligned: frozenset[str] = ALIGNED_KEYS
    ) -> Batch:
        """Collate ``features`` into NumPy arrays: what ``__call__`` returns before :meth:`to_output`.

        The task collators build on this. ``aligned`` names the keys that must be exactly as long as
        ``input_ids`` in every row (``TokenClassificationCollator`` adds ``labels``).
        """
        keys, columns = gather_columns(features)
        out: Batch = {}
        sequences: dict[str, tuple[Sequence[Any], bool]] = {}
        for key in keys:
            column = columns[key]
            name = output_name(key)
            if name in out or name in sequences:
                raise ValueError(f"rows hold both `{key}` and another key that becomes `{name}`; keep one")
            first = column[0]
            # the common case inline (a list of ints); key_kind classifies everything else
            kind = "seq" if type(first) is list and first and type(first[0]) is int else key_kind(name, first)
            if kind == "skip":
                self._skip(name, column, out)
            elif kind == "scalar":
                out[name] = self._scalars(name, column)
            elif name == "labels" and kind == "seq" and self.label_mode != "sequence":
                if self.label_mode == "classification" or _holds_floats(first):
                    out[name] = _multi_label(column)
                else:
                    sequences[name] = (column, False)  # stacked or padded once input_ids is laid out
            elif kind == "seq" and name not in self._padded:
                out[name] = stack_fixed(name, column, column_lengths(name, column))
            else:
                sequences[name] = (column, kind == "nested")
        if sequences:
            self._pad_sequences(sequences, out, aligned)
        return out

    def _skip(self, name: str, column: Sequence[Any], out: Batch) -> None:
        first = column[0]
        if name in _ID_KEYS or (isinstance(first, (str, bytes)) and name in _INT_KEYS):
            what = (
                "class ids (map them with label2id)" if name == "labels" else "token ids, so tokenize first"
            )
            raise TypeError(f"`{name}` must hold {what}; row 0 holds {type(first).__name__} {first!r:.60}")
        if self.keep_non_numeric:
            out[name] = list(column)

    def _scalars(self, name: str, column: Sequence[Any]) -> np.ndarray:
        if (self.label_mode == "sequence") if name == "labels" else name in self._padded:
            raise TypeError(f"`{name}` must be a sequence per row; row 0 holds a scalar {column[0]!r:.40}")
        hint = _CLASSIFICATION_HINT if self.label_mode == "classification" else ""
        values = stack_scalars(name, column, hint)
        return _check_finite(values) if name == "labels" else values

    def _pad_sequences(
        self, sequences: dict[str, tuple[Sequence[Any], bool]], out: Batch, aligned: frozenset[str]
    ) -> None:
        side: Side = self.padding_side or getattr(self.tokenizer, "padding_side", None) or "right"
        ref: _Layout | None = None  # the input_ids layout the aligned keys share
        order = list(sequences)
        if order[0] != "input_ids" and "input_ids" in sequences:  # input_ids first: the others may share it
            order.remove("input_ids")
            order.insert(0, "input_ids")
        for name in order:
            column, nested = sequences[name]
            rows, choices = len(column), None
            if nested:
                choices, column = unnest(name, column)
            lens = column_lengths(name, column)
            if name == "labels" and self.label_mode == "auto" and _multi_label_ints(lens, choices, ref):
                out[name] = stack_fixed(name, column, lens)  # as HF
                continue
            if ref is not None and name in aligned:
                if choices != ref.choices or lens != ref.lens:
                    raise_misaligned(name, lens, ref.lens)
                layout = ref
            else:
                layout = self._layout(name, lens, choices, side)
            padded = self._pad_key(name, column, layout)
            if name == "input_ids":
                ref = layout
            out[name] = padded if choices is None else padded.reshape(rows, choices, padded.shape[-1])
        if ref is not None and "attention_mask" not in out and self.return_attention_mask:
            mask = ref.mask
            if ref.choices is not None:
                mask = mask.reshape(mask.shape[0] // ref.choices, ref.choices, mask.shape[-1])
            bool_mask = self.attention_mask_dtype == "bool"
            out["attention_mask"] = np.ascontiguousarray(mask) if bool_mask else mask.astype(np.int64)
        elif "attention_mask" in out and self.attention_mask_dtype == "bool":
            out["attention_mask"] = out["attention_mask"].astype(bool)

    def _pad_key(self, name: str, column: Sequence[Any], layout: _Layout) -> np.ndarray:
        """One key's rows in a new ``[rows, width]`` buffer, padded as ``layout`` says."""
        pad = self._pad_value(name, layout)
        rule: Rule = "ids" if name in _ID_KEYS else "ints" if name in _INT_KEYS else "numbers"
        first = column[0]
        padded = None
        if type(first) is list:
            if rule == "ids" and first and type(first[0]) is bool:
                raise TypeError(f"`{name}` must hold token ids, not bools; row 0 holds {first!r:.60}")
            value = None if layout.cut else constant_value(column, layout.lens)
            if value is not None:
                padded = constant_padded(layout.mask, value, pad)
            elif not layout.cut and float(pad).is_integer():
                try:
                    padded = pack_rows(column, layout.lens, layout.mask.shape[1], int(pad), layout.side)
                except StructError:
                    raise_bad_element(name, column, rule)  # returns only for floats in a "numbers" key
        if padded is None:
            flat = flatten_column(name, column, layout.lens, rule)
            if layout.cut:
                limit: int = self.max_length  # type: ignore[assignment]  # a cut needs a limit
                side = self.truncation_side or getattr(self.tokenizer, "truncation_side", None) or "right"
                flat = truncate_flat(flat, np.array(layout.lens), limit, side)
            padded = scatter_padded(flat, layout.mask, pad)
        if rule == "ids":
            self._check_ids(name, padded, layout)
        return padded

    def _check_ids(self, name: str, ids: np.ndarray, layout: _Layout) -> None:
        """Every id in ``[0, len(tokenizer))``: one ``max`` of the ids as unsigned (negatives are huge)."""
        tok = self.tokenizer
        if tok is None or not hasattr(type(tok), "__len__") or not ids.size or ids.dtype != np.int64:
            return
        vocab = len(tok)
        if int(ids.view(np.uint64).max()) < vocab:
            return
        bad = ((ids < 0) | (ids >= vocab)) & layout.mask
        if not bad.any():
            raise ValueError(
                f"the pad id of `{name}` ({self._pad_value(name, layout)}) must be in [0, {vocab}), the "
                "tokenizer's vocabulary; set `pad_token_id=` or `tokenizer.pad_token`"
            )
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"`{name}` must hold ids in [0, {vocab}) (the tokenizer's vocabulary size); row {row} holds "
            f"{int(ids[row, col])}; was the batch tokenized with another tokenizer?"
        )

    def _pad_value(self, name: str, layout: _Layout) -> int | float:
        tok = self.tokenizer
        pad: Any
        if name in self._pads:
            pad = self._pads[name]
        elif name in _ID_KEYS:
            pad = self.pad_token_id if self.pad_token_id is not None else getattr(tok, "pad_token_id", None)
        elif name == "token_type_ids":
            pad = self.pad_token_type_id
            if pad is None:
                pad = getattr(tok, "pad_token_type_id", 0)
        elif name == "labels":
            pad = self.label_pad_token_id
        else:
            pad = _FIXED_PADS.get(name, _NO_PAD)
        if pad is _NO_PAD:
            raise ValueError(
                f"`{name}` has variable length but no known pad value; pass `pad_values={{{name!r}: value}}`"
            )
        if pad is None:
            if layout.mask.all():
                return 0  # never written: nothing to pad
            raise ValueError(
                f"`{name}` needs padding but the tokenizer has no pad token; set `tokenizer.pad_token` "
                "(e.g. to its eos token) or pass `pad_token_id=`"
            )
        return pad

    def _layout(self, name: str, lens: list[int], choices: int | None, side: Side) -> _Layout:
        """Work out the padded width and the mask of real positions (after truncation) for one key."""
        longest = max(lens)
        shortest = min(lens) if self.padding == "do_not_pad" else longest
        cut = False
        limit = self.max_length
        if limit is not None and longest > limit:
            if self.overflow == "error":
                raise ValueError(
                    f"`{name}` row {lens.index(longest)} has {longest} tokens, over `max_length`={limit}; "
                    "truncate it when tokenizing, raise max_length, or pass `overflow='truncate'`"
                )
            cut, longest, shortest = True, limit, min(shortest, limit)
        width = limit if self.padding == "max_length" and limit is not None else longest
        if self.padding == "do_not_pad" and shortest != longest:
            raise ValueError(
                f"`padding='do_not_pad'` needs rows of one length, but `{name}` has rows of {shortest} and "
                f"{longest} tokens; use padding='longest' (or True) to pad them"
            )
        multiple = self.pad_to_multiple_of
        if multiple is not None and width % multiple and self.padding != "do_not_pad":
            width += multiple - width % multiple
        lengths = np.minimum(lens, longest) if cut else lens
        return _Layout(lens, padding_mask(lengths, width, side), side, choices, cut)


class _Layout(NamedTuple):
    lens: list[int]  # lengths before truncation
    mask: np.ndarray  # [rows, width] real positions
    side: Side
    choices: int | None
    cut: bool


def _multi_label_ints(lens: list[int], choices: int | None, ref: _Layout | None) -> bool:
    """Int label lists of one length in every row, not one per token (``input_ids`` lengths differ)."""
    return choices is None and min(lens) == max(lens) and (ref is None or lens != ref.lens)


def _holds_floats(value: Any) -> bool:
    """Whether a 1-D row holds floats (multi-hot labels), judged from its dtype or first element."""
    dtype = getattr(value, "dtype", None)
    if dtype is not None:
        return bool(getattr(dtype, "is_floating_point", False)) or getattr(dtype, "kind", "") == "f"
    return bool(value) and isinstance(value[0], (float, np.floating))


def _multi_label(column: Sequence[Any]) -> np.ndarray:
    """Fixed-length label lists (multi-label, multi-hot or soft labels) stacked into ``[B, n]``."""
    lens = column_lengths("labels", column)
    if min(lens) != max(lens):
        i = next(i for i, n in enumerate(lens) if n != lens[0])
        raise ValueError(
            f"`labels` row 0 holds a list of {lens[0]} labels, row {i} one of {lens[i]}{_CLASSIFICATION_HINT}"
        )
    return _check_finite(stack_fixed("labels", column, lens))


def _check_finite(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        row = int(np.argwhere(~np.isfinite(labels))[0][0])
        raise ValueError(f"`labels` must be finite numbers; row {row} holds {labels[row]!r:.60}")
    return labels


PADDING_OPTIONS = tuple(f.name for f in fields(PaddingCollator) if f.init and f.name != "tokenizer")


def padding_collator(owner: str, tokenizer: Any, options: Mapping[str, Any], **fixed: Any) -> PaddingCollator:
    """The ``PaddingCollator`` a task collator composes: the caller's ``options`` plus the ones the task sets
    itself (``fixed``), which the caller may not pass."""
    for name in options:
        if name in fixed:
            raise TypeError(f"{owner} sets `{name}` itself (to {fixed[name]!r}); leave it out")
        if name not in PADDING_OPTIONS:
            valid = sorted(set(PADDING_OPTIONS) - set(fixed))
            raise TypeError(f"{owner} has no option {name!r}; valid padding options: {', '.join(valid)}")
    return PaddingCollator(tokenizer, **options, **fixed)


def task_options(own: Sequence[str], fixed: Sequence[str]) -> tuple[str, ...]:
    """The options of a task collator: its own, then every padding option it does not set itself."""
    return (*own, *(name for name in PADDING_OPTIONS if name not in fixed))


def padding_option(collator: Any, name: str) -> Any:
    """A task collator's ``__getattr__``: its padding options, read from its ``PaddingCollator``."""
    padder = collator.__dict__.get("padder")
    if padder is None or name not in PADDING_OPTIONS:
        raise AttributeError(f"{type(collator).__name__!r} object has no attribute {name!r}")
    return getattr(padder, name)
