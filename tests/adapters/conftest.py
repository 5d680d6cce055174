"""Adapter test helpers: one case per task (dataset + adapt options) and every source kind built from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import LABEL_NAMES

SOURCE_KINDS = ("Dataset", "IterableDataset", "DatasetDict", "dict", "list", "DataFrame", "tuple")


@dataclass
class TaskCase:
    """A task, the dataset fixture it reads, the ``adapt`` options, and the columns of its ``(a, b)`` tuple form."""

    task: str
    dataset: Any
    tokenizer: Any
    options: dict[str, Any] = field(default_factory=dict)
    tuple_columns: tuple[str, ...] = ()


@pytest.fixture
def task_case(
    request: pytest.FixtureRequest,
    string_label_dataset: Any,
    tokcls_dataset: Any,
    seq2seq_dataset: Any,
    lm_dataset: Any,
    wordpiece_tokenizer: Any,
    bpe_tokenizer: Any,
) -> Callable[[str], TaskCase]:
    def make(task: str) -> TaskCase:
        if task == "sequence-classification":
            return TaskCase(task, string_label_dataset, wordpiece_tokenizer, {}, ("text", "label"))
        if task == "token-classification":
            opts = {"text_column": "tokens", "label_column": "ner_tags"}
            return TaskCase(task, tokcls_dataset, wordpiece_tokenizer, opts, ("tokens", "ner_tags"))
        if task == "seq2seq":
            return TaskCase(
                task, seq2seq_dataset, bpe_tokenizer, {"text_column": "source"}, ("source", "target")
            )
        if task == "causal-lm":
            return TaskCase(task, lm_dataset, bpe_tokenizer, {}, ("text",))
        return TaskCase(task, lm_dataset, wordpiece_tokenizer, {}, ("text",))

    return make


def as_source(kind: str, case: TaskCase) -> Any:
    """``case.dataset`` in the shape of source ``kind``."""
    from datasets import DatasetDict

    ds = case.dataset
    if kind == "Dataset":
        return ds
    if kind == "IterableDataset":
        return ds.to_iterable_dataset(num_shards=2)
    if kind == "DatasetDict":
        return DatasetDict({"train": ds})
    if kind == "dict":
        return ds.to_dict()
    if kind == "list":
        return ds.to_list()
    if kind == "DataFrame":
        return ds.to_pandas()
    if len(case.tuple_columns) == 1:  # LM tasks: the plain list of texts
        return list(ds[case.tuple_columns[0]])
    return tuple(list(ds[c]) for c in case.tuple_columns)


def rows_of(adapter: Any) -> list[dict[str, Any]]:
    """Every row of a map adapter (by index) or an iterable adapter (by iteration)."""
    if hasattr(adapter, "__len__"):
        return [adapter[i] for i in range(len(adapter))]
    return list(adapter)


class CallCounter:
    """Wraps a callable (a tokenizer, a reader) and counts calls; every other attribute goes to the wrapped one."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.calls: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(args[0] if args else kwargs)
        return self.wrapped(*args, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        self.calls.append(key)
        return self.wrapped[key]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def sorted_label_ids(values: list[str]) -> list[int]:
    names = sorted(set(values))
    return [names.index(v) for v in values]


__all__ = [
    "LABEL_NAMES",
    "SOURCE_KINDS",
    "CallCounter",
    "TaskCase",
    "as_source",
    "rows_of",
    "sorted_label_ids",
]
