"""The weighted order without replacement: cuts of the key axis and the work of one interval, for any weights."""

from __future__ import annotations

import numpy as np
import pytest

from hfbridge.samplers import _weighted_order
from hfbridge.samplers._key_cuts import expected_keys, key_cuts
from hfbridge.samplers._weighted_order import WeightedOrder

SINGLETONS_AND_ONE_BIG = np.concatenate([np.arange(900_000), np.full(100_000, 900_000)])


def _groups(labels: np.ndarray, power: float) -> tuple[np.ndarray, np.ndarray]:
    order = WeightedOrder(labels, power)
    return order._sizes, order._weights


@pytest.mark.parametrize(
    ("sizes", "log_weights", "intervals"),
    [
        ([900_000, 100_000], [0.0, -115.1], 123),  # 1-row classes and one of 1e5 rows, power 10
        ([200_000, 800_000], [0.0, -600.0], 123),  # the weight floor: e^-600
        (np.arange(1, 4472), -np.log(np.arange(1, 4472)), 1221),  # 10M rows in 4471 distinct class sizes
        (np.arange(1, 1414), -5 * np.log(np.arange(1, 1414)), 122),
        ([10**6], [0.0], 123),  # uniform
    ],
    ids=["power-10", "weight-floor", "4471-sizes", "1413-sizes-power-5", "uniform"],
)
def test_cuts_give_every_interval_its_share_of_expected_keys(
    sizes: list[int], log_weights: list[float], intervals: int
) -> None:
    sizes_array = np.asarray(sizes, dtype=np.int64)
    weights = np.exp(np.asarray(log_weights))
    cuts = key_cuts(sizes_array, weights, intervals)
    assert len(cuts) == intervals - 1
    assert cuts[0] > 0
    assert (np.diff(cuts) > 0).all()
    expected = np.diff(
        np.append(expected_keys(np.append(0.0, cuts), sizes_array, weights), sizes_array.sum())
    )
    share = sizes_array.sum() / intervals
    assert np.abs(expected / share - 1).max() < 0.1, (expected.min(), expected.max(), share)


@pytest.mark.parametrize(
    ("labels", "power", "interval"),
    [
        (SINGLETONS_AND_ONE_BIG, 10.0, 8192),  # used to put all 900k 1-row keys in one interval
        (SINGLETONS_AND_ONE_BIG, 50.0, 8192),
        (
            np.repeat(np.arange(600), np.arange(1, 601)),
            1.0,
            256,
        ),  # 600 distinct sizes: a table capped per epoch
        (np.repeat(np.arange(300), np.arange(1, 301)), 8.0, 64),  # many sizes, weights over 45 nats
    ],
    ids=["power-10", "power-50", "600-sizes", "300-sizes-power-8"],
)
def test_no_interval_holds_much_more_than_its_share(
    monkeypatch: pytest.MonkeyPatch, labels: np.ndarray, power: float, interval: int
) -> None:
    monkeypatch.setattr(_weighted_order, "_INTERVAL", interval)
    order = WeightedOrder(labels, power)
    assert order.intervals == -(-len(labels) // interval)
    for epoch in range(2):
        keys = order.interval_counts(0, epoch).sum(axis=1)  # the drawn keys of each interval
        assert keys.sum() == len(labels)
        assert keys.max() <= 1.1 * interval + 5 * np.sqrt(interval), keys.max()


def test_random_access_in_any_order_is_the_sequential_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_weighted_order, "_INTERVAL", 32)
    labels = np.repeat(np.arange(40), np.arange(1, 41))  # 820 rows, 40 distinct sizes, 26 intervals
    sequential = WeightedOrder(labels, 1.0)
    whole = np.concatenate([sequential(4, 1, np.arange(i, min(i + 50, 820))) for i in range(0, 820, 50)])
    assert sorted(whole.tolist()) == list(range(820))
    shuffled = np.random.default_rng(0).permutation(820)
    for split in np.array_split(shuffled, 7):  # a fresh order, jumping back and forth over the tree
        assert np.array_equal(WeightedOrder(labels, 1.0)(4, 1, split), whole[split])
    jumping = WeightedOrder(labels, 1.0)
    for position in shuffled[
        :60
    ].tolist():  # one order kept across jumps: its path and caches stay consistent
        assert jumping(4, 1, np.array([position]))[0] == whole[position]
