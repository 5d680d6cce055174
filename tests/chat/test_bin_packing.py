"""Best-fit-decreasing bins: every row once, no bin over capacity, close to the fewest bins; exact resume."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hfbridge.samplers import BinPackingBatchSampler, best_fit_decreasing


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 100), min_size=1, max_size=300), capacity=st.integers(100, 400))
def test_bins_hold_every_row_once_within_capacity(lengths: list[int], capacity: int) -> None:
    bins = best_fit_decreasing(np.array(lengths), capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    # best fit: no two bins could be merged (then one bin would have taken the other's first item)
    loads = sorted(sum(lengths[i] for i in b) for b in bins)
    assert len(loads) < 2 or loads[0] + loads[1] > capacity


def test_long_tail_packs_near_the_lower_bound() -> None:
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.lognormal(5, 0.8, 20_000).astype(int) + 1, 2048)
    bins = best_fit_decreasing(lengths, 2048)
    assert len(bins) <= math.ceil(lengths.sum() / 2048) * 1.01


def test_too_long_row_is_named() -> None:
    with pytest.raises(ValueError, match="row 1 has 9 tokens, more than 8"):
        best_fit_decreasing(np.array([3, 9]), 8)


def test_epochs_shuffle_bins_deterministically() -> None:
    lengths = np.random.default_rng(1).integers(1, 50, 400)
    a = BinPackingBatchSampler(lengths, 100, seed=5)
    b = BinPackingBatchSampler(lengths, 100, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    epoch1 = list(a)
    assert epoch1 == list(b)
    a.set_epoch(0)
    assert list(a) != epoch1
    assert sorted(i for batch in epoch1 for i in batch) == list(range(400))
    assert all(lengths[batch].sum() <= 100 for batch in epoch1)
    assert 0 <= a.padding_share < 0.05


@pytest.mark.parametrize("position", [0, 1, 7, 20])
def test_resume_yields_exactly_the_rest(position: int) -> None:
    lengths = np.random.default_rng(2).integers(1, 60, 500)
    sampler = BinPackingBatchSampler(lengths, 128, bins_per_batch=3, seed=9)
    sampler.set_epoch(2)
    full = list(sampler)
    saving = BinPackingBatchSampler(lengths, 128, bins_per_batch=3, seed=9)
    saving.set_epoch(2)
    it = iter(saving)
    for _ in range(position):
        next(it)
    state = saving.state_dict()
    fresh = BinPackingBatchSampler(lengths, 128, bins_per_batch=3, seed=9)
    fresh.load_state_dict(state)
    assert fresh.epoch == 2
    assert list(fresh) == full[position:]
    assert list(fresh) == full  # the next epoch pass starts from 0 again


def test_ranks_split_the_batches() -> None:
    lengths = np.random.default_rng(3).integers(1, 60, 300)
    ranks = [BinPackingBatchSampler(lengths, 128, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1])
    seen = [i for r in ranks for batch in r for i in batch]
    assert set(seen) == set(range(300))


def test_state_of_another_configuration_is_refused() -> None:
    lengths = np.arange(1, 50)
    state = BinPackingBatchSampler(lengths, 100).state_dict()
    with pytest.raises(ValueError, match="configured differently"):
        BinPackingBatchSampler(lengths, 90).load_state_dict(state)
    with pytest.raises(ValueError, match="saved by a 'Other'"):
        BinPackingBatchSampler(lengths, 100).load_state_dict({**state, "sampler": "Other"})
    with pytest.raises(ValueError, match=r"`state\['position'\]` must be <="):
        BinPackingBatchSampler(lengths, 100).load_state_dict({**state, "position": 10_000})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 10, "rank": 2, "num_replicas": 2}, "rank"),
        ({"max_tokens": 10, "bins_per_batch": 0}, "bins_per_batch"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BinPackingBatchSampler(np.array([1, 2]), **kwargs)
