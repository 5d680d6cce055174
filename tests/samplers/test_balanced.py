"""ClassBalancedSampler and BatchedSampler."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from hfbridge.samplers import BatchedSampler, ClassBalancedSampler
from hfbridge.samplers._state import ORDER_VERSION, fingerprint

LABELS = np.array([0] * 900 + [1] * 90 + [2] * 10)


def test_with_replacement_balances_classes() -> None:
    drawn = np.array(list(ClassBalancedSampler(LABELS, num_samples=30_000, seed=1)))
    share = np.bincount(LABELS[drawn], minlength=3) / len(drawn)
    np.testing.assert_allclose(share, [1 / 3] * 3, atol=0.02)


def test_power_zero_is_uniform_and_half_is_in_between() -> None:
    uniform = np.array(list(ClassBalancedSampler(LABELS, num_samples=20_000, power=0.0)))
    assert abs(np.mean(LABELS[uniform] == 0) - 0.9) < 0.02
    half = np.array(list(ClassBalancedSampler(LABELS, num_samples=20_000, power=0.5)))
    assert 1 / 3 < np.mean(LABELS[half] == 0) < 0.9


def test_without_replacement_every_index_once_rare_classes_early() -> None:
    sampler = ClassBalancedSampler(LABELS, replacement=False, seed=2)
    drawn = list(sampler)
    assert sorted(drawn) == list(range(len(LABELS)))
    first = LABELS[drawn[:100]]
    assert np.mean(first == 2) > 0.05  # 1% of the data, far more than 1% of the first draws


def test_without_replacement_subset_is_unique() -> None:
    drawn = list(ClassBalancedSampler(LABELS, replacement=False, num_samples=60))
    assert len(set(drawn)) == 60
    assert np.bincount(LABELS[drawn], minlength=3).min() >= 5


def test_batched_sampler_groups_and_drops() -> None:
    inner = ClassBalancedSampler(LABELS, num_samples=100)
    assert [len(b) for b in BatchedSampler(inner, 32)] == [32, 32, 32, 4]
    assert len(BatchedSampler(inner, 32, drop_last=True)) == 3
    assert [len(b) for b in BatchedSampler(inner, 32, drop_last=True)] == [32, 32, 32]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_samples": 0}, ValueError, "`num_samples` must be a positive integer"),
        (
            {"replacement": False, "num_samples": 2000},
            ValueError,
            r"`num_samples` must be <= len\(labels\)=1000",
        ),
        ({"power": -1.0}, ValueError, r"`power` must be a finite real number in \[0, inf\); got -1.0"),
        ({"power": float("nan")}, ValueError, r"`power` must be a finite real number in \[0, inf\); got nan"),
        ({"power": "1"}, TypeError, r"`power` must be a finite real number in \[0, inf\); got str"),
        ({"replacement": "yes"}, TypeError, "`replacement` must be bool"),
        ({"uneven": "x"}, ValueError, "`uneven` must be one of"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        ClassBalancedSampler(LABELS, **kwargs)


def test_batched_sampler_bad_input() -> None:
    with pytest.raises(TypeError, match="`sampler` must have a `set_epoch` method"):
        BatchedSampler([1, 2, 3], 2)
    sampler = BatchedSampler(ClassBalancedSampler(LABELS), 4)
    with pytest.raises(ValueError, match=r"`state\['batch_size'\]` must equal batch_size=4; got 8"):
        sampler.load_state_dict(BatchedSampler(ClassBalancedSampler(LABELS), 8).state_dict())


@pytest.mark.parametrize("replacement", [True, False])
def test_resume_draws_the_epoch_once_and_replays_nothing(
    monkeypatch: pytest.MonkeyPatch, replacement: bool
) -> None:
    labels = np.arange(100_000) % 7
    full = list(ClassBalancedSampler(labels, seed=2, replacement=replacement))
    sampler = ClassBalancedSampler(labels, seed=2, replacement=replacement)
    draws: list[tuple[int, int]] = []
    original = sampler._draw
    monkeypatch.setattr(
        sampler._schedule, "_draw", lambda seed, epoch: draws.append((seed, epoch)) or original(seed, epoch)
    )
    position = 90_000
    sampler.load_state_dict({**sampler.state_dict(), "position": position})
    iterator = iter(sampler)
    assert next(iterator) == full[position]
    assert sampler.state_dict()["position"] == position + 1
    assert draws == [(2, 0)]
    assert list(iterator) == full[position + 1 :]
    assert draws == [(2, 0)]


@pytest.mark.parametrize("replacement", [True, False])
@pytest.mark.parametrize("uneven", ["pad", "drop", "exact"])
def test_rank_shares_interleave_the_single_process_draw(replacement: bool, uneven: str) -> None:
    labels = np.arange(40_001) % 5
    whole = list(ClassBalancedSampler(labels, replacement=replacement, seed=3))
    shares = [
        list(
            ClassBalancedSampler(
                labels, replacement=replacement, seed=3, num_replicas=3, rank=r, uneven=uneven
            )
        )
        for r in range(3)
    ]
    assert len({len(s) for s in shares}) == (2 if uneven == "exact" else 1)
    for rank, share in enumerate(shares):
        expected = [whole[(rank + 3 * k) % len(whole)] for k in range(len(share))]
        assert share == expected


def test_an_absent_class_id_with_power_above_one_draws_cleanly() -> None:
    import warnings

    labels = np.array([0, 0, 0, 2, 2, 3] * 10)  # class 1 never appears
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0 ** negative used to warn "divide by zero"
        sampler = ClassBalancedSampler(labels, power=1.5, seed=0)
        drawn = list(sampler)
    assert len(drawn) == len(labels)
    assert 1 not in set(labels[drawn].tolist())


# -- without replacement: a weighted permutation (Efraimidis-Spirakis keys) ----------------------------------------


def _successive_sampling(counts: list[int], power: float) -> np.ndarray:
    """Exact ``P(class c at position t)`` when each draw picks a remaining row with probability proportional to
    ``count(label) ** -power`` (a dynamic programme over the remaining counts)."""
    weights = np.asarray(counts, dtype=np.float64) ** -power
    states = {tuple(counts): 1.0}
    marginals = np.zeros((sum(counts), len(counts)))
    for position in range(sum(counts)):
        following: dict[tuple[int, ...], float] = {}
        for state, probability in states.items():
            mass = np.asarray(state) * weights
            for cls in np.flatnonzero(mass).tolist():
                share = probability * mass[cls] / mass.sum()
                marginals[position, cls] += share
                after = tuple(n - (c == cls) for c, n in enumerate(state))
                following[after] = following.get(after, 0.0) + share
        states = following
    return marginals


def _epochs(sampler: ClassBalancedSampler, epochs: int) -> np.ndarray:
    drawn = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        drawn.append(list(sampler))
    return np.array(drawn)


@pytest.mark.parametrize(
    ("counts", "power"),
    [([6, 3, 1], 1.0), ([4, 4, 2, 1], 0.5), ([5, 3, 2], 2.0), ([7, 3, 1], 6.0)],
    ids=["balanced", "shared-weight", "power-2", "weights-5-orders-apart"],
)
def test_without_replacement_class_at_each_position_is_successive_sampling(
    counts: list[int], power: float
) -> None:
    labels = np.repeat(np.arange(len(counts)), counts)
    epochs = 2000
    drawn = _epochs(ClassBalancedSampler(labels, replacement=False, power=power, seed=5), epochs)
    assert (np.sort(drawn, axis=1) == np.arange(len(labels))).all()  # every row exactly once per epoch
    seen = np.stack([(labels[drawn] == cls).mean(axis=0) for cls in range(len(counts))], axis=1)
    exact = _successive_sampling(counts, power)
    z = (seen - exact) / np.sqrt(exact * (1 - exact) / epochs + 1e-12)
    assert np.abs(z).max() < 4.5, np.round(z, 1)


def test_without_replacement_rows_of_equal_weight_come_in_uniform_order() -> None:
    labels = np.array(
        [0] * 4 + [1] * 4 + [2] * 2 + [3]
    )  # classes 0 and 1 share a weight: 8 exchangeable rows
    epochs = 2000
    drawn = _epochs(ClassBalancedSampler(labels, replacement=False, seed=1), epochs)
    first = np.bincount(drawn[:, 0], minlength=len(labels)) / epochs
    expected = np.array([1 / 16] * 8 + [1 / 8] * 2 + [1 / 4])  # weight / total weight (4)
    assert np.abs(first - expected).max() < 4.5 * np.sqrt(0.25 * 0.75 / epochs)
    # each of the 8 rows is equally likely at each rank among them (a uniform order, not a fixed stride)
    shared = drawn[np.isin(labels[drawn], [0, 1])].reshape(epochs, 8)
    table = np.stack([np.bincount(shared[:, rank], minlength=8) for rank in range(8)])
    assert np.abs(table - epochs / 8).max() < 4.5 * np.sqrt(epochs / 8 * 7 / 8)


def test_without_replacement_subset_matches_efraimidis_spirakis() -> None:
    sampler = ClassBalancedSampler(LABELS, replacement=False, num_samples=100, power=0.5, seed=0)
    ours = _epochs(sampler, 400)
    assert all(len(set(epoch)) == 100 for epoch in ours.tolist())
    ours_counts = np.stack([np.bincount(LABELS[epoch], minlength=3) for epoch in ours])
    weights = np.bincount(LABELS)[LABELS] ** -0.5
    keys = np.random.default_rng(0).exponential(size=(2000, len(LABELS))) / weights
    reference = LABELS[np.argpartition(keys, 100, axis=1)[:, :100]]
    reference_counts = np.stack([np.bincount(epoch, minlength=3) for epoch in reference])
    error = np.sqrt(ours_counts.var(axis=0) / len(ours) + reference_counts.var(axis=0) / len(reference))
    assert (np.abs(ours_counts.mean(axis=0) - reference_counts.mean(axis=0)) < 4.5 * error).all()


@pytest.mark.parametrize("uneven", ["pad", "drop", "exact"])
@pytest.mark.parametrize("num_replicas", [1, 3])
def test_without_replacement_resumes_exactly_at_any_position(uneven: str, num_replicas: int) -> None:
    labels = np.arange(2000) % 7 + 7 * (np.arange(2000) % 11 == 0)

    def make(rank: int) -> ClassBalancedSampler:
        return ClassBalancedSampler(
            labels,
            replacement=False,
            num_samples=1501,
            seed=3,
            num_replicas=num_replicas,
            rank=rank,
            uneven=uneven,  # type: ignore[arg-type]
        )

    whole = (
        make(0)
        if num_replicas == 1
        else ClassBalancedSampler(labels, replacement=False, num_samples=1501, seed=3)
    )
    whole.set_epoch(2)
    single = list(whole)
    shares = []
    for rank in range(num_replicas):
        reference = make(rank)
        reference.set_epoch(2)
        full = list(reference)
        shares.append(full)
        for position in [0, 1, 10, 333, len(full) // 2, len(full) - 1, len(full)]:
            resumed = make(rank)
            resumed.load_state_dict({**reference.state_dict(), "position": position})
            assert list(resumed) == full[position:], position
        # mid-iteration: save after 100 indices, a fresh sampler (no caches) yields the rest
        first = make(rank)
        first.set_epoch(2)
        iterator = iter(first)
        seen = [next(iterator) for _ in range(100)]
        state = json.loads(json.dumps(first.state_dict()))
        resumed = make(rank)
        resumed.load_state_dict(state)
        assert resumed.state_dict() == state
        assert seen + list(resumed) == full
    if uneven == "exact":
        assert sorted(i for share in shares for i in share) == sorted(single)
        assert len(set(single)) == 1501


@pytest.mark.parametrize("power", [1.5, 300.0])
def test_without_replacement_absent_classes_and_extreme_power_draw_cleanly(power: float) -> None:
    import warnings

    labels = np.array([0, 0, 0, 2, 2, 3] * 10)  # class 1 never appears
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = list(ClassBalancedSampler(labels, replacement=False, power=power, seed=0))
    assert sorted(drawn) == list(range(len(labels)))
    if power > 100:  # the smaller class weighs 2 ** 300 times more per row: classes come rarest first
        assert labels[drawn].tolist() == [3] * 10 + [2] * 20 + [0] * 30


def test_without_replacement_state_of_another_configuration_is_refused() -> None:
    saved = ClassBalancedSampler(LABELS, replacement=True).state_dict()
    with pytest.raises(ValueError, match="configured differently"):
        ClassBalancedSampler(LABELS, replacement=False).load_state_dict(saved)


def test_without_replacement_state_of_an_earlier_order_is_refused() -> None:
    sampler = ClassBalancedSampler(LABELS, replacement=False, seed=0)
    config = {  # what this version hashes, with the version of its order
        "class": "ClassBalancedSampler",
        "num_samples": len(LABELS),
        "replacement": False,
        "power": 1.0,
        "num_replicas": 1,
        "uneven": "pad",
    }
    assert sampler.state_dict()["fingerprint"] == fingerprint({**config, "order": ORDER_VERSION}, LABELS)
    for earlier_config in (
        config,
        {**config, "order": ORDER_VERSION - 1},
    ):  # unversioned, or an earlier order
        earlier = {**sampler.state_dict(), "fingerprint": fingerprint(earlier_config, LABELS), "position": 10}
        with pytest.raises(ValueError, match=r"configured differently.*drew another order"):
            sampler.load_state_dict(earlier)
