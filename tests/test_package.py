"""The package itself: lazy public names, a light side-effect-free import, and the test kit."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ARCHS, SRC_DIR, TASK_HEADS


def _ruff_order(names: list[str]) -> list[str]:
    """The order ruff's RUF022 enforces: SCREAMING_CASE, then CamelCase, then the rest, each sorted."""

    def key(name: str) -> tuple[int, str]:
        group = 0 if name.isupper() and len(name) > 1 else 1 if name[:1].isupper() else 2
        return group, name

    return sorted(names, key=key)


def _run(code: str) -> str:
    env_code = f"import sys; sys.path.insert(0, {str(SRC_DIR)!r})\n" + code
    return subprocess.run([sys.executable, "-c", env_code], check=True, capture_output=True, text=True).stdout


def test_import_is_light_and_side_effect_free() -> None:
    out = _run(
        "import os, sys, time\n"
        "env = dict(os.environ)\n"
        "t0 = time.perf_counter(); import torch; t1 = time.perf_counter()\n"
        "import hfbridge; t2 = time.perf_counter()\n"
        "import json\n"
        "print(json.dumps({'heavy': [m for m in ('transformers', 'datasets', 'pandas') if m in sys.modules],\n"
        "  'added': t2 - t1, 'env_changed': dict(os.environ) != env}))\n"
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["env_changed"] is False
    assert result["added"] < 0.5


def test_import_without_torch_imports_nothing_heavy() -> None:
    out = _run(
        "import sys, hfbridge; print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_all_is_sorted_and_every_public_name_resolves() -> None:
    import hfbridge

    assert list(hfbridge.__all__) == _ruff_order(hfbridge.__all__)
    for name in hfbridge.__all__:
        assert getattr(hfbridge, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hfbridge.nope


@pytest.mark.parametrize("sub", ["adapters", "callbacks", "collators", "models", "samplers"])
def test_subpackage_all_sorted_and_resolvable(sub: str) -> None:
    import importlib

    mod = importlib.import_module(f"hfbridge.{sub}")
    assert list(mod.__all__) == _ruff_order(mod.__all__)
    for name in mod.__all__:
        assert hasattr(mod, name), f"hfbridge.{sub}.{name}"


# ------------------------------------------------------------------------------------------- the test kit itself


def test_tokenizers_have_special_tokens(wordpiece_tokenizer: Any, bpe_tokenizer: Any) -> None:
    for tok in (wordpiece_tokenizer, bpe_tokenizer):
        for attr in ("pad_token_id", "unk_token_id", "mask_token_id", "cls_token_id", "sep_token_id"):
            assert isinstance(getattr(tok, attr), int), attr
        assert tok.pad_token_id == 0
        enc = tok("Scientists discovered a rare comet")
        assert enc["input_ids"][0] == tok.cls_token_id
        assert enc["input_ids"][-1] == tok.sep_token_id
    pair = wordpiece_tokenizer("a b", "c")
    assert pair["token_type_ids"][-1] == 1
    assert "token_type_ids" not in bpe_tokenizer("hello")


def test_wordpiece_splits_words_into_subwords(wordpiece_tokenizer: Any) -> None:
    enc = wordpiece_tokenizer(["astronomers", "discovered", "unexpected"], is_split_into_words=True)
    word_ids = [w for w in enc.word_ids() if w is not None]
    assert len(word_ids) > 3  # at least one word became several pieces


@pytest.mark.parametrize(("arch", "task"), [(a, t) for a in ARCHS for t in TASK_HEADS[a]])
def test_tiny_models_run_forward(arch: str, task: str, make_tiny_model: Any, tokenizer_for: Any) -> None:
    import torch

    model = make_tiny_model(arch, task)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 200_000
    tok = tokenizer_for(arch)
    batch = tok(["The market won", "Sad"], padding=True, return_tensors="pt")
    batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    if task == "seq2seq":
        batch["labels"] = batch["input_ids"].clone()
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[0] == 2
    if task == "sequence-classification":
        assert out.logits.shape == (2, 3)


def test_dataset_fixtures_have_a_length_spread(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    lengths = [len(ids) for ids in wordpiece_tokenizer(list(seqcls_dataset["text"]))["input_ids"]]
    assert min(lengths) <= 4
    assert max(lengths) >= 4 * (sum(lengths) / len(lengths))  # a long tail
    assert seqcls_dataset.features["label"].names == ["negative", "neutral", "positive"]


def test_task_dataset_fixtures(
    pair_dataset: Any,
    multilabel_dataset: Any,
    regression_dataset: Any,
    tokcls_dataset: Any,
    seq2seq_dataset: Any,
    lm_dataset: Any,
    string_label_dataset: Any,
    seqcls_dataset_dict: Any,
    streaming_dataset: Any,
) -> None:
    assert set(pair_dataset.column_names) == {"premise", "hypothesis", "label"}
    assert all(isinstance(x, list) for x in multilabel_dataset["labels"])
    assert all(isinstance(x, float) for x in regression_dataset["score"])
    row = tokcls_dataset[0]
    assert len(row["tokens"]) == len(row["ner_tags"])
    assert len(seq2seq_dataset) == 64
    assert len(lm_dataset) == 96
    assert isinstance(string_label_dataset[0]["label"], str)
    assert {k: len(v) for k, v in seqcls_dataset_dict.items()} == {"train": 64, "validation": 16, "test": 16}
    assert streaming_dataset.num_shards == 4
    assert sum(1 for _ in streaming_dataset) == 96


def test_tiny_model_dir_round_trips(tiny_model_dir: Any) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = tiny_model_dir("bert", "sequence-classification")
    model = AutoModelForSequenceClassification.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.num_labels == 3
    assert tok.pad_token == "[PAD]"


@pytest.mark.pretrained
def test_pretrained_minilm_loads(minilm_path: Any) -> None:
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path)
    model = AutoModel.from_pretrained(minilm_path)
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_500_000
    assert tok.pad_token_id == 0
