"""One resume contract for every sampler: k batches, save, fresh sampler, load -> exactly the remaining batches."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from hfbridge.samplers import (
    BatchedSampler,
    BinPackingBatchSampler,
    BucketedIterable,
    ClassBalancedSampler,
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
)
from tests.samplers.conftest import FakeIterableAdapter, news_lengths

LENGTHS = news_lengths(1000, seed=3)
LABELS = np.arange(1000) % 4 + (np.arange(1000) % 7 == 0)

FACTORIES: dict[str, Callable[[], Any]] = {
    "grouped": lambda: LengthGroupedBatchSampler(LENGTHS, 16, seed=5),
    "grouped-drop-last": lambda: LengthGroupedBatchSampler(
        LENGTHS, 24, seed=5, drop_last=True, megabatch_mult=4
    ),
    # 125 megabatches: a resumed run sorts megabatches one by one, a full run sorts them all at once
    "grouped-small-megabatches": lambda: LengthGroupedBatchSampler(LENGTHS, 4, megabatch_mult=2, seed=9),
    "grouped-longest-first": lambda: LengthGroupedBatchSampler(LENGTHS, 16, longest_first=True),
    "grouped-rank1": lambda: LengthGroupedBatchSampler(LENGTHS, 8, num_replicas=3, rank=1),
    "tokens": lambda: TokenBudgetBatchSampler(LENGTHS, 512, seed=2),
    "tokens-rank0": lambda: TokenBudgetBatchSampler(LENGTHS, 256, num_replicas=2, rank=0, uneven="drop"),
    "random": lambda: RandomBatchSampler(1000, 16, seed=1),
    "balanced": lambda: ClassBalancedSampler(LABELS, seed=4),
    "balanced-no-replacement": lambda: ClassBalancedSampler(LABELS, replacement=False, num_samples=500),
    "balanced-batches": lambda: BatchedSampler(ClassBalancedSampler(LABELS, num_replicas=2, rank=1), 8),
    "bin-packing": lambda: BinPackingBatchSampler(LENGTHS, 512, bins_per_batch=2, seed=6),
    "bin-packing-rank1": lambda: BinPackingBatchSampler(LENGTHS, 256, num_replicas=2, rank=1, drop_last=True),
    "stream": lambda: BucketedIterable(FakeIterableAdapter(LENGTHS), batch_size=16, buffer_size=128, seed=3),
    "stream-tokens": lambda: BucketedIterable(FakeIterableAdapter(LENGTHS), max_tokens=400, buffer_size=100),
}


def _key(item: Any) -> Any:
    if isinstance(item, list) and item and isinstance(item[0], dict):
        return [row["row"] for row in item]
    return item


@pytest.mark.parametrize("name", list(FACTORIES))
@pytest.mark.parametrize("k", [0, 1, 7, 30])
@pytest.mark.parametrize("epoch", [0, 2])
def test_resume_yields_exactly_the_remaining_batches(name: str, k: int, epoch: int) -> None:
    reference = FACTORIES[name]()
    reference.set_epoch(epoch)
    full = [_key(b) for b in reference]
    assert len(full) > 30

    first = FACTORIES[name]()
    first.set_epoch(epoch)
    iterator = iter(first)
    seen = [_key(next(iterator)) for _ in range(k)]
    state = json.loads(json.dumps(first.state_dict()))  # plain python: survives JSON
    assert state["epoch"] == epoch
    assert state["position"] == k

    resumed = FACTORIES[name]()
    resumed.load_state_dict(state)
    resumed.set_epoch(epoch)  # a training loop calls this again after loading: it must keep the position
    rest = [_key(b) for b in resumed]
    assert seen + rest == full
    # the next epoch starts from the top again
    resumed.set_epoch(epoch + 1)
    reference.set_epoch(epoch + 1)
    assert [_key(b) for b in resumed] == [_key(b) for b in reference]


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_after_a_full_epoch_resumes_to_nothing(name: str) -> None:
    sampler = FACTORIES[name]()
    list(sampler)
    resumed = FACTORIES[name]()
    resumed.load_state_dict(sampler.state_dict())
    assert list(resumed) == []


@pytest.mark.parametrize("name", list(FACTORIES))
def test_epochs_differ_and_repeat(name: str) -> None:
    a, b = FACTORIES[name](), FACTORIES[name]()
    a.set_epoch(1)
    b.set_epoch(1)
    epoch1 = [_key(x) for x in a]
    assert epoch1 == [_key(x) for x in b]
    a.set_epoch(2)
    assert [_key(x) for x in a] != epoch1


def test_state_from_another_configuration_is_refused() -> None:
    state = LengthGroupedBatchSampler(LENGTHS, 16).state_dict()
    with pytest.raises(ValueError, match="configured differently"):
        LengthGroupedBatchSampler(LENGTHS, 32).load_state_dict(state)
    with pytest.raises(ValueError, match="configured differently"):
        LengthGroupedBatchSampler(LENGTHS[::-1], 16).load_state_dict(state)
    with pytest.raises(ValueError, match="configured differently"):
        LengthGroupedBatchSampler(LENGTHS, 16, num_replicas=2, rank=0).load_state_dict(state)
    with pytest.raises(ValueError, match="saved by a 'LengthGroupedBatchSampler'"):
        TokenBudgetBatchSampler(LENGTHS, 512).load_state_dict(state)
    with pytest.raises(ValueError, match="configured differently"):
        BucketedIterable(FakeIterableAdapter(LENGTHS), batch_size=8).load_state_dict(
            BucketedIterable(FakeIterableAdapter(LENGTHS), batch_size=16).state_dict()
        )


def test_state_from_another_rank_loads() -> None:
    """Every rank holds the same seed/epoch/position, so one saved state resumes all of them."""
    saver = LengthGroupedBatchSampler(LENGTHS, 16, num_replicas=2, rank=0)
    iterator = iter(saver)
    next(iterator)
    other = LengthGroupedBatchSampler(LENGTHS, 16, num_replicas=2, rank=1)
    other.load_state_dict(saver.state_dict())
    full = list(LengthGroupedBatchSampler(LENGTHS, 16, num_replicas=2, rank=1))
    assert list(other) == full[1:]


@pytest.mark.parametrize(
    ("state", "error", "match"),
    [
        ([1, 2], TypeError, "must be a dict"),
        ({"sampler": "LengthGroupedBatchSampler"}, ValueError, "missing keys"),
    ],
)
def test_malformed_state_is_refused(state: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        LengthGroupedBatchSampler(LENGTHS, 16).load_state_dict(state)


def test_bad_position_and_types_are_refused() -> None:
    sampler = LengthGroupedBatchSampler(LENGTHS, 16)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match=r"state\['position'\]` must be <= 63"):
        sampler.load_state_dict({**state, "position": 10_000})
    with pytest.raises(TypeError, match=r"state\['epoch'\]` must be a non-negative integer"):
        sampler.load_state_dict({**state, "epoch": "1"})


def test_loading_adopts_the_saved_seed() -> None:
    saver = LengthGroupedBatchSampler(LENGTHS, 16, seed=11)
    resumed = LengthGroupedBatchSampler(LENGTHS, 16, seed=0)
    resumed.load_state_dict(saver.state_dict())
    assert list(resumed) == list(LengthGroupedBatchSampler(LENGTHS, 16, seed=11))


MAP_SAMPLERS = [name for name in FACTORIES if not name.startswith("stream")]


@pytest.mark.parametrize("name", MAP_SAMPLERS)
@pytest.mark.parametrize(("epoch", "k"), [(0, 0), (1, 9), (3, 31)])
def test_seek_starts_at_batch_k_of_an_epoch(name: str, epoch: int, k: int) -> None:
    """What a trainer that knows only the epoch and the steps done in it calls on resume."""
    reference = FACTORIES[name]()
    reference.set_epoch(epoch)
    full = [_key(b) for b in reference]
    sampler = FACTORIES[name]()
    sampler.seek(epoch, k)
    sampler.set_epoch(epoch)  # a loop calls this again after seeking: it keeps the position
    assert (sampler.epoch, sampler.next_position) == (epoch, k)
    assert sampler.state_dict() == {**reference.state_dict(), "position": k}
    assert [_key(b) for b in sampler] == full[k:]
    with pytest.raises(ValueError, match=r"position.*<= " + str(len(sampler))):
        sampler.seek(epoch, len(sampler) + 1)


@pytest.mark.parametrize("name", MAP_SAMPLERS)
def test_a_resume_draws_the_epoch_once_and_never_walks_skipped_batches(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replay-free: loading a position and taking one batch draws the epoch once and steps once."""
    reference = FACTORIES[name]()
    full = [_key(b) for b in reference]
    sampler = FACTORIES[name]()
    inner = getattr(sampler, "sampler", sampler)
    draws: list[int] = []
    original = inner._schedule._draw
    monkeypatch.setattr(inner._schedule, "_draw", lambda s, e: draws.append(e) or original(s, e))
    sampler.load_state_dict({**reference.state_dict(), "position": 25})
    assert _key(next(iter(sampler))) == full[25]
    assert draws == [0]


@pytest.mark.parametrize("name", [n for n in FACTORIES if not n.startswith("stream")])
def test_epoch_and_position_are_read_only(name: str) -> None:
    # assigning would shadow the schedule's value while set_epoch() draws another epoch's order
    sampler = FACTORIES[name]()
    sampler.set_epoch(2)
    for attr in ("epoch", "next_position"):
        with pytest.raises(AttributeError, match=attr):
            setattr(sampler, attr, 3)
    assert sampler.epoch == 2
    assert sampler.next_position == 0
