"""examples/train_loop.py: exact resume after a crash, 2-process torchrun and accelerate launch runs, errors."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.examples.conftest import run_command

SCRIPT = "examples/train_loop.py"


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    size = [] if "--max-tokens" in extra else ["--batch-size", "8"]
    return [
        SCRIPT,
        "--model",
        str(model),
        "--ignore-mismatched-sizes",
        "--output-dir",
        str(out),
        *size,
        "--max-steps",
        "8",
        "--eval-steps",
        "2",
        "--lr",
        "1e-3",
        "--no-progress",
        *extra,
    ]


def _weights(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_crash_then_resume_matches_an_unbroken_run_bitwise(tiny_seqcls: Path, tmp_path: Path) -> None:
    straight = run_command([sys.executable, *_args(tiny_seqcls, tmp_path / "straight")])
    assert straight.returncode == 0, straight.stderr[-3000:]

    crashed = run_command(
        [sys.executable, *_args(tiny_seqcls, tmp_path / "broken", "--simulate-crash-at", "5")]
    )
    assert crashed.returncode == 17, crashed.stderr[-3000:]
    assert "simulated crash after step 5" in crashed.stdout
    resumed = run_command([sys.executable, *_args(tiny_seqcls, tmp_path / "broken", "--resume")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 4, epoch 0" in resumed.stdout  # the newest complete checkpoint before the crash

    # the last checkpoint (step 8) holds the final weights: identical to the unbroken run's, bit for bit
    a, b = (
        _weights(tmp_path / "straight" / "checkpoints" / "step8"),
        _weights(tmp_path / "broken" / "checkpoints" / "step8"),
    )
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equal(b[name]), name
    # ...and training moved the encoder away from the starting weights, so the comparison means something
    start = _weights(tiny_seqcls)
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not a[name].equal(start[name])
    history_a = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    history_b = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    assert history_a == history_b  # the history travelled in the checkpoint


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes_with_crash_and_resume(tiny_seqcls: Path, tmp_path: Path) -> None:
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    crashed = run_command([*launch, *_args(tiny_seqcls, tmp_path, "--simulate-crash-at", "3")])
    assert crashed.returncode != 0
    assert "simulated crash after step 3" in crashed.stdout
    done = run_command([*launch, *_args(tiny_seqcls, tmp_path, "--resume")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    assert "resumed from" in done.stdout
    assert done.stdout.count("final metrics (best checkpoint)") == 1  # rank 0 reports, once
    manifest = json.loads((tmp_path / "checkpoints" / "manifest.json").read_text())
    assert "step8" in json.dumps(manifest)


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_fsdp_crash_resume_and_full_weights_export(tiny_seqcls: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    crashed = run_command([*launch, *_args(tiny_seqcls, tmp_path, "--fsdp", "--simulate-crash-at", "3")])
    assert crashed.returncode != 0
    assert "simulated crash after step 3" in crashed.stdout
    done = run_command([*launch, *_args(tiny_seqcls, tmp_path, "--fsdp", "--resume")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed from" in done.stdout
    checkpoints = tmp_path / "checkpoints"
    manifest = json.loads((checkpoints / "manifest.json").read_text())
    assert "step8" in json.dumps(manifest)
    assert any((folder / "model_shards").is_dir() for folder in checkpoints.iterdir())  # sharded, via DCP
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model")  # full weights, exported
    assert model.num_labels == 4


@pytest.mark.slow
@pytest.mark.distributed
def test_accelerate_launch_two_processes(tiny_seqcls: Path, tmp_path: Path) -> None:
    pytest.importorskip("accelerate")
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes=2",
        "--num_machines=1",
        "--mixed_precision=no",
        "--dynamo_backend=no",
        f"--main_process_port={_free_port()}",
    ]
    done = run_command([*launch, *_args(tiny_seqcls, tmp_path, "--max-tokens", "256")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es)" in done.stdout
    assert "batching=tokens" in done.stdout
    assert (tmp_path / "model" / "config.json").is_file()


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--batching", "tokens"], "--batching tokens needs --max-tokens"),
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--train-file", "missing.csv"], "--train-file: no such file: missing.csv"),
        (["--label-column", "y"], "--label-column: no column 'y' in the train data"),
        (["--resume"], "--resume: no complete checkpoint in"),
        (["--lr", "nan"], "--lr must be a finite number above 0, got nan"),
        (["--freeze", "layers:100"], "--freeze: `layers` must be at most the number of blocks"),
        (["--freeze", "pattern:nomatch"], "--freeze: `patterns` item 'nomatch' (glob) matches no parameter"),
        (["--output-dir", __file__], f"--output-dir: {__file__} exists and is not a folder"),
    ],
)
def test_bad_flags_get_argparse_errors(
    run_main: Callable[..., Any], tiny_seqcls: Path, tmp_path: Path, argv: list[str], match: str
) -> None:
    model = ["--model", str(tiny_seqcls), "--ignore-mismatched-sizes", "--output-dir", str(tmp_path)]
    code, _, err = run_main("train_loop", *model, *argv)
    assert code == 2
    assert match in err
