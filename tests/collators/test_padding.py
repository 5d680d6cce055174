"""PaddingCollator behaviour: pad values per key, key kinds, options, inputs, no mutation, pickling."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.collators import PaddingCollator
from tests.collators.conftest import as_container


def test_every_sequence_key_gets_its_own_pad_value() -> None:
    rows = [
        {
            "input_ids": [5, 6, 7],
            "attention_mask": [1, 1, 1],
            "token_type_ids": [0, 1, 1],
            "special_tokens_mask": [1, 0, 1],
            "position_ids": [0, 1, 2],
            "labels": [-100, 3, -100],
            "word_ids": [0, 1, 2],
        },
        {
            "input_ids": [8],
            "attention_mask": [1],
            "token_type_ids": [0],
            "special_tokens_mask": [1],
            "position_ids": [0],
            "labels": [4],
            "word_ids": [0],
        },
    ]
    batch = PaddingCollator(pad_token_id=9, pad_token_type_id=2, pad_values={"word_ids": -1})(rows)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1], [0, 2, 2]]
    assert batch["special_tokens_mask"].tolist() == [[1, 0, 1], [1, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 3, -100], [4, -100, -100]]
    assert batch["word_ids"].tolist() == [[0, 1, 2], [0, -1, -1]]
    assert all(t.dtype == torch.int64 for t in batch.values())


def test_defaults_come_from_the_tokenizer_at_call_time(wordpiece_tokenizer: Any) -> None:
    """As HF's collators: the padding side and pad id not given are the tokenizer's when called."""
    tok = copy.deepcopy(wordpiece_tokenizer)
    collate = PaddingCollator(tok)
    assert collate.padding_side is None  # not given: follow the tokenizer
    assert collate.pad_token_id is None
    rows = [{"input_ids": [2, 7, 3]}, {"input_ids": [2, 3]}]
    assert collate(rows)["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]
    tok.padding_side = "left"
    tok.pad_token = "[UNK]"
    unk = tok.convert_tokens_to_ids("[UNK]")
    batch = collate(rows)
    assert batch["input_ids"].tolist() == [[2, 7, 3], [unk, 2, 3]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 1, 1]]
    pinned = PaddingCollator(tok, padding_side="right", pad_token_id=0)  # given: kept
    assert pinned(rows)["input_ids"].tolist() == [[2, 7, 3], [2, 3, 0]]


def test_scalars_fixed_lists_strings_and_none() -> None:
    rows = [
        {
            "input_ids": [1, 2],
            "label": 2,
            "score": 0.5,
            "multi": [1.0, 0.0, 1.0],
            "text": "ab",
            "extra": None,
        },
        {"input_ids": [3], "label": 0, "score": 1.5, "multi": [0.0, 0.0, 1.0], "text": "c", "extra": None},
    ]
    batch = PaddingCollator(pad_token_id=0)(rows)
    assert sorted(batch) == ["attention_mask", "input_ids", "labels", "multi", "score"]
    assert batch["labels"].dtype == torch.int64
    assert batch["labels"].tolist() == [2, 0]
    assert batch["score"].dtype == torch.float32
    assert batch["score"].tolist() == [0.5, 1.5]
    assert batch["multi"].dtype == torch.float32
    assert batch["multi"].shape == (2, 3)
    kept = PaddingCollator(pad_token_id=0, keep_non_numeric=True)(rows)
    assert kept["text"] == ["ab", "c"]
    assert kept["extra"] == [None, None]


def test_numpy_and_tensor_scalars_are_stacked() -> None:
    rows = [{"input_ids": [1], "label": np.int32(1)}, {"input_ids": [2, 3], "label": np.int32(2)}]
    assert PaddingCollator(pad_token_id=0)(rows)["labels"].dtype == torch.int64
    rows = [{"input_ids": [1], "label": torch.tensor(1.5)}, {"input_ids": [2], "label": torch.tensor(2.5)}]
    assert PaddingCollator(pad_token_id=0)(rows)["labels"].tolist() == [1.5, 2.5]


@pytest.mark.parametrize("container", ["list", "np", "pt"])
def test_nested_multiple_choice_is_padded_to_b_c_l(container: str) -> None:
    rows = [
        {"input_ids": [[1, 2, 3], [4, 5]], "label": 0},
        {"input_ids": [[6], [7, 8, 9, 10]], "label": 1},
    ]
    if container != "list":
        # ragged choices cannot be one array: give them as a list of per-choice arrays / tensors
        convert = np.asarray if container == "np" else torch.tensor
        rows = [{"input_ids": [convert(c) for c in r["input_ids"]], "label": r["label"]} for r in rows]
    batch = PaddingCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].shape == (2, 2, 4)
    assert batch["input_ids"][1].tolist() == [[6, 0, 0, 0], [7, 8, 9, 10]]
    assert batch["attention_mask"][0].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [0, 1]


def test_attention_mask_bool_option_and_off() -> None:
    rows = [{"input_ids": [1, 2]}, {"input_ids": [3]}]
    batch = PaddingCollator(pad_token_id=0, attention_mask_dtype="bool")(rows)
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"].tolist() == [[True, True], [True, False]]
    given = [{"input_ids": [1, 2], "attention_mask": [1, 0]}, {"input_ids": [3], "attention_mask": [1]}]
    assert PaddingCollator(pad_token_id=0, attention_mask_dtype="bool")(given)["attention_mask"].tolist() == [
        [True, False],
        [True, False],
    ]
    assert "attention_mask" not in PaddingCollator(pad_token_id=0, return_attention_mask=False)(rows)


def test_pad_to_multiple_of_and_padding_max_length() -> None:
    rows = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    assert PaddingCollator(pad_token_id=0, pad_to_multiple_of=4)(rows)["input_ids"].shape == (2, 4)
    fixed = PaddingCollator(pad_token_id=0, padding="max_length", max_length=6)(rows)
    assert fixed["input_ids"].tolist() == [[1, 2, 3, 0, 0, 0], [4, 0, 0, 0, 0, 0]]


@pytest.mark.parametrize(("side", "expected"), [("right", [[1, 2], [5, 0]]), ("left", [[3, 4], [5, 0]])])
def test_truncation_policy(side: str, expected: list[list[int]]) -> None:
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [1, 2, 3, 4]}, {"input_ids": [5], "labels": [5]}]
    collate = PaddingCollator(pad_token_id=0, max_length=2, overflow="truncate", truncation_side=side)
    batch = collate(rows)
    assert batch["input_ids"].tolist() == expected
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert batch["labels"].tolist() == [expected[0], [5, -100]]


@pytest.mark.parametrize("container", ["list", "np", "pt"])
def test_never_mutates_features(wp_rows: list[dict[str, Any]], container: str) -> None:
    rows = as_container(wp_rows, container)
    snapshot = copy.deepcopy(rows)
    collate = PaddingCollator(pad_token_id=0)
    batch = collate(rows)
    batch["input_ids"].fill_(77)  # the output must not alias the input either
    for row, before in zip(rows, snapshot):
        assert row.keys() == before.keys()
        for key in row:
            assert np.array_equal(np.asarray(row[key]), np.asarray(before[key])), key


@pytest.mark.parametrize("container", ["list", "np", "pt"])
def test_lists_arrays_tensors_and_numpy_output_agree(wp_rows: list[dict[str, Any]], container: str) -> None:
    reference = PaddingCollator(pad_token_id=0)(wp_rows)
    got = PaddingCollator(pad_token_id=0, return_tensors="np")(as_container(wp_rows, container))
    assert sorted(got) == sorted(reference)
    for key, value in got.items():
        assert isinstance(value, np.ndarray)
        np.testing.assert_array_equal(value, reference[key].numpy())


def test_int32_arrays_and_single_row_batch() -> None:
    rows = [{"input_ids": np.array([4, 5], dtype=np.int32)}]
    batch = PaddingCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"].tolist() == [[4, 5]]


def test_is_picklable_with_a_tokenizer(wordpiece_tokenizer: Any, wp_rows: list[dict[str, Any]]) -> None:
    collate = PaddingCollator(wordpiece_tokenizer, pad_to_multiple_of=8)
    clone = pickle.loads(pickle.dumps(collate))
    assert clone.pad_to_multiple_of == 8
    assert clone.pad_token_id == collate.pad_token_id
    a, b = collate(wp_rows), clone(wp_rows)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pad_values_override_the_defaults() -> None:
    rows = [{"input_ids": [1, 2], "labels": [3, 4]}, {"input_ids": [5], "labels": [6]}]
    batch = PaddingCollator(pad_token_id=0, pad_values={"labels": -1, "input_ids": 9})(rows)
    assert batch["labels"].tolist() == [[3, 4], [6, -1]]
    assert batch["input_ids"].tolist() == [[1, 2], [5, 9]]


def test_seq2seq_labels_follow_padding_max_length(bpe_tokenizer: Any) -> None:
    from hfbridge.collators import Seq2SeqCollator

    rows = [{"input_ids": [5, 6, 2], "labels": [7, 2]}, {"input_ids": [8, 2], "labels": [2]}]
    batch = Seq2SeqCollator(bpe_tokenizer, padding="max_length", max_length=5)(rows)
    assert batch["input_ids"].shape == (2, 5)
    assert batch["labels"].tolist() == [[7, 2, -100, -100, -100], [2, -100, -100, -100, -100]]


@pytest.mark.parametrize("container", ["list", "np", "pt"])
@pytest.mark.parametrize("values", [[[1, 2, 3], [4]], [[1, 1, 1], [1]]], ids=["varied", "constant"])
def test_a_fractional_pad_value_widens_an_int_key_to_float32(container: str, values: list[list[int]]) -> None:
    convert = {"list": list, "np": np.array, "pt": torch.tensor}[container]
    rows = [{"input_ids": [7] * len(v), "w": convert(v)} for v in values]
    out = PaddingCollator(pad_token_id=0, pad_values={"w": 0.5})(rows)
    assert out["w"].dtype == torch.float32
    expected = torch.tensor([[float(x) for x in values[0]], [float(values[1][0]), 0.5, 0.5]])
    assert torch.equal(out["w"], expected)
    # an integral pad keeps the int dtype
    assert PaddingCollator(pad_token_id=0, pad_values={"w": -1})(rows)["w"].dtype == torch.int64
