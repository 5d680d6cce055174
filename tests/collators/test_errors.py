"""Every bad input is an early, clear error that names the key or argument, the rule and the bad value."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.collators import (
    FlatteningCollator,
    MaskedLMCollator,
    PaddingCollator,
    TokenClassificationCollator,
    collator_for_task,
)

PAD = PaddingCollator(pad_token_id=0)


def test_empty_batch() -> None:
    with pytest.raises(ValueError, match="non-empty list of feature rows; got an empty batch"):
        PAD([])


def test_features_must_be_a_list_of_mappings() -> None:
    with pytest.raises(TypeError, match="`features` must be a list of feature rows"):
        PAD({"input_ids": [1, 2]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="row 1 is list"):
        PAD([{"input_ids": [1]}, [1, 2]])  # type: ignore[list-item]


def test_rows_with_different_keys() -> None:
    with pytest.raises(ValueError, match=r"same keys as row 0.*row 1 has extra keys \['label'\]"):
        PAD([{"input_ids": [1]}, {"input_ids": [2], "label": 1}])
    with pytest.raises(ValueError, match=r"row 1 lacks \['label'\] and has extra keys \['labels'\]"):
        PAD([{"input_ids": [1], "label": 0}, {"input_ids": [2], "labels": 1}])


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ([3, 2.5], r"`input_ids` must hold integers; row 1, position 1 is float 2.5"),
        ([3, "x"], r"`input_ids` must hold integers; row 1, position 1 is str 'x'"),
        ([3, None], r"`input_ids` must hold integers; row 1, position 1 is NoneType"),
        (np.array([3.0, 4.0]), r"`input_ids` must hold integers; got dtype float64"),
        (torch.tensor([3.0, 4.0]), r"`input_ids` must hold integers; got dtype float32"),
    ],
)
def test_non_integer_in_input_ids(bad: Any, match: str) -> None:
    first = np.array([1, 2]) if isinstance(bad, np.ndarray) else [1, 2]
    if isinstance(bad, torch.Tensor):
        first = torch.tensor([1, 2])
    with pytest.raises(TypeError, match=match):
        PAD([{"input_ids": first}, {"input_ids": bad}])


def test_scalar_input_ids() -> None:
    with pytest.raises(TypeError, match="`input_ids` must be a sequence per row; row 0 holds a scalar 5"):
        PAD([{"input_ids": 5}])
    with pytest.raises(
        TypeError, match=r"`input_ids` must hold a sequence in every row .* row 1 holds int 7"
    ):
        PAD([{"input_ids": [5]}, {"input_ids": 7}])


def test_list_label_in_a_classification_row(wordpiece_tokenizer: Any) -> None:
    collate = collator_for_task("sequence-classification", wordpiece_tokenizer)
    with pytest.raises(
        ValueError, match=r"`labels` row 0 holds a list of 2 labels, row 1 one of 1; sequence-classification"
    ):
        collate([{"input_ids": [2, 3], "label": [1, 2]}, {"input_ids": [2, 3], "label": [0]}])
    with pytest.raises(
        ValueError, match=r"`labels` must be one scalar per row, as row 0 is; row 1 holds \[1\]"
    ):
        collate([{"input_ids": [2, 3], "label": 1}, {"input_ids": [2, 3], "label": [1]}])


def test_ragged_nested_lists() -> None:
    with pytest.raises(ValueError, match=r"nested .* but ragged: row 0 has 2 sequences, row 1 has 1"):
        PAD([{"input_ids": [[1, 2], [3]]}, {"input_ids": [[4]]}])
    with pytest.raises(
        ValueError, match="ragged nesting: row 0 holds a flat sequence but row 1 holds a nested"
    ):
        PAD([{"input_ids": [1, 2]}, {"input_ids": [[3], [4]]}])
    with pytest.raises(ValueError, match="ragged nesting"):
        PAD([{"input_ids": np.array([1, 2])}, {"input_ids": np.array([[3], [4]])}])


def test_ragged_fixed_length_key() -> None:
    with pytest.raises(
        ValueError, match=r"`multi` has variable length \(row 0 has 2, row 1 has 1\) but no known pad value"
    ):
        PAD([{"input_ids": [1], "multi": [0.5, 1.0]}, {"input_ids": [1], "multi": [1.0]}])


def test_row_over_max_length_when_truncation_is_off() -> None:
    collate = PaddingCollator(pad_token_id=0, max_length=3)
    with pytest.raises(
        ValueError, match=r"`input_ids` row 1 has 5 tokens, over `max_length`=3.*overflow='truncate'"
    ):
        collate([{"input_ids": [1]}, {"input_ids": [1, 2, 3, 4, 5]}])


def test_variable_length_key_without_pad_value() -> None:
    with pytest.raises(
        ValueError,
        match=r"`word_ids` has variable length \(row 0 has 2, row 1 has 1\) but no known pad value; pass `pad_values",
    ):
        PAD([{"input_ids": [1, 2], "word_ids": [0, 1]}, {"input_ids": [1], "word_ids": [0]}])


def test_misaligned_keys() -> None:
    with pytest.raises(
        ValueError, match="`attention_mask` must be as long as `input_ids` in every row; row 1"
    ):
        PAD([{"input_ids": [1, 2], "attention_mask": [1, 1]}, {"input_ids": [1], "attention_mask": [1, 1]}])
    collate = TokenClassificationCollator(pad_token_id=0)
    with pytest.raises(
        ValueError, match="`labels` must be as long as `input_ids` in every row; row 0 has 1 vs 2"
    ):
        collate([{"input_ids": [1, 2], "labels": [0]}])


def test_label_and_labels_together() -> None:
    with pytest.raises(ValueError, match="rows hold both `labels` and another key that becomes `labels`"):
        PAD([{"input_ids": [1], "label": 1, "labels": 2}])


def test_padding_without_a_pad_token(bpe_tokenizer: Any) -> None:
    tok = copy.deepcopy(bpe_tokenizer)
    tok.pad_token = None
    collate = PaddingCollator(tok)
    assert collate([{"input_ids": [1, 2]}, {"input_ids": [3, 4]}])["input_ids"].shape == (2, 2)
    with pytest.raises(ValueError, match="`input_ids` needs padding but the tokenizer has no pad token"):
        collate([{"input_ids": [1, 2]}, {"input_ids": [3]}])


def test_unsupported_value_type() -> None:
    with pytest.raises(TypeError, match=r"`meta` must be a number, a sequence .* row 0 holds dict"):
        PAD([{"input_ids": [1], "meta": {"a": 1}}])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"padding_side": "middle"},
            ValueError,
            "`padding_side` must be one of 'left', 'right'; got 'middle'",
        ),
        ({"pad_to_multiple_of": 0}, ValueError, "`pad_to_multiple_of` must be a positive integer; got 0"),
        ({"max_length": -1}, ValueError, "`max_length` must be a positive integer; got -1"),
        ({"padding": "max_length"}, ValueError, "`padding='max_length'` needs `max_length`"),
        ({"overflow": "drop"}, ValueError, "`overflow` must be one of 'error', 'truncate'; got 'drop'"),
        ({"return_tensors": "tf"}, ValueError, "`return_tensors` must be one of 'pt', 'np'; got 'tf'"),
        ({"label_mode": "multi"}, ValueError, "`label_mode` must be one of"),
        (
            {"attention_mask_dtype": "int8"},
            ValueError,
            "`attention_mask_dtype` must be one of 'int64', 'bool'",
        ),
        ({"pad_values": {"x": "0"}}, TypeError, r"`pad_values\['x'\]` must be an int or float"),
        ({"pad_token_id": 1.5}, TypeError, "`pad_token_id` must be an int or None"),
        ({"label_pad_token_id": None}, TypeError, "`label_pad_token_id` must be int"),
    ],
)
def test_bad_options(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        PaddingCollator(**{"pad_token_id": 0, **kwargs})


def test_masked_lm_bad_options(wordpiece_tokenizer: Any, bpe_tokenizer: Any) -> None:
    tok = copy.deepcopy(bpe_tokenizer)
    tok.mask_token = None
    with pytest.raises(ValueError, match="MaskedLMCollator needs a `tokenizer` with a mask token"):
        MaskedLMCollator(tok)
    with pytest.raises(ValueError, match=r"`mlm_probability` must be in \[0, 1\]; got 1.5"):
        MaskedLMCollator(wordpiece_tokenizer, mlm_probability=1.5)
    with pytest.raises(ValueError, match="`mask_replace_prob \\+ random_replace_prob` must not exceed 1"):
        MaskedLMCollator(wordpiece_tokenizer, mask_replace_prob=0.8, random_replace_prob=0.3)
    with pytest.raises(TypeError, match="`seed` must be an int or None"):
        MaskedLMCollator(wordpiece_tokenizer, seed="1")


def test_factory_errors(wordpiece_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"`task` must be one of .*; got 'translation'"):
        collator_for_task("translation", wordpiece_tokenizer)
    with pytest.raises(
        TypeError, match=r"MaskedLMCollator .* has no option 'mlm'; valid options: .*mlm_probability"
    ):
        collator_for_task("masked-lm", wordpiece_tokenizer, mlm=True)


def test_flattening_errors() -> None:
    with pytest.raises(ValueError, match="every row has empty `input_ids`"):
        FlatteningCollator()([{"input_ids": []}])
    with pytest.raises(ValueError, match="`labels` must be as long as `input_ids`"):
        FlatteningCollator()([{"input_ids": [1, 2], "labels": [1]}])
    with pytest.raises(TypeError, match="`input_ids` must hold integers"):
        FlatteningCollator()([{"input_ids": [1, 2.5]}])


class _PlainVocabTokenizer:
    """A tokenizer whose vocabulary shows no sub-word markers, so words cannot be told apart."""

    mask_token_id = 1
    all_special_ids = (0, 1)
    all_special_tokens = ("[PAD]", "[MASK]")
    pad_token_id = 0
    padding_side = "right"

    def __len__(self) -> int:
        return 4

    def get_vocab(self) -> dict[str, int]:
        return {"[PAD]": 0, "[MASK]": 1, "hello": 2, "world": 3}


def test_whole_word_mask_needs_word_boundaries() -> None:
    with pytest.raises(ValueError, match="`whole_word_mask=True` needs word boundaries"):
        MaskedLMCollator(_PlainVocabTokenizer(), whole_word_mask=True)
    assert MaskedLMCollator(_PlainVocabTokenizer())([{"input_ids": [2, 3]}])["input_ids"].shape == (1, 2)


def test_scalar_labels_in_sequence_mode() -> None:
    with pytest.raises(TypeError, match="`labels` must be a sequence per row; row 0 holds a scalar 1"):
        TokenClassificationCollator(pad_token_id=0)([{"input_ids": [1, 2], "label": 1}])


def test_mixed_tensor_and_list_rows() -> None:
    with pytest.raises(ValueError, match="`input_ids` must hold 1-D tensors of one kind in every row"):
        PAD([{"input_ids": torch.tensor([1, 2])}, {"input_ids": [3]}])
    mixed = PAD([{"input_ids": [1, 2]}, {"input_ids": np.array([3])}, {"input_ids": torch.tensor([4])}])
    assert mixed["input_ids"].tolist() == [[1, 2], [3, 0], [4, 0]]
