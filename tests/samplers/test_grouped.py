"""LengthGroupedBatchSampler and RandomBatchSampler: coverage, grouping, batch shuffle, options, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.samplers import LengthGroupedBatchSampler, RandomBatchSampler
from tests.samplers.conftest import news_lengths


def _padding_share(lengths: np.ndarray, batches: list[list[int]]) -> float:
    padded = sum(len(b) * lengths[b].max() for b in batches)
    return 1 - sum(lengths[b].sum() for b in batches) / padded


def _adjacent_correlation(lengths: np.ndarray, batches: list[list[int]]) -> float:
    longest = np.array([lengths[b].max() for b in batches], dtype=float)
    return float(np.corrcoef(longest[:-1], longest[1:])[0, 1])


@pytest.mark.parametrize("n", [1, 31, 32, 33, 1000, 4097])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once_per_epoch(n: int, shuffle: bool) -> None:
    lengths = news_lengths(n)
    sampler = LengthGroupedBatchSampler(lengths, 32, shuffle=shuffle, megabatch_mult=4)
    batches = list(sampler)
    assert len(batches) == len(sampler) == -(-n // 32)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert sum(len(b) < 32 for b in batches) == (n % 32 != 0)


def test_drop_last_keeps_only_full_batches() -> None:
    sampler = LengthGroupedBatchSampler(news_lengths(1000), 32, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 31
    assert all(len(b) == 32 for b in batches)
    assert len({i for b in batches for i in b}) == 31 * 32


def test_news_lengths_pad_little_and_batches_are_uncorrelated() -> None:
    lengths = news_lengths(60_000)
    batches = list(LengthGroupedBatchSampler(lengths, 32, seed=1))
    assert _padding_share(lengths, batches) <= 0.02
    assert abs(_adjacent_correlation(lengths, batches)) <= 0.2
    random_batches = list(RandomBatchSampler(len(lengths), 32))
    assert _padding_share(lengths, random_batches) > 0.3


def test_batches_are_sorted_within_megabatches() -> None:
    lengths = news_lengths(4000)
    sampler = LengthGroupedBatchSampler(lengths, 10, megabatch_mult=5, shuffle=True)
    for batch in sampler:
        assert list(lengths[batch]) == sorted(lengths[batch], reverse=True)
    ranges = [np.ptp(lengths[b]) for b in sampler]
    random_ranges = [np.ptp(lengths[b]) for b in RandomBatchSampler(4000, 10)]
    assert np.mean(ranges) < 0.3 * np.mean(random_ranges)


def test_no_shuffle_sorts_longest_first() -> None:
    lengths = news_lengths(500)
    batches = list(LengthGroupedBatchSampler(lengths, 10, shuffle=False))
    flat = lengths[[i for b in batches for i in b]]
    assert np.all(np.diff(flat) <= 0)


def test_longest_first_puts_the_longest_batch_first() -> None:
    lengths = news_lengths(3000)
    lengths[1234] = 999
    for epoch in range(3):
        sampler = LengthGroupedBatchSampler(lengths, 16, longest_first=True)
        sampler.set_epoch(epoch)
        assert 1234 in next(iter(sampler))


def test_accepts_lists_tensors_and_float_integers() -> None:
    ref = list(LengthGroupedBatchSampler([5, 3, 9, 1], 2))
    assert list(LengthGroupedBatchSampler(torch.tensor([5, 3, 9, 1]), 2)) == ref
    assert list(LengthGroupedBatchSampler(np.array([5.0, 3.0, 9.0, 1.0]), 2)) == ref


def test_random_batch_sampler_covers_everything() -> None:
    sampler = RandomBatchSampler(100, 8, drop_last=False)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 13
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert [i for b in RandomBatchSampler(10, 3, shuffle=False) for i in b] == list(range(10))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lengths": [], "batch_size": 2}, ValueError, "`lengths` must not be empty"),
        ({"lengths": [[1, 2]], "batch_size": 2}, ValueError, r"`lengths` must be 1-D"),
        ({"lengths": [1, -2], "batch_size": 2}, ValueError, "`lengths` must be non-negative; got -2"),
        ({"lengths": ["a"], "batch_size": 2}, TypeError, "`lengths` must hold integers"),
        ({"lengths": [1.5], "batch_size": 2}, TypeError, "`lengths` must hold integers"),
        ({"lengths": [1, 2], "batch_size": 0}, ValueError, "`batch_size` must be a positive integer; got 0"),
        ({"lengths": [1, 2], "batch_size": 2.0}, TypeError, "`batch_size` must be a positive integer"),
        ({"lengths": [1, 2], "batch_size": 2, "megabatch_mult": 0}, ValueError, "`megabatch_mult`"),
        ({"lengths": [1, 2], "batch_size": 2, "shuffle": 1}, TypeError, "`shuffle` must be bool"),
        ({"lengths": [1, 2], "batch_size": 2, "seed": -1}, ValueError, "`seed` must be a non-negative"),
        ({"lengths": [1, 2], "batch_size": 2, "uneven": "even"}, ValueError, "`uneven` must be one of 'pad'"),
        ({"lengths": [1, 2], "batch_size": 2, "num_replicas": 2, "rank": 2}, ValueError, r"`rank` must be"),
        ({"lengths": [1, 2], "batch_size": 3, "drop_last": True}, ValueError, "no batch would be full"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LengthGroupedBatchSampler(**kwargs)


def test_set_epoch_rejects_negative() -> None:
    with pytest.raises(ValueError, match="`epoch` must be a non-negative integer; got -1"):
        LengthGroupedBatchSampler([1, 2], 1).set_epoch(-1)
