"""summary(), freeze() and layer discovery on LoRA ``PeftModel``s: counts checked against peft's own."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest

from hfbridge.models import freeze, resolve_layout, summary

peft = pytest.importorskip("peft")

LORA_TARGETS = {"bert": ["query", "value"], "llama": ["q_proj", "v_proj"]}
TASK_TYPES = {"sequence-classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM"}
CASES = [("bert", "sequence-classification"), ("llama", "causal-lm"), ("llama", "sequence-classification")]


def _lora(make_tiny_model: Callable[..., Any], arch: str, task: str) -> Any:
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS[arch], task_type=TASK_TYPES[task])
    return peft.get_peft_model(make_tiny_model(arch, task), config)


def _trainable(model: Any) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _lora_numel(model: Any, under: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(under) and ".lora_" in n)


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_summary_totals_match_peft_and_rows_are_the_task_models_blocks(
    make_tiny_model: Callable[..., Any], arch: str, task: str
) -> None:
    model = _lora(make_tiny_model, arch, task)
    trainable, total = model.get_nb_trainable_parameters()
    s = summary(model, max_depth=4)
    assert (s.trainable, s.total, s.frozen) == (trainable, total, total - trainable)
    assert s.model_type == f"{type(model).__name__}({type(model.base_model.model).__name__})"
    rows = {r.name: r for r in s.rows}
    assert not any(name.startswith("base_model") for name in rows)
    stack = resolve_layout(model).stacks[0]
    for block in stack.blocks:  # each block's trainable count is exactly its LoRA weights
        row = rows[block.removeprefix("base_model.model.")]
        full = dict(model.named_modules())[block]
        assert row.trainable == _lora_numel(model, block + ".") > 0
        assert row.params == sum(p.numel() for p in full.parameters())
        assert row.frozen == row.params - row.trainable
    assert f"{total:,}" in str(s).splitlines()[-1]


@pytest.mark.parametrize(("arch", "task"), CASES)
def test_layout_sees_through_the_peft_wrappers(
    make_tiny_model: Callable[..., Any], arch: str, task: str
) -> None:
    model = _lora(make_tiny_model, arch, task)
    plain = resolve_layout(model.base_model.model)
    layout = resolve_layout(model)
    prefix = "base_model.model."
    assert layout.base_model == prefix + plain.base_model
    assert layout.embeddings == tuple(prefix + e for e in plain.embeddings)
    assert [s.blocks for s in layout.stacks] == [tuple(prefix + b for b in s.blocks) for s in plain.stacks]
    assert layout.head == tuple(prefix + h for h in plain.head)
    names = {n for n, _ in model.named_parameters()}
    assert set(layout.group) == names
    lora_names = {n for n in names if ".lora_" in n}
    assert lora_names
    assert all(layout.group[n] == "block" for n in lora_names)


def test_freeze_composes_base_stays_frozen_adapter_trains_unless_named(
    make_tiny_model: Callable[..., Any],
) -> None:
    model = _lora(make_tiny_model, "bert", "sequence-classification")
    peft_set = _trainable(model)
    assert any(".modules_to_save." in n for n in peft_set)

    report = freeze(model, "layers:1")
    block0 = "base_model.model.bert.encoder.layer.0."
    assert _trainable(model) == {n for n in peft_set if not n.startswith(block0)}
    assert set(report.trainable) == _trainable(model)
    assert report.trainable_params == model.get_nb_trainable_parameters()[0]

    freeze(model, "head,pattern:bert.encoder.layer.1.*")  # replaces, and task-model names match too
    assert _trainable(model) == {n for n in peft_set if n.startswith(block0)}

    freeze(model, "none")  # back to exactly peft's trainable set; the base was never unfrozen
    assert _trainable(model) == peft_set


def test_freeze_of_base_only_groups_warns_that_it_freezes_nothing(
    make_tiny_model: Callable[..., Any],
) -> None:
    model = _lora(make_tiny_model, "bert", "sequence-classification")
    peft_set = _trainable(model)
    with pytest.warns(UserWarning, match="freezes nothing: every adapter parameter"):
        freeze(model, "embeddings")  # LoRA does not target the embeddings: they are frozen already
    assert _trainable(model) == peft_set
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        freeze(model, "layers:2")


@pytest.mark.parametrize("spec", ["layers:1,train-norms", "layers:1,train-biases"])
def test_freeze_refuses_to_unfreeze_base_weights_of_a_peft_model(
    make_tiny_model: Callable[..., Any], spec: str
) -> None:
    model = _lora(make_tiny_model, "bert", "sequence-classification")
    with pytest.raises(ValueError, match=r"never unfreezes the base weights.*modules_to_save"):
        freeze(model, spec)


def test_prompt_learning_peft_model_gets_a_clear_error(make_tiny_model: Callable[..., Any]) -> None:
    config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=2)
    model = peft.get_peft_model(make_tiny_model("llama", "causal-lm"), config)
    with pytest.raises(TypeError, match="prompt-learning"):
        freeze(model, "layers:1")


def test_gradual_unfreezing_thaws_the_adapter_from_the_head_down(make_tiny_model: Callable[..., Any]) -> None:
    from hfbridge.models import GradualUnfreezer

    model = _lora(make_tiny_model, "bert", "sequence-classification")
    peft_set = _trainable(model)
    unfreezer = GradualUnfreezer(model, every=1)
    block = "base_model.model.bert.encoder.layer.{}."
    unfreezer.apply(0)
    assert _trainable(model) == {n for n in peft_set if ".classifier." in n}
    unfreezer.apply(1)
    assert _trainable(model) == {n for n in peft_set if not n.startswith(block.format(0))}
    unfreezer.apply(2)
    assert _trainable(model) == peft_set
