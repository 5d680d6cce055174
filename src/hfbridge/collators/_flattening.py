"""``FlatteningCollator``: padding-free batches, all rows concatenated into one, for packed attention."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

import numpy as np

from hfbridge._checks import check_choice, check_type
from hfbridge.collators._arrays import column_lengths, flatten_column, to_torch
from hfbridge.collators._rows import gather_columns

__all__ = ["FlatteningCollator"]


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
        if self.return_tensors == "np":
            return batch
        return to_torch(batch)

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
