"""HF Trainer bridge: a real Trainer on a tiny model writes our checkpoints, resumes from them, stops early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.slow


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, 200, (n, 8), generator=g)
        self.labels = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones(8, dtype=torch.long),
            "labels": self.labels[i],
        }


def _trainer(
    tmp_path: Path,
    make_tiny_model: Any,
    callbacks: list[Any],
    max_steps: int,
    scores: dict[int, float] | None = None,
    hf_save: bool = False,
) -> Any:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=max_steps,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps" if hf_save else "no",
        save_steps=2,
        logging_steps=100,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        report_to=[],
        use_cpu=True,
        seed=7,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer: Any = None

    def compute_metrics(_: Any) -> dict[str, float]:
        return {"score": scores[trainer.state.global_step]} if scores else {}

    trainer = Trainer(
        model=make_tiny_model("bert", "sequence-classification"),
        args=args,
        train_dataset=_Rows(),
        eval_dataset=_Rows(8),
        callbacks=callbacks,
        compute_metrics=compute_metrics if scores else None,
    )
    return trainer


def test_writes_best_k_checkpoints_and_loads_best_at_end(tmp_path: Path, make_tiny_model: Any) -> None:
    from safetensors.torch import load_file

    from hfbridge.callbacks import CheckpointCallback

    scores = {2: 0.1, 4: 0.9, 6: 0.2, 8: 0.3}
    cb = CheckpointCallback(
        tmp_path / "ck", monitor="score", mode="max", keep_best=1, keep_last=1, load_best_at_end=True
    )
    trainer = _trainer(tmp_path, make_tiny_model, [cb], max_steps=8, scores=scores)
    trainer.train()
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert manifest["best"] == ["checkpoint-4"]
    assert manifest["last"] == ["checkpoint-8"]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "checkpoint-4",
        "checkpoint-8",
        "manifest.json",
    ]
    history = {h["step"]: h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h}
    recorded = {e["step"]: e["metrics"]["eval_loss"] for e in manifest["checkpoints"]}
    assert recorded == {4: history[4], 8: history[8]}
    assert cb.best() == str(tmp_path / "ck" / "checkpoint-4")
    assert cb.latest() == str(tmp_path / "ck" / "checkpoint-8")
    files = {p.name for p in (tmp_path / "ck" / "checkpoint-8").iterdir()}
    assert {
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "trainer_state.json",
    } <= files
    assert not (tmp_path / "out" / "checkpoint-8").exists()  # Trainer's own saving is off
    # load_best_at_end: the model now holds step 4's weights, not step 8's
    own = trainer.model.state_dict()
    best = load_file(str(tmp_path / "ck" / "checkpoint-4" / "model.safetensors"))
    last = load_file(str(tmp_path / "ck" / "checkpoint-8" / "model.safetensors"))
    assert all(torch.equal(own[k], v) for k, v in best.items())
    assert not all(torch.equal(own[k], v) for k, v in last.items())


def test_trainer_resumes_from_our_checkpoint_as_from_its_own(tmp_path: Path, make_tiny_model: Any) -> None:
    """``resume_from_checkpoint=<our checkpoint>`` continues exactly as Trainer's own checkpoint of that step does."""
    from hfbridge.callbacks import CheckpointCallback

    cb = CheckpointCallback(tmp_path / "ck", keep_last=None)
    _trainer(tmp_path, make_tiny_model, [cb], max_steps=8, hf_save=True).train()
    ours, theirs = tmp_path / "ck" / "checkpoint-4", tmp_path / "out" / "checkpoint-4"
    assert ours.is_dir()
    assert theirs.is_dir()
    finals = []
    for source in (theirs, ours):
        trainer = _trainer(tmp_path / source.parent.name, make_tiny_model, [], max_steps=8)
        torch.manual_seed(1234)  # a different process state before resuming
        trainer.train(resume_from_checkpoint=str(source))
        assert trainer.state.global_step == 8
        finals.append(trainer.model.state_dict())
    for (name, a), b in zip(finals[0].items(), finals[1].values()):
        assert torch.equal(a, b), name


