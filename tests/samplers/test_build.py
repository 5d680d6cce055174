"""build_batch_sampler: one ladder from a batching configuration to a sampler, with cheap lengths and labels."""

from __future__ import annotations

import warnings
from typing import Any

import datasets
import numpy as np
import pytest

from hfbridge.samplers import (
    BatchedSampler,
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
    build_batch_sampler,
    build_dataloader,
)
from tests.samplers.conftest import FakeMapAdapter, news_lengths


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [
        ({"batch_size": 16}, LengthGroupedBatchSampler),
        ({"batch_size": 16, "batching": "length"}, LengthGroupedBatchSampler),
        ({"max_tokens": 512}, TokenBudgetBatchSampler),
        ({"max_tokens": 512, "batch_size": 8}, TokenBudgetBatchSampler),
        ({"batch_size": 16, "batching": "random"}, RandomBatchSampler),
        ({"batch_size": 16, "batching": "balanced"}, BatchedSampler),
    ],
)
def test_the_configuration_picks_the_sampler(kwargs: dict[str, Any], kind: type) -> None:
    adapter = FakeMapAdapter(news_lengths(200))
    sampler = build_batch_sampler(adapter, **kwargs)
    assert isinstance(sampler, kind)
    rows = sorted(i for batch in sampler for i in batch)
    if kind is not BatchedSampler:  # balanced draws with replacement
        assert rows == list(range(200))


def test_max_tokens_alone_implies_token_batching_in_the_loader() -> None:
    """The issue-18 trap: ``build_dataloader(max_tokens=...)`` used to need ``batching='tokens'``."""
    adapter = FakeMapAdapter(news_lengths(200))
    loader = build_dataloader(adapter, max_tokens=512, batch_size=16)
    assert isinstance(loader.batch_sampler, TokenBudgetBatchSampler)
    assert loader.batch_sampler.max_batch_size == 16
    for batch in loader:
        assert batch["input_ids"].numel() <= 512
        assert len(batch["row"]) <= 16


@pytest.mark.parametrize("batching", ["length", "random", "balanced"])
def test_a_token_budget_conflicting_with_batching_names_both(batching: str) -> None:
    adapter = FakeMapAdapter(news_lengths(50))
    with pytest.raises(ValueError, match=rf"`max_tokens`=64 conflicts with `batching`='{batching}'"):
        build_batch_sampler(adapter, batching=batching, batch_size=8, max_tokens=64)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"`max_tokens`=64 conflicts with `batching`='{batching}'"):
        build_dataloader(adapter, batching=batching, batch_size=8, max_tokens=64)  # type: ignore[arg-type]


def test_a_token_budget_without_a_row_cap_warns_when_batches_grow_huge() -> None:
    """320 short rows and max_tokens=8192 made one batch of all rows, silently."""
    adapter = FakeMapAdapter(np.full(320, 25))
    with pytest.warns(
        UserWarning, match=r"`max_tokens`=8192 without a row cap puts up to 320 rows in one batch"
    ):
        sampler = build_batch_sampler(adapter, max_tokens=8192)
    assert len(sampler) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        capped = build_batch_sampler(adapter, max_tokens=8192, batch_size=32)
        build_batch_sampler(adapter, max_tokens=8192, max_batch_size=32)
        build_batch_sampler(FakeMapAdapter(np.full(320, 200)), max_tokens=8192)  # 40 rows a batch: fine
    assert len(capped) == 10


def test_both_row_caps_must_agree() -> None:
    adapter = FakeMapAdapter(news_lengths(50))
    with pytest.raises(ValueError, match=r"`batch_size`=8 and `max_batch_size`=4 both cap rows"):
        build_batch_sampler(adapter, max_tokens=512, batch_size=8, max_batch_size=4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batching": "tokens"}, ValueError, "`max_tokens` is required with batching='tokens'"),
        ({"batching": "length"}, ValueError, "`batch_size` is required with batching='length'"),
        ({}, ValueError, "`batch_size` is required with batching='length'"),
        ({"batching": "sorted", "batch_size": 8}, ValueError, "`batching` must be one of"),
        ({"max_tokens": 0}, ValueError, "`max_tokens` must be a positive integer"),
        (
            {"max_tokens": 512, "drop_last": True},
            ValueError,
            "`drop_last` must be False with batching='tokens'",
        ),
        ({"batching": "balanced", "batch_size": 8, "shuffle": False}, ValueError, "`shuffle` must be True"),
    ],
)
def test_bad_configurations_are_named(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build_batch_sampler(FakeMapAdapter(news_lengths(50)), **kwargs)


def test_lengths_come_from_a_length_column_or_arrow_offsets_of_input_ids() -> None:
    lengths = news_lengths(64)
    ids = [list(range(n)) for n in lengths]
    tokenized = datasets.Dataset.from_dict({"input_ids": ids, "label": [i % 2 for i in range(64)]})
    with_column = datasets.Dataset.from_dict({"length": lengths.tolist(), "x": [0] * 64})
    for dataset in (tokenized, with_column):
        sampler = build_batch_sampler(dataset, batch_size=8, shuffle=False)
        longest_first = [int(lengths[batch].max()) for batch in sampler]
        assert longest_first == sorted(longest_first, reverse=True)
        assert sorted(i for batch in sampler for i in batch) == list(range(64))
    balanced = build_batch_sampler(tokenized, batching="balanced", batch_size=8)
    assert len(list(balanced)) == 8


def test_explicit_lengths_and_labels_win_and_missing_ones_are_named() -> None:
    class Plain:
        def __len__(self) -> int:
            return 10

    sampler = build_batch_sampler(Plain(), batch_size=5, lengths=list(range(10)), shuffle=False)
    assert list(sampler) == [[9, 8, 7, 6, 5], [4, 3, 2, 1, 0]]
    assert len(build_batch_sampler(Plain(), batching="balanced", batch_size=5, labels=[0, 1] * 5)) == 2
    with pytest.raises(TypeError, match=r"cannot find lengths for Plain.*or pass `lengths=`"):
        build_batch_sampler(Plain(), batch_size=5)
    with pytest.raises(TypeError, match=r"cannot find labels for Plain.*or pass `labels=`"):
        build_batch_sampler(Plain(), batching="balanced", batch_size=5)


def test_a_stream_is_refused_with_what_to_use_instead() -> None:
    from tests.samplers.conftest import FakeIterableAdapter

    with pytest.raises(TypeError, match=r"`dataset` must be map-style.*BucketedIterable"):
        build_batch_sampler(FakeIterableAdapter(news_lengths(10)), batch_size=4)
