"""The options of an adapter, validated once in one flat dataclass."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Integral
from typing import Any, Literal, get_args

from hfbridge._checks import check_choice, check_positive_int, check_type
from hfbridge._tasks import LM_TASKS, Task, check_task

__all__ = ["PROBLEM_TYPES", "AdapterConfig", "ProblemType"]

ProblemType = Literal["single_label_classification", "multi_label_classification", "regression"]
PROBLEM_TYPES: tuple[str, ...] = get_args(ProblemType)


@dataclass
class AdapterConfig:
    """How an adapter reads, tokenizes and labels its rows.

    Args:
        task: one of ``sequence-classification``, ``token-classification``, ``seq2seq``, ``causal-lm``,
            ``masked-lm``.
        text_column: the input text (a word list for token classification, the source for seq2seq).
        text_pair_column: the second text of a pair (sequence classification only).
        label_column: the labels (classification tasks); ``None`` adapts an unlabelled split.
        target_column: the target text (seq2seq only).
        max_length: truncate inputs to this many tokens; ``None`` uses the tokenizer's ``model_max_length``.
        max_target_length: truncate seq2seq targets; ``None`` uses ``max_length``.
        truncation: truncate at all (``False`` keeps full sequences).
        label_all_tokens: token classification: label every sub-word with its word's label instead of
            ``-100`` on the non-first sub-words.
        block_size: causal/masked LM: pack the whole corpus into blocks of this many tokens.
        problem_type: sequence classification: override the one inferred from the label type
            (``single_label_classification``, ``multi_label_classification``, ``regression``).
        label2id: a fixed label map (e.g. a model config's); by default it is built from the data.
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
    lazy: bool = True
    estimate_lengths: bool = False
    tokenize_batch_size: int = 1000
    num_proc: int | None = None
    _frozen_label2id: dict[str, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        check_task(self.task)
        check_type("text_column", self.text_column, str)
        check_type("target_column", self.target_column, str)
        for name in ("text_pair_column", "label_column"):
            value = getattr(self, name)
            if value is not None:
                check_type(name, value, str, what="str or None")
        for name in ("truncation", "label_all_tokens", "lazy", "estimate_lengths"):
            check_type(name, getattr(self, name), bool)
        check_positive_int("max_length", self.max_length, allow_none=True)
        check_positive_int("max_target_length", self.max_target_length, allow_none=True)
        check_positive_int("block_size", self.block_size, allow_none=True)
        check_positive_int("tokenize_batch_size", self.tokenize_batch_size)
        check_positive_int("num_proc", self.num_proc, allow_none=True)
        if self.problem_type is not None:
            check_choice("problem_type", self.problem_type, PROBLEM_TYPES)
        self._only_for("text_pair_column", self.text_pair_column, ("sequence-classification",))
        self._only_for("problem_type", self.problem_type, ("sequence-classification",))
        self._only_for("block_size", self.block_size, LM_TASKS)
        self._only_for("max_target_length", self.max_target_length, ("seq2seq",))
        if self.label_all_tokens and self.task != "token-classification":
            raise ValueError(
                f"`label_all_tokens` is only used by task 'token-classification'; got True for task {self.task!r}"
            )
        if self.label2id is not None:
            self._frozen_label2id = _check_label2id(self.label2id)

    def _only_for(self, name: str, value: Any, tasks: tuple[str, ...]) -> None:
        if value is not None and self.task not in tasks:
            valid = ", ".join(map(repr, tasks))
            raise ValueError(f"`{name}` is only used by task {valid}; got {value!r} for task {self.task!r}")

    @property
    def has_labels(self) -> bool:
        """Whether this task reads a label column."""
        return self.label_column is not None and self.task in (
            "sequence-classification",
            "token-classification",
        )

    def source_columns(self) -> list[str]:
        """The columns the adapter reads from its source, in a stable order."""
        columns = [self.text_column]
        if self.text_pair_column is not None:
            columns.append(self.text_pair_column)
        if self.task == "seq2seq":
            columns.append(self.target_column)
        if self.has_labels:
            columns.append(self.label_column)  # type: ignore[arg-type]
        return columns

    def text_columns(self) -> list[str]:
        """The columns that hold text (never null)."""
        return [c for c in self.source_columns() if c != self.label_column or not self.has_labels]

    def effective_max_length(self, tokenizer: Any) -> int | None:
        """The length tokenized inputs are cut to, or ``None`` when nothing truncates them."""
        if not self.truncation:
            return None
        if self.max_length is not None:
            return self.max_length
        limit = getattr(tokenizer, "model_max_length", None)
        return int(limit) if isinstance(limit, int) and limit < 1_000_000 else None


def _check_label2id(label2id: Any) -> dict[str, int]:
    check_type("label2id", label2id, Mapping, what="a mapping of label name to id")
    if not label2id:
        raise ValueError("`label2id` must map at least one label to an id; got an empty mapping")
    n = len(label2id)
    for name, i in label2id.items():  # types first: sorting mixed types would fail with "'<' not supported"
        if isinstance(name, bool) or not isinstance(name, (str, Integral)):
            raise TypeError(
                f"`label2id` names must be str or int (label names); got {name!r} of type {type(name).__name__} "
                f"in {dict(label2id)!r}"
            )
        if isinstance(i, bool) or not isinstance(i, Integral):
            raise ValueError(
                f"`label2id` ids must be int class ids 0..{n - 1}; got {name!r}: {i!r} of type {type(i).__name__}"
            )
    names = [str(name) for name in label2id]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(
            f"`label2id` names must be unique as strings (int names become str); {duplicates[0]!r} appears "
            f"more than once in {dict(label2id)!r}"
        )
    ids = sorted(int(i) for i in label2id.values())
    if ids != list(range(n)):
        raise ValueError(f"`label2id` ids must be the integers 0..{n - 1}, each once; got {dict(label2id)!r}")
    return {str(k): int(v) for k, v in label2id.items()}
