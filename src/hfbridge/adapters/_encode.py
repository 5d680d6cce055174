"""Task encoders: one batched fast-tokenizer call turns a batch of raw columns into feature columns.

``ENCODERS`` maps each task name to its encoding function; adding a task is one function and one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from hfbridge.adapters._config import AdapterConfig
from hfbridge.adapters._labels import LabelInfo
from hfbridge.adapters._sources import word_label_error

__all__ = ["ENCODERS", "IGNORE_INDEX", "Encoder", "pack_blocks", "to_rows"]

IGNORE_INDEX = -100
Batch = dict[str, list[Any]]


def to_rows(columns: Batch) -> list[dict[str, Any]]:
    """Column-major batch -> ``ColumnRows``, a plain list of feature rows that also carries the columns our
    collators read."""
    from hfbridge.collators import ColumnRows

    return ColumnRows(columns)


def pack_blocks(columns: Batch, block_size: int, carry: Batch | None = None) -> tuple[Batch, Batch]:
    """Concatenate ``carry`` and every row, cut full blocks of ``block_size``; return (blocks, new carry)."""
    blocks: Batch = {}
    rest: Batch = {}
    for key, rows in columns.items():
        flat = list(chain((carry or {}).get(key, ()), *rows))
        n_full = len(flat) // block_size * block_size
        blocks[key] = [flat[i : i + block_size] for i in range(0, n_full, block_size)]
        rest[key] = flat[n_full:]
    return blocks, rest


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
            "`tokenizer.pad_token = tokenizer.eos_token` (causal LMs), or `tokenizer.add_special_tokens("
            "{'pad_token': '[PAD]'})` then `model.resize_token_embeddings(len(tokenizer))`"
        )
    if task == "token-classification" and not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            "`tokenizer` must be a fast tokenizer for task 'token-classification' (labels are aligned "
            f"through `word_ids()`); got the slow {type(tokenizer).__name__}; load it with "
            "`AutoTokenizer.from_pretrained(..., use_fast=True)`"
        )
    if task == "masked-lm" and tokenizer.mask_token_id is None:
        raise ValueError(
            "`tokenizer` must have a mask token for task 'masked-lm'; it has mask_token=None. Set one with "
            "`tokenizer.add_special_tokens({'mask_token': '[MASK]'})`"
        )


@dataclass
class Encoder:
    """Picklable batch encoder for a task (``datasets`` hashes it for the ``map`` cache).

    Calling it on ``{column: values}`` returns the feature columns: ``input_ids``, ``attention_mask`` and
    whatever else the tokenizer returns, ``labels`` where the task has them, ``special_tokens_mask`` for
    masked LM. Packing into ``block_size`` blocks is done by the caller (it needs the whole corpus, or a carry
    buffer). ``labels`` is the label scheme; rows get labels only when ``config.has_labels`` (an unlabelled
    split keeps the shared scheme for its label maps).

    Raises:
        TypeError, ValueError: the tokenizer cannot serve the task (see ``check_tokenizer``), or
            ``max_length`` / ``max_target_length`` leave no room for content after the special tokens.
    """

    tokenizer: Any
    config: AdapterConfig
    labels: LabelInfo | None = None

    def __post_init__(self) -> None:
        cfg = self.config
        check_tokenizer(self.tokenizer, cfg.task)
        if not cfg.truncation or cfg.block_size is not None:
            return
        limits = [("max_length", cfg.max_length, False)]
        if cfg.task == "seq2seq":
            limits.append(("max_target_length", cfg.max_target_length or cfg.max_length, True))
        for name, limit, target in limits:
            specials = 0 if limit is None else self.special_count(target=target)
            if limit is not None and limit <= specials:
                raise ValueError(
                    f"`{name}` must leave room for content: the tokenizer adds {specials} special tokens to "
                    f"every {'target' if target else 'input'}; got {name}={limit}, use at least "
                    f"{specials + 1}"
                )

    @property
    def labelled(self) -> LabelInfo | None:
        """The label scheme when rows carry labels, else ``None``."""
        return self.labels if self.config.has_labels else None

    @property
    def problem_type(self) -> str | None:
        return None if self.labels is None else self.labels.problem_type

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.labels is None or self.labels.label2id is None else dict(self.labels.label2id)

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.labels is None else self.labels.id2label

    @property
    def num_labels(self) -> int | None:
        return None if self.labels is None else self.labels.num_labels

    def collator(self, collator_kwargs: Mapping[str, Any]) -> Any:
        """The task's collator, ``hfbridge.collators.collator_for_task(task, tokenizer,
        **collator_kwargs)``."""
        from hfbridge.collators import collator_for_task

        return collator_for_task(self.config.task, self.tokenizer, **collator_kwargs)

    def __call__(self, batch: Batch) -> Batch:
        return ENCODERS[self.config.task](self, batch)

    def input_lengths(self, batch: Batch) -> list[int]:
        """Untruncated token counts of ``input_ids`` (special tokens included), without building labels."""
        kwargs: dict[str, Any] = {"return_attention_mask": False, "return_token_type_ids": False}
        if self.config.task == "token-classification":
            kwargs["is_split_into_words"] = True
        return [
            len(x) for x in self.tokenize(batch, truncation=False, max_length=None, **kwargs)["input_ids"]
        ]

    def special_count(self, *, target: bool = False) -> int:
        """How many special tokens the tokenizer adds to an (empty) input, or to a target when ``target``."""
        cfg = self.config
        empty: Any = [] if cfg.task == "token-classification" else ""
        try:
            if target:
                return len(self.tokenizer(text_target=[""])["input_ids"][0])
            pair = {"text_pair": [empty]} if cfg.text_pair_column is not None else {}
            ids = self.tokenizer([empty], **pair, is_split_into_words=cfg.task == "token-classification")
            return len(ids["input_ids"][0])
        except Exception:  # a tokenizer that rejects empty input: assume none
            return 0

    def tokenize(self, batch: Batch, **kwargs: Any) -> Any:
        """The tokenizer called on the batch's text (and pair) column with the configured truncation."""
        cfg = self.config
        pairs = batch[cfg.text_pair_column] if cfg.text_pair_column is not None else None
        packing = cfg.block_size is not None
        options: dict[str, Any] = {
            "truncation": cfg.truncation and not packing,
            "max_length": None if packing else cfg.max_length,
            **kwargs,
        }
        return self.tokenizer(batch[cfg.text_column], pairs, **options)

    def features(self, batch: Batch, **kwargs: Any) -> Batch:
        """The tokenizer's output as plain feature columns."""
        return {key: list(values) for key, values in self.tokenize(batch, **kwargs).items()}


