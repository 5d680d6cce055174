"""The options of an adapter, validated once in one flat dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from hfbridge._checks import (
    LABEL_TASKS,
    LM_TASKS,
    Task,
    check_choice,
    check_label2id,
    check_positive_int,
    check_task,
    check_type,
)

__all__ = ["PROBLEM_TYPES", "AdapterConfig", "ProblemType"]

ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]
PROBLEM_TYPES: tuple[str, ...] = get_args(ProblemType)


@dataclass
class AdapterConfig:
    """How an adapter reads, tokenizes and labels its rows; ``adapt(..., **options)`` takes these fields.

    Args:
        task: one of ``sequence-classification``, ``token-classification``, ``seq2seq``, ``causal-lm``,
            ``masked-lm``.
        text_column: the input text (a word list for token classification, the source for seq2seq).
        text_pair_column: the second text of a pair (sequence classification only).
        label_column: the labels (classification tasks): int, str, ClassLabel, float (regression), lists
            (multi-label), word-label lists (token classification); ``None`` adapts an unlabelled split.
        target_column: the target text (seq2seq only, tokenized with ``text_target=``).
        max_length: truncate inputs to this many tokens, special tokens included (it must leave room for one
            token of content); ``None`` uses the tokenizer's ``model_max_length``.
        max_target_length: truncate seq2seq targets; ``None`` uses ``max_length``.
        truncation: truncate at all (``False`` keeps full sequences).
        label_all_tokens: token classification: label every sub-word with its word's label instead of
            ``-100`` on the non-first sub-words; a continuation of a ``B-X`` word gets ``I-X`` when the label
            names follow BIO/IOB2 (as transformers' ``run_ner.py`` does), else the word's own label.
        block_size: causal/masked LM: pack the whole corpus into blocks of this many tokens.
        problem_type: sequence classification: override the one inferred from the label type
            (``single_label_classification``, ``multi_label_classification``, ``regression``).
        label2id: a fixed label map (e.g. a model config's); by default it is built from the data. Names are
            str (int names become str), ids ``0..n-1``; int labels are then read as its ids.
        extend_labels: ``adapt(DatasetDict)`` with string labels: labels of later splits that the first
            split lacks are appended to the shared label map (as ``run_classification.py`` does) instead of
            being an error.
        lazy: tokenize on access (``True``) or once up front with ``Dataset.map`` (``False``).
        estimate_lengths: lazy mode: estimate ``.lengths`` from character counts instead of tokenizing.
        tokenize_batch_size: rows per fast-tokenizer call when tokenizing in bulk (eager map, lengths,
            streaming).
        num_proc: processes for the eager ``Dataset.map`` (and packing); ``None`` tokenizes in this process.

    Raises:
        ValueError: an unknown task or problem type, a non-positive length, an option the task does not use.
        TypeError: an option of the wrong type.
    """

    task: Task
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str | None = "label"
    target_column: str = "target"
    max_length: int | None = None
    max_target_length: int | None = None
    truncation: bool = True
    label_all_tokens: bool = False
    block_size: int | None = None
    problem_type: ProblemType | None = None
    label2id: Mapping[str, int] | None = None
    extend_labels: bool = False
    lazy: bool = True
    estimate_lengths: bool = False
    tokenize_batch_size: int = 1000
    num_proc: int | None = None

    def __post_init__(self) -> None:
        check_task(self.task)
        check_type("text_column", self.text_column, str)
        check_type("target_column", self.target_column, str)
        for name in ("text_pair_column", "label_column"):
            if getattr(self, name) is not None:
                check_type(name, getattr(self, name), str, what="str or None")
        for name in ("truncation", "label_all_tokens", "extend_labels", "lazy", "estimate_lengths"):
            check_type(name, getattr(self, name), bool)
        for name in ("max_length", "max_target_length", "block_size", "num_proc"):
            check_positive_int(name, getattr(self, name), allow_none=True)
        check_positive_int("tokenize_batch_size", self.tokenize_batch_size)
        if self.problem_type is not None:
            check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        self._only_for("text_pair_column", self.text_pair_column, ("sequence-classification",))
        self._only_for("problem_type", self.problem_type, ("sequence-classification",))
        self._only_for("block_size", self.block_size, LM_TASKS)
        self._only_for("max_target_length", self.max_target_length, ("seq2seq",))
        self._only_for("label_all_tokens", self.label_all_tokens or None, ("token-classification",))
        if self.label2id is not None:
            self.label2id = check_label2id(self.label2id)

    def _only_for(self, name: str, value: Any, tasks: tuple[str, ...]) -> None:
        if value is not None and self.task not in tasks:
            valid = ", ".join(map(repr, tasks))
            raise ValueError(f"`{name}` is only used by task {valid}; got {value!r} for task {self.task!r}")

    @property
    def has_labels(self) -> bool:
        """Whether this task reads a label column."""
        return self.label_column is not None and self.task in LABEL_TASKS

    def source_columns(self) -> list[str]:
        """The columns the adapter reads from its source, in a stable order."""
        return self.text_columns() + ([self.label_column] if self.has_labels else [])  # type: ignore[list-item]

    def text_columns(self) -> list[str]:
        """The columns that hold text (never null)."""
        columns = [self.text_column]
        if self.text_pair_column is not None:
            columns.append(self.text_pair_column)
        if self.task == "seq2seq":
            columns.append(self.target_column)
        return columns

    def effective_max_length(self, tokenizer: Any) -> int | None:
        """The length tokenized inputs are cut to, or ``None`` when nothing truncates them."""
        if not self.truncation:
            return None
        if self.max_length is not None:
            return self.max_length
        limit = getattr(tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and limit < 1_000_000 else None
