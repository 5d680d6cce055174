"""TokenBudgetBatchSampler: budget never exceeded, deterministic length, oversized rows, options."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

from hfbridge.samplers import TokenBudgetBatchSampler
from tests.samplers.conftest import news_lengths


def _padded(n: int, multiple: int | None) -> int:
    return n if multiple is None else -(-n // multiple) * multiple


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("max_tokens", "max_batch_size", "multiple"), [(300, None, None), (1000, 7, 8), (257, 64, 64)]
)
def test_budget_is_never_exceeded_and_every_index_once(
    seed: int, max_tokens: int, max_batch_size: int | None, multiple: int | None
) -> None:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 250, size=int(rng.integers(1, 800)))
    sampler = TokenBudgetBatchSampler(
        lengths, max_tokens, max_batch_size=max_batch_size, pad_to_multiple_of=multiple, seed=seed
    )
    for epoch in range(2):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(batches), "no empty batch"
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        for batch in batches:
            assert len(batch) * _padded(int(lengths[batch].max()), multiple) <= max_tokens
            assert max_batch_size is None or len(batch) <= max_batch_size


def test_length_is_the_same_every_epoch_and_batches_are_full() -> None:
    lengths = news_lengths(20_000)
    sampler = TokenBudgetBatchSampler(lengths, 2048)
    counts = set()
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        counts.add(len(batches))
        used = sum(len(b) * lengths[b].max() for b in batches)
        assert used / (2048 * len(batches)) > 0.9  # the budget is well used
    assert counts == {len(sampler)}


def test_oversized_rows_get_their_own_batch_with_a_warning() -> None:
    lengths = [10, 500, 20, 30, 600]
    with pytest.warns(UserWarning, match=r"2 row\(s\) are longer than `max_tokens`=100"):
        sampler = TokenBudgetBatchSampler(lengths, 100)
    batches = list(sampler)
    assert [1] in batches
    assert [4] in batches
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3, 4]


def test_oversized_rows_raise_when_asked() -> None:
    with pytest.raises(ValueError, match=r"longer than `max_tokens`=100 after padding \(e.g. row 1 with 500"):
        TokenBudgetBatchSampler([10, 500], 100, oversized="error")


def test_pad_to_multiple_of_counts_in_the_budget() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(TokenBudgetBatchSampler([9] * 10, 32, pad_to_multiple_of=8, shuffle=False))
    assert [len(b) for b in batches] == [2] * 5  # 9 pads to 16: two rows per 32 tokens


def test_no_shuffle_is_longest_first() -> None:
    lengths = news_lengths(300)
    batches = list(TokenBudgetBatchSampler(lengths, 500, shuffle=False))
    longest = [lengths[b].max() for b in batches]
    assert longest == sorted(longest, reverse=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_tokens": 0}, ValueError, "`max_tokens` must be a positive integer; got 0"),
        ({"max_tokens": "1"}, TypeError, "`max_tokens` must be a positive integer"),
        ({"max_tokens": 10, "max_batch_size": 0}, ValueError, "`max_batch_size`"),
        ({"max_tokens": 10, "pad_to_multiple_of": -8}, ValueError, "`pad_to_multiple_of`"),
        ({"max_tokens": 10, "oversized": "skip"}, ValueError, "`oversized` must be one of 'warn', 'error'"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        TokenBudgetBatchSampler([1, 2, 3], **kwargs)


def test_ties_are_shuffled_per_epoch_with_the_same_cut() -> None:
    lengths = np.array([40] * 500 + [20] * 500)
    sampler = TokenBudgetBatchSampler(lengths, 400, seed=0)
    epochs = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(1000))
        assert all(len(b) * lengths[b].max() <= 400 for b in batches)
        epochs.append({frozenset(b) for b in batches})
    assert len(epochs[0]) == len(epochs[1])
    assert epochs[0] != epochs[1]  # same sizes, different rows: ties were broken differently
    unshuffled = list(TokenBudgetBatchSampler(lengths, 400, shuffle=False))
    assert unshuffled[0] == list(range(10))  # no shuffle: stable, longest first
