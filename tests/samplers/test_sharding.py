"""Rank sharding with explicit num_replicas/rank: equal counts, disjoint shares, exact evaluation mode."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from hfbridge.samplers import (
    BatchedSampler,
    ClassBalancedSampler,
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
)
from tests.samplers.conftest import news_lengths

LENGTHS = news_lengths(1001, seed=7)

MAKERS: dict[str, Callable[..., Any]] = {
    "grouped": lambda **kw: LengthGroupedBatchSampler(LENGTHS, 16, **kw),
    "tokens": lambda **kw: TokenBudgetBatchSampler(LENGTHS, 700, **kw),
    "random": lambda **kw: RandomBatchSampler(len(LENGTHS), 10, **kw),
    "balanced": lambda **kw: BatchedSampler(
        ClassBalancedSampler(np.arange(1001) % 3, replacement=False, **kw), 4
    ),
}


def _rows(sampler: Any) -> list[int]:
    return [i for b in sampler for i in b]


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("world", [2, 3, 4])
def test_pad_gives_equal_counts_and_covers_everything(name: str, world: int) -> None:
    shares = [list(MAKERS[name](num_replicas=world, rank=r, seed=1)) for r in range(world)]
    assert len({len(s) for s in shares}) == 1
    assert {len(s) for s in shares} == {len(MAKERS[name](num_replicas=world, rank=0, seed=1))}
    assert sorted({i for s in shares for b in s for i in b}) == list(range(len(LENGTHS)))


@pytest.mark.parametrize("name", ["grouped", "tokens", "random"])
@pytest.mark.parametrize("world", [2, 3])
def test_drop_gives_equal_disjoint_shares(name: str, world: int) -> None:
    shares = [_rows(MAKERS[name](num_replicas=world, rank=r, uneven="drop")) for r in range(world)]
    lengths = {len(MAKERS[name](num_replicas=world, rank=r, uneven="drop")) for r in range(world)}
    assert len(lengths) == 1
    counts = Counter(i for s in shares for i in s)
    assert max(counts.values()) == 1


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("world", [2, 3, 5])
def test_exact_mode_yields_each_row_once_over_ranks(name: str, world: int) -> None:
    rows = [i for r in range(world) for i in _rows(MAKERS[name](num_replicas=world, rank=r, uneven="exact"))]
    assert sorted(rows) == list(range(len(LENGTHS)))


def test_ranks_agree_on_the_epoch_plan_and_follow_set_epoch() -> None:
    a = LengthGroupedBatchSampler(LENGTHS, 16, num_replicas=2, rank=0)
    b = LengthGroupedBatchSampler(LENGTHS, 16, num_replicas=2, rank=1)
    for epoch in range(3):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        share_a, share_b = set(_rows(a)), set(_rows(b))
        assert len(share_a & share_b) <= 16  # only the padding batch repeats
        assert share_a | share_b == set(range(len(LENGTHS)))
