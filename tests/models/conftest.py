"""Fixtures for the models tests: a batch with a loss for every tiny architecture and task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture(scope="session")
def loss_batch(tokenizer_for: Callable[[str], Any]) -> Callable[[str, str], dict[str, Any]]:
    """``loss_batch(arch, task)`` -> model inputs with ``labels``, so ``model(**batch).loss`` exists."""
    import torch

    def make(arch: str, task: str) -> dict[str, Any]:
        tok = tokenizer_for(arch)
        enc = tok(["The market rallied after the report", "Sad news"], padding=True, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if task == "sequence-classification":
            batch["labels"] = torch.tensor([0, 2])
        elif task == "token-classification":
            batch["labels"] = torch.randint(
                0, 3, enc["input_ids"].shape, generator=torch.Generator().manual_seed(0)
            )
        else:  # seq2seq, causal-lm, masked-lm
            labels = enc["input_ids"].clone()
            labels[enc["attention_mask"] == 0] = -100
            batch["labels"] = labels
        return batch

    return make
