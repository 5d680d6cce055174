"""Exact resume: stopping mid-epoch and resuming gives bitwise the same weights and the same batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hfbridge.callbacks import Checkpointer, EarlyStopping
from tests.callbacks.conftest import ShuffleSampler

N_ROWS, BATCH, EPOCHS = 24, 4, 3  # 6 steps per epoch, 18 in all


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randint(5, 200, (N_ROWS, 10), generator=g), torch.randint(0, 3, (N_ROWS,), generator=g)


def _train(
    make_tiny_model: Any,
    ckpt: Checkpointer,
    *,
    stop_at: int | None = None,
    resume: bool = False,
    model_seed: int = 0,
) -> tuple[Any, list[list[int]]]:
    """Plain training loop; returns the model and the batches (row indices) it trained on."""
    ids, labels = _data()
    model = make_tiny_model("bert", "sequence-classification", seed=model_seed)
    model.train()  # dropout draws from the torch RNG: resume must restore it
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=EPOCHS * 6)
    sampler = ShuffleSampler(N_ROWS, seed=42)
    # own generator: a DataLoader iterator otherwise draws its base seed from the global RNG when created
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(
        list(range(N_ROWS)), batch_size=BATCH, sampler=sampler, generator=gen
    )
    es = EarlyStopping("loss", patience=100)
    step, start_epoch = 0, 0
    if resume:
        result = ckpt.resume(
            model=model, optimizer=opt, scheduler=sched, loader=sampler, callbacks={"early_stopping": es}
        )
        assert result is not None
        step, start_epoch = result.step, int(result.epoch or 0)
    seen: list[list[int]] = []
    for epoch in range(start_epoch, EPOCHS):
        sampler.set_epoch(epoch)
        for rows in loader:
            out = model(input_ids=ids[rows], labels=labels[rows])
            out.loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            seen.append(rows.tolist())
            es.update({"loss": out.loss.item()})
            if step == stop_at:
                ckpt.save(
                    step,
                    model=model,
                    optimizer=opt,
                    scheduler=sched,
                    loader=sampler,
                    epoch=epoch,
                    callbacks={"early_stopping": es},
                )
                return model, seen
    return model, seen


@pytest.fixture(scope="module")
def straight(
    tmp_path_factory: pytest.TempPathFactory, make_tiny_model: Any
) -> tuple[dict[str, Any], list[list[int]]]:
    """The uninterrupted run: final weights and batch sequence."""
    torch.manual_seed(123)
    model, batches = _train(make_tiny_model, Checkpointer(tmp_path_factory.mktemp("straight")))
    return model.state_dict(), batches


def _stop_and_resume(
    tmp_path: Path, make_tiny_model: Any, stop_at: int, **resume_kw: Any
) -> tuple[Any, list[list[int]]]:
    torch.manual_seed(123)
    ckpt = Checkpointer(tmp_path / "b")
    _, first = _train(make_tiny_model, ckpt, stop_at=stop_at)
    torch.manual_seed(999)  # the resumed process starts from a different RNG state and different weights
    if resume_kw:
        original = ckpt.resume
        ckpt.resume = lambda **kw: original(**kw, **resume_kw)  # type: ignore[method-assign]
    resumed, rest = _train(make_tiny_model, ckpt, resume=True, model_seed=1)
    return resumed.state_dict(), first + rest


@pytest.mark.parametrize("stop_at", [8, 6])  # mid-epoch, and exactly at an epoch boundary
def test_resume_is_bitwise_exact(tmp_path: Path, make_tiny_model: Any, straight: Any, stop_at: int) -> None:
    weights, batches = _stop_and_resume(tmp_path, make_tiny_model, stop_at)
    assert batches == straight[1]
    assert len(batches) == EPOCHS * N_ROWS // BATCH
    for (name, a), b in zip(straight[0].items(), weights.values()):
        assert torch.equal(a, b), name


def test_without_rng_restore_dropout_differs(tmp_path: Path, make_tiny_model: Any, straight: Any) -> None:
    """The control: the exact test above can fail (here RNG restore is switched off)."""
    weights, batches = _stop_and_resume(tmp_path, make_tiny_model, 8, restore_rng=False)
    assert batches == straight[1]  # the sampler state alone fixes the batches ...
    assert not all(
        torch.equal(a, b) for a, b in zip(straight[0].values(), weights.values())
    )  # ... not dropout


# ------------------------------------------------------------------------- the real pipeline: adapters + samplers


def _train_real(
    make_tiny_model: Any, data: Any, ckpt: Checkpointer, *, stop_at: int | None = None, resume: bool = False
) -> tuple[dict[str, Any], list[list[int]]]:
    from hfbridge.samplers import build_dataloader

    model = make_tiny_model("bert", "sequence-classification", seed=1 if resume else 0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    # build_dataloader gives the loader its own generator: DataLoader.__iter__ would otherwise draw a base seed
    # from the *global* torch RNG, and that extra draw after the RNG restore would shift dropout.
    loader = build_dataloader(data, batch_size=8, batching="length", seed=5)
    step, start_epoch = 0, 0
    if resume:
        result = ckpt.resume(model=model, optimizer=opt, loader=loader)
        assert result is not None
        step, start_epoch = result.step, int(result.epoch or 0)
    seen: list[list[int]] = []
    for epoch in range(start_epoch, 2):
        loader.set_epoch(epoch)
        for batch in loader:
            out = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
            )
            out.loss.backward()
            opt.step()
            opt.zero_grad()
            step += 1
            seen.append(batch["input_ids"][:, 1].tolist())
            if step == stop_at:
                ckpt.save(step, model=model, optimizer=opt, loader=loader, epoch=epoch)
                return model.state_dict(), seen
    return model.state_dict(), seen


@pytest.mark.slow
def test_exact_resume_with_adapt_and_build_dataloader(
    tmp_path: Path, make_tiny_model: Any, seqcls_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    from hfbridge.adapters import adapt

    data = adapt(seqcls_dataset.select(range(48)), wordpiece_tokenizer, task="sequence-classification")
    torch.manual_seed(3)
    straight, all_batches = _train_real(make_tiny_model, data, Checkpointer(tmp_path / "a"))
    torch.manual_seed(3)
    ckpt = Checkpointer(tmp_path / "b")
    _, first = _train_real(make_tiny_model, data, ckpt, stop_at=4)  # mid-epoch (6 batches per epoch)
    torch.manual_seed(77)
    resumed, rest = _train_real(make_tiny_model, data, ckpt, resume=True)
    assert first + rest == all_batches
    for (name, a), b in zip(straight.items(), resumed.values()):
        assert torch.equal(a, b), name
