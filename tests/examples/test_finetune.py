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
        (["--epochs", "-1"], r"--epochs must be a finite number above 0, got -1"),
        (["--epochs", "0"], r"--epochs must be a finite number above 0, got 0"),
        (["--epochs", "inf"], r"--epochs must be a finite number above 0, got inf"),
        (["--epochs", "nan"], r"--epochs must be a finite number above 0, got nan"),
        (["--lr", "0"], r"--lr must be a finite number above 0, got 0"),
        (["--lr", "inf"], r"--lr must be a finite number above 0, got inf"),
        (["--freeze", "embedings"], r"--freeze: .*embedings"),
        # checked against the model's skeleton before any data is read: the train file does not even exist
        (
            ["--freeze", "layers:100", "--train-file", "/nonexistent.csv"],
            r"--freeze: `layers` must be at most the number of blocks \('bert.encoder.layer' has 2\); got 100",
        ),
        (
            ["--freeze", "pattern:nomatch"],
            r"--freeze: `patterns` item 'nomatch' \(glob\) matches no parameter",
        ),
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


def test_output_dir_that_is_a_file_is_a_usage_error_before_the_model_loads(
    run_main: Callable[..., Any], tiny_seqcls: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hfbridge

    def must_not_load(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model loaded before --output-dir was checked")

    monkeypatch.setattr(hfbridge, "load_pretrained", must_not_load)
    taken = tmp_path / "results.txt"
    taken.write_text("not a folder")
    for out in (taken, taken / "run1"):
        code, _, err = run_main("finetune", "--model", str(tiny_seqcls), "--output-dir", str(out))
        assert code == 2
        assert f"--output-dir: {taken} exists and is not a folder" in err


@pytest.mark.slow
def test_a_bad_freeze_spec_exits_2_without_a_traceback(tiny_seqcls: Path) -> None:
    """As a user runs it: a subprocess, so that nothing of pytest's catches the exception first."""
    import sys

    from tests.examples.conftest import run_command

    argv = [sys.executable, "examples/finetune.py", "--model", str(tiny_seqcls), "--freeze", "layers:100"]
    proc = run_command(argv)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "error: --freeze: `layers` must be at most the number of blocks" in proc.stderr


@pytest.mark.parametrize("script", ["finetune", "train_loop", "token_classification"])
def test_help_shows_each_default_once(run_main: Callable[..., Any], script: str) -> None:
    code, out, _ = run_main(script, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "(default: None)" not in text
    assert not re.search(r"\(default[^()]*\) \(default", text), text
    if script == "finetune":
        assert "rows per batch (default 16)" in text
        assert "--patience PATIENCE early stopping: evaluations without improvement (default: 3)" in text


STARS = {"business": "1", "science": "2", "sports": "4", "world": "5"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "style",
    ["names", "ratings"],
)
def test_label_styles_end_to_end(
    run_main: Callable[..., Any],
    tiny_seqcls: Path,
    tmp_path: Path,
    style: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Topic names, or star ratings 1, 2, 4, 5 as ints (the docs' `--label-column stars`): 4 classes either way."""
    import csv
    import warnings

    files = []
    for name in ("news_train.csv", "news_validation.csv"):
        with (DATA / name).open(newline="") as f:
            rows = list(csv.DictReader(f))
        target = tmp_path / name
        with target.open("w", newline="") as out:
            writer = csv.DictWriter(out, ["text", "label"])
            writer.writeheader()
            for row in rows:
                writer.writerow(
                    {
                        "text": row["text"],
                        "label": STARS[row["label"]] if style == "ratings" else row["label"],
                    }
                )
        files.append(str(target))
    argv = ["--model", str(tiny_seqcls), "--ignore-mismatched-sizes", "--output-dir", str(tmp_path / "out")]
    argv += ["--train-file", files[0], "--validation-file", files[1], "--max-steps", "1", "--no-progress"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_main("finetune", *argv)
    assert code == 0, err
    assert re.search(r"chance accuracy\s+0\.2500", out), out
    config = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    said = " ".join([err, caplog.text, *(str(w.message) for w in caught)])
    if len(config["id2label"]) == 4:  # a contiguous map that keeps the original values as names
        expected = ["business", "science", "sports", "world"] if style == "names" else ["1", "2", "4", "5"]
        assert sorted(config["id2label"].values()) == expected
    else:  # or a head over 0..max with a warning that names the empty classes
        assert len(config["id2label"]) == 6
        assert re.search(r"empty.*\b0\b.*\b3\b", said, re.IGNORECASE | re.DOTALL), said
