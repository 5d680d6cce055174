"""Task collators beyond HF equivalence: causal-LM labels, seq2seq without labels, masked LM, the factory."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.collators import (
    CausalLMCollator,
    FlatteningCollator,
    MaskedLMCollator,
    PaddingCollator,
    Seq2SeqCollator,
    TokenClassificationCollator,
    collator_for_task,
)
from hfbridge.collators._masked_lm import continuation_table
from tests.collators.conftest import encode


def test_causal_lm_labels_follow_the_attention_mask_and_keep_given_labels() -> None:
    collate = CausalLMCollator(pad_token_id=2, padding_side="left")
    assert "special_tokens_mask" not in collate([{"input_ids": [7, 2], "special_tokens_mask": [0, 1]}])
    batch = collate([{"input_ids": [5, 6, 2]}, {"input_ids": [7, 2]}])
    assert batch["input_ids"].tolist() == [[5, 6, 2], [2, 7, 2]]
    assert batch["labels"].tolist() == [[5, 6, 2], [-100, 7, 2]]  # the real EOS stays a label
    prompt_masked = [
        {"input_ids": [5, 6, 2], "labels": [-100, 6, 2]},
        {"input_ids": [7, 2], "labels": [-100, 2]},
    ]
    assert collate(prompt_masked)["labels"].tolist() == [[-100, 6, 2], [-100, -100, 2]]


def test_seq2seq_without_labels_has_no_labels_key(bpe_tokenizer: Any, make_tiny_model: Any) -> None:
    collate = Seq2SeqCollator(bpe_tokenizer, model=make_tiny_model("t5", "seq2seq"))
    batch = collate([{"input_ids": [5, 6, 2]}, {"input_ids": [7, 2]}])
    assert sorted(batch) == ["attention_mask", "input_ids"]
    batch = collate([{"input_ids": [5, 2], "labels": None}, {"input_ids": [7, 2], "labels": None}])
    assert "labels" not in batch


def test_seq2seq_numpy_output_with_model(bpe_tokenizer: Any, make_tiny_model: Any) -> None:
    collate = Seq2SeqCollator(bpe_tokenizer, model=make_tiny_model("t5", "seq2seq"), return_tensors="np")
    batch = collate([{"input_ids": [5, 6, 2], "labels": [8, 2]}, {"input_ids": [7, 2], "labels": [9, 9, 2]}])
    assert isinstance(batch["decoder_input_ids"], np.ndarray)
    assert batch["labels"].tolist() == [[8, 2, -100], [9, 9, 2]]
    assert batch["decoder_input_ids"].tolist() == [[0, 8, 2], [0, 9, 9]]  # start token 0 (t5 pad), shifted


@pytest.fixture(scope="module")
def mlm_rows(wordpiece_tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
    return encode(wordpiece_tokenizer, texts * 8)


def test_masked_lm_masks_the_right_share_and_never_specials_or_padding(
    wordpiece_tokenizer: Any, mlm_rows: list[dict[str, Any]]
) -> None:
    batch = MaskedLMCollator(wordpiece_tokenizer, mlm_probability=0.3, seed=0, return_tensors="np")(mlm_rows)
    original = PaddingCollator(wordpiece_tokenizer, return_tensors="np")(mlm_rows)["input_ids"]
    special = np.isin(original, wordpiece_tokenizer.all_special_ids) | (batch["attention_mask"] == 0)
    chosen = batch["labels"] != -100
    assert not (chosen & special).any()
    assert (batch["labels"][chosen] == original[chosen]).all()
    assert (batch["input_ids"][~chosen] == original[~chosen]).all()
    share = chosen.sum() / (~special).sum()
    assert 0.25 < share < 0.35
    masked = batch["input_ids"][chosen] == wordpiece_tokenizer.mask_token_id
    kept = batch["input_ids"][chosen] == original[chosen]
    assert 0.72 < masked.mean() < 0.88
    assert 0.04 < kept.mean() < 0.18  # 10% kept, plus random draws that hit the same token


def test_masked_lm_respects_special_tokens_mask(wordpiece_tokenizer: Any, texts: list[str]) -> None:
    rows = encode(wordpiece_tokenizer, texts, return_special_tokens_mask=True)
    rows = [{**r, "special_tokens_mask": [1] * len(r["input_ids"])} for r in rows]  # protect everything
    batch = MaskedLMCollator(wordpiece_tokenizer, mlm_probability=1.0, seed=0)(rows)
    assert (batch["labels"] == -100).all()
    assert "special_tokens_mask" not in batch


def test_masked_lm_seed_reproducible_and_epoch_and_pickle(
    wordpiece_tokenizer: Any, mlm_rows: list[dict[str, Any]]
) -> None:
    a = MaskedLMCollator(wordpiece_tokenizer, seed=1)
    b = MaskedLMCollator(wordpiece_tokenizer, seed=1)
    first = a(mlm_rows)
    assert torch.equal(first["input_ids"], b(mlm_rows)["input_ids"])
    assert torch.equal(first["labels"], a(mlm_rows)["labels"])  # no stream: a pure function of the batch
    assert not torch.equal(first["labels"], MaskedLMCollator(wordpiece_tokenizer, seed=2)(mlm_rows)["labels"])
    clone = pickle.loads(pickle.dumps(a))  # a copy starts its own stream from the seed
    assert torch.equal(clone(mlm_rows)["labels"], first["labels"])
    a.set_epoch(1)
    assert not torch.equal(a(mlm_rows)["labels"], first["labels"])


def test_masked_lm_all_mask_token(wordpiece_tokenizer: Any, mlm_rows: list[dict[str, Any]]) -> None:
    collate = MaskedLMCollator(wordpiece_tokenizer, mask_replace_prob=1.0, random_replace_prob=0.0, seed=0)
    batch = collate(mlm_rows)
    chosen = batch["labels"] != -100
    assert chosen.any()
    assert (batch["input_ids"][chosen] == wordpiece_tokenizer.mask_token_id).all()


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_whole_word_masking_takes_words_whole(
    wordpiece_tokenizer: Any, bpe_tokenizer: Any, texts: list[str], kind: str
) -> None:
    tok = wordpiece_tokenizer if kind == "wordpiece" else bpe_tokenizer
    rows = encode(tok, texts * 4)
    batch = MaskedLMCollator(tok, whole_word_mask=True, mlm_probability=0.3, seed=0, return_tensors="np")(
        rows
    )
    original = PaddingCollator(tok, return_tensors="np")(rows)["input_ids"]
    table = continuation_table(tok)
    chosen = batch["labels"] != -100
    special = np.isin(original, tok.all_special_ids)
    continues = table[original] & ~special
    continues[:, 0] = False
    continues[:, 1:] &= ~special[:, :-1]
    # a continuation token is chosen exactly when the token before it is
    assert (chosen[:, 1:][continues[:, 1:]] == chosen[:, :-1][continues[:, 1:]]).all()
    assert continues.any()
    assert chosen.any()


def test_factory_returns_each_task_collator(wordpiece_tokenizer: Any, make_tiny_model: Any) -> None:
    expected = {
        "sequence-classification": PaddingCollator,
        "token-classification": TokenClassificationCollator,
        "seq2seq": Seq2SeqCollator,
        "causal-lm": CausalLMCollator,
        "masked-lm": MaskedLMCollator,
    }
    for task, cls in expected.items():
        collate = collator_for_task(task, wordpiece_tokenizer, pad_to_multiple_of=8)
        assert type(collate) is cls
        assert collate.pad_to_multiple_of == 8
        assert type(pickle.loads(pickle.dumps(collate))) is cls
    flat = pickle.loads(pickle.dumps(FlatteningCollator(position_ids_start=2)))
    assert flat([{"input_ids": [4, 5]}])["position_ids"].tolist() == [[2, 3]]
    seqcls = collator_for_task("sequence-classification", wordpiece_tokenizer)
    assert seqcls.label_mode == "classification"
    model = make_tiny_model("t5", "seq2seq")
    assert collator_for_task("seq2seq", wordpiece_tokenizer, model=model).model is model
    mlm = collator_for_task("masked-lm", wordpiece_tokenizer, model=model, mlm_probability=0.2)
    assert mlm.mlm_probability == 0.2


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


@pytest.mark.slow
def test_dataloader_with_two_workers(wordpiece_tokenizer: Any, mlm_rows: list[dict[str, Any]]) -> None:
    """The collators pickle into worker processes; seeded masking is reproducible and ignores the worker."""
    from torch.utils.data import DataLoader

    def run() -> list[torch.Tensor]:
        collate = MaskedLMCollator(wordpiece_tokenizer, seed=3)
        same = [mlm_rows[6]] * 32  # identical batches: only worker or position could make their masks differ
        loader = DataLoader(_Rows(same), batch_size=8, num_workers=2, collate_fn=collate)
        return [batch["labels"] for batch in loader]

    first, second = run(), run()
    assert len(first) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert all(torch.equal(first[0], b) for b in first[1:])  # workers 0 and 1 mask the same batch alike
    padded = DataLoader(
        _Rows(mlm_rows[:16]), batch_size=8, num_workers=2, collate_fn=PaddingCollator(wordpiece_tokenizer)
    )
    assert [b["input_ids"].shape[0] for b in padded] == [8, 8]


@pytest.mark.parametrize("container", ["list", "np", "pt"])
@pytest.mark.parametrize("task", ["token-classification", "seq2seq", "causal-lm", "masked-lm", "flattening"])
def test_task_collators_never_mutate_features(
    wordpiece_tokenizer: Any, texts: list[str], task: str, container: str
) -> None:
    from tests.collators.conftest import as_container

    rows = encode(wordpiece_tokenizer, texts, return_special_tokens_mask=task == "masked-lm")
    if task in ("token-classification", "seq2seq"):
        rows = [{**r, "labels": [1] * len(r["input_ids"])} for r in rows]
    rows = as_container(rows, container)
    snapshot = copy.deepcopy(rows)
    if task == "flattening":
        collate: Any = FlatteningCollator()
    else:
        collate = (
            collator_for_task(task, wordpiece_tokenizer, mlm_probability=1.0)
            if task == "masked-lm"
            else collator_for_task(task, wordpiece_tokenizer)
        )
    batch = collate(rows)
    for value in batch.values():
        if isinstance(value, torch.Tensor):
            value.fill_(-7)  # the output must not share memory with the input either
    for row, before in zip(rows, snapshot):
        assert all(np.array_equal(np.asarray(row[k]), np.asarray(before[k])) for k in before)


def test_masked_lm_random_replacements_are_uniform_over_the_vocabulary(wordpiece_tokenizer: Any) -> None:
    """Every chosen token becomes a random one: ids cover [0, vocab) evenly and never reach vocab."""
    vocab = len(wordpiece_tokenizer)
    rows = [{"input_ids": [7] * 200} for _ in range(100)]  # no specials: 20,000 candidates
    collate = MaskedLMCollator(
        wordpiece_tokenizer,
        mlm_probability=1.0,
        mask_replace_prob=0.0,
        random_replace_prob=1.0,
        seed=0,
        return_tensors="np",
    )
    ids = collate(rows)["input_ids"].ravel()
    assert ids.min() >= 0
    assert ids.max() < vocab
    counts = np.bincount(ids, minlength=vocab)
    expected = ids.size / vocab
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < vocab + 5 * np.sqrt(2 * vocab)  # a chi-square test at about 5 sigma
    assert (ids[:-1] != ids[1:]).mean() > 0.99  # neighbours are drawn independently


@pytest.mark.parametrize(("replace", "random"), [(0.8, 0.1), (0.5, 0.5), (0.0, 0.0), (0.3, 1e-9)])
def test_masked_lm_splits_chosen_tokens_in_the_given_shares(
    wordpiece_tokenizer: Any, replace: float, random: float
) -> None:
    rows = [{"input_ids": [7] * 200} for _ in range(100)]
    batch = MaskedLMCollator(
        wordpiece_tokenizer,
        mlm_probability=0.5,
        mask_replace_prob=replace,
        random_replace_prob=random,
        seed=1,
        return_tensors="np",
    )(rows)
    chosen = batch["labels"] != -100
    assert 0.48 < chosen.mean() < 0.52
    picked = batch["input_ids"][chosen]
    masked = (picked == wordpiece_tokenizer.mask_token_id).mean()
    unchanged = (picked == 7).mean()
    assert abs(masked - replace) < 0.02
    assert abs(unchanged - (1 - replace - random)) < 0.02 + 1 / len(wordpiece_tokenizer)
    assert (batch["input_ids"][~chosen] == 7).all()


def test_masked_lm_a_draw_at_the_choice_threshold_changes_nothing(
    wordpiece_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0.14 * 0.9 + 0.14 * 0.1 rounds above 0.14: a draw of exactly 0.14 is not chosen, so it must stay as it is."""

    class AtThreshold:
        def random(self, shape: Any) -> np.ndarray:
            return np.full(shape, 0.14)

    collate = MaskedLMCollator(
        wordpiece_tokenizer,
        mlm_probability=0.14,
        mask_replace_prob=0.9,
        random_replace_prob=0.1,
        seed=0,
        return_tensors="np",
    )
    assert 0.14 * 0.9 + 0.14 * 0.1 > 0.14
    monkeypatch.setattr(collate, "_rng", lambda ids: AtThreshold())
    batch = collate([{"input_ids": [10, 11, 12, 13]}])
    assert batch["labels"].tolist() == [[-100] * 4]
    assert batch["input_ids"].tolist() == [[10, 11, 12, 13]]
