"""Task encoders: one batched fast-tokenizer call turns a batch of raw columns into feature columns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

from hfbridge.adapters._config import AdapterConfig
from hfbridge.adapters._labels import LabelInfo
from hfbridge.adapters._sources import word_label_error

__all__ = ["IGNORE_INDEX", "Encoder", "pack_blocks", "to_rows"]

IGNORE_INDEX = -100
Batch = dict[str, list[Any]]


def to_rows(columns: Batch) -> list[dict[str, Any]]:
    """Column-major batch -> list of feature rows that also carries the columns (``ColumnRows``).

    Our collators read the columns; any other code sees a plain list of dicts.
    """
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


@dataclass
class Encoder:
    """Picklable batch encoder for a task (``datasets`` hashes it for the ``map`` cache).

    Calling it on ``{column: values}`` returns the feature columns: ``input_ids``, ``attention_mask`` and
    whatever else the tokenizer returns, ``labels`` where the task has them, ``special_tokens_mask`` for masked LM.
    Packing into ``block_size`` blocks is done by the caller (it needs the whole corpus, or a carry buffer).
    """

    tokenizer: Any
    config: AdapterConfig
    labels: LabelInfo | None = None

    def __call__(self, batch: Batch) -> Batch:
        task = self.config.task
        if task == "token-classification":
            return self._token_classification(batch)
        features = self._tokenize(batch)
        if task == "sequence-classification" and self.labels is not None:
            features["labels"] = self.labels.convert(batch[self.labels.column])
        elif task == "seq2seq":
            cfg = self.config
            targets = self.tokenizer(
                text_target=batch[cfg.target_column],
                truncation=cfg.truncation,
                max_length=cfg.max_target_length or cfg.max_length,
            )
            features["labels"] = targets["input_ids"]
        elif task == "causal-lm":
            features["labels"] = [list(ids) for ids in features["input_ids"]]
        return features

    def input_lengths(self, batch: Batch, *, truncate: bool = True) -> list[int]:
        """Token counts of ``input_ids`` (special tokens included, truncated unless ``truncate=False``),
        without building labels."""
        cfg = self.config
        kwargs: dict[str, Any] = {"return_attention_mask": False, "return_token_type_ids": False}
        if not truncate:
            kwargs.update(truncation=False, max_length=None)
        if cfg.task == "token-classification":
            kwargs["is_split_into_words"] = True
        ids = self._call_tokenizer(batch, **kwargs)["input_ids"]
        return [len(x) for x in ids]

    def _call_tokenizer(self, batch: Batch, **kwargs: Any) -> Any:
        cfg = self.config
        pairs = batch[cfg.text_pair_column] if cfg.text_pair_column is not None else None
        packing = cfg.block_size is not None
        options: dict[str, Any] = {
            "truncation": cfg.truncation and not packing,
            "max_length": None if packing else cfg.max_length,
        }
        options.update(kwargs)
        return self.tokenizer(batch[cfg.text_column], pairs, **options)

    def _tokenize(self, batch: Batch) -> Batch:
        extra = {"return_special_tokens_mask": True} if self.config.task == "masked-lm" else {}
        encoding = self._call_tokenizer(batch, **extra)
        return {key: list(values) for key, values in encoding.items()}

    def _token_classification(self, batch: Batch) -> Batch:
        encoding = self._call_tokenizer(batch, is_split_into_words=True)
        features = {key: list(values) for key, values in encoding.items()}
        if self.labels is None:
            return features
        word_labels = batch[self.labels.column]
        aligned = []
        for i, (words, labels) in enumerate(zip(batch[self.config.text_column], word_labels)):
            if labels is None:
                raise ValueError(f"`label_column` {self.labels.column!r} has a missing (None) label list")
            if len(labels) != len(words):  # row i of this batch (sized sources are checked up front)
                raise word_label_error(i, len(words), len(labels), self.config, None)
            ids = self.labels.to_ids(labels)
            aligned.append(align_labels(encoding.word_ids(i), ids, self.config.label_all_tokens))
        features["labels"] = aligned
        return features


def align_labels(
    word_ids: Sequence[int | None], word_labels: Sequence[int], label_all_tokens: bool
) -> list[int]:
    """Word labels -> sub-word labels: ``-100`` on special tokens and, unless ``label_all_tokens``, on non-first
    sub-words of a word (the scheme of transformers' ``run_ner.py``)."""
    out = []
    previous = None
    for word in word_ids:
        if word is None:
            out.append(IGNORE_INDEX)
        elif word != previous or label_all_tokens:
            out.append(word_labels[word])
        else:
            out.append(IGNORE_INDEX)
        previous = word
    return out
