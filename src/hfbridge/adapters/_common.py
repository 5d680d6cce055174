"""What every adapter shares: the tokenizer check, label resolution and the descriptive properties."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hfbridge.adapters._config import AdapterConfig
from hfbridge.adapters._encode import Encoder
from hfbridge.adapters._labels import LabelInfo, build_label_info, label_kind

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["AdapterProperties", "check_tokenizer", "rebind_labels", "resolve_labels"]


def check_tokenizer(tokenizer: Any, task: str) -> None:
    """Raise unless ``tokenizer`` is a transformers tokenizer able to serve ``task``.

    Raises:
        TypeError: not a ``PreTrainedTokenizerBase``; a slow tokenizer for token classification.
        ValueError: no pad token; no mask token for masked LM.
    """
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise TypeError(
            "`tokenizer` must be a transformers tokenizer (a PreTrainedTokenizerBase, e.g. from "
            f"`AutoTokenizer.from_pretrained(...)`); got {type(tokenizer).__name__}"
        )
    if tokenizer.pad_token_id is None:
        raise ValueError(
            "`tokenizer` must have a pad token, which padding needs; it has pad_token=None. Set one, e.g. "
            "`tokenizer.pad_token = tokenizer.eos_token` (causal LMs), or "
            "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})` then `model.resize_token_embeddings(len(tokenizer))`"
        )
    if task == "token-classification" and not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            "`tokenizer` must be a fast tokenizer for task 'token-classification' (labels are aligned through "
            f"`word_ids()`); got the slow {type(tokenizer).__name__}; load it with `AutoTokenizer.from_pretrained(..., use_fast=True)`"
        )
    if task == "masked-lm" and tokenizer.mask_token_id is None:
        raise ValueError(
            "`tokenizer` must have a mask token for task 'masked-lm'; it has mask_token=None. Set one with "
            "`tokenizer.add_special_tokens({'mask_token': '[MASK]'})`"
        )


def resolve_labels(
    cfg: AdapterConfig,
    features: Mapping[str, Any] | None,
    *,
    sample: Any = None,
    data: pa.ChunkedArray | None = None,
    split: str | None = None,
) -> LabelInfo | None:
    """The label scheme of a source (``None`` for tasks without labels); ``data`` is validated when given."""
    if not cfg.has_labels:
        return None
    column = cfg.label_column
    assert column is not None  # has_labels guarantees it
    feature = features.get(column) if features is not None else None
    kind = label_kind(feature, sample, column=column, task=cfg.task)
    info = build_label_info(
        kind,
        task=cfg.task,
        column=column,
        problem_type=cfg.problem_type,
        label2id=cfg._frozen_label2id,
        data=data,
        split=split,
    )
    if data is not None:
        info.check_column(data, split)
    return info


def rebind_labels(
    labels: LabelInfo,
    cfg: AdapterConfig,
    features: Mapping[str, Any] | None,
    *,
    sample: Any = None,
    split: str | None = None,
) -> LabelInfo:
    """A shared label scheme (e.g. the train split's) fitted to this source's label column: its own ClassLabel
    name order is remapped through the shared ``label2id``."""
    feature = features.get(labels.column) if features is not None else None
    kind = label_kind(feature, sample, column=labels.column, task=cfg.task)
    return labels.rebind(kind, split, given_map=cfg.label2id is not None)


class AdapterProperties:
    """Read-only properties shared by ``MapAdapter`` and ``IterableAdapter`` (both hold ``_encoder``)."""

    _encoder: Encoder
    _collator_kwargs: dict[str, Any]

    @property
    def task(self) -> str:
        """The task name the rows are encoded for."""
        return self._encoder.config.task

    @property
    def tokenizer(self) -> Any:
        """The tokenizer that encodes the rows."""
        return self._encoder.tokenizer

    @property
    def config(self) -> AdapterConfig:
        """The validated options."""
        return self._encoder.config

    @property
    def problem_type(self) -> str | None:
        """``single_label_classification``, ``multi_label_classification``, ``regression``,
        ``token_classification`` or ``None`` (no labels), as ``PretrainedConfig.problem_type`` names them."""
        labels = self._encoder.labels
        return None if labels is None else labels.problem_type

    @property
    def label2id(self) -> dict[str, int] | None:
        """Label name -> id (``None`` without labels, for regression, or for unnamed streaming ids)."""
        labels = self._encoder.labels
        return None if labels is None or labels.label2id is None else dict(labels.label2id)

    @property
    def id2label(self) -> dict[int, str] | None:
        """Id -> label name, ready for ``from_pretrained(..., id2label=adapter.id2label)``."""
        labels = self._encoder.labels
        return None if labels is None else labels.id2label

    @property
    def num_labels(self) -> int | None:
        """Number of classes (1 for regression), ``None`` without labels."""
        labels = self._encoder.labels
        return None if labels is None else labels.num_labels

    @property
    def collator(self) -> Any:
        """The task's collator, ``hfbridge.collators.collator_for_task(task, tokenizer, **collator_kwargs)``."""
        from hfbridge.collators import collator_for_task

        return collator_for_task(self.task, self.tokenizer, **self._collator_kwargs)
