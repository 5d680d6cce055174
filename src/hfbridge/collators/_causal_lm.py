"""``CausalLMCollator``: pad, and make the labels the input ids at real (attended) positions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hfbridge.collators._common import PaddingOptions
from hfbridge.collators._padding import PaddingCollator

__all__ = ["CausalLMCollator"]


@dataclass
class CausalLMCollator(PaddingOptions):
    """Pad a causal-LM batch; ``labels`` are ``input_ids`` where the attention mask is 1 and -100 elsewhere.

    Like ``DataCollatorForLanguageModeling(mlm=False)``, except that the labels are masked by the *attention mask*
    rather than by comparing ids with the pad id: when the pad token is the EOS token (the usual GPT-2/Llama
    set-up), HF also turns every real EOS into -100 and the model never learns to stop (transformers #23530);
    here the EOS stays a label. Rows that already carry ``labels`` (e.g. prompt tokens set to -100 for
    instruction tuning) keep them, padded with ``label_pad_token_id``. ``special_tokens_mask`` is dropped, as HF
    does, since models do not take it.

    Args:
        tokenizer: the pad id and padding side come from it.
        padding, max_length, overflow, pad_to_multiple_of, padding_side, pad_token_id, label_pad_token_id, pad_values,
            attention_mask_dtype, return_tensors: as in ``PaddingCollator``.

    Example:
        >>> collate = CausalLMCollator(tokenizer)  # doctest: +SKIP
        >>> collate([{"input_ids": [5, 6, 2]}, {"input_ids": [7, 2]}])["labels"].tolist()  # doctest: +SKIP
        [[5, 6, 2], [7, 2, -100]]
    """

    _padding: PaddingCollator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._padding = self._padder(label_mode="sequence", return_attention_mask=True)

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``features`` into a dict of tensors (or arrays)."""
        batch = self._padding.collate_numpy(features)
        batch.pop("special_tokens_mask", None)
        if "labels" not in batch and "input_ids" in batch:
            attended = batch["attention_mask"].astype(bool, copy=False)
            batch["labels"] = np.where(attended, batch["input_ids"], np.int64(self.label_pad_token_id))
        return self._padding.to_output(batch)
