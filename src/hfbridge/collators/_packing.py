"""Padding-free batches: ``FlatteningCollator`` concatenates a batch into one row (as
``DataCollatorWithFlattening``); ``PackedCollator`` packs causal-LM examples into rows and never lets one
example attend to another.

``PackedCollator`` relies on how transformers (5.x) keeps packed examples apart (see docs/chat.md): for
``sdpa``, ``eager`` and ``flex_attention``, ``masking_utils.find_packed_sequence_indices`` starts a new
sequence wherever a position does not follow the previous one by 1, but only when the batch has
``position_ids``, no ``attention_mask`` and the model builds no KV cache (hence ``use_cache=False`` in the
batch: a model in eval mode builds one by default); the ``flash_attention_2/3/4`` varlen kernels take
``cu_seq_lens_q/k`` and ``max_length_q/k``. Any other implementation is not known to do either, so it is
refused. Labels never predict across a boundary: the label at each example's first token is
``label_pad_token_id``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

import numpy as np

from hfbridge._checks import check_choice, check_positive_int, check_type
from hfbridge.collators._arrays import column_lengths, flatten_column, gather_columns, to_torch

__all__ = ["PACKING_ATTENTION", "FlatteningCollator", "PackedCollator"]

PACKING_ATTENTION = (
    "eager",
    "flash_attention_2",
    "flash_attention_3",
    "flash_attention_4",
    "flex_attention",
    "sdpa",
)
_FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


@dataclass
class PackedCollator:
    """Concatenate causal-LM examples into rows, ``position_ids`` per example: none attends to another.

    With ``row_length=None`` the whole batch becomes one ``[1, total_tokens]`` row: no padding at all. With
    ``row_length`` the examples fill rows of exactly that many tokens in order (a row is closed when the next
    example does not fit), and each row's tail is padding (``pad_token_id``, labels ``label_pad_token_id``)
    numbered as a sequence of its own, so it attends only to itself. Pair it with
    :class:`BinPackingBatchSampler` (``max_tokens = row_length``): each of its batches then fills one row.

    Args:
        attn_implementation: the model's attention implementation (``model.config._attn_implementation``); one
            of ``PACKING_ATTENTION``. :meth:`for_model` reads it from a model.
        row_length: the length of every row; ``None`` packs the batch into one row without padding.
        pad_token_id: the id in row tails.
        label_pad_token_id: the label of row tails and of every example's first token.
        return_flash_attn_kwargs: return ``cu_seq_lens_q/k`` and ``max_length_q/k``; ``None`` returns them for
            the flash implementations only.
        return_seq_idx: return ``seq_idx``, the example index of every token (row tails: -1).
        return_use_cache: put ``use_cache=False`` in the batch (the model then builds no KV cache, without
            which transformers would not detect the packed examples); set ``False`` only if your loop passes
            it itself.
        return_tensors: ``"pt"`` or ``"np"``.

    Raises:
        ValueError: an attention implementation that cannot keep packed examples apart (the message names
            those that can), an empty batch or example, an example longer than ``row_length``, ``labels`` of
            another length than ``input_ids``.

    Example:
        >>> collate = PackedCollator("sdpa")
        >>> collate([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])["position_ids"].tolist()
        [[0, 1, 2, 0, 1]]
    """

    attn_implementation: str
    row_length: int | None = None
    pad_token_id: int = 0
    label_pad_token_id: int = -100
    return_flash_attn_kwargs: bool | None = None
    return_seq_idx: bool = False
    return_use_cache: bool = True
    return_tensors: Literal["pt", "np"] = "pt"

    def __post_init__(self) -> None:
        check_type("attn_implementation", self.attn_implementation, str)
        if self.attn_implementation not in PACKING_ATTENTION:
            raise ValueError(
                "`attn_implementation` must keep packed examples apart; "
                f"{self.attn_implementation!r} is not known to (transformers masks packed rows for "
                f"{', '.join(map(repr, PACKING_ATTENTION))}). Load the model with one of them, e.g. "
                "from_pretrained(..., attn_implementation='sdpa'), or use padded batches (CausalLMCollator)"
            )
        check_positive_int("row_length", self.row_length, allow_none=True)
        check_type("pad_token_id", self.pad_token_id, int)
        check_type("label_pad_token_id", self.label_pad_token_id, int)
        if self.return_flash_attn_kwargs is not None:
            check_type("return_flash_attn_kwargs", self.return_flash_attn_kwargs, bool, what="a bool or None")
        check_type("return_seq_idx", self.return_seq_idx, bool)
        check_type("return_use_cache", self.return_use_cache, bool)
        check_choice("return_tensors", self.return_tensors, ("pt", "np"))

    @classmethod
    def for_model(cls, model: Any, **kwargs: Any) -> PackedCollator:
        """A collator for ``model``'s attention implementation (refused if it cannot keep examples apart).

        Raises:
            ValueError: an encoder-decoder model, or an implementation outside ``PACKING_ATTENTION``.
        """
        config = getattr(model, "config", model)
        if getattr(config, "is_encoder_decoder", False):
            raise ValueError("`model` must be a decoder-only causal LM to pack; got an encoder-decoder model")
        implementation = getattr(config, "_attn_implementation", None)
        if implementation is None:
            raise ValueError(
                f"`model` must have a config with `_attn_implementation`; got {type(model).__name__}"
            )
        if "pad_token_id" not in kwargs and isinstance(getattr(config, "pad_token_id", None), int):
            kwargs["pad_token_id"] = config.pad_token_id
        return cls(implementation, **kwargs)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Pack ``features`` (rows with ``input_ids`` and optionally ``labels``) into rows."""
        if not features:
            raise ValueError("PackedCollator got an empty batch")
        ids, labels, lengths = _gather(features)
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        labels[starts] = self.label_pad_token_id
        width = self.row_length or int(lengths.sum())  # None: one row that holds every example
        dest_start, used = _next_fit(lengths, width)
        n_rows = len(used)
        total = n_rows * width
        out_ids = np.full(total, self.pad_token_id, dtype=np.int64)
        out_labels = np.full(total, self.label_pad_token_id, dtype=np.int64)
        token_dest = np.repeat(dest_start - starts, lengths) + np.arange(len(ids))
        out_ids[token_dest] = ids
        out_labels[token_dest] = labels
        # every sequence (examples and row tails) with its flat start; positions count from each start
        tail_rows = np.flatnonzero(used < width)
        seq_starts = np.sort(np.concatenate([dest_start, tail_rows * width + used[tail_rows]]))
        seq_lengths = np.diff(np.append(seq_starts, total))
        positions = np.arange(total, dtype=np.int64) - np.repeat(seq_starts, seq_lengths)
        batch: dict[str, Any] = {
            "input_ids": out_ids.reshape(n_rows, width),
            "labels": out_labels.reshape(n_rows, width),
            "position_ids": positions.reshape(n_rows, width),
        }
        if self.return_seq_idx:
            seq_idx = np.full(total, -1, dtype=np.int64)
            seq_idx[token_dest] = np.repeat(np.arange(len(lengths)), lengths)
            batch["seq_idx"] = seq_idx.reshape(n_rows, width)
        flash = self.return_flash_attn_kwargs
        if flash or (flash is None and self.attn_implementation in _FLASH):
            cu = np.append(seq_starts, total).astype(np.int32)
            batch["cu_seq_lens_q"], batch["cu_seq_lens_k"] = cu, cu.copy()
            batch["max_length_q"] = batch["max_length_k"] = int(seq_lengths.max())
        if self.return_use_cache:
            batch["use_cache"] = False
        return batch if self.return_tensors == "np" else to_torch(batch)


