"""load_pretrained(..., lora=...): a LoRA PeftModel on the task model, and its bad-input errors."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from hfbridge.models import load_pretrained

peft = pytest.importorskip("peft")

LABELS = {"negative": 0, "neutral": 1, "positive": 2}
BERT_LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]}


def _trainable(model: Any) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_classification_lora_trains_the_adapter_and_the_head(tiny_model_dir: Any) -> None:
    config = peft.LoraConfig(**BERT_LORA)
    model = load_pretrained(
        tiny_model_dir("bert", "sequence-classification"),
        task="sequence-classification",
        label2id=LABELS,
        lora=config,
    )
    assert isinstance(model, peft.PeftModelForSequenceClassification)
    assert "classifier" in model.peft_config["default"].modules_to_save
    assert (config.task_type, config.modules_to_save) == (None, None)  # the caller's config is not changed
    trainable = _trainable(model)
    assert trainable == {n for n, _ in model.named_parameters() if ".lora_" in n or ".modules_to_save." in n}
    assert any(".classifier.modules_to_save.default." in n for n in trainable)
    assert model.config.label2id == LABELS


def test_token_classification_head_and_freeze_compose(tiny_model_dir: Any) -> None:
    model = load_pretrained(
        tiny_model_dir("llama", "token-classification"),
        task="token-classification",
        num_labels=3,
        lora={"r": 4},
        freeze="layers:1",
    )
    assert model.peft_config["default"].task_type == "TOKEN_CLS"
    assert "score" in model.peft_config["default"].modules_to_save
    trainable = _trainable(model)
    assert not any(".layers.0." in n for n in trainable)
    assert any(".layers.1." in n and ".lora_" in n for n in trainable)
    assert any(".score.modules_to_save." in n for n in trainable)


def test_the_head_is_saved_where_peft_default_names_miss_it(tiny_model_dir: Any) -> None:
    # BART's head is classification_head; peft's SEQ_CLS default saves only modules named *classifier/*score
    path = tiny_model_dir("bart", "sequence-classification")
    model = load_pretrained(path, task="sequence-classification", num_labels=3, lora={"r": 4})
    assert "classification_head" in model.peft_config["default"].modules_to_save
    trainable = _trainable(model)
    for part in ("dense", "out_proj"):
        assert any(f".classification_head.modules_to_save.default.{part}." in n for n in trainable), part


def test_causal_lm_lora_saves_no_extra_modules(tiny_model_dir: Any) -> None:
    model = load_pretrained(tiny_model_dir("llama", "causal-lm"), task="causal-lm", lora={"r": 4})
    assert isinstance(model, peft.PeftModelForCausalLM)
    assert model.peft_config["default"].modules_to_save is None
    assert all(".lora_" in n for n in _trainable(model))


@pytest.mark.parametrize(
    ("arch", "lora", "error", "match"),
    [
        ("distilbert", {"r": 4}, ValueError, r"cannot target DistilBertForSequenceClassification.*q_lin"),
        ("bert", {"r": 4, "target_modules": ["q_proj"]}, ValueError, r"cannot target.*query"),
        ("bert", {"r": 4, "rank": 8}, ValueError, r"`lora` keys .*'rank'"),
        ("bert", {"r": 4, "task_type": "CAUSAL_LM"}, ValueError, r"`lora.task_type` must match.*SEQ_CLS"),
        ("bert", "r=4", TypeError, r"`lora` must be a peft.LoraConfig or a dict"),
    ],
)
def test_bad_lora_input(
    tiny_model_dir: Any, arch: str, lora: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        load_pretrained(
            tiny_model_dir(arch, "sequence-classification"),
            task="sequence-classification",
            num_labels=3,
            lora=lora,
        )


def test_missing_peft_names_the_extra(tiny_model_dir: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    with pytest.raises(ImportError, match=r"hfbridge\[peft\]"):
        load_pretrained(
            tiny_model_dir("bert", "sequence-classification"),
            task="sequence-classification",
            num_labels=3,
            lora=BERT_LORA,
        )
