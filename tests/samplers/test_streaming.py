"""BucketedIterable and build_dataloader over an iterable adapter."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from hfbridge.samplers import BucketedIterable, build_dataloader
from tests.samplers.conftest import FakeIterableAdapter, news_lengths


def _rows(loader: Any) -> list[list[int]]:
    return [batch["row"].tolist() for batch in loader]


def test_buckets_pad_far_less_than_the_stream_order() -> None:
    lengths = news_lengths(4010)
    loader = build_dataloader(FakeIterableAdapter(lengths), batch_size=32, buffer_size=1024)
    batches = _rows(loader)
    assert sorted(i for b in batches for i in b) == list(range(4010))
    assert sum(len(b) == 32 for b in batches) == len(batches) - 1  # only the final batch is short
    padded = sum(len(b) * lengths[b].max() for b in batches)
    plain = sum(len(b) * lengths[b].max() for b in np.array_split(np.arange(4010), len(batches)))
    assert padded < 0.7 * plain
    first_rows = [b[0] for b in batches[:10]]
    assert first_rows != sorted(first_rows)  # batches within a buffer come shuffled


def test_token_budget_stream_respects_the_budget() -> None:
    lengths = news_lengths(1000)
    loader = build_dataloader(
        FakeIterableAdapter(lengths), batching="tokens", max_tokens=600, buffer_size=300
    )
    batches = list(loader)
    assert all(b["input_ids"].numel() <= 600 for b in batches)
    assert sorted(i for b in batches for i in b["row"].tolist()) == list(range(1000))


def test_drop_last_drops_only_the_final_short_batch() -> None:
    stream = BucketedIterable(
        FakeIterableAdapter(news_lengths(100)), batch_size=32, buffer_size=64, drop_last=True
    )
    assert [len(b) for b in stream] == [32, 32, 32]


def test_loader_resume_is_exact_and_epochs_reach_the_source() -> None:
    lengths = news_lengths(900)
    make = lambda: build_dataloader(FakeIterableAdapter(lengths), batch_size=16, buffer_size=160, seed=2)  # noqa: E731
    full_loader = make()
    full_loader.set_epoch(1)
    assert full_loader.dataset.source.epoch == 1
    full = _rows(full_loader)
    loader = make()
    loader.set_epoch(1)
    iterator = iter(loader)
    seen = [next(iterator)["row"].tolist() for _ in range(23)]
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["position"] == 23
    assert state["buffer_index"] == 2
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(1)
    assert seen + _rows(resumed) == full


def test_streaming_state_with_workers_is_refused() -> None:
    loader = build_dataloader(FakeIterableAdapter(news_lengths(10)), batch_size=4, num_workers=1)
    with pytest.raises(RuntimeError, match="use num_workers=0"):
        loader.state_dict()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, ValueError, "give exactly one of `batch_size` or `max_tokens`"),
        ({"batch_size": 4, "max_tokens": 10}, ValueError, "give exactly one of"),
        ({"batch_size": 4, "buffer_size": 0}, ValueError, "`buffer_size` must be a positive integer"),
        ({"batch_size": 4, "length_key": 3}, TypeError, "`length_key` must be str"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        BucketedIterable(FakeIterableAdapter(news_lengths(10)), **kwargs)


def test_rows_without_the_length_key_are_refused() -> None:
    with pytest.raises(ValueError, match="with a `tokens` sequence"):
        list(BucketedIterable(FakeIterableAdapter(news_lengths(10)), batch_size=4, length_key="tokens"))


def test_iterable_adapter_with_random_batching_is_refused() -> None:
    with pytest.raises(ValueError, match="`batching` must be 'length' or 'tokens' for an iterable adapter"):
        build_dataloader(FakeIterableAdapter(news_lengths(10)), batch_size=4, batching="random")


def test_stream_bad_uneven_is_refused() -> None:
    with pytest.raises(ValueError, match="uneven"):
        build_dataloader(FakeIterableAdapter(news_lengths(10)), batch_size=4, uneven="repeat")  # type: ignore[arg-type]


def test_single_process_stream_is_not_synchronised() -> None:
    loader = build_dataloader(
        FakeIterableAdapter(news_lengths(50)), batch_size=16, uneven="drop", num_replicas=2
    )
    assert (
        sum(len(b["row"]) for b in loader) == 50
    )  # no process group: nothing to agree with, nothing dropped
