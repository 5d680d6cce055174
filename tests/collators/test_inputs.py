"""Issue 13: inputs that were silently wrong or unclearly rejected, and the differences from HF's collators.

Every test here failed on the code before the fix (run it with ``PYTHONPATH`` on the old ``src`` to see).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from transformers import DataCollatorWithPadding

from hfbridge.collators import (
    CausalLMCollator,
    MaskedLMCollator,
    PaddingCollator,
    Seq2SeqCollator,
    TokenClassificationCollator,
    collator_for_task,
)
from tests.collators.conftest import as_container, assert_batches_equal

CONTAINERS = ("list", "np", "pt")
TASK_COLLATORS = (
    PaddingCollator,
    TokenClassificationCollator,
    Seq2SeqCollator,
    CausalLMCollator,
    MaskedLMCollator,
)


# ------------------------------------------------------------------------------------------ ids


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("bad", [-1, 300, 10**6])
def test_ids_outside_the_vocabulary_are_rejected(wordpiece_tokenizer: Any, container: str, bad: int) -> None:
    assert len(wordpiece_tokenizer) == 300
    rows = as_container([{"input_ids": [2, 5, 3]}, {"input_ids": [2, bad]}], container)
    for cls in TASK_COLLATORS:
        with pytest.raises(
            ValueError, match=rf"`input_ids` must hold ids in \[0, 300\) .* row 1 holds {bad}"
        ):
            cls(wordpiece_tokenizer)(rows)
    assert PaddingCollator(pad_token_id=0)(rows)["input_ids"][1, 1] == bad  # no tokenizer: no known size


def test_an_out_of_vocabulary_pad_id_is_named(wordpiece_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"the pad id of `input_ids` \(300\) must be in \[0, 300\)"):
        PaddingCollator(wordpiece_tokenizer, pad_token_id=300)([{"input_ids": [2, 5]}, {"input_ids": [2]}])


@pytest.mark.parametrize("tokenizer", [False, True])
def test_an_id_of_2_to_the_63_is_a_clear_error(wordpiece_tokenizer: Any, tokenizer: bool) -> None:
    collate = PaddingCollator(wordpiece_tokenizer if tokenizer else None, pad_token_id=0)
    with pytest.raises(
        ValueError,
        match=r"`input_ids` must hold 64-bit integers; row 1, position 1 is 9223372036854775808, outside",
    ):
        collate([{"input_ids": [1, 2]}, {"input_ids": [1, 2**63]}])
    with pytest.raises(ValueError, match=r"`input_ids` must hold 64-bit integers; got 9223372036854775808"):
        collate(
            [{"input_ids": np.array([1, 2], dtype=np.uint64)}, {"input_ids": np.array([2**63], np.uint64)}]
        )


@pytest.mark.parametrize("collator", [PaddingCollator, CausalLMCollator])
def test_input_ids_given_as_strings_are_an_error_not_an_empty_batch(collator: Any) -> None:
    with pytest.raises(
        TypeError, match=r"`input_ids` must hold token ids, so tokenize first; row 0 holds str"
    ):
        collator(pad_token_id=0)([{"input_ids": "hello world"}, {"input_ids": "hi"}])
    with pytest.raises(TypeError, match=r"`attention_mask` must hold token ids, so tokenize first"):
        collator(pad_token_id=0)([{"input_ids": [1], "attention_mask": "1"}])


@pytest.mark.parametrize(
    "ids",
    [[True, False], np.array([True, False]), torch.tensor([True, False])],
    ids=["list", "np", "pt"],
)
def test_bool_ids_are_an_error(ids: Any) -> None:
    for cls in (PaddingCollator, CausalLMCollator):
        with pytest.raises(TypeError, match="`input_ids` must hold token ids, not bools"):
            cls(pad_token_id=0)([{"input_ids": ids}, {"input_ids": ids}])
    mask = [{"input_ids": [5, 6], "attention_mask": np.array([True, True])}]  # a bool mask stays fine
    assert PaddingCollator(pad_token_id=0)(mask)["attention_mask"].tolist() == [[1, 1]]


# ------------------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("key", ["label", "labels"])
def test_a_string_class_label_is_an_error_not_dropped(key: str) -> None:
    rows = [{"input_ids": [1, 2], key: "pos"}, {"input_ids": [3], key: "neg"}]
    for mode in ("auto", "classification"):
        with pytest.raises(TypeError, match=r"`labels` must hold class ids \(map them with label2id\)"):
            PaddingCollator(pad_token_id=0, label_mode=mode)(rows)  # type: ignore[arg-type]
    kept = PaddingCollator(pad_token_id=0)([{"input_ids": [1], "text": "a"}, {"input_ids": [2], "text": "b"}])
    assert sorted(kept) == ["attention_mask", "input_ids"]  # other strings are still dropped, as documented


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_or_infinite_label_is_rejected(bad: float) -> None:
    collate = collator_for_task("sequence-classification", None, pad_token_id=0)
    with pytest.raises(ValueError, match=r"`labels` must be finite numbers; row 1 holds"):
        collate([{"input_ids": [1], "label": 0.5}, {"input_ids": [2], "label": bad}])
    with pytest.raises(ValueError, match=r"`labels` must be finite numbers; row 0 holds"):
        collate([{"input_ids": [1], "labels": [bad, 1.0]}, {"input_ids": [2], "labels": [0.0, 1.0]}])
    with pytest.raises(ValueError, match=r"`labels` must be finite numbers; row 1 holds"):
        PaddingCollator(pad_token_id=0)([{"input_ids": [1], "label": 1.0}, {"input_ids": [2], "label": bad}])


# ------------------------------------------------------------------------------------------ HF's behaviour


def _hf(tokenizer: Any, rows: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    return dict(DataCollatorWithPadding(tokenizer, **kwargs)(copy.deepcopy(rows)))


@pytest.mark.parametrize(
    "options", [{"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 16}, {}]
)
def test_fixed_length_int_multi_labels_are_stacked_as_hf(
    wordpiece_tokenizer: Any, options: dict[str, Any]
) -> None:
    rows = [
        {"input_ids": [2, 7, 8, 3], "labels": [0, 1, 1]},
        {"input_ids": [2, 9, 3], "labels": [1, 0, 0]},
    ]
    theirs = _hf(wordpiece_tokenizer, rows, **options)
    assert theirs["labels"].tolist() == [[0, 1, 1], [1, 0, 0]]
    assert_batches_equal(PaddingCollator(wordpiece_tokenizer, **options)(rows), theirs)
    task = collator_for_task("sequence-classification", wordpiece_tokenizer, **options)
    assert_batches_equal(task(rows), theirs)
    per_token = [{"input_ids": [2, 7, 3], "labels": [0, 1, 0]}, {"input_ids": [2, 3], "labels": [1, 0]}]
    assert PaddingCollator(wordpiece_tokenizer)(per_token)["labels"].tolist() == [[0, 1, 0], [1, 0, -100]]


def test_scalar_labels_of_mixed_types_are_stacked_as_hf(wordpiece_tokenizer: Any) -> None:
    rows = [{"input_ids": [2, 7, 3], "label": torch.tensor(0)}, {"input_ids": [2, 3], "label": np.int64(1)}]
    theirs = _hf(wordpiece_tokenizer, rows)
    assert theirs["labels"].tolist() == [0, 1]
    assert_batches_equal(PaddingCollator(wordpiece_tokenizer)(rows), theirs)
    floats = [
        {"input_ids": [2, 3], "label": np.float32(0.5)},
        {"input_ids": [2, 3], "label": torch.tensor(1.5)},
    ]
    assert PaddingCollator(wordpiece_tokenizer)(floats)["labels"].tolist() == [0.5, 1.5]


def test_padding_side_and_pad_id_follow_the_tokenizer_at_call_time(wordpiece_tokenizer: Any) -> None:
    tok = copy.deepcopy(wordpiece_tokenizer)
    rows = [{"input_ids": [2, 7, 8, 3]}, {"input_ids": [2, 3]}]
    ours, hf = PaddingCollator(tok), DataCollatorWithPadding(tok)
    tok.padding_side = "left"
    tok.pad_token = "[UNK]"
    assert_batches_equal(ours(rows), dict(hf(copy.deepcopy(rows))))
    assert ours(rows)["input_ids"][1, 0] == tok.convert_tokens_to_ids("[UNK]")
    task = TokenClassificationCollator(tok)
    tok.padding_side = "right"
    assert task([{**r, "labels": [0] * len(r["input_ids"])} for r in rows])["labels"][1, -1] == -100


@pytest.mark.parametrize("padding", [True, "longest", False, "do_not_pad"])
def test_hf_padding_values_are_accepted_with_hf_meaning(wordpiece_tokenizer: Any, padding: Any) -> None:
    same = [{"input_ids": [2, 7, 3], "label": 0}, {"input_ids": [2, 8, 3], "label": 1}]
    ragged = [{"input_ids": [2, 7, 8, 3], "label": 0}, {"input_ids": [2, 3], "label": 1}]
    collate = PaddingCollator(wordpiece_tokenizer, padding=padding, pad_to_multiple_of=8)
    for rows in (same, ragged):
        try:
            theirs = _hf(wordpiece_tokenizer, rows, padding=padding, pad_to_multiple_of=8)
        except ValueError:  # HF cannot make one tensor of rows it did not pad
            assert padding in (False, "do_not_pad")
            with pytest.raises(ValueError, match="`padding='do_not_pad'` needs rows of one length"):
                collate(rows)
            continue
        assert_batches_equal(collate(rows), theirs)
    with pytest.raises(ValueError, match="`padding` must be one of"):
        PaddingCollator(wordpiece_tokenizer, padding="longestt")  # type: ignore[arg-type]


def test_padding_max_length_without_max_length_uses_model_max_length(wordpiece_tokenizer: Any) -> None:
    tok = copy.deepcopy(wordpiece_tokenizer)
    tok.model_max_length = 12
    rows = [{"input_ids": [2, 7, 3]}, {"input_ids": [2, 3]}]
    collate = PaddingCollator(tok, padding="max_length")
    assert collate.max_length == 12
    assert_batches_equal(collate(rows), _hf(tok, rows, padding="max_length"))
    tok.model_max_length = int(1e30)  # HF's "unset"
    with pytest.raises(ValueError, match=r"`padding='max_length'` needs `max_length`.*model_max_length"):
        PaddingCollator(tok, padding="max_length")
    with pytest.raises(ValueError, match=r"`padding='max_length'` needs `max_length`"):
        CausalLMCollator(padding="max_length", pad_token_id=0)


# ------------------------------------------------------------------------------------------ options (issue 18)


@pytest.mark.parametrize("cls", TASK_COLLATORS[1:])
def test_every_task_collator_takes_every_padding_option(wordpiece_tokenizer: Any, cls: Any) -> None:
    options = {
        "truncation_side": "left",
        "pad_token_type_id": 0,
        "return_attention_mask": False,
        "keep_non_numeric": True,
        "max_length": 3,
        "overflow": "truncate",
    }
    collate = cls(wordpiece_tokenizer, **options)
    assert collate.truncation_side == "left"
    rows = [{"input_ids": [2, 7, 8, 9, 3], "labels": [0, 1, 2, 3, 4], "id": "a"}]
    batch = collate(rows)
    assert batch["input_ids"].shape[1] == 3
    assert "attention_mask" not in batch
    assert batch["id"] == ["a"]
    if cls is TokenClassificationCollator:
        assert batch["labels"].tolist() == [[2, 3, 4]]  # the left end was cut
    with pytest.raises(TypeError, match=rf"{cls.__name__} sets `label_mode` itself"):
        cls(wordpiece_tokenizer, label_mode="auto")
    with pytest.raises(
        TypeError, match=rf"{cls.__name__} has no option 'padding_sid'; valid padding options"
    ):
        cls(wordpiece_tokenizer, padding_sid="left")
