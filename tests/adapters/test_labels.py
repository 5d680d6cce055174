"""Label maps: deterministic, shared across DatasetDict splits, strict about labels the train split lacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hfbridge.adapters import adapt
from tests.adapters.conftest import sorted_label_ids


def test_dataset_dict_splits_share_the_train_label_map(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        {
            "validation": Dataset.from_dict({"text": ["a", "b"], "label": ["zebra", "apple"]}),
            "train": Dataset.from_dict({"text": ["a", "b", "c"], "label": ["zebra", "mango", "apple"]}),
        }
    )
    adapters = adapt(splits, wordpiece_tokenizer, task="sequence-classification")
    assert list(adapters) == ["validation", "train"]  # the source's order
    assert adapters["train"].label2id == {"apple": 0, "mango": 1, "zebra": 2}
    assert adapters["validation"].label2id == adapters["train"].label2id  # not {"apple": 0, "zebra": 1}
    assert [adapters["validation"][i]["labels"] for i in range(2)] == [2, 0]


def test_label_map_is_deterministic_whatever_the_row_order(
    string_label_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    a = adapt(string_label_dataset, wordpiece_tokenizer, task="sequence-classification")
    b = adapt(string_label_dataset.shuffle(seed=3), wordpiece_tokenizer, task="sequence-classification")
    assert a.label2id == b.label2id == {"negative": 0, "neutral": 1, "positive": 2}


def test_eval_label_missing_from_train_is_an_error_naming_it(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "label": ["pos", "neg"]}),
            "validation": Dataset.from_dict({"text": ["a", "b"], "label": ["pos", "meh"]}),
        }
    )
    with pytest.raises(
        ValueError, match=r"'label' in split 'validation' has labels 'meh'.*valid: \{'neg': 0"
    ):
        adapt(splits, wordpiece_tokenizer, task="sequence-classification")


def test_eval_int_label_beyond_train_range_is_an_error(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}),
            "test": Dataset.from_dict({"text": ["a"], "label": [4]}),
        }
    )
    with pytest.raises(ValueError, match=r"split 'test' has labels 4 .*ids 0..1"):
        adapt(splits, wordpiece_tokenizer, task="sequence-classification")


def test_class_label_names_are_the_label_map(seqcls_dataset_dict: Any, wordpiece_tokenizer: Any) -> None:
    adapters = adapt(seqcls_dataset_dict, wordpiece_tokenizer, task="sequence-classification")
    for adapter in adapters.values():
        assert adapter.label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert adapters["test"][0]["labels"] == seqcls_dataset_dict["test"][0]["label"]


def test_given_label2id_is_used_and_checked(wordpiece_tokenizer: Any) -> None:
    label2id = {"neg": 1, "pos": 0}
    adapter = adapt(
        (["a", "b"], ["neg", "pos"]), wordpiece_tokenizer, task="sequence-classification", label2id=label2id
    )
    assert adapter.label2id == label2id
    assert [adapter[0]["labels"], adapter[1]["labels"]] == [1, 0]
    with pytest.raises(ValueError, match="has labels 'meh'"):
        adapt((["a"], ["meh"]), wordpiece_tokenizer, task="sequence-classification", label2id=label2id)


@pytest.mark.parametrize("bad", [{}, {"a": 0, "b": 2}, {"a": 0, "b": 0}])
def test_bad_label2id_is_rejected(bad: dict[str, Any], wordpiece_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="`label2id`"):
        adapt((["a"], ["a"]), wordpiece_tokenizer, task="sequence-classification", label2id=bad)


def test_label_ids_come_from_arrow_for_single_label(
    string_label_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    ds = string_label_dataset.select([5, 1, 9, 30])  # an indices mapping must be honoured
    adapter = adapt(ds, wordpiece_tokenizer, task="sequence-classification")
    ids = adapter.label_ids
    assert ids.dtype == np.int64
    assert ids.tolist() == [adapter.label2id[v] for v in ds["label"]]
    assert ids.tolist() == [adapter[i]["labels"] for i in range(4)]


def test_label_ids_for_class_label_and_int_labels(
    seqcls_dataset: Any, pair_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    a = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification")
    assert a.label_ids.tolist() == list(seqcls_dataset["label"])
    b = adapt(pair_dataset, wordpiece_tokenizer, task="sequence-classification", text_column="premise")
    assert b.label_ids.tolist() == list(pair_dataset["label"])
    assert sorted_label_ids(["b", "a"]) == [1, 0]


@pytest.mark.parametrize(
    ("fixture", "options"),
    [
        ("multilabel_dataset", {"task": "sequence-classification", "label_column": "labels"}),
        ("regression_dataset", {"task": "sequence-classification", "label_column": "score"}),
        ("lm_dataset", {"task": "causal-lm"}),
    ],
)
def test_label_ids_is_a_clear_error_for_other_tasks(
    fixture: str, options: dict[str, Any], request: pytest.FixtureRequest, wordpiece_tokenizer: Any
) -> None:
    adapter = adapt(request.getfixturevalue(fixture), wordpiece_tokenizer, **options)
    with pytest.raises(ValueError, match="`label_ids` needs single-label classification"):
        adapter.label_ids


def test_iterable_dataset_dict_gives_streaming_adapters_sharing_labels(
    seqcls_dataset_dict: Any, wordpiece_tokenizer: Any
) -> None:
    from datasets import IterableDatasetDict

    from hfbridge.adapters import IterableAdapter

    streams = IterableDatasetDict(
        {name: split.to_iterable_dataset() for name, split in seqcls_dataset_dict.items()}
    )
    adapters = adapt(streams, wordpiece_tokenizer, task="sequence-classification")
    assert list(adapters) == ["train", "validation", "test"]
    assert all(isinstance(a, IterableAdapter) for a in adapters.values())
    assert adapters["test"].label2id == {"negative": 0, "neutral": 1, "positive": 2}
    assert [r["labels"] for r in adapters["test"]] == list(seqcls_dataset_dict["test"]["label"])


def test_later_splits_without_labels_are_adapted_unlabelled(wordpiece_tokenizer: Any) -> None:
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neg", "pos"])})
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}, features=features),
            "unsupervised": Dataset.from_dict({"text": ["c", "d"], "label": [-1, -1]}, features=features),
            "test": Dataset.from_dict({"text": ["e"]}),  # a prediction split: no label column
        }
    )
    adapters = adapt(splits, wordpiece_tokenizer, task="sequence-classification")
    for name in ("unsupervised", "test"):
        assert "labels" not in adapters[name][0]
        assert adapters[name].id2label == {0: "neg", 1: "pos"}  # the shared maps, to decode predictions
        assert adapters[name].collator([adapters[name][0]])["input_ids"].shape[0] == 1
    assert adapters["train"][1]["labels"] == 1


def test_minus_one_among_real_labels_is_an_error_with_a_hint(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}),
            "test": Dataset.from_dict({"text": ["c", "d"], "label": [1, -1]}),
        }
    )
    with pytest.raises(ValueError, match=r"split 'test' has labels -1 .*`label_column=None`"):
        adapt(splits, wordpiece_tokenizer, task="sequence-classification")


def test_extend_labels_lets_later_splits_add_string_labels(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "label": ["pos", "neg"]}),
            "validation": Dataset.from_dict({"text": ["a", "b"], "label": ["pos", "meh"]}),
        }
    )
    adapters = adapt(splits, wordpiece_tokenizer, task="sequence-classification", extend_labels=True)
    assert adapters["train"].label2id == adapters["validation"].label2id == {"neg": 0, "pos": 1, "meh": 2}
    assert [adapters["validation"][i]["labels"] for i in range(2)] == [1, 2]
    assert adapters["train"].num_labels == 3
    with pytest.raises(ValueError, match="`extend_labels` extends maps of string labels"):
        adapt(
            DatasetDict({"train": Dataset.from_dict({"text": ["a"], "label": [0]})}),
            wordpiece_tokenizer,
            task="sequence-classification",
            extend_labels=True,
        )


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
def test_int_labels_that_are_not_0_to_k_get_a_contiguous_map(lazy: bool, wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": list("abcde"), "stars": [5, 1, 3, 2, 4]}),
            "validation": Dataset.from_dict({"text": list("ab"), "stars": [1, 5]}),
        }
    )
    adapters = adapt(
        splits, wordpiece_tokenizer, task="sequence-classification", label_column="stars", lazy=lazy
    )
    train = adapters["train"]
    assert train.num_labels == 5  # not a 6-way head with an empty class 0
    assert train.id2label == {0: "1", 1: "2", 2: "3", 3: "4", 4: "5"}
    assert [train[i]["labels"] for i in range(5)] == [4, 0, 2, 1, 3]
    assert train.label_ids.tolist() == [4, 0, 2, 1, 3]
    assert [adapters["validation"][i]["labels"] for i in range(2)] == [0, 4]
    sparse = adapt(
        ([f"t{i}" for i in range(3)], [10, 700, 10]), wordpiece_tokenizer, task="sequence-classification"
    )
    assert sparse.label2id == {"10": 0, "700": 1}
    with pytest.raises(ValueError, match=r"split 'test' has labels 3 .*valid: \{'1': 0"):
        adapt(
            DatasetDict(
                {
                    "train": Dataset.from_dict({"text": list("ab"), "stars": [1, 5]}),
                    "test": Dataset.from_dict({"text": ["a"], "stars": [3]}),  # between the classes
                }
            ),
            wordpiece_tokenizer,
            task="sequence-classification",
            label_column="stars",
        )


def _class_label_ds(names: list[str], ids: list[int], texts: list[str] | None = None) -> Any:
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    texts = texts or [f"row {i}" for i in range(len(ids))]
    return Dataset.from_dict({"text": texts, "label": ids}, features=features)


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
def test_given_label2id_remaps_class_label_ids_by_name(lazy: bool, wordpiece_tokenizer: Any) -> None:
    ds = _class_label_ds(["neg", "pos"], [0, 1, 1, 0])  # raw ids: neg=0, pos=1
    label2id = {"pos": 0, "neg": 1}  # e.g. a model config's order
    adapter = adapt(ds, wordpiece_tokenizer, task="sequence-classification", label2id=label2id, lazy=lazy)
    assert adapter.label2id == label2id
    assert [adapter[i]["labels"] for i in range(4)] == [1, 0, 0, 1]  # "neg" is 1, not 0
    assert adapter.label_ids.tolist() == [1, 0, 0, 1]
    stream = adapt(
        ds.to_iterable_dataset(), wordpiece_tokenizer, task="sequence-classification", label2id=label2id
    )
    assert [row["labels"] for row in stream] == [1, 0, 0, 1]


def test_given_label2id_remaps_class_label_word_labels(wordpiece_tokenizer: Any) -> None:
    from datasets import ClassLabel, Dataset, Features, List, Value

    features = Features({"tokens": List(Value("string")), "tags": List(ClassLabel(names=["O", "PER"]))})
    ds = Dataset.from_dict({"tokens": [["alpha", "beta"]], "tags": [[0, 1]]}, features=features)
    adapter = adapt(
        ds,
        wordpiece_tokenizer,
        task="token-classification",
        text_column="tokens",
        label_column="tags",
        label2id={"PER": 0, "O": 1},
    )
    word_labels = [x for x in adapter[0]["labels"] if x != -100]
    assert word_labels == [1, 0]


def test_class_label_name_missing_from_label2id_is_an_error(wordpiece_tokenizer: Any) -> None:
    ds = _class_label_ds(["neg", "neutral", "pos"], [0, 1, 2])
    with pytest.raises(ValueError, match=r"ClassLabel names 'neutral' .*not in `label2id`"):
        adapt(ds, wordpiece_tokenizer, task="sequence-classification", label2id={"neg": 0, "pos": 1})


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_dataset_dict_splits_with_different_class_label_orders(
    streaming: bool, wordpiece_tokenizer: Any
) -> None:
    from datasets import DatasetDict, IterableDatasetDict

    train = _class_label_ds(["neg", "pos"], [0, 1])
    validation = _class_label_ds(["pos", "neg"], [0, 1, 1])  # raw 0 is "pos" here
    splits: Any = DatasetDict({"train": train, "validation": validation})
    if streaming:
        splits = IterableDatasetDict({k: v.to_iterable_dataset() for k, v in splits.items()})
    adapters = adapt(splits, wordpiece_tokenizer, task="sequence-classification")
    assert adapters["validation"].label2id == {"neg": 0, "pos": 1}
    rows = list(adapters["validation"]) if streaming else [adapters["validation"][i] for i in range(3)]
    assert [row["labels"] for row in rows] == [1, 0, 0]
    if not streaming:
        assert adapters["validation"].label_ids.tolist() == [1, 0, 0]


def test_eval_class_label_name_missing_from_train_is_an_error(wordpiece_tokenizer: Any) -> None:
    from datasets import DatasetDict

    splits = DatasetDict(
        {
            "train": _class_label_ds(["neg", "pos"], [0, 1]),
            "validation": _class_label_ds(["neg", "pos", "meh"], [2]),
        }
    )
    with pytest.raises(ValueError, match=r"split 'validation' .*ClassLabel names 'meh'"):
        adapt(splits, wordpiece_tokenizer, task="sequence-classification")
