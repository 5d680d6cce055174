"""Lengths: exact from Arrow offsets (eager; lazy after one tokenizing pass it keeps), or estimated cheaply."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hfbridge.adapters import MapAdapter, adapt, token_lengths


def _true_lengths(tokenizer: Any, texts: list[str], **kwargs: Any) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, truncation=True, **kwargs)["input_ids"]]


def test_eager_lengths_come_from_arrow_not_rows(
    seqcls_dataset: Any, wordpiece_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = adapt(
        seqcls_dataset, wordpiece_tokenizer, task="sequence-classification", lazy=False, max_length=16
    )
    monkeypatch.setattr(type(adapter), "__getitems__", None)  # reading a row would fail
    monkeypatch.setattr(adapter._encoder, "tokenizer", None)  # and so would tokenizing
    lengths = adapter.lengths
    assert lengths.dtype == np.int64
    assert lengths.tolist() == _true_lengths(wordpiece_tokenizer, list(seqcls_dataset["text"]), max_length=16)


class CountingTokenizer:
    """Counts the texts a tokenizer is called on (wraps ``__call__`` of one tokenizer object)."""

    def __init__(self, tokenizer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows = 0
        original = type(tokenizer).__call__

        def counting(tok: Any, text: Any = None, *args: Any, **kwargs: Any) -> Any:
            if tok is tokenizer and text is not None:
                self.rows += len(text) if isinstance(text, list) else 1
            return original(tok, text, *args, **kwargs)

        monkeypatch.setattr(type(tokenizer), "__call__", counting)


def test_lazy_lengths_tokenize_each_row_once(
    seqcls_dataset: Any, wordpiece_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = seqcls_dataset.select(range(50))
    expected = _true_lengths(wordpiece_tokenizer, list(ds["text"]), max_length=9)
    adapter = adapt(
        ds, wordpiece_tokenizer, task="sequence-classification", max_length=9, tokenize_batch_size=16
    )
    fresh = [adapter[i] for i in range(len(ds))]  # rows tokenized on access, before the lengths are known
    counter = CountingTokenizer(wordpiece_tokenizer, monkeypatch)
    assert adapter.lengths.tolist() == expected
    assert counter.rows == len(ds)  # each row once, to count it
    assert adapter.__getitems__(list(range(len(ds)))) == fresh  # the same rows ...
    assert counter.rows == len(ds)  # ... read back without tokenizing them again


def test_lazy_lengths_of_a_dataset_on_disk_are_cached_by_datasets(
    seqcls_dataset: Any, wordpiece_tokenizer: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets import load_from_disk

    seqcls_dataset.save_to_disk(str(tmp_path / "ds"))
    first = adapt(load_from_disk(str(tmp_path / "ds")), wordpiece_tokenizer, task="sequence-classification")
    assert first.lengths.tolist() == _true_lengths(wordpiece_tokenizer, list(seqcls_dataset["text"]))
    counter = CountingTokenizer(wordpiece_tokenizer, monkeypatch)
    again = adapt(load_from_disk(str(tmp_path / "ds")), wordpiece_tokenizer, task="sequence-classification")
    assert again.lengths.tolist() == first.lengths.tolist()
    assert counter.rows == 0  # a new adapter (or process) reads the tokens from the datasets cache


def test_lazy_lengths_for_pairs_and_words(
    pair_dataset: Any, tokcls_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    pairs = adapt(
        pair_dataset,
        wordpiece_tokenizer,
        task="sequence-classification",
        text_column="premise",
        text_pair_column="hypothesis",
    )
    assert pairs.lengths.tolist() == [len(pairs[i]["input_ids"]) for i in range(len(pairs))]
    words = adapt(
        tokcls_dataset,
        wordpiece_tokenizer,
        task="token-classification",
        text_column="tokens",
        label_column="ner_tags",
    )
    assert words.lengths.tolist() == [len(words[i]["input_ids"]) for i in range(len(words))]


def test_estimated_lengths_are_close_and_need_no_full_pass(
    lm_dataset: Any, wordpiece_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datasets import concatenate_datasets

    big = concatenate_datasets([lm_dataset] * 20)  # 1920 rows, more than the 512-row sample
    truth = np.asarray(_true_lengths(wordpiece_tokenizer, list(big["text"]), max_length=64))
    monkeypatch.setattr(MapAdapter, "_tokenize_all", None)  # no full tokenization pass allowed
    adapter = adapt(big, wordpiece_tokenizer, task="masked-lm", estimate_lengths=True, max_length=64)
    estimate = adapter.lengths
    assert estimate.dtype == np.int64
    assert estimate.max() <= 64
    assert estimate.min() >= 2  # [CLS] ... [SEP]
    assert np.mean(np.abs(estimate - truth) / truth) < 0.3
    assert (
        np.corrcoef(estimate, truth)[0, 1] > 0.9
    )  # orders rows roughly as the truth does: enough for grouping


def test_estimate_for_token_classification(tokcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        tokcls_dataset,
        wordpiece_tokenizer,
        task="token-classification",
        text_column="tokens",
        label_column="ner_tags",
        estimate_lengths=True,
    )
    truth = np.asarray([len(adapter[i]["input_ids"]) for i in range(len(adapter))])
    assert np.corrcoef(adapter.lengths, truth)[0, 1] > 0.9


def test_token_lengths_honours_select_and_shuffle() -> None:
    from datasets import Dataset

    ds = Dataset.from_dict({"input_ids": [[1] * n for n in range(1, 11)]})
    assert token_lengths(ds).tolist() == list(range(1, 11))
    assert token_lengths(ds.select([9, 0, 4])).tolist() == [10, 1, 5]
    shuffled = ds.shuffle(seed=0)
    assert token_lengths(shuffled).tolist() == [len(r) for r in shuffled["input_ids"]]


def test_token_lengths_bad_input() -> None:
    from datasets import Dataset

    ds = Dataset.from_dict({"input_ids": [[1, 2], None], "text": ["a", "b"]})
    with pytest.raises(
        ValueError, match=r"`column` names column 'ids'.*available columns: 'input_ids', 'text'"
    ):
        token_lengths(ds, "ids")
    with pytest.raises(ValueError, match=r"`column` 'text' must be a list column"):
        token_lengths(ds, "text")
    with pytest.raises(ValueError, match=r"`column` 'input_ids' has 1 null rows"):
        token_lengths(ds)
