"""Cursor and shard_positions: the epoch/position bookkeeping and rank shares every sampler uses."""

from __future__ import annotations

import pytest

from hfbridge.samplers import BatchedSampler, ClassBalancedSampler
from hfbridge.samplers._state import Cursor, check_state, make_state, shard_len, shard_positions


def test_cursor_keeps_a_loaded_position_for_its_epoch_only() -> None:
    cursor = Cursor()
    assert (cursor.epoch, cursor.position()) == (0, 0)
    cursor.resume(2, 5, limit=10)
    cursor.set_epoch(2)  # same epoch: the loaded position stays
    assert cursor.next_position == 5
    assert cursor.position() == 5
    assert cursor.start() == 5
    assert cursor.next_position == 0  # consumed
    cursor.yielded = 7
    assert (cursor.epoch, cursor.position()) == (2, 7)
    assert cursor.position(3) == 3
    cursor.set_epoch(3)
    assert (cursor.epoch, cursor.yielded, cursor.next_position) == (3, 0, 0)
    cursor.resume(1, 9, limit=9)
    assert (cursor.epoch, cursor.next_position) == (1, 9)
    with pytest.raises(ValueError, match=r"position.*<= 9"):
        cursor.resume(1, 10, limit=9)
    with pytest.raises(ValueError, match="epoch"):
        cursor.set_epoch(-1)


def test_make_state_and_check_state_round_trip() -> None:
    state = make_state("S", "fp", seed=4, epoch=2, position=7)
    assert state == {"sampler": "S", "fingerprint": "fp", "seed": 4, "epoch": 2, "position": 7}
    assert check_state(state, "S", "fp") == (4, 2, 7)
    with pytest.raises(ValueError, match="fingerprint"):
        check_state(state, "S", "other")


@pytest.mark.parametrize("uneven", ["pad", "drop", "exact"])
@pytest.mark.parametrize(("num_items", "world"), [(10, 3), (9, 3), (2, 4), (1, 1)])
def test_shard_positions_interleave_and_match_shard_len(num_items: int, world: int, uneven: str) -> None:
    shares = [shard_positions(num_items, world, rank, uneven).tolist() for rank in range(world)]
    assert [len(share) for share in shares] == [shard_len(num_items, world, r, uneven) for r in range(world)]
    together = sorted(p for share in shares for p in share)
    if uneven == "exact":
        assert together == list(range(num_items))
    elif uneven == "drop":
        assert together == list(range(num_items - num_items % world))
    else:
        assert set(together) == set(range(num_items))
        assert len({len(share) for share in shares}) == 1


def test_batched_sampler_refuses_a_position_past_the_epoch() -> None:
    sampler = BatchedSampler(ClassBalancedSampler([0, 1, 1, 2] * 10), 4)
    state = sampler.state_dict()
    with pytest.raises(ValueError, match=r"position.*<= 10"):
        sampler.load_state_dict({**state, "position": 11})