def _sequence_classification(encoder: Encoder, batch: Batch) -> Batch:
    features = encoder.features(batch)
    labels = encoder.labelled
    if labels is not None:
        features["labels"] = labels.convert(batch[labels.column])
    return features


def _token_classification(encoder: Encoder, batch: Batch) -> Batch:
    encoding = encoder.tokenize(batch, is_split_into_words=True)
    features = {key: list(values) for key, values in encoding.items()}
    labels, cfg = encoder.labelled, encoder.config
    if labels is None:
        return features
    inside = labels.inside_ids() if cfg.label_all_tokens else None
    aligned = []
    for i, (words, word_labels) in enumerate(zip(batch[cfg.text_column], batch[labels.column])):
        if word_labels is None:
            raise ValueError(f"`label_column` {labels.column!r} has a missing (None) label list")
        if len(word_labels) != len(words):  # row i of this batch (sized sources are checked up front)
            raise word_label_error(i, len(words), len(word_labels), cfg, None)
        aligned.append(align_labels(encoding.word_ids(i), labels.to_ids(word_labels), inside))
    features["labels"] = aligned
    return features


def _seq2seq(encoder: Encoder, batch: Batch) -> Batch:
    cfg = encoder.config
    features = encoder.features(batch)
    targets = encoder.tokenizer(
        text_target=batch[cfg.target_column],
        truncation=cfg.truncation,
        max_length=cfg.max_target_length or cfg.max_length,
    )
    features["labels"] = targets["input_ids"]
    return features


def _causal_lm(encoder: Encoder, batch: Batch) -> Batch:
    features = encoder.features(batch)
    features["labels"] = [list(ids) for ids in features["input_ids"]]
    return features


def _masked_lm(encoder: Encoder, batch: Batch) -> Batch:
    return encoder.features(batch, return_special_tokens_mask=True)


#: task name -> the function that encodes a batch of raw columns for it
ENCODERS: dict[str, Callable[[Encoder, Batch], Batch]] = {
    "sequence-classification": _sequence_classification,
    "token-classification": _token_classification,
    "seq2seq": _seq2seq,
    "causal-lm": _causal_lm,
    "masked-lm": _masked_lm,
}


def align_labels(
    word_ids: Sequence[int | None], word_labels: Sequence[int], inside: Mapping[int, int] | None
) -> list[int]:
    """Word labels -> sub-word labels: ``-100`` on special tokens. A word's first sub-word gets its label; the
    others get ``-100`` when ``inside`` is ``None``, else the label again, a ``B-X`` turned into ``I-X``
    through ``inside`` (the scheme of transformers' ``run_ner.py`` with ``label_all_tokens``)."""
    out = []
    previous = None
    for word in word_ids:
        if word is None:
            out.append(IGNORE_INDEX)
        elif word != previous:
            out.append(word_labels[word])
        elif inside is not None:
            out.append(inside.get(word_labels[word], word_labels[word]))
        else:
            out.append(IGNORE_INDEX)
        previous = word
    return out
