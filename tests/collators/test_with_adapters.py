"""The adapters' rows go through their ``.collator`` for every task: the contract between the two parts."""

from __future__ import annotations

from typing import Any

import pytest
import torch

adapters = pytest.importorskip("hfbridge.adapters")


@pytest.mark.parametrize(
    ("dataset", "task", "kwargs", "label_shape"),
    [
        ("seqcls_dataset", "sequence-classification", {}, (8,)),
        ("multilabel_dataset", "sequence-classification", {"label_column": "labels"}, (8, 4)),
        ("regression_dataset", "sequence-classification", {"label_column": "score"}, (8,)),
        (
            "tokcls_dataset",
            "token-classification",
            {"text_column": "tokens", "label_column": "ner_tags"},
            None,
        ),
        ("seq2seq_dataset", "seq2seq", {"text_column": "source"}, None),
        ("lm_dataset", "causal-lm", {}, None),
        ("lm_dataset", "masked-lm", {}, None),
    ],
)
def test_adapter_rows_collate(
    request: pytest.FixtureRequest,
    wordpiece_tokenizer: Any,
    dataset: str,
    task: str,
    kwargs: dict[str, Any],
    label_shape: tuple[int, ...] | None,
) -> None:
    data = request.getfixturevalue(dataset)
    adapted = adapters.adapt(data, wordpiece_tokenizer, task=task, **kwargs)
    rows = adapted.__getitems__(list(range(8)))
    batch = adapted.collator(rows)
    assert batch["input_ids"].shape[0] == 8
    assert batch["attention_mask"].shape == batch["input_ids"].shape
    assert batch["attention_mask"].sum(dim=1).tolist() == [len(r["input_ids"]) for r in rows]
    labels = batch["labels"]
    if label_shape is not None:
        assert labels.shape == label_shape
    elif task != "seq2seq":
        assert labels.shape == batch["input_ids"].shape
    if dataset == "regression_dataset" or dataset == "multilabel_dataset":
        assert labels.dtype == torch.float32
    else:
        assert labels.dtype == torch.int64
