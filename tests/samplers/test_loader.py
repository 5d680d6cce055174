"""build_dataloader with a fake map adapter: batching choices, exact state with workers, seeded workers, errors."""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.samplers import (
    BatchedSampler,
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    ResumableDataLoader,
    TokenBudgetBatchSampler,
    build_dataloader,
)
from tests.samplers.conftest import FakeMapAdapter, news_lengths


def _rows(loader: Any) -> list[list[int]]:
    return [batch["row"].tolist() for batch in loader]


@pytest.mark.parametrize(
    ("kwargs", "sampler_type"),
    [
        ({"batch_size": 16}, LengthGroupedBatchSampler),
        ({"max_tokens": 512, "batching": "tokens"}, TokenBudgetBatchSampler),
        ({"batch_size": 16, "batching": "random"}, RandomBatchSampler),
        ({"batch_size": 16, "batching": "balanced"}, BatchedSampler),
    ],
)
def test_builds_the_chosen_sampler_with_the_adapter_collator(
    map_adapter: FakeMapAdapter, kwargs: dict[str, Any], sampler_type: type
) -> None:
    loader = build_dataloader(map_adapter, **kwargs)
    assert isinstance(loader, ResumableDataLoader)
    assert isinstance(loader.batch_sampler, sampler_type)
    assert loader.collate_fn is map_adapter.collator
    assert loader.pin_memory is torch.cuda.is_available()
    batches = list(loader)
    assert len(batches) == len(loader)
    assert set(batches[0]) >= {"input_ids", "attention_mask", "labels"}
    if "max_tokens" in kwargs:
        assert all(b["input_ids"].numel() <= 512 for b in batches)


def test_tokens_batch_size_caps_rows(map_adapter: FakeMapAdapter) -> None:
    loader = build_dataloader(map_adapter, batching="tokens", max_tokens=10_000, batch_size=8)
    assert max(len(b["row"]) for b in loader) == 8


def test_sampler_options_pass_through(map_adapter: FakeMapAdapter) -> None:
    loader = build_dataloader(map_adapter, batch_size=8, megabatch_mult=2, longest_first=True, shuffle=False)
    assert loader.batch_sampler.megabatch_mult == 2
    assert loader.batch_sampler.longest_first
    assert not loader.batch_sampler.shuffle


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("batching", ["length", "balanced"])
def test_state_is_exact_with_workers_prefetching(
    map_adapter: FakeMapAdapter, num_workers: int, batching: str
) -> None:
    make = lambda: build_dataloader(  # noqa: E731
        map_adapter,
        batch_size=32,
        batching=batching,
        num_workers=num_workers,
        prefetch_factor=4 if num_workers else None,
    )
    loader = make()
    loader.set_epoch(3)
    full = _rows(loader)
    loader = make()
    loader.set_epoch(3)
    iterator = iter(loader)
    seen = [next(iterator)["row"].tolist() for _ in range(5)]
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["position"] == 5
    assert state["epoch"] == 3
    del iterator
    resumed = make()
    resumed.load_state_dict(state)
    resumed.set_epoch(3)
    assert resumed.state_dict() == state
    assert seen + _rows(resumed) == full
    assert resumed.state_dict()["position"] == len(full)


def test_workers_are_seeded_reproducibly(lengths: np.ndarray) -> None:
    adapter = FakeMapAdapter(lengths[:200], noisy=True)
    make = lambda seed: build_dataloader(adapter, batch_size=20, num_workers=2, seed=seed)  # noqa: E731
    noise = [torch.cat([b["noise"] for b in make(0)]) for _ in range(2)]
    assert torch.equal(noise[0], noise[1])
    assert not torch.equal(noise[0], torch.cat([b["noise"] for b in make(1)]))
    loader = make(0)
    loader.set_epoch(1)
    assert not torch.equal(noise[0], torch.cat([b["noise"] for b in loader]))


def test_user_worker_init_fn_still_runs(map_adapter: FakeMapAdapter) -> None:
    loader = build_dataloader(map_adapter, batch_size=500, num_workers=1, collate_fn=len)
    loader._user_worker_init_fn = _raise_in_worker
    with pytest.raises(Exception, match="worker init ran"):
        list(loader)


