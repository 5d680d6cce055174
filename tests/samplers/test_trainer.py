"""BatchingTrainerMixin with a real transformers.Trainer on a tiny BERT, a few CPU steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hfbridge.samplers import BatchingTrainerMixin, LengthGroupedBatchSampler, TokenBudgetBatchSampler

pytestmark = pytest.mark.slow


def _trainer_class() -> Any:
    from transformers import Trainer

    class BatchingTrainer(BatchingTrainerMixin, Trainer):
        pass

    return BatchingTrainer


def _our_sampler(loader: Any) -> Any:
    """The sampler under accelerate's wrapper (a BatchSamplerShard only appears with several processes)."""
    sampler = loader.batch_sampler
    return getattr(sampler, "batch_sampler", sampler)


def _args(tmp_path: Path, **overrides: Any) -> Any:
    from transformers import TrainingArguments

    options: dict[str, Any] = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 8,
        "num_train_epochs": 2,
        "report_to": [],
        "use_cpu": True,
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "seed": 3,
    }
    options.update(overrides)
    return TrainingArguments(**options)


@pytest.fixture(scope="module")
def tokenized(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> Any:
    return seqcls_dataset.map(
        lambda b: wordpiece_tokenizer(b["text"], truncation=True, max_length=64), batched=True
    )


def test_trainer_trains_with_length_grouped_batches(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    from transformers import DataCollatorWithPadding, TrainerCallback

    epochs: list[int] = []

    class Spy(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            loader = kwargs["train_dataloader"]
            epochs.append(_our_sampler(loader).epoch)

    trainer = _trainer_class()(
        model=make_tiny_model("bert", "sequence-classification"),
        args=_args(tmp_path),
        train_dataset=tokenized,
        data_collator=DataCollatorWithPadding(wordpiece_tokenizer),
        callbacks=[Spy()],
    )
    loader = trainer.get_train_dataloader()
    sampler = _our_sampler(loader)
    assert isinstance(sampler, LengthGroupedBatchSampler)
    assert sampler.seed == 3
    lengths = np.array([len(x) for x in tokenized["input_ids"]])
    np.testing.assert_array_equal(sampler._lengths, lengths)  # read from Arrow, not by tokenizing
    batches = list(loader)
    assert len(batches) == 12
    padded = sum(b["input_ids"].numel() for b in batches)
    assert padded < 0.8 * len(batches) * 8 * lengths.max()
    result = trainer.train()
    assert result.global_step == 24
    assert epochs[0] == 0
    assert epochs[-1] == 1


def test_trainer_token_budget_with_a_real_adapter(
    tmp_path: Path, make_tiny_model: Any, wordpiece_tokenizer: Any, seqcls_dataset: Any
) -> None:
    from hfbridge.adapters import adapt

    adapter = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification", max_length=64)
    trainer = _trainer_class()(
        model=make_tiny_model("bert", "sequence-classification"),
        args=_args(tmp_path, max_steps=3),
        train_dataset=adapter,
        data_collator=adapter.collator,
        batching="tokens",
        max_tokens=256,
    )
    sampler = _our_sampler(trainer.get_train_dataloader())
    assert isinstance(sampler, TokenBudgetBatchSampler)
    assert sampler.max_batch_size == 8
    assert all(len(b) * adapter.lengths[b].max() <= 256 for b in sampler)
    assert trainer.train().global_step == 3


def test_mixin_bad_arguments(tmp_path: Path, make_tiny_model: Any, tokenized: Any) -> None:
    cls = _trainer_class()
    model = make_tiny_model("bert", "sequence-classification")
    with pytest.raises(ValueError, match="`batching` must be one of"):
        cls(model=model, args=_args(tmp_path), train_dataset=tokenized, batching="sorted")
    with pytest.raises(ValueError, match="`max_tokens` is required with batching='tokens'"):
        cls(model=model, args=_args(tmp_path), train_dataset=tokenized, batching="tokens")


def test_dataset_without_lengths_is_refused() -> None:
    from hfbridge.samplers import dataset_lengths

    with pytest.raises(TypeError, match=r"give it a `\.lengths` array"):
        dataset_lengths([1, 2, 3])


def test_trainer_resume_from_checkpoint_sees_the_same_batches(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    from transformers import DataCollatorWithPadding

    class Recorder:
        def __init__(self) -> None:
            self.pad = DataCollatorWithPadding(wordpiece_tokenizer)
            self.seen: list[Any] = []

        def __call__(self, rows: list[dict[str, Any]]) -> Any:
            batch = self.pad(rows)
            self.seen.append(batch["input_ids"].tolist())
            return batch

    def run(output: Path, resume: str | None) -> list[Any]:
        recorder = Recorder()
        trainer = _trainer_class()(
            model=make_tiny_model("bert", "sequence-classification"),
            args=_args(output, max_steps=4, save_strategy="steps", save_steps=2),
            train_dataset=tokenized,
            data_collator=recorder,
        )
        trainer.train(resume_from_checkpoint=resume)
        return recorder.seen

    full = run(tmp_path / "a", None)
    resumed = run(tmp_path / "b", str(tmp_path / "a" / "checkpoint-2"))
    assert resumed[:2] == full[2:4]


def test_trainer_buckets_a_streaming_adapter(
    tmp_path: Path, make_tiny_model: Any, wordpiece_tokenizer: Any, streaming_dataset: Any
) -> None:
    from hfbridge.adapters import adapt
    from hfbridge.samplers import BucketedIterable

    stream = adapt(streaming_dataset, wordpiece_tokenizer, task="sequence-classification", max_length=64)
    trainer = _trainer_class()(
        model=make_tiny_model("bert", "sequence-classification"),
        args=_args(tmp_path, max_steps=3),
        train_dataset=stream,
        data_collator=stream.collator,
        sampler_kwargs={"buffer_size": 32},
    )
    loader = trainer.get_train_dataloader()
    assert isinstance(loader.dataset, BucketedIterable)
    assert loader.dataset.buffer_size == 32
    assert trainer.train().global_step == 3


def test_trainer_sets_the_collator_epoch(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    from transformers import DataCollatorWithPadding

    class EpochCollator(DataCollatorWithPadding):
        seen: list[int]

        def set_epoch(self, epoch: int) -> None:
            self.seen.append(epoch)

    collator = EpochCollator(wordpiece_tokenizer)
    collator.seen = []
    trainer = _trainer_class()(
        model=make_tiny_model("bert", "sequence-classification"),
        args=_args(tmp_path),
        train_dataset=tokenized,
        data_collator=collator,
    )
    trainer.train()
    assert sorted(set(collator.seen)) == [0, 1]
    assert collator.seen[-1] == 1


def test_trainer_with_persistent_workers_shares_the_collator_epoch(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    """Persistent workers keep their collator copy: the Trainer's loader hands them one whose epoch is shared."""
    from transformers import DataCollatorWithPadding

    from hfbridge.samplers import EpochSyncedCollator

    class EpochCollator(DataCollatorWithPadding):
        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

    collator = EpochCollator(wordpiece_tokenizer)
    trainer = _trainer_class()(
        model=make_tiny_model("bert", "sequence-classification"),
        args=_args(tmp_path, dataloader_num_workers=1, dataloader_persistent_workers=True),
        train_dataset=tokenized,
        data_collator=collator,
    )
    loader = trainer.get_train_dataloader()
    synced = loader.collate_fn
    assert isinstance(synced, EpochSyncedCollator)
    assert synced.collator is collator
    _our_sampler(loader).set_epoch(4)  # what the Trainer calls each epoch
    assert synced._shared.value == 4
    assert collator.epoch == 4
    assert len(next(iter(loader))["input_ids"]) == 8  # a worker collates through it
