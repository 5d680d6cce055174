"""Differential tests: our collators and HF's give identical tensors on the same features, wherever HF is right."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    DataCollatorForTokenClassification,
    DataCollatorWithFlattening,
    DataCollatorWithPadding,
)

from hfbridge.collators import (
    CausalLMCollator,
    FlatteningCollator,
    PaddingCollator,
    Seq2SeqCollator,
    TokenClassificationCollator,
)
from tests.collators.conftest import as_container, assert_batches_equal, encode

CONTAINERS = ("list", "np", "pt")
PADDING_OPTIONS = [
    {},
    {"pad_to_multiple_of": 8},
    {"padding_side": "left"},
    {"pad_to_multiple_of": 16, "padding_side": "left"},
]


def _hf_kwargs(options: dict[str, Any], tokenizer: Any) -> tuple[dict[str, Any], Any]:
    """HF takes padding_side from the tokenizer: return (HF kwargs, a tokenizer copy set up like ours)."""
    tok = tokenizer
    if "padding_side" in options:
        tok = copy.deepcopy(tokenizer)
        tok.padding_side = options["padding_side"]
    return {k: v for k, v in options.items() if k != "padding_side"}, tok


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("options", PADDING_OPTIONS)
def test_padding_matches_data_collator_with_padding(
    wordpiece_tokenizer: Any, wp_rows: list[dict[str, Any]], container: str, options: dict[str, Any]
) -> None:
    rows = as_container(wp_rows, container)
    hf_kwargs, tok = _hf_kwargs(options, wordpiece_tokenizer)
    theirs = DataCollatorWithPadding(tok, **hf_kwargs)(as_container(wp_rows, container))
    ours = PaddingCollator(wordpiece_tokenizer, **options)(rows)
    assert_batches_equal(ours, dict(theirs))


@pytest.mark.parametrize("extra", ["special_tokens_mask", "no_attention_mask", "float_label", "multi_hot"])
def test_padding_matches_hf_on_other_keys(wordpiece_tokenizer: Any, texts: list[str], extra: str) -> None:
    rows = encode(wordpiece_tokenizer, texts, return_special_tokens_mask=True)
    if extra == "no_attention_mask":
        rows = [{k: v for k, v in r.items() if k != "attention_mask"} for r in rows]
    if extra == "float_label":
        rows = [{**r, "label": i / 7} for i, r in enumerate(rows)]
    if extra == "multi_hot":
        rows = [{**r, "labels": [float(i % 2), 1.0, 0.0, float(i % 3 == 0)]} for i, r in enumerate(rows)]
    theirs = DataCollatorWithPadding(wordpiece_tokenizer)(copy.deepcopy(rows))
    ours = PaddingCollator(wordpiece_tokenizer)(rows)
    assert_batches_equal(ours, dict(theirs))


def _token_rows(tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
    rows = encode(tokenizer, texts)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        row["labels"] = [-100] + [(i + j) % 5 for j in range(n - 2)] + [-100]
    return rows


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("options", PADDING_OPTIONS)
def test_token_classification_matches_hf(
    wordpiece_tokenizer: Any, texts: list[str], container: str, options: dict[str, Any]
) -> None:
    rows = _token_rows(wordpiece_tokenizer, texts)
    hf_kwargs, tok = _hf_kwargs(options, wordpiece_tokenizer)
    theirs = DataCollatorForTokenClassification(tok, **hf_kwargs)(as_container(rows, container))
    ours = TokenClassificationCollator(wordpiece_tokenizer, **options)(as_container(rows, container))
    assert_batches_equal(ours, dict(theirs))


def _seq2seq_rows(tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
    rows = encode(tokenizer, texts)
    targets = encode(tokenizer, [" ".join(t.split()[: 1 + i % 4]) for i, t in enumerate(texts)])
    return [{**row, "labels": target["input_ids"]} for row, target in zip(rows, targets)]


@pytest.mark.filterwarnings("ignore:Creating a tensor from a list of numpy.ndarrays")  # HF's own slow path
@pytest.mark.parametrize("container", ["list", "np"])
@pytest.mark.parametrize("options", PADDING_OPTIONS)
def test_seq2seq_matches_hf(
    bpe_tokenizer: Any, texts: list[str], container: str, options: dict[str, Any]
) -> None:
    rows = _seq2seq_rows(bpe_tokenizer, texts)
    hf_kwargs, tok = _hf_kwargs(options, bpe_tokenizer)
    theirs = DataCollatorForSeq2Seq(tok, **hf_kwargs)(as_container(rows, container))
    ours = Seq2SeqCollator(bpe_tokenizer, **options)(as_container(rows, container))
    assert_batches_equal(ours, dict(theirs))


@pytest.mark.parametrize("arch", ["t5", "bart"])
def test_seq2seq_decoder_input_ids_match_hf(
    bpe_tokenizer: Any, texts: list[str], make_tiny_model: Any, arch: str
) -> None:
    model = make_tiny_model(arch, "seq2seq")
    rows = _seq2seq_rows(bpe_tokenizer, texts)
    theirs = DataCollatorForSeq2Seq(bpe_tokenizer, model=model)(copy.deepcopy(rows))
    ours = Seq2SeqCollator(bpe_tokenizer, model=model)(rows)
    assert "decoder_input_ids" in ours
    assert_batches_equal(ours, dict(theirs))


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("options", [{}, {"pad_to_multiple_of": 8}, {"padding_side": "left"}])
def test_causal_lm_matches_hf_when_pad_is_not_eos(
    bpe_tokenizer: Any, bpe_rows: list[dict[str, Any]], container: str, options: dict[str, Any]
) -> None:
    assert bpe_tokenizer.pad_token_id != bpe_tokenizer.eos_token_id
    hf_kwargs, tok = _hf_kwargs(options, bpe_tokenizer)
    theirs = DataCollatorForLanguageModeling(tok, mlm=False, **hf_kwargs)(as_container(bpe_rows, container))
    ours = CausalLMCollator(bpe_tokenizer, **options)(as_container(bpe_rows, container))
    assert_batches_equal(ours, dict(theirs))


def test_causal_lm_keeps_eos_label_when_pad_is_eos_unlike_hf(
    bpe_tokenizer: Any, bpe_rows: list[dict[str, Any]]
) -> None:
    """transformers #23530: with pad == eos, HF turns every real EOS label into -100; we keep it."""
    tok = copy.deepcopy(bpe_tokenizer)
    tok.pad_token = tok.eos_token
    eos = tok.eos_token_id
    theirs = DataCollatorForLanguageModeling(tok, mlm=False)(copy.deepcopy(bpe_rows))
    ours = CausalLMCollator(tok)(bpe_rows)
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    real_eos = (ours["input_ids"] == eos) & (ours["attention_mask"] == 1)
    assert int(real_eos.sum()) == len(bpe_rows)  # every row ends with a real </s>
    assert (ours["labels"][real_eos] == eos).all()
    assert (theirs["labels"][real_eos] == -100).all()  # HF's bug
    # everywhere else the two agree
    assert torch.equal(ours["labels"][~real_eos], theirs["labels"][~real_eos])


FLATTEN_OPTIONS = [
    {},
    {"return_flash_attn_kwargs": True, "return_seq_idx": True},
    {"position_ids_start": 2, "separator_id": -1},
    {"return_position_ids": False},
]


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("options", FLATTEN_OPTIONS)
@pytest.mark.parametrize("with_labels", [False, True])
def test_flattening_matches_hf(
    bpe_rows: list[dict[str, Any]], container: str, options: dict[str, Any], with_labels: bool
) -> None:
    rows = [{"input_ids": r["input_ids"]} for r in bpe_rows]
    rows.insert(3, {"input_ids": []})  # HF skips empty rows; so do we
    if with_labels:
        rows = [{**r, "labels": [x + 1 for x in r["input_ids"]]} for r in rows]
    theirs = DataCollatorWithFlattening(**options)(as_container(rows, container))
    ours = FlatteningCollator(**options)(as_container(rows, container))
    assert_batches_equal(ours, dict(theirs))
