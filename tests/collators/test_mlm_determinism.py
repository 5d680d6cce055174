"""Masked-LM masks are a pure function of (seed, epoch, rank, batch): exact resume, set_seed, ranks, threads."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

import hfbridge.collators._masked_lm as masked_lm_module
from hfbridge.collators import MaskedLMCollator
from tests.collators.conftest import encode


@pytest.fixture(scope="module")
def rows(wordpiece_tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
    return encode(wordpiece_tokenizer, texts * 4)  # 36 rows


def batches(rows: list[dict[str, Any]], size: int = 6) -> list[list[dict[str, Any]]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def test_same_batch_same_epoch_same_mask_whatever_came_before(
    wordpiece_tokenizer: Any, rows: list[dict[str, Any]]
) -> None:
    """What a resumed run sees: a fresh collator masks batch k exactly as one that collated batches 0..k-1."""
    parts = batches(rows)
    uninterrupted = MaskedLMCollator(wordpiece_tokenizer, seed=7)
    uninterrupted.set_epoch(2)
    expected = [uninterrupted(part) for part in parts]
    resumed = MaskedLMCollator(wordpiece_tokenizer, seed=7)
    resumed.set_epoch(2)
    for k in (3, 1, 4):  # any order, any starting point
        got = resumed(parts[k])
        assert torch.equal(got["input_ids"], expected[k]["input_ids"])
        assert torch.equal(got["labels"], expected[k]["labels"])
    clone = pickle.loads(pickle.dumps(uninterrupted))  # as a DataLoader worker gets it
    assert torch.equal(clone(parts[5])["labels"], expected[5]["labels"])
    assert any((e["labels"] != -100).any() for e in expected)


def test_masks_differ_across_epochs_batches_and_rows(
    wordpiece_tokenizer: Any, rows: list[dict[str, Any]]
) -> None:
    collate = MaskedLMCollator(wordpiece_tokenizer, seed=0, mlm_probability=0.3, return_tensors="np")
    first = collate(rows)["labels"]
    collate.set_epoch(1)
    second = collate(rows)["labels"]
    assert not np.array_equal(first, second)
    collate.set_epoch(0)
    assert np.array_equal(collate(rows)["labels"], first)  # back to epoch 0, back to its masks
    same = collate([rows[6]] * 16)["labels"]
    assert len({row.tobytes() for row in same}) > 1  # identical rows within a batch still mask differently


def test_seed_none_follows_torch_manual_seed_and_set_seed(
    wordpiece_tokenizer: Any, rows: list[dict[str, Any]]
) -> None:
    from transformers import set_seed

    def masks_after(seeding: Any) -> torch.Tensor:
        seeding()
        return MaskedLMCollator(wordpiece_tokenizer)(rows)["labels"]  # seed=None: torch.initial_seed()

    state = torch.random.get_rng_state()
    try:
        a = masks_after(lambda: torch.manual_seed(123))
        assert torch.equal(a, masks_after(lambda: torch.manual_seed(123)))
        assert not torch.equal(a, masks_after(lambda: torch.manual_seed(124)))
        b = masks_after(lambda: set_seed(42))
        assert torch.equal(b, masks_after(lambda: set_seed(42)))
        assert torch.equal(b, MaskedLMCollator(wordpiece_tokenizer, seed=42)(rows)["labels"])
        torch.manual_seed(123)
        built = MaskedLMCollator(wordpiece_tokenizer)
        torch.manual_seed(999)  # reseeding after construction changes nothing: the seed is read once
        assert torch.equal(built(rows)["labels"], a)
    finally:
        torch.random.set_rng_state(state)


def test_rank_changes_the_mask_and_is_pinned_for_spawned_workers(
    wordpiece_tokenizer: Any, rows: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    collate = MaskedLMCollator(wordpiece_tokenizer, seed=5)
    rank0 = collate(rows)["labels"]
    monkeypatch.setattr(masked_lm_module, "get_world_size", lambda: 2)
    monkeypatch.setattr(masked_lm_module, "get_rank", lambda: 1)
    rank1 = collate(rows)["labels"]
    assert not torch.equal(rank0, rank1)
    spawned = pickle.dumps(collate)  # pickled on rank 1 for a spawned worker, which has no process group
    monkeypatch.setattr(masked_lm_module, "get_rank", lambda: 0)
    assert torch.equal(pickle.loads(spawned)(rows)["labels"], rank1)
    assert torch.equal(collate(rows)["labels"], rank0)  # the live collator asks for the rank each call


def test_threads_share_a_collator_safely(wordpiece_tokenizer: Any, rows: list[dict[str, Any]]) -> None:
    collate = MaskedLMCollator(wordpiece_tokenizer, seed=1, whole_word_mask=True)
    parts = batches(rows, 4) * 3
    expected = [collate(part)["labels"] for part in parts]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda part: collate(part)["labels"], parts))
    assert all(torch.equal(a, b) for a, b in zip(got, expected))


def test_set_epoch_rejects_a_non_int(wordpiece_tokenizer: Any) -> None:
    with pytest.raises(TypeError, match="`epoch` must be"):
        MaskedLMCollator(wordpiece_tokenizer, seed=0).set_epoch("1")  # type: ignore[arg-type]


class _Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A map dataset with what ``build_dataloader(batching="random")`` needs."""

    def __init__(self, rows: list[dict[str, Any]], collator: MaskedLMCollator) -> None:
        self.rows, self.collator = rows, collator

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


