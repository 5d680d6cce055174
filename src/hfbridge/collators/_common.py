"""The padding options every task collator shares, and how they become a ``PaddingCollator``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from hfbridge.collators._arrays import Side
from hfbridge.collators._padding import PaddingCollator

__all__ = ["PaddingOptions"]


@dataclass
class PaddingOptions:
    """Fields shared by the task collators; see ``PaddingCollator`` for their meaning.

    Task collators inherit these fields (one flat dataclass level) and the small :meth:`_padder` factory, not
    padding behaviour: each builds its own ``PaddingCollator`` and composes it.
    """

    tokenizer: Any = None
    padding: Literal["longest", "max_length"] = "longest"
    max_length: int | None = None
    overflow: Literal["error", "truncate"] = "error"
    pad_to_multiple_of: int | None = None
    padding_side: Side | None = None
    pad_token_id: int | None = None
    label_pad_token_id: int = -100
    pad_values: Mapping[str, int | float] | None = None
    attention_mask_dtype: Literal["int64", "bool"] = "int64"
    return_tensors: Literal["pt", "np"] = "pt"

    def _padder(self, **overrides: Any) -> PaddingCollator:
        options: dict[str, Any] = {
            "tokenizer": self.tokenizer,
            "padding": self.padding,
            "max_length": self.max_length,
            "overflow": self.overflow,
            "pad_to_multiple_of": self.pad_to_multiple_of,
            "padding_side": self.padding_side,
            "pad_token_id": self.pad_token_id,
            "label_pad_token_id": self.label_pad_token_id,
            "pad_values": self.pad_values,
            "attention_mask_dtype": self.attention_mask_dtype,
            "return_tensors": self.return_tensors,
        }
        options.update(overrides)
        return PaddingCollator(**options)
