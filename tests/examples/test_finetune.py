"""examples/finetune.py: argparse-style errors, a short run on a tiny model, resume, and the real MiniLM."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.examples.conftest import DATA

TRAIN = str(DATA / "news_train.csv")
VAL = str(DATA / "news_validation.csv")


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, str]:
    files = {
        "txt": tmp_path / "data.txt",
        "empty": tmp_path / "empty.csv",
        "broken": tmp_path / "broken.json",
        "tsv": tmp_path / "ok.tsv",
    }
    files["txt"].write_text("text,label\nhello,world\n")
    files["empty"].write_text("text,label\n")
    files["broken"].write_text('{"text": "unterminated\n')
    rows = [f"Shares fell {i} percent\tbusiness\nThe striker scored {i} goals\tsports\n" for i in range(6)]
    files["tsv"].write_text("sentence\ttopic\n" + "".join(rows))
    return {k: str(v) for k, v in files.items()}


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--batching", "fast"], r"argument --batching: invalid choice: 'fast'"),
        (
            ["--batch-size", "8", "--max-tokens", "512"],
            r"--max-tokens: not allowed with argument --batch-size",
        ),
        (["--epochs", "1", "--max-steps", "5"], r"--max-steps: not allowed with argument --epochs"),
        (["--batching", "tokens"], r"--batching tokens needs --max-tokens"),
        (["--max-tokens", "512", "--batching", "length"], r"--max-tokens only applies to --batching tokens"),
        (["--batch-size", "0"], r"--batch-size must be a positive integer, got 0"),
        (["--epochs", "-1"], r"--epochs must be positive, got -1"),
        (["--lr", "0"], r"--lr must be positive"),
        (["--freeze", "embedings"], r"--freeze: .*embedings"),
        (["--train-file", "/nonexistent/train.csv"], r"--train-file: no such file: /nonexistent/train.csv"),
        (["--validation-file", VAL], r"--validation-file needs --train-file"),
        (["--dataset", "ag_news", "--train-file", TRAIN], r"either --dataset or --train-file"),
        (
            ["--train-file", TRAIN, "--text-column", "review"],
            r"--text-column: no column 'review' in the train",
        ),
        (
            ["--train-file", TRAIN, "--label-column", "topic"],
            r"--label-column: no column 'topic'.*\['text', 'label'\]",
        ),
        (
            ["--train-file", TRAIN, "--text-pair-column", "hypothesis"],
            r"--text-pair-column: no column 'hypothesis'",
        ),
    ],
)
def test_bad_flags_get_argparse_errors(
    run_main: Callable[..., Any], tiny_seqcls: Path, argv: list[str], match: str
) -> None:
    code, _, err = run_main("finetune", "--model", str(tiny_seqcls), *argv)
    assert code == 2
    assert "usage: " in err
    assert re.search(match, err), err


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("txt", r"--train-file: unsupported file type '.txt'.*'.csv'"),
        ("empty", r"--train-file: .*empty.csv has no rows"),
        ("broken", r"--train-file: cannot read .*broken.json as json"),
    ],
)
def test_bad_files_get_argparse_errors(
    run_main: Callable[..., Any], tiny_seqcls: Path, bad_files: dict[str, str], key: str, match: str
) -> None:
    code, _, err = run_main("finetune", "--model", str(tiny_seqcls), "--train-file", bad_files[key])
    assert code == 2
    assert re.search(match, err), err


def test_a_head_of_another_size_needs_the_flag(run_main: Callable[..., Any], tiny_seqcls: Path) -> None:
    code, _, err = run_main("finetune", "--model", str(tiny_seqcls), "--max-steps", "1")
    assert code == 2
    assert "head for 3 labels but the data has 4; pass --ignore-mismatched-sizes" in err


def test_resume_without_a_checkpoint_is_an_error(
    run_main: Callable[..., Any], tiny_seqcls: Path, tmp_path: Path
) -> None:
    code, _, err = run_main(
        "finetune",
        "--model",
        str(tiny_seqcls),
        "--ignore-mismatched-sizes",
        "--output-dir",
        str(tmp_path),
        "--resume",
    )
    assert code == 2
    assert "--resume: no complete checkpoint in" in err


@pytest.mark.slow
def test_short_run_writes_everything_and_resumes(
    run_main: Callable[..., Any], tiny_seqcls: Path, tmp_path: Path, bad_files: dict[str, str]
) -> None:
    common = [
        "--model",
        str(tiny_seqcls),
        "--ignore-mismatched-sizes",
        "--output-dir",
        str(tmp_path),
        "--no-progress",
    ]
    code, out, err = run_main("finetune", *common, "--max-steps", "4", "--eval-steps", "2", "--lr", "1e-3")
    assert code == 0, err
    assert "final metrics (best checkpoint)" in out
    assert "validation accuracy" in out
    assert "padding share (train)" in out
    manifest = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    assert manifest  # written by hfbridge's CheckpointCallback
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["step"] for r in history if "eval_accuracy" in r] == [2, 4]
    assert (tmp_path / "metrics.csv").read_text().startswith("step,epoch,")
    assert (tmp_path / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert model.config.id2label == {0: "business", 1: "science", 2: "sports", 3: "world"}

    # --resume continues from the newest checkpoint: the history keeps steps 2 and 4 and adds 6
    code, out, err = run_main("finetune", *common, "--max-steps", "6", "--eval-steps", "2", "--resume")
    assert code == 0, err
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["step"] for r in history if "eval_accuracy" in r] == [2, 4, 6]

    # a tsv file with other column names and token-budget batching, validation held out from train
    code, out, err = run_main(
        "finetune",
        *common[:3],
        "--output-dir",
        str(tmp_path / "tsv"),
        "--train-file",
        bad_files["tsv"],
        "--text-column",
        "sentence",
        "--label-column",
        "topic",
        "--max-tokens",
        "64",
        "--max-steps",
        "2",
        "--freeze",
        "layers:1",
    )
    assert code == 0, err
    assert "holding out 2 of 12 training rows for validation" in out


@pytest.mark.pretrained
@pytest.mark.slow
def test_demo_defaults_run_on_the_real_minilm(
    run_main: Callable[..., Any], minilm_path: Path, tmp_path: Path
) -> None:
    code, out, err = run_main(
        "finetune",
        "--output-dir",
        str(tmp_path),
        "--max-steps",
        "2",
        "--eval-steps",
        "2",
        "--batch-size",
        "8",
        "--no-progress",
    )
    assert code == 0, err
    assert "validation accuracy" in out
    # the default freeze spec froze MiniLM's embeddings (11.9M of its 22.7M parameters)
    assert re.search(r"embeddings\s+BertEmbeddings\s+11,918,592\s+0\s+11,918,592", out), out
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "business", "1": "science", "2": "sports", "3": "world"}
