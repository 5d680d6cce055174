"""Every task against every source kind: the same rows whatever shape the data arrives in."""

from __future__ import annotations

from typing import Any

import pytest

from hfbridge.adapters import IterableAdapter, MapAdapter, adapt
from tests.adapters.conftest import SOURCE_KINDS, as_source, rows_of
from tests.conftest import LABEL_NAMES

TASKS = ("sequence-classification", "token-classification", "seq2seq", "causal-lm", "masked-lm")


def _normalise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: list(v) if isinstance(v, (list, tuple)) else v for k, v in row.items()} for row in rows]


@pytest.mark.parametrize("kind", SOURCE_KINDS)
@pytest.mark.parametrize("task", TASKS)
def test_every_task_from_every_source_kind(task: str, kind: str, task_case: Any) -> None:
    case = task_case(task)
    reference = rows_of(adapt(case.dataset, case.tokenizer, task=task, **case.options))
    options = dict(case.options)
    if (
        kind == "IterableDataset" and task == "sequence-classification"
    ):  # string labels: a stream needs the map
        options["label2id"] = {name: i for i, name in enumerate(LABEL_NAMES)}
    adapted = adapt(as_source(kind, case), case.tokenizer, task=task, **options)
    if kind == "DatasetDict":
        assert isinstance(adapted, dict)
        assert list(adapted) == ["train"]
        adapted = adapted["train"]
    expected_type = IterableAdapter if kind == "IterableDataset" else MapAdapter
    assert isinstance(adapted, expected_type)
    assert adapted.task == task
    assert adapted.tokenizer is case.tokenizer
    rows = rows_of(adapted)
    assert len(rows) == len(case.dataset)
    assert _normalise(rows) == _normalise(reference)
    assert all("input_ids" in row and "attention_mask" in row for row in rows)
    has_labels = task in ("sequence-classification", "token-classification", "seq2seq", "causal-lm")
    assert all(("labels" in row) == has_labels for row in rows)


@pytest.mark.parametrize("kind", ["Dataset", "dict", "list", "DataFrame", "tuple"])
def test_string_labels_get_the_same_sorted_label_map_from_every_source(kind: str, task_case: Any) -> None:
    case = task_case("sequence-classification")
    adapted = adapt(as_source(kind, case), case.tokenizer, task="sequence-classification")
    assert adapted.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert adapted.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert adapted.num_labels == 3
    assert adapted.problem_type == "single_label_classification"


def test_streaming_source_with_string_labels_takes_label2id(task_case: Any) -> None:
    case = task_case("sequence-classification")
    with pytest.raises(ValueError, match=r"`label2id` is needed.*streaming"):  # a stream cannot be scanned
        adapt(as_source("IterableDataset", case), case.tokenizer, task=case.task)
    label2id = {"negative": 0, "neutral": 1, "positive": 2}
    stream = adapt(as_source("IterableDataset", case), case.tokenizer, task=case.task, label2id=label2id)
    sized = adapt(case.dataset, case.tokenizer, task=case.task)
    assert stream.label2id == label2id
    assert [r["labels"] for r in stream] == [r["labels"] for r in rows_of(sized)]


def test_streaming_multi_label_needs_the_label_count(
    multilabel_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    stream = multilabel_dataset.to_iterable_dataset()
    with pytest.raises(
        ValueError, match=r"`label2id` is needed: `label_column` 'labels' holds multi-label lists"
    ):
        adapt(stream, wordpiece_tokenizer, task="sequence-classification", label_column="labels")
    label2id = {f"tag{i}": i for i in range(4)}
    adapter = adapt(
        stream, wordpiece_tokenizer, task="sequence-classification", label_column="labels", label2id=label2id
    )
    assert [r["labels"] for r in adapter][:2] == [
        [1.0 if i in ids else 0.0 for i in range(4)] for ids in multilabel_dataset["labels"][:2]
    ]


def test_table_to_batch_reads_every_column_as_python_lists() -> None:
    import pyarrow as pa

    from hfbridge.adapters._sources import table_to_batch

    table = pa.table({"text": ["a", None], "ids": [[1, 2], []]})
    assert table_to_batch(table) == {"text": ["a", None], "ids": [[1, 2], []]}
