"""Cursor: the one implementation of epoch/position bookkeeping that every sampler delegates to."""

from __future__ import annotations

import pytest

from hfbridge.samplers import BatchedSampler, ClassBalancedSampler, LengthGroupedBatchSampler
from hfbridge.samplers._state import Cursor


def test_cursor_keeps_a_loaded_position_for_its_epoch_only() -> None:
    cursor = Cursor()
    state = cursor.state("S", "fp", seed=4)
    assert state == {"sampler": "S", "fingerprint": "fp", "seed": 4, "epoch": 0, "position": 0}
    cursor.resume(2, 5, limit=10)
    cursor.set_epoch(2)  # same epoch: the loaded position stays
    assert cursor.next_position == 5
    assert cursor.state("S", "fp", 4)["position"] == 5
    assert cursor.start() == 5
    assert cursor.next_position == 0  # consumed
    cursor.yielded = 7
    assert cursor.state("S", "fp", 4) == {
        "sampler": "S",
        "fingerprint": "fp",
        "seed": 4,
        "epoch": 2,
        "position": 7,
    }
    assert cursor.position(3) == 3
    cursor.set_epoch(3)
    assert (cursor.epoch, cursor.yielded, cursor.next_position) == (3, 0, 0)
    assert cursor.load({**state, "epoch": 1, "position": 9, "seed": 8}, "S", "fp", limit=9) == 8
    assert (cursor.epoch, cursor.next_position) == (1, 9)
    with pytest.raises(ValueError, match=r"position.*<= 9"):
        cursor.resume(1, 10, limit=9)
    with pytest.raises(ValueError, match="epoch"):
        cursor.set_epoch(-1)


def test_every_sampler_delegates_to_a_cursor() -> None:
    inner = ClassBalancedSampler([0, 1, 1, 2] * 10)
    for sampler in (LengthGroupedBatchSampler([3, 5, 7] * 10, 4), inner, BatchedSampler(inner, 4)):
        assert isinstance(sampler._cursor, Cursor)


def test_batched_sampler_refuses_a_position_past_the_epoch() -> None:
    sampler = BatchedSampler(ClassBalancedSampler([0, 1, 1, 2] * 10), 4)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match=r"position.*<= 10"):
        sampler.load_state_dict({**state, "position": 11})
