"""Trainable-only checkpoints (``frozen="reference"``): exact resume, the frozen fingerprint, gradual unfreezing,
LoRA models through peft, and export to a plain ``save_pretrained`` model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from hfbridge.callbacks import Checkpointer
from hfbridge.models import GradualUnfreezer, freeze


def _bert(seed: int = 0, layers: int = 4) -> Any:
    import transformers as tf

    cfg = tf.BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=3,
        name_or_path="tiny-bert-base",
    )
    torch.manual_seed(seed)
    return tf.BertForSequenceClassification(cfg)


def _step(model: Any, opt: Any, step: int) -> None:
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(1, 100, (4, 8), generator=g)
    labels = torch.randint(0, 3, (4,), generator=g)
    model.train()
    model(input_ids=ids, labels=labels).loss.backward()
    opt.step()
    opt.zero_grad()


def _params(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _saved_keys(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "trainable.safetensors"), "pt") as fh:
        return set(fh.keys())


def _run_and_resume(tmp_path: Path, make: Any, steps: int = 4, save_at: int = 2) -> tuple[Path, Any]:
    """Train ``steps`` steps saving at ``save_at``; resume a fresh copy there and train on: both must agree."""
    model, opt = make()
    ckpt = Checkpointer(tmp_path / "ck", frozen="reference", keep_last=None)
    for step in range(steps):
        _step(model, opt, step)
        if step == save_at:
            ckpt.save(step, model=model, optimizer=opt)
    expected = _params(model)
    model2, opt2 = make()
    result = ckpt.resume(model=model2, optimizer=opt2)
    assert result is not None
    for step in range(result.step + 1, steps):
        _step(model2, opt2, step)
    got = _params(model2)
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    return result.path, model2


@pytest.mark.parametrize("spec", ["all-but-head", "embeddings,layers:4"])
def test_trainable_only_resume_is_bitwise_exact(tmp_path: Path, spec: str) -> None:
    def make() -> tuple[Any, Any]:
        model = _bert()
        freeze(model, spec)
        return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    folder, model = _run_and_resume(tmp_path, make)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = set(model.state_dict()) - {n for n, _ in model.named_parameters(remove_duplicate=False)}
    assert _saved_keys(folder) == trainable | buffers
    assert not (folder / "model.safetensors").exists()


def test_tied_trainable_embeddings_resume_exactly(tmp_path: Path) -> None:
    # GPT-2's lm_head shares wte's storage: saved once under one name, the other name must not read as an
    # unknown tensor on resume (it did, and every such checkpoint was refused)
    import transformers as tf

    def make() -> tuple[Any, Any]:
        torch.manual_seed(0)
        cfg = tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32)
        model = tf.GPT2LMHeadModel(cfg)
        freeze(model, "layers:1")  # the first block; the tied embeddings keep training
        assert model.lm_head.weight is model.transformer.wte.weight
        return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def step(model: Any, opt: Any, i: int) -> None:
        ids = torch.randint(1, 100, (4, 8), generator=torch.Generator().manual_seed(i))
        model.train()
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()

    model, opt = make()
    ckpt = Checkpointer(tmp_path / "ck", frozen="reference")
    for i in range(3):
        step(model, opt, i)
    ckpt.save(2, model=model, optimizer=opt)
    step(model, opt, 3)
    model2, opt2 = make()
    assert ckpt.resume(model=model2, optimizer=opt2) is not None
    step(model2, opt2, 3)
    assert model2.lm_head.weight is model2.transformer.wte.weight
    for k, v in model.state_dict().items():
        assert torch.equal(model2.state_dict()[k], v), k


def test_changing_buffers_are_saved(tmp_path: Path) -> None:
    def make() -> tuple[Any, Any]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Embedding(100, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3)
        )
        model[0].weight.requires_grad_(False)
        return _Wrap(model), torch.optim.SGD(model[2].parameters(), lr=0.1)

    folder, _ = _run_and_resume(tmp_path, make)
    assert "net.1.running_mean" in _saved_keys(folder)


class _Wrap(torch.nn.Module):
    def __init__(self, net: Any) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids: Any, labels: Any) -> Any:
        logits = self.net[2](self.net[1](self.net[0](input_ids).mean(1)))
        return type("Out", (), {"loss": torch.nn.functional.cross_entropy(logits, labels)})()


def _saved(tmp_path: Path, model: Any) -> Checkpointer:
    ckpt = Checkpointer(tmp_path, frozen="reference")
    ckpt.save(1, model=model)
    return ckpt


def test_a_different_base_is_refused_naming_the_first_differing_tensor(tmp_path: Path) -> None:
    model = _bert(0)
    freeze(model, "all-but-head")
    ckpt = _saved(tmp_path, model)
    other = _bert(seed=1)
    first = next(k for k, v in other.state_dict().items() if not torch.equal(v, model.state_dict()[k]))
    with pytest.raises(ValueError, match=rf"frozen tensor '{first}' of `model` differs"):
        ckpt.resume(model=other)
    with pytest.raises(ValueError, match=r"not the architecture.*lacks \['bert\.encoder\.layer\.3"):
        ckpt.resume(model=_bert(0, layers=3))
    with pytest.raises(ValueError, match="tiny-bert-base"):
        ckpt.resume(model=_bert(seed=1))


def test_a_frozen_parameter_trained_anyway_is_caught(tmp_path: Path) -> None:
    model = _bert(0)
    freeze(model, "all-but-head")
    with torch.no_grad():
        model.bert.encoder.layer[2].output.dense.bias.add_(0.5)  # frozen, yet changed before the save
    ckpt = _saved(tmp_path, model)
    with pytest.raises(ValueError, match=r"frozen tensor 'bert\.encoder\.layer\.2\.output\.dense\.bias'"):
        ckpt.resume(model=_bert(0))


def test_either_kind_resumes_under_either_setting(tmp_path: Path) -> None:
    model = _bert(0)
    freeze(model, "all-but-head")
    with torch.no_grad():
        model.classifier.weight.mul_(2)
    Checkpointer(tmp_path / "full").save(1, model=model)
    Checkpointer(tmp_path / "ref", frozen="reference").save(1, model=model)
    for src, reader in (("full", "reference"), ("ref", "save")):
        fresh = _bert(0)
        Checkpointer(tmp_path / src, frozen=reader).resume(model=fresh)  # type: ignore[arg-type]
        assert torch.equal(fresh.classifier.weight, model.classifier.weight)


def test_bad_frozen_value() -> None:
    with pytest.raises(ValueError, match="`frozen`"):
        Checkpointer("x", frozen="none")  # type: ignore[arg-type]


def test_gradual_unfreezing_resumes_exactly_across_a_boundary(tmp_path: Path) -> None:
    def make() -> tuple[Any, Any]:
        model = _bert()
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2)

    def train(model: Any, opt: Any, unfreezer: Any, steps: range, ckpt: Any = None) -> None:
        for t in steps:
            unfreezer.apply(t)
            _step(model, opt, t)
            if ckpt is not None and t == 3:
                ckpt.save(t, model=model, optimizer=opt)

    model, opt = make()
    ckpt = Checkpointer(tmp_path, frozen="reference")
    train(model, opt, GradualUnfreezer(model, unit="step", every=2), range(7), ckpt)  # thaws at 2, 4, 6
    saved = _saved_keys(tmp_path / "step3")
    assert any(k.startswith("bert.encoder.layer.3.") for k in saved)  # thawed at step 2: stored
    assert not any(k.startswith("bert.encoder.layer.2.") for k in saved)  # still frozen: referenced
    model2, opt2 = make()
    result = ckpt.resume(model=model2, optimizer=opt2)
    assert result is not None
    train(model2, opt2, GradualUnfreezer(model2, unit="step", every=2), range(result.step + 1, 7))
    for k, v in _params(model).items():
        assert torch.equal(model2.state_dict()[k], v), k


# ---------------------------------------------------------------------------------------------- peft / LoRA


def _lora(seed: int = 0) -> Any:
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    base = _bert(seed)
    torch.manual_seed(seed + 100)
    return peft.get_peft_model(base, config)


def test_lora_saves_only_adapters_and_modules_to_save_and_resumes_exactly(tmp_path: Path) -> None:
    def make() -> tuple[Any, Any]:
        model = _lora()
        return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    folder, _ = _run_and_resume(tmp_path, make)
    weights = {k for k in _saved_keys(folder) if not k.endswith(("position_ids", "token_type_ids"))}
    assert weights
    assert all("lora_" in k or ".modules_to_save." in k for k in weights), sorted(weights)
    assert any(".modules_to_save." in k for k in weights)


def test_export_loads_with_from_pretrained_and_gives_the_same_logits(tmp_path: Path) -> None:
    import transformers as tf

    ids = torch.randint(1, 100, (2, 8), generator=torch.Generator().manual_seed(9))
    for name, make in (("plain", _bert), ("lora", _lora)):
        model = make()
        if name == "plain":
            freeze(model, "all-but-head")
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for step in range(2):
            _step(model, opt, step)
        ckpt = Checkpointer(tmp_path / name, frozen="reference")
        ckpt.save(2, model=model)
        out = ckpt.export(tmp_path / f"{name}-export", model=make())
        exported = tf.AutoModelForSequenceClassification.from_pretrained(out)
        model.eval()
        with torch.no_grad():
            want, got = model(input_ids=ids).logits, exported(input_ids=ids).logits
        if name == "plain":
            assert torch.equal(got, want)
        else:  # merging LoRA into the weights rounds differently
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="`path` must be a new or empty folder"):
        ckpt.export(out, model=_lora())


def test_export_refuses_a_model_without_save_pretrained_before_loading_into_it(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path / "ck")
    saved = torch.nn.Linear(3, 2)
    ckpt.save(1, model=saved)
    target = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(TypeError, match=r"save_pretrained\(\) to export; got Linear"):
        ckpt.export(tmp_path / "out", model=target)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing was loaded
