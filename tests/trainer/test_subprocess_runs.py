"""``hfbridge.Trainer`` in real processes: SIGKILL then ``resume_from_checkpoint=True``, and two gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(WORKER), *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


def _weights(path: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_sigkill_then_resume_true_gives_bitwise_the_uninterrupted_weights(tmp_path: Path) -> None:
    import torch

    full = _run(str(tmp_path / "full"), "--max-steps", "12")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _run(str(tmp_path / "crash"), "--max-steps", "12", "--kill-at-step", "10")
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL: nothing after step 10 ran
    assert not (tmp_path / "crash" / "final.safetensors").exists()
    resumed = _run(str(tmp_path / "crash"), "--max-steps", "12", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = json.loads((tmp_path / "crash" / "rank0.json").read_text())["steps"]
    assert steps == [9, 10, 11, 12]  # resumed from checkpoint-8, the newest complete one
    a, b = (
        _weights(tmp_path / "full" / "final.safetensors"),
        _weights(tmp_path / "crash" / "final.safetensors"),
    )
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bitwise, not close


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_train_equal_batch_counts_with_one_writer(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER)]
    cmd += [str(tmp_path), "--max-steps", "8"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    counts = [json.loads((tmp_path / f"rank{r}.json").read_text())["steps"] for r in (0, 1)]
    assert counts[0] == counts[1] == list(range(1, 9))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    names = sorted(c["name"] for c in manifest["checkpoints"])
    assert names == ["checkpoint-4", "checkpoint-8"]
    for name in names:  # one writer, every rank's RNG state kept for an exact resume
        files = set(os.listdir(tmp_path / "run" / name))
        assert {"rng_state_0.pth", "rng_state_1.pth", "model.safetensors", "trainer_state.json"} <= files
