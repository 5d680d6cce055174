"""Fakes for the samplers tests: adapters over pre-tokenized rows with the contract's attributes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, IterableDataset


def news_lengths(n: int, seed: int = 0) -> np.ndarray:
    """News-like token counts: mean ~45, p95 ~73, capped at 256."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(3.73, 0.33, n).astype(np.int64) + 2, 3, 256)


def pad_collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """A plain padding collator (pad id 0); also returns the row ids so tests can check which rows came."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row["input_ids"])] = torch.as_tensor(row["input_ids"])
        mask[i, : len(row["input_ids"])] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": torch.tensor([r["labels"] for r in rows]),
        "row": torch.tensor([r["row"] for r in rows]),
        "noise": torch.tensor([r.get("noise", 0.0) for r in rows]),
    }


class FakeMapAdapter(Dataset):
    """A map adapter over pre-tokenized rows: ``lengths``, ``label_ids``, ``collator``, ``__getitems__``."""

    def __init__(self, lengths: np.ndarray, num_labels: int = 3, *, noisy: bool = False) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.label_ids = np.arange(len(lengths), dtype=np.int64) % num_labels
        self.num_labels = num_labels
        self.collator = pad_collate
        self.noisy = noisy

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = {
            "input_ids": list(range(1, int(self.lengths[index]) + 1)),
            "labels": int(self.label_ids[index]),
            "row": int(index),
        }
        if self.noisy:  # depends on the worker's torch seed: shows workers are seeded reproducibly
            row["noise"] = float(torch.rand(()))
        return row

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]


class FakeIterableAdapter(IterableDataset):
    """An iterable adapter with ``set_epoch`` and a position-counting ``state_dict``."""

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.collator = pad_collate
        self.epoch = 0
        self._next = 0
        self._loaded = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "next": self._next}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self._next, self._loaded = state["epoch"], state["next"], True

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._next = start = self._next if self._loaded else 0
        self._loaded = False
        for index in range(start, len(self.lengths)):
            self._next = index + 1
            yield {
                "input_ids": list(range(1, int(self.lengths[index]) + 1)),
                "labels": index % 3,
                "row": index,
            }


@pytest.fixture
def lengths() -> np.ndarray:
    return news_lengths(2000)


@pytest.fixture
def map_adapter(lengths: np.ndarray) -> FakeMapAdapter:
    return FakeMapAdapter(lengths)