def test_early_stopping_patience_survives_resume(tmp_path: Path, make_tiny_model: Any) -> None:
    """transformers #28544: patience must not reset when training resumes."""
    from hfbridge.callbacks import CheckpointCallback, EarlyStoppingCallback

    # best at step 4; steps 6 and 8 do not improve -> with patience 2 training stops at step 8
    scores = {2: 0.5, 4: 0.9, 6: 0.8, 8: 0.7, 10: 0.6, 12: 0.5, 14: 0.4, 16: 0.3}

    def run(max_steps: int, resume: bool) -> tuple[Any, Any]:
        stop = EarlyStoppingCallback("score", mode="max", patience=2)
        ckpt = CheckpointCallback(tmp_path / "ck", keep_last=1, callbacks={"early_stopping": stop})
        trainer = _trainer(tmp_path, make_tiny_model, [ckpt, stop], max_steps=max_steps, scores=scores)
        trainer.train(resume_from_checkpoint=ckpt.latest() if resume else None)
        return trainer, stop

    first, stop1 = run(6, resume=False)  # "crash" after step 6: one evaluation without improvement so far
    assert first.state.global_step == 6
    assert stop1.early_stopping.wait == 1
    second, stop2 = run(16, resume=True)
    assert stop2.early_stopping.best == 0.9
    assert second.state.global_step == 8  # a reset counter would have run on to step 10
    assert stop2.reason == "eval_score did not improve over 0.9 for 2 evaluations (patience=2)"


def test_early_stopping_ignores_evaluations_outside_training(tmp_path: Path, make_tiny_model: Any) -> None:
    """``trainer.evaluate(metric_key_prefix="final")`` before or after training has no ``eval_loss``: no error."""
    from transformers import TrainerCallback

    from hfbridge.callbacks import EarlyStoppingCallback

    class StopAtStep3(TrainerCallback):  # e.g. a time budget: training ends on a step that did not evaluate
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 3:
                control.should_training_stop = True

    stop = EarlyStoppingCallback("eval_loss", patience=2)
    trainer = _trainer(tmp_path, make_tiny_model, [stop, StopAtStep3()], max_steps=8)  # evaluates every 2
    assert "final_loss" in trainer.evaluate(metric_key_prefix="final")  # before training
    assert stop.state_dict()["last_step"] is None
    trainer.train()
    assert trainer.state.global_step == 3
    state = stop.state_dict()
    assert state["last_step"] == 2
    assert "final_loss" in trainer.evaluate(metric_key_prefix="final")  # after training, at a new step
    assert stop.state_dict() == state  # neither evaluation outside training was counted
    assert stop.reason is None


def test_bridge_bad_arguments(tmp_path: Path) -> None:
    from hfbridge.callbacks import CheckpointCallback, EarlyStoppingCallback

    with pytest.raises(
        TypeError, match=r"`callbacks\['x'\]` must have state_dict\(\) and load_state_dict\(\)"
    ):
        CheckpointCallback(tmp_path, callbacks={"x": 1})
    with pytest.raises(ValueError, match="`mode` must be one of"):
        CheckpointCallback(tmp_path, mode="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`patience` must be a non-negative integer"):
        EarlyStoppingCallback("loss", patience=-2)
    with pytest.raises(TypeError, match="`load_best_at_end` must be bool"):
        CheckpointCallback(tmp_path, load_best_at_end="yes")  # type: ignore[arg-type]


def test_callbacks_import_is_lazy() -> None:
    import subprocess
    import sys

    from tests.conftest import SRC_DIR

    code = (
        f"import sys; sys.path.insert(0, {str(SRC_DIR)!r}); import hfbridge.callbacks as c; "
        "print('transformers' in sys.modules, 'datasets' in sys.modules); c.CheckpointCallback; "
        "print('transformers' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["False", "False", "True"]


def test_train_end_publishes_a_pending_async_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hfbridge import Checkpointer
    from hfbridge.trainer import CheckpointCallback

    ckpt = Checkpointer(tmp_path / "ckpts")
    waited: list[bool] = []
    monkeypatch.setattr(ckpt, "wait", lambda: waited.append(True))
    callback = CheckpointCallback(ckpt)
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none")
    callback.on_train_end(args, TrainerState(), TrainerControl(), model=torch.nn.Linear(2, 2))
    assert waited == [True]  # an async sharded save left in flight is published (or raises) at the end
