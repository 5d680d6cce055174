"""layerwise_param_groups and summary on the tiny architectures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hfbridge.models import freeze, layerwise_param_groups, summary
from tests.conftest import ARCHS, TASK_HEADS
from tests.models._expect import expected_params, known_paths, norm_names

ARCH_TASKS = [(a, t) for a in ARCHS for t in TASK_HEADS[a]]


def test_bert_rates_decay_from_head_to_embeddings(make_tiny_model: Any) -> None:
    model = make_tiny_model("bert", "sequence-classification")
    groups = layerwise_param_groups(model, 1.0, decay=0.5, weight_decay=0.01)
    rates = {g["name"]: g["lr"] for g in groups}
    assert rates == {
        "embeddings": 0.125,
        "embeddings/no_decay": 0.125,
        "layers.0": 0.25,
        "layers.0/no_decay": 0.25,
        "layers.1": 0.5,
        "layers.1/no_decay": 0.5,
        "head": 1.0,
        "head/no_decay": 1.0,
    }
    by_name = {n: g for g in groups for n in g["param_names"]}
    assert (
        by_name["bert.pooler.dense.weight"]["name"] == "head"
    )  # what sits above the blocks goes with the head
    assert by_name["bert.embeddings.LayerNorm.weight"]["weight_decay"] == 0.0
    assert by_name["bert.encoder.layer.1.output.dense.bias"]["weight_decay"] == 0.0
    assert by_name["bert.encoder.layer.1.output.dense.weight"]["weight_decay"] == 0.01


@pytest.mark.parametrize(("arch", "task"), ARCH_TASKS)
def test_every_parameter_once_at_its_depth(arch: str, task: str, make_tiny_model: Any) -> None:
    import torch

    model = make_tiny_model(arch, task)
    p = expected_params(model, known_paths(arch, task))
    groups = layerwise_param_groups(model, 1e-3, decay=0.9, weight_decay=0.1)
    listed = [n for g in groups for n in g["param_names"]]
    assert sorted(listed) == sorted(p.names)  # each unique parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    n_blocks = sum(p.stack_len)
    offsets = [sum(p.stack_len[:i]) for i in range(len(p.stack_len))]
    norms = norm_names(model)
    for g in groups:
        for name in g["param_names"]:
            group = p.group[name]
            if group == "embeddings":
                want = 1e-3 * 0.9 ** (n_blocks + 1)
            elif group == "block":
                si, bi = p.block[name]
                want = 1e-3 * 0.9 ** (n_blocks - offsets[si] - bi)
            else:
                want = 1e-3
            assert g["lr"] == pytest.approx(want), name
            if any(n in norms or n.endswith(".bias") for n in p.names[name]):
                assert g["weight_decay"] == 0.0, name
    torch.optim.AdamW(groups)  # a valid optimizer spec


def test_lr_errors(make_tiny_model: Any) -> None:
    from torch import nn

    model = make_tiny_model("bert", "sequence-classification")
    with pytest.raises(ValueError, match=r"`lr` must be a finite real number in \(0, inf\); got 0"):
        layerwise_param_groups(model, 0)
    with pytest.raises(ValueError, match=r"`decay` must be a finite real number in \(0, 1\]; got 1.5"):
        layerwise_param_groups(model, 1e-3, decay=1.5)
    with pytest.raises(
        ValueError, match=r"`weight_decay` must be a finite real number in \[0, inf\); got -0\.1"
    ):
        layerwise_param_groups(model, 1e-3, weight_decay=-0.1)
    with pytest.raises(TypeError, match="`lr` must be a finite real number in \\(0, inf\\); got str"):
        layerwise_param_groups(model, "1e-3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`no_decay` must be a sequence of strings; got str"):
        layerwise_param_groups(model, 1e-3, no_decay="bias")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`no_decay item` must be str"):
        layerwise_param_groups(model, 1e-3, no_decay=("bias", 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cannot find a ModuleList"):
        layerwise_param_groups(nn.Linear(2, 2), 1e-3)


def test_summary_string_and_dict(make_tiny_model: Any) -> None:
    model = make_tiny_model("bert", "sequence-classification")
    freeze(model, "embeddings")
    s = summary(model, max_depth=2)
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for p in model.bert.embeddings.parameters())
    assert (s.total, s.frozen, s.trainable) == (total, emb, total - emb)
    rows = {r.name: r for r in s.rows}
    assert list(rows) == ["bert", "bert.embeddings", "bert.encoder", "bert.pooler", "dropout", "classifier"]
    assert rows["bert.embeddings"].frozen == emb
    assert rows["bert.embeddings"].trainable == 0
    assert rows["bert.embeddings"].type == "BertEmbeddings"
    assert rows["classifier"].share == pytest.approx((32 * 3 + 3) / total)  # Linear(32, 3)
    data = s.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["rows"][1] == {
        "name": "bert.embeddings",
        "type": "BertEmbeddings",
        "depth": 2,
        "params": emb,
        "trainable": 0,
        "frozen": emb,
        "share": emb / total,
    }
    text = str(s)
    lines = text.splitlines()
    assert lines[0].split() == ["module", "type", "params", "trainable", "frozen", "share"]
    assert lines[-1].split()[:3] == ["total", "BertForSequenceClassification", f"{total:,}"]
    assert any(line.split()[:2] == ["embeddings", "BertEmbeddings"] for line in lines)
    assert [r.name for r in summary(model, max_depth=1).rows] == ["bert", "dropout", "classifier"]


def test_summary_counts_tied_weights_once(make_tiny_model: Any) -> None:
    model = make_tiny_model("gpt2", "causal-lm")
    s = summary(model, max_depth=1)
    rows = {r.name: r for r in s.rows}
    wte = model.transformer.wte.weight.numel()
    assert s.total == sum(p.numel() for p in model.parameters())
    assert rows["lm_head"].params == wte  # the module holds it ...
    assert (
        rows["transformer"].params + rows["lm_head"].params == s.total + wte
    )  # ... but totals count it once
    assert s.ties == {"transformer.wte.weight": ("lm_head.weight",)}
    assert "tied: transformer.wte.weight = lm_head.weight (counted once)" in str(s)


def test_summary_errors() -> None:
    from torch import nn

    with pytest.raises(ValueError, match="`max_depth` must be a positive integer; got 0"):
        summary(nn.Linear(2, 2), max_depth=0)
    with pytest.raises(TypeError, match="`model` must be Module"):
        summary("model")  # type: ignore[arg-type]
