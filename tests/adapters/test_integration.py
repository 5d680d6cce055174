"""Adapters with the collators, a DataLoader and a real ``transformers.Trainer``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from hfbridge.adapters import adapt

TUTORIAL_TEXTS = ["Happy", "Amazing", "Sad", "Unhappy", "Glum"]
TUTORIAL_LABELS = ["Positive", "Positive", "Negative", "Negative", "Negative"]


def test_pytorch_tutorial_lists_give_padded_tensor_batches(wordpiece_tokenizer: Any) -> None:
    adapter = adapt((TUTORIAL_TEXTS, TUTORIAL_LABELS), wordpiece_tokenizer, task="sequence-classification")
    assert adapter.label2id == {"Negative": 0, "Positive": 1}
    torch.manual_seed(0)
    loader = torch.utils.data.DataLoader(adapter, batch_size=2, shuffle=True, collate_fn=adapter.collator)
    batches = list(loader)
    assert [len(b["labels"]) for b in batches] == [2, 2, 1]
    seen_labels = []
    for batch in batches:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert ids.dtype == torch.int64
        assert ids.shape == mask.shape
        assert batch["labels"].dtype == torch.int64
        lengths = mask.sum(dim=1)
        assert int(lengths.max()) == ids.shape[1]  # padded to the longest row of the batch
        for row, n in zip(ids, lengths.tolist()):
            assert (row[n:] == wordpiece_tokenizer.pad_token_id).all()
        seen_labels += batch["labels"].tolist()
    assert sorted(seen_labels) == [0, 0, 0, 1, 1]


@pytest.mark.parametrize(
    ("task", "label_shape"),
    [
        ("sequence-classification", lambda b, n: (b,)),
        ("token-classification", lambda b, n: (b, n)),
        ("seq2seq", None),
        ("causal-lm", lambda b, n: (b, n)),
        ("masked-lm", lambda b, n: (b, n)),
    ],
)
def test_every_task_collates_through_its_collator(task: str, label_shape: Any, task_case: Any) -> None:
    case = task_case(task)
    adapter = adapt(case.dataset, case.tokenizer, task=task, **case.options)
    batch = next(iter(torch.utils.data.DataLoader(adapter, batch_size=8, collate_fn=adapter.collator)))
    b, n = batch["input_ids"].shape
    assert b == 8
    assert batch["attention_mask"].shape == (b, n)
    if label_shape is not None:
        assert batch["labels"].shape == label_shape(b, n)
    else:
        assert batch["labels"].shape[0] == b
    if task == "token-classification":
        assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_multi_label_and_regression_batches(
    multilabel_dataset: Any, regression_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    multi = adapt(
        multilabel_dataset, wordpiece_tokenizer, task="sequence-classification", label_column="labels"
    )
    batch = multi.collator([multi[i] for i in range(4)])
    assert batch["labels"].shape == (4, 4)
    assert batch["labels"].dtype == torch.float32
    reg = adapt(regression_dataset, wordpiece_tokenizer, task="sequence-classification", label_column="score")
    batch = reg.collator([reg[i] for i in range(4)])
    assert batch["labels"].dtype == torch.float32
    assert batch["labels"].shape == (4,)


def test_collator_kwargs_reach_the_collator(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        seqcls_dataset,
        wordpiece_tokenizer,
        task="sequence-classification",
        collator_kwargs={"pad_to_multiple_of": 8},
    )
    batch = adapter.collator([adapter[i] for i in range(5)])
    assert batch["input_ids"].shape[1] % 8 == 0


def test_streaming_adapter_feeds_a_dataloader(streaming_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(streaming_dataset, wordpiece_tokenizer, task="sequence-classification")
    loader = torch.utils.data.DataLoader(adapter, batch_size=32, num_workers=2, collate_fn=adapter.collator)
    sizes = [batch["input_ids"].shape[0] for batch in loader]
    assert sum(sizes) == 96


@pytest.mark.slow
def test_real_trainer_runs_on_a_lazy_adapter(
    seqcls_dataset_dict: Any, wordpiece_tokenizer: Any, make_tiny_model: Any, tmp_path: Any
) -> None:
    from transformers import Trainer, TrainingArguments

    splits = adapt(seqcls_dataset_dict, wordpiece_tokenizer, task="sequence-classification", max_length=64)
    train = splits["train"]
    model = make_tiny_model("bert", "sequence-classification", num_labels=train.num_labels)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        max_steps=3,
        learning_rate=1e-3,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        remove_unused_columns=True,  # the default: it would strip a `text` column from a datasets.Dataset
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=splits["validation"],
        data_collator=train.collator,
    )
    result = trainer.train()
    assert result.global_step == 3
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    metrics = trainer.evaluate()
    assert metrics["eval_loss"] > 0
    assert "text" in train.dataset.column_names  # the raw text is still there, tokenized on access


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        ([1, 2, 3, 4, 5, 3], ["1", "2", "3", "4", "5"]),  # star ratings: not 0..K-1
        ([0, 1, 2, 3, 4, 2], ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3", "LABEL_4"]),  # class ids
    ],
    ids=["ratings", "ids"],
)
def test_int_label_styles_end_to_end(
    labels: list[int], names: list[str], wordpiece_tokenizer: Any, tiny_model_dir: Any
) -> None:
    import torch

    from hfbridge.models import load_pretrained

    texts = ["a fine day", "bad", "so so", "good", "great film", "meh"]
    adapter = adapt((texts, labels), wordpiece_tokenizer, task="sequence-classification")
    assert adapter.num_labels == 5  # no empty class 0 for ratings
    model = load_pretrained(
        tiny_model_dir("bert", "sequence-classification"),
        task="sequence-classification",
        label2id=adapter.label2id,
        ignore_mismatched_sizes=True,  # the saved tiny head has 3 classes
    )
    assert model.classifier.out_features == 5
    batch = adapter.collator(adapter.__getitems__(list(range(6))))
    assert [adapter.id2label[i] for i in batch["labels"].tolist()] == [
        names[sorted(set(labels)).index(v)] for v in labels
    ]
    with torch.no_grad():
        predicted = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(
            -1
        )
    assert {model.config.id2label[i] for i in predicted.tolist()} <= set(
        names
    )  # predictions decode to the data's values
