"""ClassBalancedSampler and BatchedSampler."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hfbridge.samplers import BatchedSampler, ClassBalancedSampler
from hfbridge.samplers._permutation import Permutations

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
        ({"power": -1.0}, ValueError, r"`power` must be a finite real number in \[0, inf\]; got -1.0"),
        ({"power": float("nan")}, ValueError, r"`power` must be a finite real number in \[0, inf\]; got nan"),
        ({"power": "1"}, TypeError, r"`power` must be a finite real number in \[0, inf\]; got str"),
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


def test_resume_with_replacement_draws_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    from hfbridge.samplers import _balanced

    labels = np.arange(100_000) % 7
    full = list(ClassBalancedSampler(labels, seed=2))
    sampler = ClassBalancedSampler(labels, seed=2)
    drawn: list[int] = []
    original = ClassBalancedSampler._draw_chunk

    def counting(self: ClassBalancedSampler, chunk: int) -> np.ndarray:
        drawn.append(chunk)
        return original(self, chunk)

    monkeypatch.setattr(ClassBalancedSampler, "_draw_chunk", counting)
    position = 4 * _balanced._CHUNK + 123
    sampler.load_state_dict({**sampler.state_dict(), "position": position})
    assert next(iter(sampler)) == full[position]
    assert drawn == [4]


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


def test_permutations_are_independent_bijections_mapped_in_one_pass() -> None:
    sizes = np.array([1, 2, 3, 5, 64, 65, 1000])
    perms = Permutations(sizes, (1, 2, 3))
    domains = np.repeat(np.arange(len(sizes)), sizes)
    positions = np.concatenate([np.arange(n) for n in sizes])
    mapped = perms(domains, positions)
    for domain, n in enumerate(sizes.tolist()):
        values = mapped[domains == domain]
        assert sorted(values.tolist()) == list(range(n))
        assert np.array_equal(perms(np.full(n, domain), np.arange(n)), values)  # the same, mapped alone
    assert not np.array_equal(mapped[domains == 6], np.arange(1000))
    assert not np.array_equal(Permutations(sizes, (1, 2, 4))(domains, positions), mapped)
    order = np.random.default_rng(0).permutation(len(domains))  # any mix of domains, in any order
    assert np.array_equal(perms(domains[order], positions[order]), mapped[order])
