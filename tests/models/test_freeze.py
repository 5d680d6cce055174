"""freeze()/FreezeSpec on every tiny architecture: exact counts against hand-written module paths."""

from __future__ import annotations

import fnmatch
import re
import warnings
from typing import Any

import pytest

from hfbridge.models import FreezeSpec, freeze, resolve_layout
from tests.conftest import ARCHS, TASK_HEADS
from tests.models._expect import Params, expected_params, known_paths, norm_names

ARCH_TASKS = [(a, t) for a in ARCHS for t in TASK_HEADS[a]]
ENC_DEC = {
    ("t5", "sequence-classification"),
    ("t5", "seq2seq"),
    ("bart", "sequence-classification"),
    ("bart", "seq2seq"),
}

# (string form, the same spec as dataclass fields)
SPEC_FORMS: list[tuple[str, dict[str, Any]]] = [
    ("embeddings", {"embeddings": True}),
    ("layers:1", {"layers": 1}),
    ("embeddings,layers:2", {"embeddings": True, "layers": 2}),
    ("trainable-layers:1", {"trainable_layers": 1}),
    ("trainable-layers:0", {"trainable_layers": 0}),
    ("all-but-head", {"base_model": True}),
    ("all-but-head,train-norms", {"base_model": True, "train_norms": True}),
    ("all-but-head,train-biases", {"base_model": True, "train_biases": True}),
    ("all", {"base_model": True, "head": True}),
    ("head", {"head": True}),
    ("pattern:*.weight", {"patterns": ("*.weight",)}),
    (
        "syntax:regex,pattern:(embed|wte|wpe|shared)",
        {"patterns": ("(embed|wte|wpe|shared)",), "pattern_syntax": "regex"},
    ),
    ("all-but-head,except:*.0.*", {"base_model": True, "except_patterns": ("*.0.*",)}),
    ("layers:1,eval-frozen", {"layers": 1, "eval_frozen": True}),
]
ENC_DEC_FORMS: list[tuple[str, dict[str, Any]]] = [
    ("layers:1,stack:encoder", {"layers": 1, "stack": "encoder"}),
    ("layers:2,stack:decoder", {"layers": 2, "stack": "decoder"}),
    ("trainable-layers:1,stack:decoder", {"trainable_layers": 1, "stack": "decoder"}),
]


def expected_frozen(model: Any, p: Params, f: dict[str, Any]) -> set[str]:
    frozen: set[str] = set()
    if f.get("base_model"):
        frozen |= {c for c, g in p.group.items() if g != "head"}
    if f.get("embeddings") or f.get("trainable_layers") is not None:
        frozen |= {c for c, g in p.group.items() if g == "embeddings"}
    if f.get("head"):
        frozen |= {c for c, g in p.group.items() if g == "head"}
    stack = f.get("stack", "both")
    picked = [i for i, r in enumerate(p.roles) if stack in ("both", r)]
    for c, (si, bi) in p.block.items():
        if si not in picked:
            continue
        if f.get("layers") is not None and bi < f["layers"]:
            frozen.add(c)
        if f.get("trainable_layers") is not None and bi < p.stack_len[si] - f["trainable_layers"]:
            frozen.add(c)

    def matches(pattern: str, name: str) -> bool:
        if f.get("pattern_syntax") == "regex":
            return re.search(pattern, name) is not None
        return fnmatch.fnmatchcase(name, pattern)

    for pat in f.get("patterns", ()):
        frozen |= {c for c, ns in p.names.items() if any(matches(pat, n) for n in ns)}
    if f.get("train_biases"):
        frozen -= {c for c, ns in p.names.items() if any(n.endswith(".bias") for n in ns)}
    if f.get("train_norms"):
        norms = norm_names(model)
        frozen -= {c for c, ns in p.names.items() if any(n in norms for n in ns)}
    for pat in f.get("except_patterns", ()):
        frozen -= {c for c, ns in p.names.items() if any(matches(pat, n) for n in ns)}
    return frozen