def _raise_in_worker(worker_id: int) -> None:
    raise RuntimeError("worker init ran")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 8, "batching": "sorted"}, ValueError, "`batching` must be one of 'length', 'tokens'"),
        ({"batching": "length"}, ValueError, "`batch_size` is required with batching='length'"),
        ({"batching": "tokens"}, ValueError, "`max_tokens` is required with batching='tokens'"),
        (
            {"batch_size": 8, "max_tokens": 64, "batching": "length"},
            ValueError,
            "`max_tokens`=64 conflicts with `batching`='length'",
        ),
        ({"batch_size": 8, "num_workers": -1}, ValueError, "`num_workers` must be a non-negative integer"),
        ({"batch_size": 8, "pin_memory": "yes"}, TypeError, "`pin_memory` must be a bool or 'auto'"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be a positive integer"),
        ({"batch_size": 8, "megabatch_mult": 0}, ValueError, "`megabatch_mult` must be a positive integer"),
        ({"batch_size": 8, "batching": "balanced", "shuffle": False}, ValueError, "`shuffle` must be True"),
    ],
)
def test_bad_arguments_are_named(
    map_adapter: FakeMapAdapter, kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        build_dataloader(map_adapter, **kwargs)


def test_adapter_without_what_is_needed() -> None:
    class Bare(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 3

        def __getitem__(self, i: int) -> int:
            return i

    with pytest.raises(TypeError, match=r"must have a `.collator`"):
        build_dataloader(Bare(), batch_size=2)
    with pytest.raises(TypeError, match=r"cannot find lengths for Bare: give it a `.lengths` array"):
        build_dataloader(Bare(), batch_size=2, collate_fn=list)
    assert list(
        build_dataloader(Bare(), batch_size=2, batching="random", collate_fn=list, shuffle=False)
    ) == [
        [0, 1],
        [2],
    ]


@pytest.mark.slow
def test_works_with_torchdata_stateful_dataloader(lengths: np.ndarray) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    adapter = FakeMapAdapter(news_lengths(600))
    for num_workers in (0, 2):
        make = lambda workers=num_workers: stateful.StatefulDataLoader(  # noqa: E731
            adapter,
            batch_sampler=LengthGroupedBatchSampler(adapter.lengths, 16, seed=4),
            collate_fn=adapter.collator,
            num_workers=workers,
        )
        full = _rows(make())
        loader = make()
        iterator = iter(loader)
        seen = [next(iterator)["row"].tolist() for _ in range(7)]
        state = loader.state_dict()
        del iterator
        resumed = make()
        resumed.load_state_dict(state)
        assert seen + _rows(resumed) == full, num_workers


class _EpochCollator:
    """A collator with ``set_epoch`` (like the masked-LM one) that records the epochs it was given."""

    def __init__(self) -> None:
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return {
            "row": torch.tensor([r["row"] for r in rows]),
            "epoch": torch.tensor(self.epochs[-1:] or [-1]),
        }


@pytest.mark.parametrize("batching", ["length", "balanced"])
def test_set_epoch_reaches_the_collator(map_adapter: FakeMapAdapter, batching: str) -> None:
    collator = _EpochCollator()
    loader = build_dataloader(map_adapter, batch_size=64, batching=batching, collate_fn=collator)
    for epoch in (0, 1, 2):
        loader.set_epoch(epoch)
        assert {int(b["epoch"]) for b in loader} == {epoch}
    assert collator.epochs == [0, 1, 2]
    build_dataloader(map_adapter, batch_size=64).set_epoch(1)  # a collator without set_epoch is left alone


@pytest.mark.parametrize("batching", ["length", "balanced"])
def test_persistent_workers_see_every_epoch_of_the_collator(
    map_adapter: FakeMapAdapter, batching: str
) -> None:
    """Persistent workers keep their copy of the collator; its epoch reaches them through shared memory."""
    collator = _EpochCollator()
    loader = build_dataloader(
        map_adapter,
        batch_size=64,
        batching=batching,
        collate_fn=collator,
        num_workers=2,
        persistent_workers=True,
    )
    for epoch in (0, 1, 2, 1):
        loader.set_epoch(epoch)
        assert {int(b["epoch"]) for b in loader} == {epoch}
    assert collator.epochs == [0, 1, 2, 1]  # the main process's copy too
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plain = build_dataloader(map_adapter, batch_size=64, num_workers=1, persistent_workers=True)
    assert plain.collate_fn is map_adapter.collator  # no set_epoch: nothing to share


def test_an_epoch_synced_collator_reaches_spawned_persistent_workers(map_adapter: FakeMapAdapter) -> None:
    """The shared epoch survives pickling into a ``spawn`` worker, not only ``fork`` inheritance."""
    import multiprocessing

    from torch.utils.data import DataLoader

    from hfbridge.samplers import EpochSyncedCollator

    context = multiprocessing.get_context("spawn")
    synced = EpochSyncedCollator(_EpochCollator(), context)
    loader = DataLoader(
        _Rows(),
        batch_size=4,
        collate_fn=synced,
        num_workers=1,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    for epoch in (0, 3):
        synced.set_epoch(epoch)
        assert {int(b["epoch"]) for b in loader} == {epoch}


class _Rows(torch.utils.data.Dataset):
    """Eight ``{"row": i}`` rows, importable by spawned workers."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, int]:
        return {"row": i}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_seek_resumes_from_an_epoch_and_a_batch_count(map_adapter: FakeMapAdapter, num_workers: int) -> None:
    """What a trainer that knows only the epoch and the batches done in it calls on resume."""
    make = lambda: build_dataloader(map_adapter, batch_size=64, num_workers=num_workers, seed=4)  # noqa: E731
    reference = make()
    reference.set_epoch(2)
    full = [batch["row"].tolist() for batch in reference]
    loader = make()
    loader.seek(2, 11)
    loader.set_epoch(2)
    assert loader.state_dict()["position"] == 11
    assert [batch["row"].tolist() for batch in loader] == full[11:]
    with pytest.raises(ValueError, match=r"`position` must be <= 32"):
        loader.seek(2, 33)
