"""``PaddingCollator``: pad every variable-length key of a batch with its own pad value, fast."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np

from hfbridge._checks import check_choice, check_positive_int, check_type
from hfbridge.collators._arrays import (
    Side,
    aligned_constant,
    column_lengths,
    constant_padded,
    flatten_column,
    padding_mask,
    scatter_padded,
    stack_fixed,
    stack_scalars,
    to_torch,
    truncate_flat,
    uniform_value,
)
from hfbridge.collators._fast import Plan, fast_collate
from hfbridge.collators._rows import (
    ALIGNED_KEYS,
    INTEGER_KEYS,
    check_rows,
    gather,
    is_float_sequence,
    key_kind,
    output_name,
    raise_misaligned,
    unnest,
)

__all__ = ["PaddingCollator"]

Batch = dict[str, Any]
_RENAMED = {key: output_name(key) for key in ("label", "label_ids")}
_CLASSIFICATION_HINT = (
    "; sequence-classification labels are one int (class id) or float (regression) per row, or a fixed-length "
    "float multi-hot list (multi-label); use TokenClassificationCollator for one label per token"
)


@dataclass
class PaddingCollator:
    """Pad a list of feature rows into a batch of tensors, every key with its own pad value.

    ``input_ids`` get the tokenizer's pad id, ``attention_mask`` 0, ``token_type_ids`` the pad type id,
    ``special_tokens_mask`` 1, sequence ``labels`` ``label_pad_token_id``, ``position_ids`` 0, and any other
    variable-length key the value given in ``pad_values``. Scalars are stacked (ints as int64, floats as float32),
    fixed-length lists (multi-hot labels) are stacked, nested sequences (multiple choice) are padded to
    ``[B, C, L]``, strings and ``None`` are dropped (or kept as lists with ``keep_non_numeric``). ``label`` and
    ``label_ids`` are renamed ``labels``, as in ``DataCollatorWithPadding``. The features are never modified.

    Args:
        tokenizer: where the pad id, pad type id and padding side come from (optional if given explicitly).
        padding: ``"longest"`` pads to the longest row of the batch, ``"max_length"`` always to ``max_length``.
        max_length: the longest row allowed; longer rows are an error or truncated, see ``overflow``.
        overflow: what a row longer than ``max_length`` does: ``"error"`` or ``"truncate"``.
        truncation_side: which end ``"truncate"`` cuts; defaults to the tokenizer's, else ``"right"``.
        pad_to_multiple_of: round the padded length up to a multiple of this.
        padding_side: ``"left"`` or ``"right"``; defaults to the tokenizer's, else ``"right"``.
        pad_token_id: overrides the tokenizer's pad id for ``input_ids`` and ``decoder_input_ids``.
        pad_token_type_id: overrides the tokenizer's pad type id for ``token_type_ids``.
        label_pad_token_id: the pad value of sequence ``labels``.
        pad_values: pad values for further keys, e.g. ``{"pixel_mask": 0}``; they also override the defaults.
        label_mode: how list ``labels`` are read: ``"auto"`` (float lists are multi-hot and stacked, int lists
            are per-token and padded), ``"classification"`` (scalars or float multi-hot only) or ``"sequence"``.
        return_attention_mask: build ``attention_mask`` from the lengths when the rows have none.
        attention_mask_dtype: ``"int64"`` (as HF) or ``"bool"``.
        keep_non_numeric: pass string and ``None`` keys through as lists instead of dropping them.
        return_tensors: ``"pt"`` for ``torch.Tensor`` values, ``"np"`` for NumPy arrays.

    Example:
        >>> collate = PaddingCollator(tokenizer)  # doctest: +SKIP
        >>> batch = collate([{"input_ids": [2, 7, 3], "label": 1}, {"input_ids": [2, 3], "label": 0}])  # doctest: +SKIP
        >>> batch["attention_mask"].tolist()  # doctest: +SKIP
        [[1, 1, 1], [1, 1, 0]]
    """

    tokenizer: Any = None
    padding: Literal["longest", "max_length"] = "longest"
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
    _pad: dict[str, int | float | None] = field(init=False, repr=False, compare=False)
    _plans: dict[Any, Plan | None] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        tok = self.tokenizer
        check_choice("padding", self.padding, ("longest", "max_length"))
        check_positive_int("max_length", self.max_length, allow_none=True)
        check_choice("overflow", self.overflow, ("error", "truncate"))
        check_positive_int("pad_to_multiple_of", self.pad_to_multiple_of, allow_none=True)
        check_choice("label_mode", self.label_mode, ("auto", "classification", "sequence"))
        check_choice("attention_mask_dtype", self.attention_mask_dtype, ("int64", "bool"))
        check_choice("return_tensors", self.return_tensors, ("pt", "np"))
        check_type("label_pad_token_id", self.label_pad_token_id, int)
        check_type("return_attention_mask", self.return_attention_mask, bool)
        check_type("keep_non_numeric", self.keep_non_numeric, bool)
        if self.padding == "max_length" and self.max_length is None:
            raise ValueError("`padding='max_length'` needs `max_length`; got max_length=None")
        if self.padding_side is None:
            self.padding_side = getattr(tok, "padding_side", None) or "right"
        check_choice("padding_side", self.padding_side, ("left", "right"))
        if self.truncation_side is None:
            self.truncation_side = getattr(tok, "truncation_side", None) or "right"
        check_choice("truncation_side", self.truncation_side, ("left", "right"))
        if self.pad_token_id is None and tok is not None:
            self.pad_token_id = tok.pad_token_id
        if self.pad_token_type_id is None:
            self.pad_token_type_id = getattr(tok, "pad_token_type_id", 0) if tok is not None else 0
        check_type("pad_token_id", self.pad_token_id, (int, type(None)), what="an int or None")
        check_type("pad_token_type_id", self.pad_token_type_id, int)
        pad_values = dict(self.pad_values or {})
        for key, value in pad_values.items():
            check_type(f"pad_values[{key!r}]", value, (int, float), what="an int or float")
        self._pad = {
            "input_ids": self.pad_token_id,
            "decoder_input_ids": self.pad_token_id,
            "attention_mask": 0,
            "decoder_attention_mask": 0,
            "token_type_ids": self.pad_token_type_id,
            "special_tokens_mask": 1,
            "labels": self.label_pad_token_id,
            "position_ids": 0,
            **pad_values,
        }

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        """Collate ``features`` (a list of rows) into a dict of tensors (or arrays with ``return_tensors="np"``).

        Raises:
            ValueError: an empty batch, rows with different keys, ragged nesting, a row over ``max_length``
                with ``overflow="error"``, a variable-length key without a pad value.
            TypeError: a non-integer in an id key, a value that is not a number, sequence, string or None.
        """
        return self.to_output(self.collate_numpy(features))

    def to_output(self, batch: Batch) -> Batch:
        """Turn a NumPy batch into the requested output type (one ``torch.from_numpy`` per key)."""
        if self.return_tensors == "np":
            return batch
        return to_torch(batch)

    # ------------------------------------------------------------------------------------------ internals

    def collate_numpy(
        self, features: Sequence[Mapping[str, Any]], *, aligned: frozenset[str] = ALIGNED_KEYS
    ) -> Batch:
        """Collate into NumPy arrays; ``aligned`` names the keys that must be as long as ``input_ids``."""
        batch = fast_collate(self, features, aligned)
        if batch is not None:
            return batch
        keys = check_rows(features)
        out: Batch = {}
        sequences: dict[str, tuple[list[Any], bool]] = {}
        for key in keys:
            try:
                column = [row[key] for row in features]
            except KeyError:
                column = gather(features, key, keys)  # raises, naming the row that lacks the key
            name = _RENAMED.get(key, key)
            if name in out or name in sequences:
                raise ValueError(f"rows hold both `{key}` and another key that becomes `{name}`; keep one")
            first = column[0]
            # the common case inline (a list of ints); key_kind classifies everything else
            kind = "seq" if type(first) is list and first and type(first[0]) is int else key_kind(name, first)
            if kind == "skip":
                if self.keep_non_numeric:
                    out[name] = column
            elif kind == "scalar":
                if (name != "labels" and name in self._pad) or (
                    name == "labels" and self.label_mode == "sequence"
                ):
                    raise TypeError(
                        f"`{name}` must be a sequence per row; row 0 holds a scalar {column[0]!r:.40}"
                    )
                hint = _CLASSIFICATION_HINT if self.label_mode == "classification" else ""
                out[name] = stack_scalars(name, column, hint)
            elif name == "labels" and self.label_mode != "sequence" and kind == "seq":
                if is_float_sequence(column[0]):
                    out[name] = stack_fixed(name, column, column_lengths(name, column))
                elif self.label_mode == "classification":
                    raise ValueError(
                        f"`labels` row 0 holds an int list {column[0]!r:.60}{_CLASSIFICATION_HINT}"
                    )
                else:
                    sequences[name] = (column, False)
            elif name not in self._pad and kind == "seq":
                out[name] = stack_fixed(name, column, column_lengths(name, column))
            else:
                sequences[name] = (column, kind == "nested")
        if sequences:
            self._pad_sequences(sequences, out, aligned)
        return out

    def _pad_sequences(
        self, sequences: dict[str, tuple[list[Any], bool]], out: Batch, aligned: frozenset[str]
    ) -> None:
        ref: _Ref | None = None  # the input_ids layout the aligned keys share
        order = list(sequences)
        if "input_ids" in sequences:  # input_ids first: the aligned keys reuse its layout
            order.remove("input_ids")
            order.insert(0, "input_ids")
        for name in order:
            column, nested = sequences[name]
            rows, choices = len(column), None
            if nested:
                choices, column = unnest(name, column)
            elif ref is not None and name in aligned and ref.choices is None and not ref.cut:
                value = aligned_constant(column, ref.lens)
                if value is not None:  # e.g. an all-ones attention mask: checked and built without conversion
                    out[name] = constant_padded(ref.mask, value, self._pad_value(name, ref))
                    continue
            lens = column_lengths(name, column)
            if ref is not None and name in aligned:
                if choices != ref.choices or lens != ref.lens:
                    raise_misaligned(name, lens, ref.lens)
                layout = ref
            else:
                layout = self._layout(name, lens, choices)
            pad = self._pad_value(name, layout)
            value = None if layout.cut else uniform_value(column)
            if value is not None:
                padded = constant_padded(layout.mask, value, pad)
            else:
                flat = flatten_column(name, column, integer=name in INTEGER_KEYS, lengths=lens)
                if layout.cut:
                    flat = truncate_flat(flat, np.array(lens), self.max_length, self.truncation_side)  # type: ignore[arg-type]
                padded = scatter_padded(flat, layout.mask, pad, flat.dtype)
            if choices is not None:
                padded = padded.reshape(rows, choices, padded.shape[-1])
            if name == "input_ids":
                ref = layout
            out[name] = padded
        if ref is not None and "attention_mask" not in out and self.return_attention_mask:
            mask = ref.mask
            if ref.choices is not None:
                mask = mask.reshape(mask.shape[0] // ref.choices, ref.choices, mask.shape[-1])
            bool_mask = self.attention_mask_dtype == "bool"
            out["attention_mask"] = np.ascontiguousarray(mask) if bool_mask else mask.astype(np.int64)
        elif "attention_mask" in out and self.attention_mask_dtype == "bool":
            out["attention_mask"] = out["attention_mask"].astype(bool)

    def _pad_value(self, name: str, layout: _Ref) -> int | float:
        pad = self._pad.get(name)
        if pad is not None:
            return pad
        if name not in self._pad:
            raise ValueError(
                f"`{name}` has variable length but no known pad value; pass `pad_values={{{name!r}: value}}`"
            )
        if layout.mask.all():
            return 0  # never written: nothing to pad
        raise ValueError(
            f"`{name}` needs padding but the tokenizer has no pad token; set `tokenizer.pad_token` "
            "(e.g. to its eos token) or pass `pad_token_id=`"
        )

    def _layout(self, name: str, lens: list[int], choices: int | None) -> _Ref:
        """Work out the padded width and the mask of real positions (after truncation) for one key."""
        longest = max(lens)
        cut = False
        limit = self.max_length
        if limit is not None and longest > limit:
            if self.overflow == "error":
                i = lens.index(longest)
                raise ValueError(
                    f"`{name}` row {i} has {longest} tokens, over `max_length`={limit}; truncate it "
                    "when tokenizing, raise max_length, or pass `overflow='truncate'`"
                )
            cut, longest = True, limit
        width = limit if self.padding == "max_length" and limit is not None else longest
        multiple = self.pad_to_multiple_of
        if multiple is not None and width % multiple:
            width += multiple - width % multiple
        lengths = np.array(lens, dtype=np.int64)
        if cut and limit is not None:
            lengths = np.minimum(lengths, limit)
        return _Ref(lens, padding_mask(lengths, width, self.padding_side), choices, cut)  # type: ignore[arg-type]


class _Ref(NamedTuple):
    lens: list[int]  # lengths before truncation
    mask: np.ndarray  # [rows, width] real positions
    choices: int | None
    cut: bool
