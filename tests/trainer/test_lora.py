"""``hfbridge.Trainer`` on a LoRA model: checkpoints, then a resume that continues the run exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import hfbridge

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.slow


def _lora_trainer(
    out: Path, data: Any, tok: Any, make_tiny_model: Any, callbacks: Any = (), frozen: str = "save"
) -> Any:
    from transformers import DataCollatorWithPadding

    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    model = peft.get_peft_model(make_tiny_model("bert", "sequence-classification"), config)
    args = hfbridge.TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        max_steps=6,
        save_strategy="steps",
        save_steps=2,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        seed=5,
        checkpoint_frozen=frozen,
    )
    return hfbridge.Trainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=DataCollatorWithPadding(tok),
        callbacks=list(callbacks),
    )


def _adapter(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _callback(step_end_stop: int | None = None, begin: dict[str, torch.Tensor] | None = None) -> Any:
    """Stops training after step ``step_end_stop``; copies the adapter into ``begin`` when training begins."""
    from transformers import TrainerCallback

    class Probe(TrainerCallback):
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if begin is not None:  # the Trainer has loaded the checkpoint's weights by now
                begin.update(_adapter(kwargs["model"]))

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if step_end_stop is not None and state.global_step >= step_end_stop:
                control.should_training_stop = True

    return Probe()


@pytest.mark.parametrize("frozen", ["save", "reference"])
def test_a_lora_run_resumed_from_its_checkpoint_ends_with_the_same_adapter_weights(
    tmp_path: Path, seqcls_dataset: Any, wordpiece_tokenizer: Any, make_tiny_model: Any, frozen: str
) -> None:
    data = seqcls_dataset.select(range(64)).map(
        lambda b: wordpiece_tokenizer(b["text"], truncation=True, max_length=64),
        batched=True,
        remove_columns=["text"],
    )
    whole = _lora_trainer(tmp_path / "whole", data, wordpiece_tokenizer, make_tiny_model)
    start = _adapter(whole.model)
    whole.train()
    expected = _adapter(whole.model)
    assert set(expected) == set(start)
    assert any(".lora_B." in n for n in expected)
    assert any(".modules_to_save." in n for n in expected)
    assert any(not torch.equal(expected[n], start[n]) for n in expected)  # the adapter trained

    out = tmp_path / "killed"
    part = _lora_trainer(
        out, data, wordpiece_tokenizer, make_tiny_model, [_callback(step_end_stop=4)], frozen=frozen
    )
    part.train()
    assert part.state.global_step == 4
    at_step_4 = _adapter(part.model)
    assert any(not torch.equal(at_step_4[n], start[n]) for n in start)  # a fresh model would not pass

    seen: dict[str, torch.Tensor] = {}
    resumed = _lora_trainer(
        out, data, wordpiece_tokenizer, make_tiny_model, [_callback(begin=seen)], frozen=frozen
    )
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    for name, value in at_step_4.items():  # the checkpoint gave back the adapter of step 4 ...
        assert torch.equal(seen[name], value), name
    got = _adapter(resumed.model)
    for name, value in expected.items():  # ... and the resumed run ends bitwise where the whole run did
        assert torch.equal(got[name], value), name
    whole_size = (tmp_path / "whole" / "checkpoint-4" / "model.safetensors").stat().st_size
    if frozen == "reference":  # only the adapter and the saved head: a fraction of the full weights
        assert not (out / "checkpoint-4" / "model.safetensors").exists()
        stored = (out / "checkpoint-4" / "trainable.safetensors").stat().st_size
        assert stored < whole_size / 3, (stored, whole_size)
    else:
        assert (out / "checkpoint-4" / "model.safetensors").stat().st_size == whole_size
