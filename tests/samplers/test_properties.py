"""Property tests (hypothesis): exactly-once coverage, token budget, resume at any position, sharding."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hfbridge.samplers import ClassBalancedSampler, LengthGroupedBatchSampler, TokenBudgetBatchSampler

lengths_st = st.lists(st.integers(0, 300), min_size=1, max_size=400)
fast = settings(max_examples=60, deadline=None)


@fast
@given(lengths=lengths_st, batch_size=st.integers(1, 40), mult=st.integers(1, 8), seed=st.integers(0, 2**31))
def test_grouped_yields_every_index_once(lengths: list[int], batch_size: int, mult: int, seed: int) -> None:
    sampler = LengthGroupedBatchSampler(lengths, batch_size, megabatch_mult=mult, seed=seed)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(0 < len(b) <= batch_size for b in batches)


@fast
@given(
    lengths=lengths_st,
    max_tokens=st.integers(1, 2000),
    cap=st.none() | st.integers(1, 50),
    multiple=st.none() | st.integers(1, 64),
    seed=st.integers(0, 1000),
)
def test_token_budget_never_exceeded(
    lengths: list[int], max_tokens: int, cap: int | None, multiple: int | None, seed: int
) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sampler = TokenBudgetBatchSampler(
            lengths, max_tokens, max_batch_size=cap, pad_to_multiple_of=multiple, seed=seed
        )
    array = np.asarray(lengths)
    padded = array if multiple is None else -(-array // multiple) * multiple
    batches = list(sampler)
    assert len(batches) == len(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert batch, "no empty batch"
        assert len(batch) == 1 or len(batch) * padded[batch].max() <= max_tokens
        assert cap is None or len(batch) <= cap


@fast
@given(lengths=lengths_st, batch_size=st.integers(1, 16), world=st.integers(1, 4), data=st.data())
def test_resume_at_any_position_on_any_rank(
    lengths: list[int], batch_size: int, world: int, data: st.DataObject
) -> None:
    rank = data.draw(st.integers(0, world - 1))
    uneven = data.draw(st.sampled_from(["pad", "drop", "exact"]))
    make = lambda: LengthGroupedBatchSampler(  # noqa: E731
        lengths, batch_size, megabatch_mult=2, num_replicas=world, rank=rank, uneven=uneven, seed=7
    )
    full = list(make())
    position = data.draw(st.integers(0, len(full)))
    state = make().state_dict()
    state["position"] = position
    resumed = make()
    resumed.load_state_dict(state)
    assert list(resumed) == full[position:]


@fast
@given(labels=st.lists(st.integers(0, 5), min_size=1, max_size=300), world=st.integers(1, 4))
def test_balanced_without_replacement_exact_mode_covers_once(labels: list[int], world: int) -> None:
    drawn = [
        i
        for rank in range(world)
        for i in ClassBalancedSampler(
            labels, replacement=False, num_replicas=world, rank=rank, uneven="exact"
        )
    ]
    assert sorted(drawn) == list(range(len(labels)))
