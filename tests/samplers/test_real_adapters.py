"""build_dataloader over the real adapters and collators (hfbridge.adapt + collator_for_task)."""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.adapters import adapt
from hfbridge.samplers import build_dataloader


def _ids(loader: Any) -> list[list[list[int]]]:
    return [b["input_ids"].tolist() for b in loader]


@pytest.fixture(scope="module")
def train(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> Any:
    return adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification", max_length=64)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 8},
        {"batching": "tokens", "max_tokens": 256},
        {"batching": "balanced", "batch_size": 8},
        {"batching": "random", "batch_size": 8},
    ],
)
def test_real_adapter_batches(train: Any, kwargs: dict[str, Any]) -> None:
    loader = build_dataloader(train, **kwargs)
    batches = list(loader)
    assert len(batches) == len(loader)
    assert {"input_ids", "attention_mask", "labels"} <= set(batches[0])
    assert sum(len(b["labels"]) for b in batches) == (
        len(train) if kwargs.get("batching") != "balanced" else 96
    )
    if kwargs.get("batching") == "tokens":
        assert all(b["input_ids"].numel() <= 256 for b in batches)


def test_length_grouping_pads_less_than_random(train: Any) -> None:
    def padding(loader: Any) -> float:
        batches = list(loader)
        return 1 - sum(int(b["attention_mask"].sum()) for b in batches) / sum(
            b["input_ids"].numel() for b in batches
        )

    assert padding(build_dataloader(train, batch_size=8)) < 0.5 * padding(
        build_dataloader(train, batch_size=8, batching="random")
    )


def test_lengths_match_the_collated_rows(train: Any) -> None:
    loader = build_dataloader(train, batch_size=4, shuffle=False)
    batch_sampler: Any = loader.batch_sampler
    for rows, batch in zip(batch_sampler, loader):
        np.testing.assert_array_equal(batch["attention_mask"].sum(1).numpy(), train.lengths[rows])


@pytest.mark.parametrize("num_workers", [0, 2])
def test_real_adapter_resume_with_workers(train: Any, num_workers: int) -> None:
    make = lambda: build_dataloader(train, batch_size=8, num_workers=num_workers, seed=1)  # noqa: E731
    reference = make()
    reference.set_epoch(2)
    full = _ids(reference)
    loader = make()
    loader.set_epoch(2)
    iterator = iter(loader)
    seen = [next(iterator)["input_ids"].tolist() for _ in range(4)]
    state = json.loads(json.dumps(loader.state_dict()))
    del iterator
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    assert seen + _ids(resumed) == full


def test_real_streaming_adapter_bucketed_and_resumed(
    streaming_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    def make() -> Any:
        stream = adapt(streaming_dataset, wordpiece_tokenizer, task="sequence-classification", max_length=64)
        return build_dataloader(stream, batch_size=4, buffer_size=16, seed=3)

    full = _ids(make())
    assert sum(len(b) for b in full) == 96
    widths = [len(b[0]) for b in full]
    assert len(set(widths)) > 1
    loader = make()
    iterator = iter(loader)
    seen = [next(iterator)["input_ids"].tolist() for _ in range(9)]  # into the third buffer
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["buffer_index"] == 2
    resumed = make()
    resumed.load_state_dict(state)
    assert seen + _ids(resumed) == full
    assert torch.is_tensor(next(iter(make()))["labels"])


@pytest.mark.parametrize(
    "save_at", [2, None]
)  # in the first buffer (no source state); run out (past the last)
def test_real_streaming_adapter_knows_the_last_batch_after_a_resume(
    streaming_dataset: Any, wordpiece_tokenizer: Any, save_at: int | None
) -> None:
    def make() -> Any:
        stream = adapt(streaming_dataset, wordpiece_tokenizer, task="sequence-classification", max_length=64)
        return build_dataloader(stream, batch_size=4, buffer_size=16, seed=3)

    loader = make()
    seen = [b["input_ids"].tolist() for b in islice(loader, save_at)]
    state = json.loads(json.dumps(loader.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    rest = _ids(resumed)
    assert seen + rest == _ids(make())
    last = resumed.collate_fn(resumed.dataset.last_batch())  # what uneven="pad" repeats on a run-out rank
    assert last["input_ids"].tolist() == (seen + rest)[-1]


def test_real_streaming_adapter_knows_a_last_batch_of_the_first_buffer_after_the_stream_ran_out(
    seqcls_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    def make() -> Any:  # a new IterableDataset each time, as in a resumed process
        stream = adapt(
            seqcls_dataset.to_iterable_dataset(num_shards=4),
            wordpiece_tokenizer,
            task="sequence-classification",
            max_length=64,
        )
        return build_dataloader(stream, batch_size=8, buffer_size=128, seed=3)  # one buffer holds all 96 rows

    loader = make()
    seen = _ids(loader)
    state = json.loads(json.dumps(loader.state_dict()))
    resumed = make()
    resumed.load_state_dict(state)
    assert _ids(resumed) == []
    last = resumed.collate_fn(resumed.dataset.last_batch())  # what uneven="pad" repeats on a run-out rank
    assert last["input_ids"].tolist() == seen[-1]