@pytest.mark.parametrize("num_workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_resumed_loader_masks_exactly_as_an_uninterrupted_run(
    wordpiece_tokenizer: Any, rows: list[dict[str, Any]], num_workers: int
) -> None:
    """Resume mid-epoch at an odd batch, so with 2 workers every later batch lands on the other worker."""
    samplers = pytest.importorskip("hfbridge.samplers")

    def loader() -> Any:
        data = _Rows(rows, MaskedLMCollator(wordpiece_tokenizer, seed=11))
        built = samplers.build_dataloader(
            data, batch_size=6, batching="random", seed=3, num_workers=num_workers
        )
        built.set_epoch(1)
        data.collator.set_epoch(1)
        return built

    full = loader()
    expected = [batch["input_ids"] for batch in full]
    interrupted = loader()
    it = iter(interrupted)
    head = [next(it)["input_ids"] for _ in range(3)]
    state = interrupted.state_dict()
    del it
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [batch["input_ids"] for batch in resumed]
    assert len(expected) == 6
    assert len(head) + len(tail) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(head + tail, expected))


def test_one_changed_token_or_a_reshaped_batch_gets_another_mask(wordpiece_tokenizer: Any) -> None:
    """The batch fingerprint sees every token and the shape: same ids laid out [2, 8] or [4, 4] differ too."""
    collate = MaskedLMCollator(wordpiece_tokenizer, seed=0, mlm_probability=0.5, return_tensors="np")
    ids = list(range(10, 26))
    wide = [{"input_ids": ids[:8]}, {"input_ids": ids[8:]}]
    tall = [{"input_ids": ids[i : i + 4]} for i in range(0, 16, 4)]
    assert not np.array_equal(collate(wide)["labels"].ravel(), collate(tall)["labels"].ravel())
    base = collate(wide)["labels"]
    for position in (0, 7, 15):
        changed = [dict(row) for row in wide]
        row, col = divmod(position, 8)
        changed[row]["input_ids"] = [*changed[row]["input_ids"]]
        changed[row]["input_ids"][col] += 1
        assert not np.array_equal((collate(changed)["labels"] != -100), (base != -100)), position


def test_a_batch_of_over_65536_tokens_is_masked_reproducibly(wordpiece_tokenizer: Any) -> None:
    rng = np.random.default_rng(0)
    big = [{"input_ids": rng.integers(10, 290, 300).tolist()} for _ in range(230)]  # 69,000 tokens
    a = MaskedLMCollator(wordpiece_tokenizer, seed=3, return_tensors="np")(big)
    b = MaskedLMCollator(wordpiece_tokenizer, seed=3, return_tensors="np")(big)
    assert np.array_equal(a["labels"], b["labels"])
    assert np.array_equal(a["input_ids"], b["input_ids"])
    share = (a["labels"] != -100).mean()
    assert 0.13 < share < 0.17


def test_batch_seed_is_a_pure_splitmix_stream_of_its_key() -> None:
    """The per-batch seed: same key, same words (in both widths); another key, other words; a clear dtype error."""
    seed = masked_lm_module.BatchSeed(12345)
    wide = seed.generate_state(4, np.uint64)
    assert wide.dtype == np.uint64
    assert wide.tolist() == seed.generate_state(4, np.uint64).tolist()
    assert seed.generate_state(3).tolist() == wide.view(np.uint32)[:3].tolist()
    assert len(set(wide.tolist())) == 4
    assert masked_lm_module.BatchSeed(12346).generate_state(4, np.uint64).tolist() != wide.tolist()
    first = np.random.Generator(np.random.PCG64(masked_lm_module.BatchSeed(7))).random(5)
    assert np.array_equal(
        first, np.random.Generator(np.random.PCG64(masked_lm_module.BatchSeed(7))).random(5)
    )
    with pytest.raises(ValueError, match="uint32 or uint64"):
        seed.generate_state(2, np.float64)
