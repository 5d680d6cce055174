"""The plain-loop pattern the docs teach, run end to end on a tiny model: early stopping ends the whole run (not
just the epoch), and every training forward runs in train mode although the model is loaded in eval mode and every
evaluation switches to eval mode. The loop is the docs' own block, read from the page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import build_tiny_model
from tests.docs.harness import ROOT, SYBIL, is_skip, run_python

LOOPS = {
    "README.md": "for epoch in range(start_epoch, num_epochs):",
    "docs/callbacks.md": "for epoch in range(start_epoch, num_epochs):",
}


def loop_block(page: str, marker: str) -> tuple[str, int]:
    for example in SYBIL.parse(ROOT / page):
        if not is_skip(example) and marker in str(example.parsed) and "ckpt.save(" in str(example.parsed):
            return str(example.parsed), example.line + 1
    raise AssertionError(f"{page} has no plain-loop block")


@pytest.fixture(scope="module")
def news_adapters(wordpiece_tokenizer: Any) -> tuple[Any, Any]:
    import hfbridge

    texts = [
        f"the market moved {i} points today" if i % 2 else f"the team scored {i} goals" for i in range(800)
    ]
    labels = [i % 4 for i in range(800)]
    train = hfbridge.adapt((texts, labels), wordpiece_tokenizer, task="sequence-classification")
    test = hfbridge.adapt((texts[:64], labels[:64]), wordpiece_tokenizer, task="sequence-classification")
    return train, test


@pytest.mark.parametrize("page", sorted(LOOPS))
def test_the_docs_loop_stops_the_whole_run_and_trains_in_train_mode(
    page: str, news_adapters: tuple[Any, Any], wordpiece_tokenizer: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    import torch
    from transformers import get_linear_schedule_with_warmup

    import hfbridge

    monkeypatch.chdir(tmp_path)
    train, test = news_adapters
    model = build_tiny_model("bert", "sequence-classification", wordpiece_tokenizer, num_labels=4)
    assert not model.training  # like load_pretrained / from_pretrained
    forwards: list[tuple[bool, bool]] = []
    model.register_forward_pre_hook(lambda m, args: forwards.append((m.training, torch.is_grad_enabled())))
    evaluations: list[int] = []

    def evaluate(
        model: Any,
    ) -> dict[str, float]:  # a real evaluation's side effect, a metric that never improves
        model.eval()
        with torch.no_grad():
            model(**next(iter(hfbridge.build_dataloader(test, batch_size=8, shuffle=False))))
        evaluations.append(len(forwards))
        return {"eval_loss": 1.0}

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    namespace: dict[str, Any] = {
        "hfbridge": hfbridge,
        "torch": torch,
        "build_dataloader": hfbridge.build_dataloader,
        "model": model,
        "train": train,
        "test": test,
        "evaluate": evaluate,
        "opt": opt,
        "sched": get_linear_schedule_with_warmup(opt, 0, 100),
        "num_epochs": 2,
        "eval_every": 5,
    }
    source, first_line = loop_block(page, LOOPS[page])
    run_python(source, namespace, filename=page, first_line=first_line)

    # patience 3 on a flat metric: the 4th evaluation stops the run, at step 20 of the first epoch (25 batches)
    assert len(evaluations) == 4
    assert namespace["step"] == 20
    assert namespace["stop"].should_stop
    training = [was_training for was_training, grad in forwards if grad]
    assert len(training) == 20
    assert all(training), "a training forward ran in eval mode"
