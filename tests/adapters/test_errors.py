"""Bad input: an early ValueError/TypeError naming the argument, the rule, the bad value and the options."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from hfbridge.adapters import adapt

SEQCLS = "sequence-classification"


def test_missing_column_lists_the_available_ones(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"`text_column` names column 'sentence'.*available columns: 'text', 'label'"
    ):
        adapt(seqcls_dataset, wordpiece_tokenizer, task=SEQCLS, text_column="sentence")
    with pytest.raises(ValueError, match=r"`label_column` names column 'y'.*'text', 'label'"):
        adapt(seqcls_dataset, wordpiece_tokenizer, task=SEQCLS, label_column="y")
    with pytest.raises(ValueError, match=r"`target_column` names column 'target'.*'text', 'label'"):
        adapt(seqcls_dataset, wordpiece_tokenizer, task="seq2seq")


def test_missing_pair_column_lists_the_available_ones(pair_dataset: Any, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"`text_pair_column` names column 'hyp'.*'premise', 'hypothesis', 'label'"
    ):
        adapt(pair_dataset, wordpiece_tokenizer, task=SEQCLS, text_column="premise", text_pair_column="hyp")


def test_missing_column_in_a_stream_and_a_split(
    streaming_dataset: Any, seqcls_dataset_dict: Any, wordpiece_tokenizer: Any
) -> None:
    with pytest.raises(ValueError, match=r"`text_column` names column 'body'.*'text', 'label'"):
        adapt(streaming_dataset, wordpiece_tokenizer, task=SEQCLS, text_column="body")
    with pytest.raises(ValueError, match=r"of split 'train' does not have"):
        adapt(seqcls_dataset_dict, wordpiece_tokenizer, task=SEQCLS, text_column="body")


def test_unknown_task_lists_the_valid_ones(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"`task` must be one of 'sequence-classification', .*'masked-lm'; got 'ner'"
    ):
        adapt(seqcls_dataset, wordpiece_tokenizer, task="ner")


def test_tokenizer_without_pad_token_says_how_to_set_one(lm_dataset: Any, bpe_tokenizer: Any) -> None:
    tokenizer = copy.deepcopy(bpe_tokenizer)
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match=r"pad token.*tokenizer.pad_token = tokenizer.eos_token"):
        adapt(lm_dataset, tokenizer, task="causal-lm")


def test_not_a_tokenizer_is_a_type_error(seqcls_dataset: Any) -> None:
    with pytest.raises(TypeError, match=r"`tokenizer` must be a transformers tokenizer.*got str"):
        adapt(seqcls_dataset, "bert-base-uncased", task=SEQCLS)


@pytest.mark.parametrize(
    "source",
    [{"text": [], "label": []}, [], ([], [])],
    ids=["dict", "list", "tuple"],
)
def test_empty_python_source(source: Any, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"`source` must have at least one row; got an empty"):
        adapt(source, wordpiece_tokenizer, task=SEQCLS)


def test_empty_dataset_and_dataframe(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"at least one row; got an empty Dataset"):
        adapt(seqcls_dataset.select([]), wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(ValueError, match=r"at least one row; got an empty DataFrame"):
        adapt(seqcls_dataset.to_pandas().iloc[:0], wordpiece_tokenizer, task=SEQCLS)


@pytest.mark.parametrize("missing", [None, math.nan], ids=["None", "NaN"])
def test_none_or_nan_text_in_python_sources(missing: Any, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"`text_column` 'text' must hold a text in every row; row 1 holds (None|nan)"
    ):
        adapt({"text": ["ok", missing], "label": [0, 1]}, wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(ValueError, match=r"row 2 holds"):
        adapt((["a", "b", missing], [0, 1, 0]), wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(ValueError, match=r"row 0 holds"):
        adapt([missing, "b"], wordpiece_tokenizer, task="masked-lm")


def test_nan_text_in_a_dataframe(wordpiece_tokenizer: Any) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["ok", None, "fine"], "label": [0, 1, 0]})
    frame.loc[1, "text"] = float("nan")
    with pytest.raises(
        ValueError, match=r"`text_column` 'text' must hold a text in every row; row 1 holds nan"
    ):
        adapt(frame, wordpiece_tokenizer, task=SEQCLS)


def test_null_text_in_a_dataset_and_in_a_pair_column(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset

    ds = Dataset.from_dict({"text": ["a", "b", None], "other": ["x", None, "z"], "label": [0, 1, 0]})
    with pytest.raises(
        ValueError, match=r"`text_column` 'text' must hold a text in every row; row 2 holds None"
    ):
        adapt(ds, wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(ValueError, match=r"`text_pair_column` 'other' must hold a text in every row; row 1"):
        adapt(ds.select([0, 1]), wordpiece_tokenizer, task=SEQCLS, text_pair_column="other")


def test_null_text_in_a_stream_fails_at_its_batch(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset

    stream = Dataset.from_dict({"text": ["a", None], "label": [0, 1]}).to_iterable_dataset()
    adapter = adapt(stream, wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(
        ValueError, match=r"`text_column` 'text' must hold a text in every row; row 1 holds None"
    ):
        list(adapter)


def test_text_of_the_wrong_type(wordpiece_tokenizer: Any) -> None:
    with pytest.raises(TypeError, match=r"`text_column` 'text' must hold str values; row 1 holds int 7"):
        adapt({"text": ["a", 7]}, wordpiece_tokenizer, task="masked-lm")
    from datasets import Dataset

    with pytest.raises(
        TypeError, match=r"`text_column` 'text' must hold lists of words \(str\) for task 'token-class"
    ):
        adapt(
            Dataset.from_dict({"text": ["a b"], "label": [[0, 0]]}),
            wordpiece_tokenizer,
            task="token-classification",
        )


def test_label_type_that_does_not_fit_the_task(wordpiece_tokenizer: Any) -> None:
    with pytest.raises(
        TypeError, match=r"`label_column` 'label' holds .*does not fit task 'token-classification'"
    ):
        adapt(([["a", "b"]], [1]), wordpiece_tokenizer, task="token-classification")
    with pytest.raises(
        TypeError, match=r"`label_column` 'label' holds .*does not fit task 'sequence-classification'"
    ):
        adapt((["a"], [{"x": 1}]), wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(TypeError, match=r"`problem_type` 'regression' does not fit `label_column` 'label'"):
        adapt((["a"], ["pos"]), wordpiece_tokenizer, task=SEQCLS, problem_type="regression")


def test_unsupported_source_type(wordpiece_tokenizer: Any) -> None:
    with pytest.raises(TypeError, match=r"`source` must be datasets.Dataset, .*pandas.DataFrame; got set"):
        adapt({"a", "b"}, wordpiece_tokenizer, task="masked-lm")


def test_tuple_source_rules(wordpiece_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"tuple must be \(inputs, labels\).*got a 2-tuple for task 'causal-lm'"
    ):
        adapt((["a"], ["b"]), wordpiece_tokenizer, task="causal-lm")
    with pytest.raises(ValueError, match=r"must have equal lengths; got 2 and 1"):
        adapt((["a", "b"], [0]), wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(ValueError, match=r"columns must all have the same length"):
        adapt({"text": ["a", "b"], "label": [0]}, wordpiece_tokenizer, task=SEQCLS)


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"max_length": 0}, ValueError, r"`max_length` must be a positive integer; got 0"),
        ({"max_length": "64"}, TypeError, r"`max_length` must be a positive integer or None; got '64'"),
        ({"block_size": 64}, ValueError, r"`block_size` is only used by task 'causal-lm', 'masked-lm'"),
        (
            {"label_all_tokens": True},
            ValueError,
            r"`label_all_tokens` is only used by task 'token-classification'",
        ),
        (
            {"problem_type": "ordinal"},
            ValueError,
            r"`problem_type` must be one of 'single_label_classification'",
        ),
        ({"lazy": "yes"}, TypeError, r"`lazy` must be bool"),
        ({"tokenize_batch_size": -1}, ValueError, r"`tokenize_batch_size` must be a positive integer"),
        ({"num_replicas": 2, "rank": 0}, ValueError, r"`num_replicas`/`rank` shard streaming sources only"),
    ],
)
def test_bad_options(
    options: dict[str, Any],
    error: type[Exception],
    pattern: str,
    seqcls_dataset: Any,
    wordpiece_tokenizer: Any,
) -> None:
    with pytest.raises(error, match=pattern):
        adapt(seqcls_dataset, wordpiece_tokenizer, task=SEQCLS, **options)


def test_text_pair_column_only_for_sequence_classification(lm_dataset: Any, bpe_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"`text_pair_column` is only used by task 'sequence-classification'"
    ):
        adapt(lm_dataset, bpe_tokenizer, task="causal-lm", text_pair_column="text")


def test_block_size_larger_than_the_corpus(bpe_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError, match=r"`block_size` must be at most the corpus size.*got 4096 for \d+ tokens"
    ):
        adapt(["a tiny corpus"], bpe_tokenizer, task="causal-lm", block_size=4096)


def test_bad_indices(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(seqcls_dataset, wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(IndexError, match=r"`indices` must be in \[-96, 96\).*got 96"):
        adapter[96]
    with pytest.raises(IndexError, match=r"got -97"):
        adapter.__getitems__([0, -97])
    with pytest.raises(TypeError, match=r"`index` must be an integer"):
        adapter["text"]
    with pytest.raises(TypeError, match=r"`indices` must be a 1-D sequence of integers"):
        adapter.__getitems__([0.5, 1.5])
    assert adapter[-1] == adapter[95]


def _word_rows(tags: list[list[int]]) -> Any:
    from datasets import Dataset

    tokens = [["alpha", "beta"], ["gamma", "delta", "omega"], ["storm"]]
    return Dataset.from_dict({"tokens": tokens[: len(tags)], "tags": tags})


TOKCLS = {"task": "token-classification", "text_column": "tokens", "label_column": "tags"}


@pytest.mark.parametrize("lazy", [True, False], ids=["lazy", "eager"])
@pytest.mark.parametrize(
    ("tags", "lengths"),
    [([[0, 1], [0, 1], [0]], "3 words .*2 labels"), ([[0, 1], [0, 1, 0, 1], [0]], "3 words .*4 labels")],
    ids=["shorter", "longer"],
)
def test_word_label_count_must_match_the_word_count(
    tags: list[list[int]], lengths: str, lazy: bool, wordpiece_tokenizer: Any
) -> None:
    pattern = (
        rf"`label_column` 'tags' must hold one label per word of `text_column` 'tokens'; row 1 has {lengths}"
    )
    with pytest.raises(ValueError, match=pattern):
        adapt(_word_rows(tags), wordpiece_tokenizer, lazy=lazy, **TOKCLS)
    stream = adapt(_word_rows(tags).to_iterable_dataset(), wordpiece_tokenizer, **TOKCLS)
    with pytest.raises(ValueError, match=pattern):
        list(stream)


@pytest.mark.parametrize(
    ("bad", "error", "pattern"),
    [
        ({"a": 0, "b": "1"}, TypeError, r"`label2id` ids must be int.*'b': '1'"),
        ({"a": 0, "b": 1.0}, TypeError, r"`label2id` ids must be int.*'b': 1.0"),
        ({"a": 0, None: 1}, TypeError, r"`label2id` names must be str or int.*None"),
        ({"a": 0, (1, 2): 1}, TypeError, r"`label2id` names must be str or int.*\(1, 2\)"),
        ({"1": 0, 1: 1}, ValueError, r"`label2id` names must be unique as strings.*'1'"),
    ],
)
def test_label2id_of_mixed_types_is_a_clear_error(
    bad: dict[Any, Any], error: type[Exception], pattern: str, wordpiece_tokenizer: Any
) -> None:
    with pytest.raises(error, match=pattern):
        adapt((["a"], ["a"]), wordpiece_tokenizer, task=SEQCLS, label2id=bad)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_regression_label_names_its_row(bad: float, wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset

    pattern = r"`label_column` 'score' must hold finite numbers for regression; row 2 holds"
    source = {"text": ["a", "b", "c"], "score": [0.5, 1.0, bad]}
    with pytest.raises(ValueError, match=pattern):
        adapt(source, wordpiece_tokenizer, task=SEQCLS, label_column="score")
    stream = adapt(
        Dataset.from_dict(source).to_iterable_dataset(),
        wordpiece_tokenizer,
        task=SEQCLS,
        label_column="score",
    )
    with pytest.raises(ValueError, match=pattern):
        list(stream)


def test_nan_text_in_a_stream_fails_at_its_batch(wordpiece_tokenizer: Any) -> None:
    from datasets import IterableDataset

    def rows() -> Any:
        yield {"text": "a", "label": 0}
        yield {"text": math.nan, "label": 1}

    adapter = adapt(IterableDataset.from_generator(rows), wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(
        ValueError, match=r"`text_column` 'text' must hold a text in every row; row 1 holds nan"
    ):
        list(adapter)


def test_empty_split_and_empty_stream_share_the_message(
    seqcls_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    from datasets import DatasetDict, IterableDataset

    def no_rows() -> Any:
        yield from ()

    splits = DatasetDict({"train": seqcls_dataset, "validation": seqcls_dataset.select([])})
    with pytest.raises(
        ValueError,
        match=r"^`source` \(split 'validation'\) must have at least one row; got an empty Dataset$",
    ):
        adapt(splits, wordpiece_tokenizer, task=SEQCLS)
    with pytest.raises(
        ValueError, match=r"^`source` must have at least one row; got an empty IterableDataset$"
    ):
        adapt(IterableDataset.from_generator(no_rows), wordpiece_tokenizer, task="masked-lm")


@pytest.mark.parametrize("bad", [math.nan, math.inf, 2.0, -0.5], ids=["nan", "inf", "two", "negative"])
def test_multi_hot_label_outside_0_1_names_its_row(bad: float, wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset

    pattern = r"`label_column` 'tags' multi-hot rows must hold numbers in \[0, 1\].*row 1 holds \[0\.0, "
    source = {"text": ["a", "b", "c"], "tags": [[1.0, 0.0], [0.0, bad], [0.3, 0.7]]}
    with pytest.raises(ValueError, match=pattern):
        adapt(source, wordpiece_tokenizer, task=SEQCLS, label_column="tags")
    with pytest.raises(ValueError, match=pattern):
        adapt(Dataset.from_dict(source), wordpiece_tokenizer, task=SEQCLS, label_column="tags")
    stream = adapt(
        Dataset.from_dict(source).to_iterable_dataset(),
        wordpiece_tokenizer,
        task=SEQCLS,
        label_column="tags",
        label2id={"x": 0, "y": 1},
    )
    with pytest.raises(ValueError, match=pattern):
        list(stream)


def test_soft_multi_hot_labels_in_0_1_are_kept(wordpiece_tokenizer: Any) -> None:
    source = {"text": ["a", "b"], "tags": [[1.0, 0.0], [0.25, 0.75]]}
    adapter = adapt(source, wordpiece_tokenizer, task=SEQCLS, label_column="tags")
    assert [row["labels"] for row in adapter] == [[1.0, 0.0], [0.25, 0.75]]


def test_int_labels_in_a_split_whose_train_split_has_names_are_refused(wordpiece_tokenizer: Any) -> None:
    """Which int is which name is unknown unless the user says so: no silent guess of the id order."""
    from datasets import Dataset, DatasetDict

    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"text": ["a", "b"], "label": ["pos", "neg"]}),
            "test": Dataset.from_dict({"text": ["c", "d"], "label": [0, 1]}),
        }
    )
    with pytest.raises(
        ValueError,
        match=r"`label_column` 'label' in split 'test' holds int labels, but the label map was learnt from "
        r"string labels \('neg', 'pos'\).*ClassLabel.*or pass `label2id`.*-1 placeholders.*`label_column=None`",
    ):
        adapt(splits, wordpiece_tokenizer, task=SEQCLS)
    # with label2id the ints mean its ids
    given = adapt(splits, wordpiece_tokenizer, task=SEQCLS, label2id={"neg": 0, "pos": 1})
    assert [row["labels"] for row in given["test"]] == [0, 1]
    assert [row["labels"] for row in given["train"]] == [1, 0]


def test_multi_hot_label_with_a_missing_value_names_its_row(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset

    source = {"text": ["a", "b"], "tags": [[1.0, 0.0], [0.0, None]]}
    pattern = r"multi-hot rows must hold numbers in \[0, 1\].*none missing; row 1 holds \[0\.0, None\]"
    with pytest.raises(ValueError, match=pattern):
        adapt(Dataset.from_dict(source), wordpiece_tokenizer, task=SEQCLS, label_column="tags")


@pytest.mark.parametrize(
    ("labels", "row", "shown"),
    [([1, "x"], 1, "str 'x'"), ([1, "1", 2, 3], 1, "str '1'"), (["a", ["b"]], 1, "list")],
)
@pytest.mark.parametrize("frame", [False, True], ids=["tuple", "DataFrame"])
def test_labels_of_mixed_types_name_the_column_and_row(
    labels: list[Any], row: int, shown: str, frame: bool, wordpiece_tokenizer: Any
) -> None:
    texts = [f"text {i}" for i in range(len(labels))]
    source: Any = (texts, labels)
    if frame:
        import pandas as pd

        source = pd.DataFrame({"text": texts, "label": labels})
    with pytest.raises(
        TypeError, match=rf"`label_column` 'label' must hold labels of one type.*row {row} holds {shown}"
    ):
        adapt(source, wordpiece_tokenizer, task=SEQCLS)


def test_dataframe_text_holding_an_int_gets_the_list_error(wordpiece_tokenizer: Any) -> None:
    import pandas as pd

    message = r"`text_column` 'text' must hold str values; row 1 holds int 7"
    with pytest.raises(TypeError, match=message):
        adapt(["fine", 7], wordpiece_tokenizer, task="masked-lm")
    with pytest.raises(TypeError, match=message):
        adapt(pd.DataFrame({"text": ["fine", 7]}), wordpiece_tokenizer, task="masked-lm")


@pytest.mark.parametrize("max_length", [1, 2])
def test_max_length_without_room_for_content_is_an_error(max_length: int, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(
        ValueError,
        match=rf"`max_length` must leave room for content.*2 special tokens.*got max_length={max_length}, use at least 3",
    ):
        adapt(["good movie"], wordpiece_tokenizer, task="masked-lm", max_length=max_length)
    with pytest.raises(
        ValueError, match=r"`max_length` must leave room.*3 special tokens"
    ):  # [CLS] a [SEP] b [SEP]
        adapt(
            {"a": ["x"], "b": ["y"]},
            wordpiece_tokenizer,
            task=SEQCLS,
            text_column="a",
            text_pair_column="b",
            label_column=None,
            max_length=3,
        )


@pytest.mark.parametrize("estimate", [False, True], ids=["exact", "estimated"])
def test_lengths_honour_a_small_max_length(estimate: bool, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        ["good movie indeed, a fine one", "bad"],
        wordpiece_tokenizer,
        task="masked-lm",
        max_length=3,
        estimate_lengths=estimate,
    )
    assert [len(adapter[i]["input_ids"]) for i in range(2)] == [3, 3]
    assert adapter.lengths.max() <= 3


def test_an_unknown_option_lists_the_fields_of_adapter_config(wordpiece_tokenizer: Any) -> None:
    from dataclasses import fields

    from hfbridge.adapters import AdapterConfig

    with pytest.raises(
        TypeError, match=r"`max_len` is not an option of adapt\(\); valid options: text_column, "
    ):
        adapt(["a"], wordpiece_tokenizer, task="masked-lm", max_len=8)
    names = {f.name for f in fields(AdapterConfig)} - {"task"}
    assert {
        "max_length",
        "label2id",
        "extend_labels",
        "lazy",
    } <= names  # adapt(**options) takes exactly these
