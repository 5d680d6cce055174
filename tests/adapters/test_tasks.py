"""What each task puts in a feature row, checked against direct tokenizer calls."""

from __future__ import annotations

from itertools import chain
from typing import Any

import pytest

from hfbridge.adapters import adapt
from tests.adapters.conftest import rows_of, sorted_label_ids


@pytest.mark.parametrize("lazy", [True, False])
def test_sequence_classification_rows_match_the_tokenizer(
    lazy: bool, string_label_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    adapter = adapt(string_label_dataset, wordpiece_tokenizer, task="sequence-classification", lazy=lazy)
    texts, labels = list(string_label_dataset["text"]), list(string_label_dataset["label"])
    expected = wordpiece_tokenizer(texts, truncation=True)
    for i, row in enumerate(rows_of(adapter)):
        assert row["input_ids"] == expected["input_ids"][i]
        assert row["attention_mask"] == expected["attention_mask"][i]
        assert row["token_type_ids"] == expected["token_type_ids"][i]
    assert [r["labels"] for r in rows_of(adapter)] == sorted_label_ids(labels)


def test_text_pairs_are_tokenized_together(pair_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        pair_dataset,
        wordpiece_tokenizer,
        task="sequence-classification",
        text_column="premise",
        text_pair_column="hypothesis",
    )
    expected = wordpiece_tokenizer(list(pair_dataset["premise"]), list(pair_dataset["hypothesis"]))
    row = adapter[5]
    assert row["input_ids"] == expected["input_ids"][5]
    assert row["token_type_ids"][-1] == 1
    assert row["input_ids"].count(wordpiece_tokenizer.sep_token_id) == 2
    assert adapter.num_labels == 3  # int labels 0..2, no names
    assert adapter.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


def test_multi_label_lists_become_float_multi_hot(multilabel_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        multilabel_dataset, wordpiece_tokenizer, task="sequence-classification", label_column="labels"
    )
    assert adapter.problem_type == "multi_label_classification"
    assert adapter.num_labels == 4
    for row, ids in zip(rows_of(adapter), multilabel_dataset["labels"]):
        assert row["labels"] == [1.0 if i in ids else 0.0 for i in range(4)]
        assert all(isinstance(x, float) for x in row["labels"])


def test_multi_label_string_lists_use_a_sorted_label_map(wordpiece_tokenizer: Any) -> None:
    source = {"text": ["a b", "c", "d e f"], "tags": [["sports", "news"], [], ["arts"]]}
    adapter = adapt(source, wordpiece_tokenizer, task="sequence-classification", label_column="tags")
    assert adapter.label2id == {"arts": 0, "news": 1, "sports": 2}
    assert [r["labels"] for r in rows_of(adapter)] == [[0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


def test_float_labels_are_regression(regression_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        regression_dataset, wordpiece_tokenizer, task="sequence-classification", label_column="score"
    )
    assert adapter.problem_type == "regression"
    assert adapter.num_labels == 1
    assert adapter.label2id is None
    assert [r["labels"] for r in rows_of(adapter)] == pytest.approx(list(regression_dataset["score"]))


def test_problem_type_turns_int_scores_into_regression(wordpiece_tokenizer: Any) -> None:
    source = (["a", "b", "c"], [1, 5, 3])
    adapter = adapt(source, wordpiece_tokenizer, task="sequence-classification", problem_type="regression")
    assert [r["labels"] for r in rows_of(adapter)] == [1.0, 5.0, 3.0]


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_token_labels_are_aligned_through_word_ids(
    label_all_tokens: bool, tokcls_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    adapter = adapt(
        tokcls_dataset,
        wordpiece_tokenizer,
        task="token-classification",
        text_column="tokens",
        label_column="ner_tags",
        label_all_tokens=label_all_tokens,
    )
    assert adapter.label2id == {"O": 0, "B-ORG": 1, "I-ORG": 2, "B-PER": 3, "I-PER": 4}
    split_words = begins = 0
    for i, row in enumerate(rows_of(adapter)):
        words, tags = tokcls_dataset[i]["tokens"], tokcls_dataset[i]["ner_tags"]
        word_ids = wordpiece_tokenizer(words, is_split_into_words=True, truncation=True).word_ids()
        assert len(row["labels"]) == len(row["input_ids"]) == len(word_ids)
        previous = None
        for label, word in zip(row["labels"], word_ids):
            if word is None:
                assert label == -100
            elif word != previous:
                assert label == tags[word]
            else:
                split_words += 1
                inside = {1: 2, 3: 4}.get(tags[word], tags[word])  # B-X -> I-X, as run_ner.py does
                assert label == (inside if label_all_tokens else -100)
                begins += tags[word] in (1, 3)
            previous = word
    assert split_words > 0  # the small vocab does split words, so the non-first rule was exercised
    assert begins > 0  # and splits words labelled B-X, so the B -> I rule was too


def test_token_classification_with_string_word_labels(wordpiece_tokenizer: Any) -> None:
    source = ([["Alice", "visited", "Paris"]], [["B-PER", "O", "B-LOC"]])
    adapter = adapt(source, wordpiece_tokenizer, task="token-classification")
    assert adapter.label2id == {"B-LOC": 0, "B-PER": 1, "O": 2}
    labels = [x for x in adapter[0]["labels"] if x != -100]
    assert labels == [1, 2, 0]


def test_seq2seq_labels_come_from_text_target(seq2seq_dataset: Any, bpe_tokenizer: Any) -> None:
    adapter = adapt(seq2seq_dataset, bpe_tokenizer, task="seq2seq", text_column="source", max_target_length=4)
    sources, targets = list(seq2seq_dataset["source"]), list(seq2seq_dataset["target"])
    expected_inputs = bpe_tokenizer(sources, truncation=True)["input_ids"]
    expected_labels = bpe_tokenizer(text_target=targets, truncation=True, max_length=4)["input_ids"]
    rows = rows_of(adapter)
    assert [r["input_ids"] for r in rows] == expected_inputs
    assert [r["labels"] for r in rows] == expected_labels
    assert max(len(r["labels"]) for r in rows) == 4
    assert adapter.num_labels is None


def test_causal_lm_labels_are_the_input_ids(lm_dataset: Any, bpe_tokenizer: Any) -> None:
    adapter = adapt(lm_dataset, bpe_tokenizer, task="causal-lm", max_length=12)
    for row in rows_of(adapter):
        assert row["labels"] == row["input_ids"]
        assert len(row["input_ids"]) <= 12


@pytest.mark.parametrize("lazy", [True, False])
def test_block_size_packs_the_whole_corpus(lazy: bool, lm_dataset: Any, bpe_tokenizer: Any) -> None:
    adapter = adapt(lm_dataset, bpe_tokenizer, task="causal-lm", block_size=32, lazy=lazy)
    stream = list(chain(*bpe_tokenizer(list(lm_dataset["text"]))["input_ids"]))
    assert len(adapter) == len(stream) // 32
    rows = rows_of(adapter)
    assert all(len(r["input_ids"]) == 32 and r["labels"] == r["input_ids"] for r in rows)
    assert all(r["attention_mask"] == [1] * 32 for r in rows)
    assert list(chain(*(r["input_ids"] for r in rows))) == stream[: len(rows) * 32]
    assert adapter.lengths.tolist() == [32] * len(rows)


def test_masked_lm_keeps_special_tokens_mask(lm_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(lm_dataset, wordpiece_tokenizer, task="masked-lm")
    specials = {wordpiece_tokenizer.cls_token_id, wordpiece_tokenizer.sep_token_id}
    for row in rows_of(adapter):
        assert "labels" not in row
        assert row["special_tokens_mask"] == [int(t in specials) for t in row["input_ids"]]


def test_masked_lm_packing_keeps_the_mask_aligned(lm_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(lm_dataset, wordpiece_tokenizer, task="masked-lm", block_size=16)
    specials = {wordpiece_tokenizer.cls_token_id, wordpiece_tokenizer.sep_token_id}
    for row in rows_of(adapter):
        assert row["special_tokens_mask"] == [int(t in specials) for t in row["input_ids"]]


def test_max_length_truncates_and_truncation_false_keeps_all(
    lm_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    short = adapt(lm_dataset, wordpiece_tokenizer, task="masked-lm", max_length=8)
    full = adapt(lm_dataset, wordpiece_tokenizer, task="masked-lm", truncation=False)
    assert max(short.lengths) == 8
    assert max(full.lengths) > 8
    assert short[0]["input_ids"][-1] == wordpiece_tokenizer.sep_token_id  # truncation keeps the template


def test_unlabelled_split_with_label_column_none(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        seqcls_dataset.remove_columns("label"),
        wordpiece_tokenizer,
        task="sequence-classification",
        label_column=None,
    )
    assert "labels" not in adapter[0]
    assert adapter.num_labels is None
    assert adapter.label2id is None


def test_label_all_tokens_keeps_the_word_label_when_names_are_not_bio(wordpiece_tokenizer: Any) -> None:
    words = [["Jonathanson", "went"]]  # the first word splits into sub-words with the small vocabulary
    ids = wordpiece_tokenizer(words, is_split_into_words=True).word_ids(0)
    assert ids.count(0) > 1
    for names, first, rest in [(["B-PER", "I-PER", "O"], 0, 1), (["S-PER", "B-PER", "O"], 1, 1)]:
        adapter = adapt(
            (words, [[names[first], "O"]]),
            wordpiece_tokenizer,
            task="token-classification",
            label_all_tokens=True,
            label2id={name: i for i, name in enumerate(names)},
        )
        labels = [label for label, word in zip(adapter[0]["labels"], ids) if word == 0]
        assert labels == [first] + [rest] * (len(labels) - 1)  # IOBES names: no B -> I rewrite
