"""load_pretrained from tiny saved models and the real MiniLM."""

from __future__ import annotations

from typing import Any

import pytest

from hfbridge.models import AUTO_CLASSES, load_pretrained
from tests.conftest import ARCHS, TASK_HEADS

ARCH_TASKS = [(a, t) for a in ARCHS for t in TASK_HEADS[a]]
LABELS = {"negative": 0, "neutral": 1, "positive": 2}


@pytest.mark.parametrize(("arch", "task"), ARCH_TASKS)
def test_loads_the_auto_class_of_the_task(arch: str, task: str, tiny_model_dir: Any) -> None:
    import transformers

    path = tiny_model_dir(arch, task)
    labels = {"label2id": LABELS} if task in ("sequence-classification", "token-classification") else {}
    model = load_pretrained(path, task=task, freeze="embeddings", **labels)
    expected = getattr(transformers, AUTO_CLASSES[task]).from_pretrained(path)
    assert type(model) is type(expected)
    if labels:
        assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
        assert model.config.label2id == LABELS
        assert model.config.num_labels == 3
    embeddings = model.get_input_embeddings().weight
    assert not embeddings.requires_grad
    assert any(p.requires_grad for p in model.parameters())


def test_label_map_forms(tiny_model_dir: Any) -> None:
    path = tiny_model_dir("bert", "sequence-classification")
    m = load_pretrained(path, task="sequence-classification", id2label={"0": "a", "1": "b", "2": "c"})
    assert m.config.label2id == {"a": 0, "b": 1, "c": 2}
    assert m.config.id2label == {0: "a", 1: "b", 2: "c"}
    m = load_pretrained(path, task="sequence-classification", num_labels=3)
    assert m.config.num_labels == 3
    m = load_pretrained(
        path, task="sequence-classification", num_labels=5, ignore_mismatched_sizes=True
    )  # from_pretrained kwargs pass through: a new head of another size
    assert m.classifier.out_features == 5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"task": "classification"}, ValueError, "`task` must be one of 'sequence-classification'"),
        ({"task": "seq2seq", "num_labels": 3}, ValueError, "`num_labels` only applies to the tasks"),
        ({"label2id": {"a": 0, "b": 0}}, ValueError, r"`label2id` ids must be the integers 0..1, each once"),
        ({"id2label": {0: "a", 1: "a"}}, ValueError, "`id2label` names must be unique; 'a' appears"),
        ({"label2id": {"a": 1, "b": 2}}, ValueError, r"`label2id` ids must be the integers 0..1, each once"),
        ({"label2id": {"1": 0, 1: 1}}, ValueError, "`label2id` names must be unique as strings"),
        ({"label2id": {"a": 0, "b": 1}, "id2label": {0: "b", 1: "a"}}, ValueError, "must be inverse maps"),
        (
            {"label2id": LABELS, "num_labels": 2},
            ValueError,
            r"`num_labels` must equal the number of labels in the maps \(3\); got 2",
        ),
        ({"num_labels": 0}, ValueError, "`num_labels` must be a positive integer; got 0"),
        ({"label2id": {"a": "0"}}, TypeError, r"`label2id` ids must be int class ids; got 'a': '0'"),
        (
            {"id2label": {0.5: "a"}},
            TypeError,
            r"`id2label \(inverted\)` ids must be int class ids; got 'a': 0.5",
        ),
        ({"label2id": ["a"]}, TypeError, "`label2id` must be a mapping of label name to class id"),
        ({"freeze": "layers:9"}, ValueError, "`layers` must be at most the number of blocks"),
    ],
)
def test_errors(kwargs: dict[str, Any], error: type[Exception], match: str, tiny_model_dir: Any) -> None:
    kwargs = {"task": "sequence-classification", **kwargs}
    with pytest.raises(error, match=match):
        load_pretrained(tiny_model_dir("bert", "sequence-classification"), **kwargs)


def test_int_label_names_follow_the_adapters_rule(tiny_model_dir: Any) -> None:
    path = tiny_model_dir("bert", "sequence-classification")
    model = load_pretrained(path, task="sequence-classification", label2id={1: 0, 3: 1, 5: 2})  # star ratings
    assert model.config.label2id == {"1": 0, "3": 1, "5": 2}
    assert model.config.id2label == {0: "1", 1: "3", 2: "5"}


def test_a_missing_folder_or_a_file_is_named(tiny_model_dir: Any, tmp_path: Any) -> None:
    with pytest.raises(
        ValueError, match=r"`name_or_path` names the folder '/nonexistent/model', which does not"
    ):
        load_pretrained("/nonexistent/model", task="masked-lm")
    with pytest.raises(ValueError, match="which does not exist"):
        load_pretrained(tmp_path / "missing", task="masked-lm")
    config = f"{tiny_model_dir('bert', 'masked-lm')}/config.json"
    with pytest.raises(
        ValueError, match=r"`name_or_path` must be a model folder .*got the file '.*config.json'"
    ):
        load_pretrained(config, task="masked-lm")


def test_the_model_comes_back_in_eval_mode(tiny_model_dir: Any) -> None:
    model = load_pretrained(tiny_model_dir("bert", "masked-lm"), task="masked-lm")
    assert not model.training  # as from_pretrained leaves it; a hand-written loop calls model.train()


def test_name_or_path_type() -> None:
    with pytest.raises(TypeError, match="`name_or_path` must be str or PathLike"):
        load_pretrained(3, task="masked-lm")  # type: ignore[arg-type]


@pytest.mark.pretrained
def test_real_minilm(minilm_path: Any, tokenizer_for: Any) -> None:
    import torch
    from transformers import AutoTokenizer

    model = load_pretrained(
        minilm_path, task="sequence-classification", label2id=LABELS, freeze="embeddings,layers:4,eval-frozen"
    )
    assert type(model).__name__ == "BertForSequenceClassification"
    assert model.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    names = [n for n, _ in model.named_parameters()]
    assert sum(1 for n in names if n.startswith("bert.encoder.layer.")) == 6 * 16  # 6 blocks found
    want = {
        n
        for n in names
        if n.startswith(("bert.encoder.layer.4.", "bert.encoder.layer.5.", "bert.pooler.", "classifier."))
    }
    assert {n for n, p in model.named_parameters() if p.requires_grad} == want
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == sum(
        params[n].numel() for n in want
    )
    model.train()
    assert not model.bert.embeddings.training
    assert model.bert.encoder.layer[5].training
    tok = AutoTokenizer.from_pretrained(minilm_path)
    batch = tok(["a fine day", "bad"], padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([2, 0]))
    out.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is None
    assert model.bert.encoder.layer[5].output.dense.weight.grad is not None
