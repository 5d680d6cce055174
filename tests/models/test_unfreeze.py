"""GradualUnfreezer: the schedule, purity across a resume, plain-loop and TrainerCallback use, errors."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from hfbridge.models import FreezeSpec, GradualUnfreezer


def trainable(model: Any) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def names(model: Any, *prefixes: str) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.startswith(prefixes)}


def test_schedule_thaws_from_the_top(make_tiny_model: Any) -> None:
    model = make_tiny_model("bert", "sequence-classification")
    unfreezer = GradualUnfreezer(model)
    assert unfreezer.num_stages == 4  # head only, +layer 1, +layer 0, +embeddings
    top = names(model, "classifier", "bert.pooler")
    expected = [
        top,
        top | names(model, "bert.encoder.layer.1."),
        top | names(model, "bert.encoder.layer."),
        names(model, ""),
        names(model, ""),  # stays fully unfrozen
    ]
    for epoch, want in enumerate(expected):
        unfreezer.apply(epoch)
        assert trainable(model) == want, epoch
    assert unfreezer.spec_at(0) == FreezeSpec(trainable_layers=0)
    assert unfreezer.spec_at(9) == FreezeSpec()


def test_state_after_resume_equals_uninterrupted_run(make_tiny_model: Any) -> None:
    straight = make_tiny_model("gpt2", "causal-lm")
    run = GradualUnfreezer(straight, unit="step", every=3)
    history = []
    for step in range(12):
        run.apply(step)
        history.append(trainable(straight))
    for step in (0, 4, 7, 11):  # a fresh process resuming at `step`
        resumed = make_tiny_model("gpt2", "causal-lm")
        GradualUnfreezer(resumed, unit="step", every=3).apply(step)
        assert trainable(resumed) == history[step], step


def test_options_layers_per_stage_embeddings_and_base_spec(make_tiny_model: Any) -> None:
    model = make_tiny_model("t5", "seq2seq")
    unfreezer = GradualUnfreezer(
        model, layers_per_stage=2, unfreeze_embeddings=False, spec="train-biases,eval-frozen", stack="decoder"
    )
    assert unfreezer.num_stages == 2
    unfreezer.apply(0)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("decoder.block."))
    assert all(
        p.requires_grad for n, p in model.named_parameters() if n.startswith("encoder.block.")
    )  # not scheduled
    unfreezer.apply(5)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("decoder.block."))
    assert not model.shared.weight.requires_grad  # embeddings never thaw
    assert unfreezer.apply(6) is None  # same stage: nothing to do
    assert unfreezer.apply(6, force=True) is not None
    assert "num_stages=2" in repr(unfreezer)


def test_plain_loop_optimizer_built_once_over_all_parameters(make_tiny_model: Any, loss_batch: Any) -> None:
    import torch

    model = make_tiny_model("bert", "sequence-classification")
    unfreezer = GradualUnfreezer(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LinearLR(optimizer, 1.0, 0.1, total_iters=4)
    batch = loss_batch("bert", "sequence-classification")
    emb = model.bert.embeddings.word_embeddings.weight
    layer0 = model.bert.encoder.layer[0].attention.self.query.weight
    model.train()
    for epoch in range(4):
        unfreezer.apply(epoch)
        before_emb, before_l0 = emb.detach().clone(), layer0.detach().clone()
        optimizer.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        optimizer.step()
        scheduler.step()
        assert torch.equal(emb, before_emb) == (epoch < 3), epoch
        assert torch.equal(layer0, before_l0) == (epoch < 2), epoch
    assert len(optimizer.param_groups[0]["params"]) == len(list(model.parameters()))


def test_errors(make_tiny_model: Any) -> None:
    from torch import nn

    model = make_tiny_model("bert", "sequence-classification")
    with pytest.raises(ValueError, match="`unit` must be one of 'epoch', 'step'; got 'batch'"):
        GradualUnfreezer(model, unit="batch")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`every` must be a positive integer; got 0"):
        GradualUnfreezer(model, every=0)
    with pytest.raises(TypeError, match="`layers_per_stage` must be a positive integer"):
        GradualUnfreezer(model, layers_per_stage=1.0)  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="`spec` must not set embeddings, layers: the unfreezing schedule owns"
    ):
        GradualUnfreezer(model, spec="embeddings,layers:1")
    with pytest.raises(ValueError, match="`stack` 'encoder' names no block stack"):
        GradualUnfreezer(model, stack="encoder")
    with pytest.raises(ValueError, match="cannot find a ModuleList"):
        GradualUnfreezer(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="`epoch` must be a non-negative integer; got -1"):
        GradualUnfreezer(model).apply(-1)
    with pytest.raises(ValueError, match="`stack` must be one of 'both', 'encoder', 'decoder'; got 'top'"):
        GradualUnfreezer(model, stack="top")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`unfreeze_embeddings` must be bool"):
        GradualUnfreezer(model, unfreeze_embeddings="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`model` must be Module"):
        GradualUnfreezer("bert")  # type: ignore[arg-type]


def test_ddp_without_find_unused_parameters_is_refused(make_tiny_model: Any, tmp_path: Any) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model = make_tiny_model("bert", "sequence-classification")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(ValueError, match="needs `find_unused_parameters=True`"):
            GradualUnfreezer(DistributedDataParallel(model)).apply(0)
        report = GradualUnfreezer(DistributedDataParallel(model, find_unused_parameters=True)).apply(0)
        assert report is not None
        assert report.frozen_modules == ("bert.embeddings", "bert.encoder")
    finally:
        dist.destroy_process_group()


def _state(epoch: float, step: int) -> Any:
    from transformers import TrainerState

    state = TrainerState()
    state.epoch, state.global_step = epoch, step
    return state


def test_callback_applies_from_trainer_state(make_tiny_model: Any, tmp_path: Any) -> None:
    import torch
    from transformers import TrainerCallback, TrainerControl, TrainingArguments

    model = make_tiny_model("bert", "sequence-classification")
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    callback = GradualUnfreezer(model).as_callback()
    assert isinstance(callback, TrainerCallback)
    control = TrainerControl()
    callback.on_train_begin(args, _state(2.5, 50), control)  # resumed mid-epoch 2
    assert trainable(model) == names(model, "classifier", "bert.pooler", "bert.encoder.layer.")
    callback.on_epoch_begin(args, _state(3.0, 60), control)
    assert trainable(model) == names(model, "")
    # an optimizer built while parts were frozen is caught: those parts would never train
    partial = torch.optim.SGD([p for n, p in model.named_parameters() if "embeddings" not in n], lr=0.1)
    with pytest.warns(UserWarning, match="parameters are not in the Trainer's optimizer"):
        callback.on_train_begin(args, _state(0.0, 0), control, optimizer=partial)
    several = SimpleNamespace(world_size=2, ddp_find_unused_parameters=None)
    with pytest.raises(ValueError, match=r"needs `TrainingArguments\(ddp_find_unused_parameters=True\)`"):
        callback.on_train_begin(several, _state(0.0, 0), control)
    steps = GradualUnfreezer(model, unit="step", every=10).as_callback()
    steps.on_train_begin(args, _state(0.0, 0), control)
    steps.on_step_begin(args, _state(0.5, 10), control)
    assert trainable(model) == names(model, "classifier", "bert.pooler", "bert.encoder.layer.1.")


@pytest.mark.slow
def test_trainer_run_and_resume(make_tiny_model: Any, tokenizer_for: Any, tmp_path: Any) -> None:
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tok = tokenizer_for("bert")
    texts = ["good market day", "bad news again", "the team won", "rain and storms"] * 4
    rows = [dict(tok(t), labels=i % 3) for i, t in enumerate(texts)]

    def run(model: Any, epochs: int, resume: Any = None) -> Any:
        args = TrainingArguments(
            output_dir=str(tmp_path),
            num_train_epochs=epochs,
            per_device_train_batch_size=8,
            save_strategy="epoch",
            report_to=[],
            use_cpu=True,
            learning_rate=1e-2,
            disable_tqdm=True,
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=DataCollatorWithPadding(tok),
            callbacks=[GradualUnfreezer(model).as_callback()],
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    model = make_tiny_model("bert", "sequence-classification")
    emb_before = model.bert.embeddings.word_embeddings.weight.detach().clone()
    trainer = run(model, epochs=2)
    n_opt = sum(len(g["params"]) for g in trainer.optimizer.param_groups)
    assert n_opt == len(list(model.parameters()))  # built before stage 0 froze anything
    assert trainable(model) == names(model, "classifier", "bert.pooler", "bert.encoder.layer.1.")
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, emb_before)
    resumed = make_tiny_model("bert", "sequence-classification")
    run(resumed, epochs=3, resume=str(tmp_path / "checkpoint-4"))
    assert trainable(resumed) == names(resumed, "classifier", "bert.pooler", "bert.encoder.layer.")
