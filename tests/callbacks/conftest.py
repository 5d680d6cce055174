"""Shared fakes for the callbacks tests: a tiny torch model and a resumable shuffled sampler."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


class ShuffleSampler:
    """A seeded, epoch-aware shuffled sampler with O(1) mid-epoch resume (like the `samplers` part's)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch, self.consumed = n, seed, 0, 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.consumed = epoch, 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        import torch

        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        while self.consumed < self.n:
            idx = order[self.consumed]
            self.consumed += 1
            yield idx

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.epoch, self.consumed = state["seed"], state["epoch"], state["consumed"]


@pytest.fixture
def tiny_net() -> Any:
    """``tiny_net(seed)`` -> a small torch model with a tied weight, dropout and a buffer."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(16, 8)
            self.drop = torch.nn.Dropout(0.2)
            self.out = torch.nn.Linear(8, 16, bias=False)
            self.out.weight = self.emb.weight  # tied
            self.register_buffer("scale", torch.ones(8))

        def forward(self, x: Any) -> Any:
            return self.out(self.drop(self.emb(x)) * self.scale)

    def make(seed: int = 0) -> Any:
        torch.manual_seed(seed)
        return Net()

    return make


@pytest.fixture
def train_objects(tiny_net: Any) -> Any:
    """``train_objects(seed)`` -> (model, optimizer, scheduler) after one training step."""
    import torch

    def make(seed: int = 0) -> tuple[Any, Any, Any]:
        model = tiny_net(seed)
        opt = torch.optim.AdamW(model.parameters(), lr=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
        model(torch.tensor([1, 2, 3])).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        return model, opt, sched

    return make
