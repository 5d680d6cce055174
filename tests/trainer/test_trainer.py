"""``hfbridge.Trainer`` in-process on a tiny BERT: batching, sorted evaluation, kept checkpoints, early stopping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import hfbridge
from hfbridge.samplers import LengthGroupedBatchSampler, RandomBatchSampler, TokenBudgetBatchSampler

pytestmark = pytest.mark.slow


def _args(tmp_path: Path, **kw: Any) -> Any:
    options: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "logging_strategy": "no",
        "save_strategy": "no",
        "seed": 5,
    }
    options.update(kw)
    return hfbridge.TrainingArguments(**options)


@pytest.fixture(scope="module")
def tokenized(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> Any:
    return seqcls_dataset.map(
        lambda b: wordpiece_tokenizer(b["text"], truncation=True, max_length=64),
        batched=True,
        remove_columns=["text"],
    )


def _trainer(tmp_path: Path, tokenized: Any, tok: Any, make_tiny_model: Any, **kw: Any) -> Any:
    from transformers import DataCollatorWithPadding

    extra = {k: kw.pop(k) for k in ("compute_metrics", "callbacks", "processing_class") if k in kw}
    return hfbridge.Trainer(
        model=make_tiny_model("bert", "sequence-classification"),
        args=_args(tmp_path, **kw),
        train_dataset=tokenized,
        eval_dataset=tokenized,
        data_collator=DataCollatorWithPadding(tok),
        **extra,
    )


def _sampler(loader: Any) -> Any:
    inner = loader.batch_sampler
    return getattr(inner, "batch_sampler", inner)


@pytest.mark.parametrize(
    ("flags", "kind"),
    [
        ({"train_sampling_strategy": "group_by_length"}, LengthGroupedBatchSampler),
        ({}, RandomBatchSampler),  # HF's default "random" keeps its meaning, with an O(1) resume
        ({"batching": "tokens", "max_tokens": 200}, TokenBudgetBatchSampler),
        ({"batching": "length"}, LengthGroupedBatchSampler),
    ],
)
def test_training_batches_come_from_the_flagged_sampler(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any, flags: Any, kind: Any
) -> None:
    trainer = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, **flags)
    sampler = _sampler(trainer.get_train_dataloader())
    assert isinstance(sampler, kind)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(tokenized)))
    if kind is TokenBudgetBatchSampler:
        lengths = np.array([len(x) for x in tokenized["input_ids"]])
        assert all(len(b) * lengths[b].max() <= 200 for b in batches)


def test_sequential_strategy_keeps_trainers_own_sampler(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    trainer = _trainer(
        tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, train_sampling_strategy="sequential"
    )
    assert not hasattr(_sampler(trainer.get_train_dataloader()), "seek")


def test_a_length_column_that_disagrees_with_input_ids_warns_and_wins(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    flipped = tokenized.add_column("length", [100 - len(x) for x in tokenized["input_ids"]])
    trainer = _trainer(tmp_path, flipped, wordpiece_tokenizer, make_tiny_model, batching="length")
    with pytest.warns(UserWarning, match="length_column_name"):
        sampler = _sampler(trainer.get_train_dataloader())
    first = next(iter(LengthGroupedBatchSampler(np.asarray(flipped["length"]), 8, seed=5)))
    assert isinstance(sampler, LengthGroupedBatchSampler)
    assert next(iter(sampler)) == first


def test_sorted_evaluation_gives_the_unsorted_metrics_and_predictions_in_dataset_order(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    seen: list[np.ndarray] = []

    def metrics(pred: Any) -> dict[str, float]:
        seen.append(pred.label_ids.copy())
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    sorted_run = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, compute_metrics=metrics)
    plain_run = _trainer(
        tmp_path,
        tokenized,
        wordpiece_tokenizer,
        make_tiny_model,
        compute_metrics=metrics,
        sort_eval_by_length=False,
    )
    loader = sorted_run.get_eval_dataloader()
    widths = [b["input_ids"].shape[1] for b in loader]
    assert widths == sorted(widths, reverse=True)  # really length-sorted
    a, b = sorted_run.evaluate(), plain_run.evaluate()
    assert a["eval_accuracy"] == b["eval_accuracy"]
    assert a["eval_loss"] == pytest.approx(b["eval_loss"], rel=1e-5)
    labels = np.asarray(tokenized["label"])
    assert all(np.array_equal(s, labels) for s in seen)  # compute_metrics saw dataset order both times
    pa, pb = sorted_run.predict(tokenized), plain_run.predict(tokenized)
    np.testing.assert_array_equal(pa.label_ids, labels)
    np.testing.assert_allclose(pa.predictions, pb.predictions, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "flags",
    [
        {"sort_eval_by_length": False},  # HF's eval sampler would be LengthGroupedSampler: shuffled output
        {"dataloader_drop_last": True},  # sorting would drop the shortest rows instead of the last ones
    ],
)
def test_unsorted_evaluation_is_in_dataset_order_even_with_group_by_length(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any, flags: Any
) -> None:
    from torch.utils.data import SequentialSampler

    options = {"train_sampling_strategy": "group_by_length", "per_device_eval_batch_size": 7, **flags}
    trainer = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, **options)
    assert isinstance(trainer._get_eval_sampler(tokenized), SequentialSampler)
    rows = len(tokenized) - len(tokenized) % 7 if flags.get("dataloader_drop_last") else len(tokenized)
    got = trainer.predict(tokenized)
    np.testing.assert_array_equal(got.label_ids, np.asarray(tokenized["label"])[:rows])


def test_a_random_masking_collator_keeps_evaluation_in_dataset_order(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    from torch.utils.data import SequentialSampler
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    from hfbridge.collators import MaskedLMCollator
    from hfbridge.trainer._batching import SortedOrder

    def sampler(collator: Any, **flags: Any) -> Any:
        trainer = hfbridge.Trainer(
            model=make_tiny_model("bert", "masked-lm"),
            args=_args(tmp_path, **flags),
            data_collator=collator,
        )
        return trainer._get_eval_sampler(tokenized)

    assert isinstance(sampler(DataCollatorWithPadding(wordpiece_tokenizer)), SortedOrder)
    assert isinstance(sampler(DataCollatorForLanguageModeling(wordpiece_tokenizer, mlm=False)), SortedOrder)
    for masking in (
        DataCollatorForLanguageModeling(wordpiece_tokenizer),
        MaskedLMCollator(wordpiece_tokenizer),
    ):
        assert isinstance(sampler(masking), SequentialSampler), type(masking).__name__


def test_masked_lm_with_evaluation_matches_hf_step_for_step(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    # HF's masking collator draws from torch's global RNG: sorted evaluation batches would draw other masks
    # and leave training on another RNG stream, so every loss after the first evaluation would differ
    import transformers
    from transformers import DataCollatorForLanguageModeling

    rows = tokenized.remove_columns("label").select(range(48))
    flags = {"max_steps": 6, "eval_strategy": "steps", "eval_steps": 2, "logging_strategy": "steps"}
    flags |= {"logging_steps": 1, "train_sampling_strategy": "sequential", "per_device_eval_batch_size": 5}
    history = []
    for trainer_class, args_class in (
        (transformers.Trainer, transformers.TrainingArguments),
        (hfbridge.Trainer, hfbridge.TrainingArguments),
    ):
        options = _args(tmp_path / trainer_class.__module__, **flags).to_dict()
        options = {k: v for k, v in options.items() if k in args_class.__dataclass_fields__}
        options = {k: v for k, v in options.items() if args_class.__dataclass_fields__[k].init}
        trainer = trainer_class(
            model=make_tiny_model("bert", "masked-lm"),
            args=args_class(**options),
            train_dataset=rows,
            eval_dataset=rows,
            data_collator=DataCollatorForLanguageModeling(wordpiece_tokenizer),
        )
        trainer.train()
        history.append(
            [
                {k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
                for h in trainer.state.log_history
            ]
        )
    assert history[0] == history[1]
    assert sum("eval_loss" in h for h in history[1]) == 3


def test_checkpoint_folders_hold_what_hf_tooling_reads(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    options = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    options["processing_class"] = wordpiece_tokenizer
    trainer = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, **options)
    trainer.train()
    out = Path(trainer.args.output_dir)
    assert get_last_checkpoint(str(out)) == str(out / "checkpoint-4")
    folder = out / "checkpoint-4"
    hf_files = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    hf_files |= {"trainer_state.json", "training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"}
    assert hf_files <= {p.name for p in folder.iterdir()}
    manifest = json.loads((out / "manifest.json").read_text())
    record = next(c for c in manifest["checkpoints"] if c["name"] == "checkpoint-4")
    assert hf_files <= set(record["files"])  # checksummed and published with the rest, by the store
    loaded = AutoModelForSequenceClassification.from_pretrained(folder)
    weights = trainer.model.state_dict()
    assert loaded.state_dict().keys() == weights.keys()
    assert all(torch.equal(v, weights[k]) for k, v in loaded.state_dict().items())
    text = "a small test sentence"
    assert AutoTokenizer.from_pretrained(folder)(text)["input_ids"] == wordpiece_tokenizer(text)["input_ids"]
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 4
    # tools that pick the class from config.json see the task model, as in HF's checkpoints (save_pretrained
    # sets it); the model's own config is left as it was
    assert json.loads((folder / "config.json").read_text())["architectures"] == [
        "BertForSequenceClassification"
    ]
    assert trainer.model.config.architectures is None


class _Scores:
    """compute_metrics returning a scripted score per evaluation."""

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls = scores, 0

    def __call__(self, pred: Any) -> dict[str, float]:
        self.calls += 1
        return {"score": self.scores[self.calls - 1]}


def _kept(tmp_path: Path) -> list[int]:
    folders = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith("checkpoint-")]
    return sorted(int(n.split("-")[1]) for n in folders)


SCORES = [0.5, 0.9, 0.3, 0.8, 0.2, 0.7, 0.1, 0.6]  # best: step 2, then 4, then 6


@pytest.mark.parametrize(
    ("flags", "kept"),
    [
        ({"save_total_limit": 2}, [7, 8]),  # no metric: the newest N, as HF
        ({"save_total_limit": 3, "metric_for_best_model": "score"}, [2, 7, 8]),  # HF: best + newest
        ({"save_total_limit": 2, "keep_last": 1, "metric_for_best_model": "score"}, [2, 4, 8]),  # best-K + N
        ({"save_total_limit": 1, "metric_for_best_model": "score"}, [2, 8]),  # HF allows best and newest
        # the best (step 7) is among the newest 3: HF keeps the newest 3, not best + newest 2
        ({"save_total_limit": 3, "metric_for_best_model": "score", "greater_is_better": False}, [6, 7, 8]),
        ({"metric_for_best_model": "score"}, list(range(1, 9))),  # no limit: all
    ],
)
def test_the_kept_checkpoints_follow_the_documented_rule(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any, flags: Any, kept: Any
) -> None:
    trainer = _trainer(
        tmp_path,
        tokenized.select(range(64)),
        wordpiece_tokenizer,
        make_tiny_model,
        compute_metrics=_Scores(SCORES),
        max_steps=8,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        **flags,
    )
    trainer.train()
    assert _kept(tmp_path) == kept
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(c["step"] for c in manifest["checkpoints"]) == kept  # the store's record agrees
    if "metric_for_best_model" in flags:
        best = str(
            tmp_path / "out" / ("checkpoint-7" if flags.get("greater_is_better") is False else "checkpoint-2")
        )
        assert trainer.state.best_model_checkpoint == best
        state = json.loads((tmp_path / "out" / "checkpoint-8" / "trainer_state.json").read_text())
        assert state["best_model_checkpoint"] == best


def test_load_best_model_at_end_loads_the_best_checkpoints_weights(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    from safetensors.torch import load_file

    trainer = _trainer(
        tmp_path,
        tokenized.select(range(48)),
        wordpiece_tokenizer,
        make_tiny_model,
        compute_metrics=_Scores(SCORES),
        max_steps=6,
        learning_rate=1e-2,
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        save_total_limit=2,
        metric_for_best_model="score",
        load_best_model_at_end=True,
    )
    trainer.train()
    best = load_file(str(tmp_path / "out" / "checkpoint-2" / "model.safetensors"))
    newest = load_file(str(tmp_path / "out" / "checkpoint-6" / "model.safetensors"))
    own = trainer.model.state_dict()
    assert any(not torch.equal(best[k], newest[k]) for k in best)
    assert all(torch.equal(own[k], best[k]) for k in best)


def test_early_stopping_patience_survives_a_resume(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    scores = [0.9, 0.5, 0.4, 0.3, 0.2, 0.1, 0.1, 0.1]  # never better than step 1: patience 3 stops at step 4
    common = {
        "max_steps": 8,
        "eval_strategy": "steps",
        "eval_steps": 1,
        "save_strategy": "steps",
        "save_steps": 1,
        "metric_for_best_model": "score",
        "early_stopping_patience": 3,
    }
    data = tokenized.select(range(64))
    run = _trainer(
        tmp_path / "a", data, wordpiece_tokenizer, make_tiny_model, compute_metrics=_Scores(scores), **common
    )
    run.train()
    assert run.state.global_step == 4
    # the same run killed after step 2, then resumed: two patience steps already used are remembered
    part = _trainer(
        tmp_path / "b",
        data,
        wordpiece_tokenizer,
        make_tiny_model,
        compute_metrics=_Scores(scores),
        **{**common, "max_steps": 8},
    )
    part.add_callback(_StopAt(2))
    part.train()
    assert part.state.global_step == 2
    resumed = _trainer(
        tmp_path / "b",
        data,
        wordpiece_tokenizer,
        make_tiny_model,
        compute_metrics=_Scores(scores[2:]),
        **common,
    )
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 4


class _StopAt:
    def __new__(cls, step: int) -> Any:
        from transformers import TrainerCallback

        class Stop(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step >= step:
                    control.should_training_stop = True

        return Stop()


def test_freeze_flag_freezes_before_the_optimizer_is_built(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    trainer = _trainer(
        tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, freeze="embeddings", max_steps=1
    )
    frozen = {n for n, p in trainer.model.named_parameters() if not p.requires_grad}
    assert frozen
    assert all("embeddings" in n for n in frozen)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param, before[name]) == (name in frozen), name
    with pytest.raises(ValueError, match="freeze"):
        _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, freeze="pattern:^nothing_here$")


def test_resume_true_sets_a_damaged_newest_checkpoint_aside_and_takes_the_next(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    flags = {"save_strategy": "steps", "save_steps": 2, "max_steps": 6}
    _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, **flags).train()
    victim = tmp_path / "out" / "checkpoint-6" / "model.safetensors"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF  # bit rot in the newest checkpoint
    victim.write_bytes(bytes(data))
    resumed = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, **{**flags, "max_steps": 8})
    with pytest.warns(RuntimeWarning, match=r"skipping checkpoint 'checkpoint-6'.*checksum"):
        resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    assert _kept(tmp_path) == [2, 4, 6, 8]  # checkpoint-6 written anew from step 4; nothing valid deleted
    assert any(p.name.startswith(".quarantine-hfbridge-checkpoint-6") for p in (tmp_path / "out").iterdir())


@pytest.mark.parametrize("how", ["newest", "path", "model_init"])
def test_a_resume_reads_and_verifies_the_checkpoint_once(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any, how: str, monkeypatch: Any
) -> None:
    import hfbridge.callbacks._store as store

    flags = {"save_strategy": "steps", "save_steps": 2, "max_steps": 4, "early_stopping_patience": 3}
    flags |= {"eval_strategy": "steps", "eval_steps": 2}
    done = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, **flags)
    done.train()
    at_4 = {k: v.clone() for k, v in done.model.state_dict().items()}
    reads: list[tuple[str, bool]] = []
    real_read, real_problem = store.read_payload, store._files_problem

    def read(folder: Path, **kwargs: Any) -> Any:
        reads.append((folder.name, kwargs["wanted"]["model"]))
        return real_read(folder, **kwargs)

    def problem(folder: Path, entry: Any, *, verify: bool) -> Any:
        if verify:
            reads.append((f"verify {folder.name}", False))
        return real_problem(folder, entry, verify=verify)

    monkeypatch.setattr(store, "read_payload", read)
    monkeypatch.setattr(store, "_files_problem", problem)
    resumed = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, **{**flags, "max_steps": 6})
    if how == "model_init":  # train() builds a new model: Trainer loads the weights into that one, later
        resumed.model_init = lambda *args: make_tiny_model("bert", "sequence-classification")
    loaded: dict[str, torch.Tensor] = {}
    real_train = type(resumed).__mro__[1].train  # transformers.Trainer.train: the weights are in by then

    def train_after_load(self: Any, *args: Any, **kwargs: Any) -> Any:
        if how != "model_init":
            loaded.update({k: v.clone() for k, v in self.model.state_dict().items()})
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(type(resumed).__mro__[1], "train", train_after_load)
    where = {"newest": True, "path": str(tmp_path / "out" / "checkpoint-4"), "model_init": "true"}[how]
    resumed.train(resume_from_checkpoint=where)  # "true": what `--resume_from_checkpoint True` gives a script
    assert resumed.state.global_step == 6
    if how == "model_init":  # one read for early stopping's state, one for the new model's weights
        state_read = [("verify checkpoint-4", False), ("checkpoint-4", False)]
        assert reads == [*state_read, ("verify checkpoint-4", False), ("checkpoint-4", True)]
        return
    assert reads == [("verify checkpoint-4", False), ("checkpoint-4", True)]
    assert all(torch.equal(loaded[k], at_4[k]) for k in at_4)


def test_resume_seeks_the_sampler_without_replaying_batches(
    tmp_path: Path, tokenized: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    trainer = _trainer(tmp_path, tokenized, wordpiece_tokenizer, make_tiny_model, batching="length")
    loader = trainer.get_train_dataloader()
    sampler = _sampler(loader)
    sampler.set_epoch(1)
    expected = list(sampler)[5:]
    trainer._epoch_now = 1
    assert trainer.get_resumed_dataloader(loader, 5) is loader  # the same loader, not a skipping wrapper
    sampler.set_epoch(1)
    assert list(sampler) == expected


def test_default_data_collator_and_fixed_length_rows_train(
    tmp_path: Path, seqcls_dataset: Any, wordpiece_tokenizer: Any, make_tiny_model: Any
) -> None:
    from transformers import default_data_collator

    fixed = seqcls_dataset.map(
        lambda b: wordpiece_tokenizer(b["text"], padding="max_length", truncation=True, max_length=32),
        batched=True,
        remove_columns=["text"],
    )
    trainer = hfbridge.Trainer(
        model=make_tiny_model("bert", "sequence-classification"),
        args=_args(
            tmp_path,
            max_steps=3,
            train_sampling_strategy="group_by_length",
            save_strategy="steps",
            save_steps=3,
        ),
        train_dataset=fixed,
        data_collator=default_data_collator,
    )
    trainer.train()
    assert trainer.state.global_step == 3
    assert _kept(tmp_path) == [3]
