"""``TokenClassificationCollator``: pad inputs and per-token labels to the same length."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hfbridge.collators._common import PaddingOptions
from hfbridge.collators._padding import PaddingCollator
from hfbridge.collators._rows import ALIGNED_KEYS

__all__ = ["TokenClassificationCollator"]

_ALIGNED_WITH_LABELS = ALIGNED_KEYS | {"labels"}


@dataclass
class TokenClassificationCollator(PaddingOptions):
    """Pad a token-classification batch: per-token ``labels`` padded with ``label_pad_token_id`` (-100).

    The same as ``DataCollatorForTokenClassification``, plus a check that every row has exactly one label per
    input id (HF pads a misaligned row silently), and ``label`` is renamed ``labels`` (HF keeps ``label``).

    Args:
        tokenizer: the pad id and padding side come from it.
        padding, max_length, overflow, pad_to_multiple_of, padding_side, pad_token_id, label_pad_token_id, pad_values,
            attention_mask_dtype, return_tensors: as in ``PaddingCollator``.

    Raises:
        ValueError: a row whose ``labels`` is not as long as its ``input_ids`` (and every ``PaddingCollator`` error).

    Example:
        >>> collate = TokenClassificationCollator(tokenizer)  # doctest: +SKIP
        >>> collate([{"input_ids": [2, 9, 3], "labels": [-100, 1, -100]}, {"input_ids": [2, 3], "labels": [-100, -100]}])  # doctest: +SKIP
    """

    _padding: PaddingCollator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._padding = self._padder(label_mode="sequence")

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Collate ``features`` into a dict of tensors (or arrays)."""
        batch = self._padding.collate_numpy(features, aligned=_ALIGNED_WITH_LABELS)
        return self._padding.to_output(batch)
