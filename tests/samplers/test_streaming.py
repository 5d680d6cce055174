"""BucketedIterable and build_dataloader over an iterable adapter."""

from __future__ import annotations

import json
from itertools import islice
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


def _stream(rows: int = 170, **kwargs: Any) -> BucketedIterable:
    """11 batches of 16 rows (with 170 rows) over buffers of 4 batches, shuffled."""
    return BucketedIterable(
        FakeIterableAdapter(news_lengths(rows)), batch_size=16, buffer_size=64, seed=3, **kwargs
    )


def _ids(batches: Any) -> list[list[int]]:
    return [[row["row"] for row in batch] for batch in batches]


@pytest.mark.parametrize(
    ("rows", "drop_last", "save_at"),
    [
        (170, False, 0),
        (170, False, 1),
        (170, False, 6),  # mid-buffer
        (170, False, None),  # the stream ran out: the last batch lies in the buffer before the saved one
        (138, True, None),  # the final buffer's only batch was dropped: the last lies two buffers back
    ],
)
def test_last_batch_after_a_resume_is_the_batch_yielded_last(
    rows: int, drop_last: bool, save_at: int | None
) -> None:
    uninterrupted = _stream(rows, drop_last=drop_last)
    full = _ids(uninterrupted)
    stream = _stream(rows, drop_last=drop_last)
    seen = _ids(islice(stream, save_at))  # islice(_, None) runs the stream out
    state = json.loads(json.dumps(stream.state_dict()))
    resumed = _stream(rows, drop_last=drop_last)
    resumed.load_state_dict(state)
    rest = _ids(resumed)
    assert seen + rest == full
    last = (
        resumed.last_batch()
    )  # the resume re-read the buffer holding it, also when nothing was left to yield
    assert (None if last is None else _ids([last])[0]) == ((seen + rest)[-1] if seen + rest else None)
    assert resumed.state_dict() == uninterrupted.state_dict()  # also when the resumed stream yielded nothing


def _hf_stream(rows: int, drop_last: bool = False, shuffled: bool = False) -> BucketedIterable:
    """Buffers of 8 batches of 8 rows over a real ``datasets.IterableDataset``, which keeps a loaded state for
    every later iter() of its epoch (4 shards; ``shuffled``: through a shuffle buffer, in another order each epoch)."""
    from datasets import Dataset

    data = {"input_ids": [[1] * (1 + i % 7) for i in range(rows)], "row": list(range(rows))}
    source = Dataset.from_dict(data).to_iterable_dataset(num_shards=4)
    if shuffled:
        source = source.shuffle(seed=1, buffer_size=50)
    return BucketedIterable(source, batch_size=8, buffer_size=64, seed=3, drop_last=drop_last)


@pytest.mark.parametrize(
    ("rows", "drop_last"),
    [
        (40, False),  # the stream runs out in buffer 0
        (68, True),  # buffer 1's only batch (4 rows) is dropped: the last batch lies in buffer 0
    ],
)
def test_last_batch_in_the_first_buffer_of_a_real_stream_resumed_after_it_ran_out(
    rows: int, drop_last: bool
) -> None:
    uninterrupted = _hf_stream(rows, drop_last)
    full = _ids(uninterrupted)
    stream = _hf_stream(rows, drop_last)
    seen = _ids(stream)
    state = json.loads(json.dumps(stream.state_dict()))
    assert state["buffer_index"] == 0  # the buffer holding the last batch, not the one after it
    resumed = _hf_stream(rows, drop_last)
    resumed.load_state_dict(state)
    assert _ids(resumed) == []  # a rank in uneven="pad"'s repeat phase
    last = resumed.last_batch()
    assert last is not None
    assert _ids([last])[0] == seen[-1] == full[-1]
    # a later pass of the epoch reads it from its start, not from the state loaded for the resume
    assert _ids(resumed) == full


@pytest.mark.parametrize(
    ("save_at", "shuffled"),
    [
        (3, True),  # in buffer 0, read without a source state: the source must be at the saved epoch's order
        (
            12,
            False,
        ),  # in buffer 1: the source ignores a buffer-start state saved in another epoch than its own
    ],  # (a shuffle buffer is not restored exactly from a state, so the second case reads the shards in order)
)
def test_a_loaded_epoch_reaches_the_source_without_set_epoch(save_at: int, shuffled: bool) -> None:
    uninterrupted = _hf_stream(200, shuffled=shuffled)
    uninterrupted.set_epoch(1)
    full = _ids(uninterrupted)
    stream = _hf_stream(200, shuffled=shuffled)
    stream.set_epoch(1)
    seen = _ids(islice(stream, save_at))
    resumed = _hf_stream(200, shuffled=shuffled)
    resumed.load_state_dict(json.loads(json.dumps(stream.state_dict())))  # "loading adopts the saved epoch"
    assert seen + _ids(resumed) == full


def test_last_batch_of_a_source_without_state_is_kept_while_iterating() -> None:
    rows = list(FakeIterableAdapter(news_lengths(170)))
    stream = BucketedIterable(rows, batch_size=16, buffer_size=64, seed=3)
    first = _ids(islice(stream, 2))
    assert _ids([stream.last_batch()]) == first[-1:]
    everything = _ids(stream)
    assert _ids([stream.last_batch()]) == everything[-1:]
    stream.set_epoch(1)
    assert stream.last_batch() is None


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (
            {"buffer_index": "0"},
            TypeError,
            r"`state\['buffer_index'\]` must be a non-negative integer; got '0'",
        ),
        ({"buffer_index": 1, "source_state": None}, ValueError, r"`state\['source_state'\]` is missing"),
        ({"buffer_position": -1}, ValueError, r"`state\['buffer_position'\]` must be a non-negative integer"),
    ],
)
def test_bad_buffer_fields_in_a_state_are_refused(
    change: dict[str, Any], error: type[Exception], match: str
) -> None:
    state = {**_stream().state_dict(), **change}
    with pytest.raises(error, match=match):
        _stream().load_state_dict(state)


def test_a_stream_seeks_only_to_the_top_of_an_epoch() -> None:
    stream = _stream()
    first = _ids(islice(stream, 3))
    stream.seek(0, 0)
    assert _ids(islice(stream, 3)) == first
    with pytest.raises(ValueError, match=r"`position` must be 0 for a stream.*got 5"):
        stream.seek(1, 5)
