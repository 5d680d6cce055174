"""``Seq2SeqCollator``: pad encoder inputs and target labels, each to its own length."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hfbridge.collators._common import PaddingOptions
from hfbridge.collators._padding import PaddingCollator

__all__ = ["Seq2SeqCollator"]


@dataclass
class Seq2SeqCollator(PaddingOptions):
    """Pad a seq2seq batch: ``labels`` padded with -100 to the longest target, ``decoder_input_ids`` from the model.

    The same tensors as ``DataCollatorForSeq2Seq``: encoder keys are padded to the longest source, ``labels`` to the
    longest target (both rounded up to ``pad_to_multiple_of``), and, when ``model`` has
    ``prepare_decoder_input_ids_from_labels`` (T5, BART, ...), ``decoder_input_ids`` are built from the padded
    labels, so a label-smoothing loss need not run the model twice. Rows without labels give a batch without
    ``labels`` (HF puts ``labels: None`` in it).

    Args:
        tokenizer: the pad id and padding side come from it.
        model: optional; its ``prepare_decoder_input_ids_from_labels`` builds ``decoder_input_ids``.
        padding, max_length, overflow, pad_to_multiple_of, padding_side, pad_token_id, label_pad_token_id, pad_values,
            attention_mask_dtype, return_tensors: as in ``PaddingCollator``.

    Example:
        >>> collate = Seq2SeqCollator(tokenizer, model=model)  # doctest: +SKIP
        >>> batch = collate([{"input_ids": [5, 6, 1], "labels": [7, 1]}, {"input_ids": [5, 1], "labels": [8, 9, 1]}])  # doctest: +SKIP
    """

    model: Any = None
    _padding: PaddingCollator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._padding = self._padder(label_mode="sequence")

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``features`` into a dict of tensors (or arrays)."""
        batch = self._padding.to_output(self._padding.collate_numpy(features))
        labels = batch.get("labels")
        prepare = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
        if labels is not None and prepare is not None and "decoder_input_ids" not in batch:
            import torch

            decoder_input_ids = prepare(labels=torch.as_tensor(labels))
            batch["decoder_input_ids"] = (
                np.asarray(decoder_input_ids.cpu()) if self.return_tensors == "np" else decoder_input_ids
            )
        return batch