def _gather(features: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat ``input_ids``, flat ``labels`` (the ids where a row has none) and the example lengths."""
    id_rows, label_rows = [], []
    for i, row in enumerate(features):
        if not isinstance(row, Mapping) or "input_ids" not in row:
            raise ValueError(
                f"PackedCollator: example {i} must be a mapping with `input_ids`; got {row!r:.80}"
            )
        ids = np.asarray(row["input_ids"])
        if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(
                f"PackedCollator: example {i} `input_ids` must be a non-empty 1-D list of ints; got "
                f"{row['input_ids']!r:.80}"
            )
        labels = np.asarray(row["labels"]) if "labels" in row and row["labels"] is not None else ids
        if labels.shape != ids.shape:
            raise ValueError(
                f"PackedCollator: example {i} has {labels.size} labels for {ids.size} input ids; they must "
                "match"
            )
        id_rows.append(ids)
        label_rows.append(labels)
    lengths = np.fromiter(map(len, id_rows), dtype=np.int64, count=len(id_rows))
    flat_labels = np.concatenate(label_rows).astype(np.int64)  # a copy: the caller's rows are never changed
    return np.concatenate(id_rows).astype(np.int64, copy=False), flat_labels, lengths


def _next_fit(lengths: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Place examples in order into rows of ``width`` tokens: each one's flat start, each row's fill."""
    too_long = np.flatnonzero(lengths > width)
    if too_long.size:
        i = int(too_long[0])
        raise ValueError(
            f"PackedCollator: example {i} has {int(lengths[i])} tokens, more than `row_length`={width}; "
            "truncate the data (adapt_chat(max_length=...)) or raise row_length"
        )
    starts, used = [], [0]
    for n in lengths.tolist():
        if used[-1] + n > width:
            used.append(0)
        starts.append((len(used) - 1) * width + used[-1])
        used[-1] += n
    return np.array(starts, dtype=np.int64), np.array(used, dtype=np.int64)


@dataclass
class FlatteningCollator:
    """Concatenate a batch into one ``[1, total_tokens]`` row: no padding, positions restart per sequence.

    Gives the same tensors as ``DataCollatorWithFlattening``: ``input_ids``; ``labels`` (the rows' ``labels``,
    or their ``input_ids``) with ``separator_id`` (-100) at the first token of every sequence so no token is
    predicted across a boundary; ``position_ids`` restarting at ``position_ids_start`` for every sequence;
    optionally ``cu_seq_lens_q``/``cu_seq_lens_k`` (int32 cumulative lengths) and
    ``max_length_q``/``max_length_k`` for flash-attention-style varlen kernels, and ``seq_idx`` (int32). Empty
    rows are skipped. Keys other than ``input_ids`` and ``labels`` are ignored: the packed row needs no
    attention mask.

    Args:
        return_position_ids: return ``position_ids``.
        separator_id: the label at every sequence start.
        return_flash_attn_kwargs: return ``cu_seq_lens_q``, ``cu_seq_lens_k``, ``max_length_q``,
            ``max_length_k``.
        return_seq_idx: return ``seq_idx``, the index of the sequence each token belongs to.
        position_ids_start: the first position id of every sequence (RoBERTa-like models count from
            ``pad_token_id + 1``).
        return_tensors: ``"pt"`` or ``"np"``.

    Example:
        >>> FlatteningCollator()([{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}])["position_ids"].tolist()
        [[0, 1, 2, 0, 1]]
    """

    return_position_ids: bool = True
    separator_id: int = -100
    return_flash_attn_kwargs: bool = False
    return_seq_idx: bool = False
    position_ids_start: int = 0
    return_tensors: Literal["pt", "np"] = "pt"

    def __post_init__(self) -> None:
        for name in ("return_position_ids", "return_flash_attn_kwargs", "return_seq_idx"):
            check_type(name, getattr(self, name), bool)
        check_type("separator_id", self.separator_id, int)
        check_type("position_ids_start", self.position_ids_start, int)
        check_choice("return_tensors", self.return_tensors, ("pt", "np"))

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Flatten ``features`` into one packed row.

        Raises:
            ValueError: an empty batch, a batch whose rows are all empty, rows with different keys, or
                ``labels`` not as long as ``input_ids``.
            TypeError: a non-integer in ``input_ids`` or ``labels``.
        """
        input_ids, labels, lens = self._pack(features)
        bounds = [0, *accumulate(lens)]  # sequence starts, then the total
        starts = np.array(bounds[:-1], dtype=np.int64)
        if labels is None:
            labels = input_ids.copy()
        labels[starts] = self.separator_id
        batch: dict[str, Any] = {"input_ids": input_ids[None, :], "labels": labels[None, :]}
        if self.return_position_ids:
            batch["position_ids"] = _positions(lens, starts, len(input_ids), self.position_ids_start)[None, :]
        if self.return_seq_idx:
            batch["seq_idx"] = np.repeat(np.arange(len(lens), dtype=np.int32), lens)[None, :]
        if self.return_flash_attn_kwargs:
            cu = np.array(bounds, dtype=np.int32)
            batch["cu_seq_lens_q"], batch["cu_seq_lens_k"] = cu, cu.copy()
            batch["max_length_q"] = batch["max_length_k"] = max(lens)
        return batch if self.return_tensors == "np" else to_torch(batch)

    def _pack(self, features: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """Check the rows, drop empty ones, flatten ``input_ids`` and ``labels``."""
        keys, columns = gather_columns(features)
        if "input_ids" not in columns:
            raise ValueError(
                f"FlatteningCollator needs `input_ids` in every row; the rows hold {sorted(keys)}"
            )
        ids_column = columns["input_ids"]
        lens = column_lengths("input_ids", ids_column)
        kept = [i for i, n in enumerate(lens) if n] if 0 in lens else None  # HF skips empty rows too
        if kept is not None:
            if not kept:
                raise ValueError("FlatteningCollator got a batch whose every row has empty `input_ids`")
            ids_column = [ids_column[i] for i in kept]
            lens = [lens[i] for i in kept]
        input_ids = flatten_column("input_ids", ids_column, lens, "ids")
        label_column = columns.get("labels")
        if label_column is None:
            return input_ids, None, lens
        if kept is not None:
            label_column = [label_column[i] for i in kept]
        label_lens = column_lengths("labels", label_column)
        if label_lens != lens:
            i = next(i for i, (a, b) in enumerate(zip(label_lens, lens)) if a != b)
            raise ValueError(
                f"`labels` must be as long as `input_ids` in every row; non-empty row {i} has "
                f"{label_lens[i]} labels for {lens[i]} input ids"
            )
        return input_ids, flatten_column("labels", label_column, lens, "ints"), lens


_ARANGE = np.arange(4096, dtype=np.int64)


def _positions(lengths: list[int], starts: np.ndarray, total: int, start: int) -> np.ndarray:
    """``[0..n0-1, 0..n1-1, ...] + start``: a cached ``arange`` minus every token's sequence start."""
    steps = _ARANGE[:total] if total <= _ARANGE.shape[0] else np.arange(total, dtype=np.int64)
    positions = steps - starts.repeat(lengths)
    if start:
        positions += start
    return positions