@pytest.mark.parametrize(("arch", "task"), ARCH_TASKS)
def test_layout_matches_known_paths(arch: str, task: str, make_tiny_model: Any) -> None:
    model = make_tiny_model(arch, task)
    paths = known_paths(arch, task)
    layout = resolve_layout(model)
    assert layout.base_model == paths.base
    assert set(layout.embeddings) == set(paths.embeddings)
    assert [(s.path, s.role) for s in layout.stacks] == list(paths.stacks)
    assert all(len(s) == 2 for s in layout.stacks)
    # a tied parameter is one parameter: the layout knows it under every name
    tied = {n for ns in layout.aliases.values() for n in ns[1:]}
    all_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    assert tied == all_names - {n for n, _ in model.named_parameters()}


@pytest.mark.parametrize(("arch", "task"), ARCH_TASKS)
def test_every_spec_form_freezes_exactly_the_expected_parameters(
    arch: str, task: str, make_tiny_model: Any
) -> None:
    model = make_tiny_model(arch, task)
    p = expected_params(model, known_paths(arch, task))
    total = sum(p.numel.values())
    forms = SPEC_FORMS + (ENC_DEC_FORMS if (arch, task) in ENC_DEC else [])
    for text, fields in forms:
        spec = FreezeSpec(**fields)
        assert FreezeSpec.parse(text) == spec, text
        want = expected_frozen(model, p, fields)
        want_trainable = total - sum(p.numel[c] for c in want)
        for form in (text, spec):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                report = freeze(model, form)
            got = {n for n, q in model.named_parameters() if not q.requires_grad}
            assert got == want, (
                f"{arch}/{task} {text}: extra {sorted(got - want)[:4]} missing {sorted(want - got)[:4]}"
            )
            assert set(report.frozen) == want, text
            assert report.trainable_params == want_trainable, text
            assert sum(q.numel() for q in model.parameters() if q.requires_grad) == want_trainable, text
            assert report.frozen_params + report.trainable_params == total


@pytest.mark.parametrize(
    ("arch", "task"), [(a, TASK_HEADS[a][0]) for a in ARCHS] + [("t5", "seq2seq"), ("gpt2", "causal-lm")]
)
def test_optimizer_step_leaves_frozen_bitwise_unchanged(
    arch: str, task: str, make_tiny_model: Any, loss_batch: Any
) -> None:
    import torch

    model = make_tiny_model(arch, task)
    report = freeze(model, "embeddings,layers:1")
    before = {n: q.detach().clone() for n, q in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)  # built over ALL parameters
    model.train()
    model(**loss_batch(arch, task)).loss.backward()
    optimizer.step()
    changed = 0
    for n, q in model.named_parameters():
        if n in report.frozen:
            assert q.grad is None, n
            assert torch.equal(q, before[n]), f"frozen {n} moved"
        else:
            assert q.grad is not None, f"trainable {n} got no gradient"
            moved = not torch.equal(q, before[n])
            assert moved or not q.grad.any(), f"trainable {n} has a gradient but did not move"
            changed += moved
    assert changed >= 0.8 * len(report.trainable)
    assert report.frozen
    assert report.trainable


def test_tied_lm_head_is_one_parameter(make_tiny_model: Any) -> None:
    model = make_tiny_model("gpt2", "causal-lm")
    report = freeze(model, "embeddings")
    assert model.lm_head.weight is model.transformer.wte.weight
    assert not model.lm_head.weight.requires_grad  # frozen with the embeddings it is
    assert report.ties == {"transformer.wte.weight": ("lm_head.weight",)}
    assert "tied: transformer.wte.weight = lm_head.weight (one parameter, frozen)" in str(report)
    assert "lm_head.weight" not in report.frozen + report.trainable  # counted once, under its first name
    # a pattern on the alias reaches the same parameter
    report = freeze(model, "pattern:lm_head.weight")
    assert report.frozen == ("transformer.wte.weight",)
