"""Padding-free packing: packed examples give the logits they give alone; labels never cross a boundary."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.collators import PACKING_ATTENTION, PackedCollator
from tests.conftest import tiny_config

# float32 on CPU: a packed example's logits match its solo run to this absolute tolerance (observed max ~1e-6;
# the attention sums run over the same keys, only in another kernel order)
ATOL = 1e-5


def _model(arch: str, tokenizer: Any, attn: str) -> Any:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, tokenizer), attn_implementation=attn)
    return model.eval()


def _examples(tokenizer: Any, corpus: list[str]) -> list[dict[str, list[int]]]:
    texts = [corpus[0], corpus[5] + " " + corpus[6], "Wow", corpus[10], corpus[3]]
    return [{"input_ids": tokenizer(t)["input_ids"]} for t in texts]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("row_length", [None, 80])
def test_packed_logits_equal_solo_logits(
    arch: str, attn: str, row_length: int | None, bpe_tokenizer: Any, corpus: list[str]
) -> None:
    model = _model(arch, bpe_tokenizer, attn)
    examples = _examples(bpe_tokenizer, corpus)
    collate = PackedCollator.for_model(model, row_length=row_length, return_seq_idx=True)
    batch = collate(examples)
    seq_idx = batch.pop("seq_idx")
    assert "attention_mask" not in batch
    assert batch["use_cache"] is False  # with a KV cache transformers would not look for packed examples
    with torch.no_grad():
        packed = model(**batch).logits
        for i, example in enumerate(examples):
            alone = model(input_ids=torch.tensor([example["input_ids"]])).logits[0]
            where = seq_idx == i
            assert int(where.sum()) == len(example["input_ids"])
            torch.testing.assert_close(packed[where], alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_equality_test_can_fail(arch: str, bpe_tokenizer: Any, corpus: list[str]) -> None:
    """With one running position sequence (examples concatenated, not packed) the later examples differ."""
    model = _model(arch, bpe_tokenizer, "sdpa")
    examples = _examples(bpe_tokenizer, corpus)
    ids = torch.tensor([[t for e in examples for t in e["input_ids"]]])
    with torch.no_grad():
        joined = model(input_ids=ids).logits[0]
        second = model(input_ids=torch.tensor([examples[1]["input_ids"]])).logits[0]
    n0 = len(examples[0]["input_ids"])
    assert not torch.allclose(joined[n0 : n0 + len(second)], second, atol=1e-3)


def test_positions_labels_and_row_tails() -> None:
    collate = PackedCollator("eager", row_length=6, pad_token_id=0, return_tensors="np", return_seq_idx=True)
    batch = collate(
        [
            {"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
            {"input_ids": [8, 9], "labels": [8, 9]},
            {"input_ids": [1, 2, 3, 4]},
        ]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0], [1, 2, 3, 4, 0, 0]]
    # first token of every example and every tail token: -100, so no label is predicted across a boundary
    assert batch["labels"].tolist() == [[-100, 6, 7, -100, 9, -100], [-100, 2, 3, 4, -100, -100]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 1]]
    assert batch["seq_idx"].tolist() == [[0, 0, 0, 1, 1, -1], [2, 2, 2, 2, -1, -1]]
    assert "cu_seq_lens_q" not in batch


def test_without_use_cache_false_an_eval_model_mixes_examples(bpe_tokenizer: Any, corpus: list[str]) -> None:
    """Why the batch carries ``use_cache=False``: a model in eval mode builds a cache, and then ignores packing."""
    model = _model("llama", bpe_tokenizer, "sdpa")
    examples = _examples(bpe_tokenizer, corpus)
    batch = PackedCollator("sdpa", return_use_cache=False, return_seq_idx=True)(examples)
    seq_idx = batch.pop("seq_idx")
    with torch.no_grad():
        packed = model(**batch).logits
        alone = model(input_ids=torch.tensor([examples[1]["input_ids"]])).logits[0]
    assert not torch.allclose(packed[seq_idx == 1], alone, atol=1e-3)


def test_one_row_without_padding_and_flash_kwargs() -> None:
    batch = PackedCollator("flash_attention_2", return_tensors="np")(
        [{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}]
    )
    assert batch["input_ids"].shape == (1, 5)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5]
    assert batch["max_length_q"] == 3
    rows = PackedCollator("flash_attention_2", row_length=4, return_tensors="np")(
        [{"input_ids": [5, 6, 7]}, {"input_ids": [8, 9]}]
    )
    assert rows["cu_seq_lens_k"].tolist() == [0, 3, 4, 6, 8]  # tails are sequences of their own


def test_caller_rows_are_not_changed() -> None:
    rows = [{"input_ids": np.array([5, 6, 7]), "labels": np.array([5, 6, 7])}]
    PackedCollator("sdpa")(rows)
    assert rows[0]["labels"].tolist() == [5, 6, 7]


def test_refuses_attention_that_cannot_keep_examples_apart() -> None:
    with pytest.raises(ValueError, match=r"'my_kernel' is not known to.*'eager'.*'sdpa'"):
        PackedCollator("my_kernel")
    assert set(PACKING_ATTENTION) >= {"sdpa", "eager", "flex_attention", "flash_attention_2"}


def test_refuses_encoder_decoder(make_tiny_model: Any) -> None:
    with pytest.raises(ValueError, match="decoder-only"):
        PackedCollator.for_model(make_tiny_model("t5", "seq2seq"))


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ([], "empty batch"),
        ([{"input_ids": []}], "example 0 `input_ids` must be a non-empty"),
        ([{"input_ids": [1, 2]}, {"input_ids": [1, 2], "labels": [1]}], "example 1 has 1 labels for 2"),
        ([{"input_ids": [1] * 9}], "example 0 has 9 tokens, more than `row_length`=8"),
    ],
)
def test_bad_rows(rows: list[dict[str, Any]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PackedCollator("sdpa", row_length=8)(rows)
