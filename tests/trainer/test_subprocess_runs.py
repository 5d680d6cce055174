"""``hfbridge.Trainer`` in real processes: SIGKILL then ``resume_from_checkpoint=True``, and two gloo ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def _two_rank_checks(out: Path, evaluations: int) -> None:
    """Both ranks saw a 2-process gloo group, trained and evaluated the same number of batches, and rank 0
    alone wrote each checkpoint (with every rank's RNG state)."""
    records = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in records:  # from inside each process: really two of them, joined over gloo
        assert (record["world_size"], record["backend"], record["args_world_size"]) == (2, "gloo", 2)
        assert record["sorted_eval"]  # evaluation batches came from the length-sorted order
    assert records[0]["steps"] == records[1]["steps"] == list(range(1, 9))
    # 50 evaluation rows, 16 a batch: 4 batches, dealt 2 to each rank (the short one padded by accelerate)
    assert records[0]["eval_batches"] == records[1]["eval_batches"] == [2] * evaluations
    manifest = json.loads((out / "run" / "manifest.json").read_text())
    names = sorted(c["name"] for c in manifest["checkpoints"])
    assert names == ["checkpoint-4", "checkpoint-8"]
    for name in names:  # one writer, every rank's RNG state kept for an exact resume
        files = set(os.listdir(out / "run" / name))
        assert {"rng_state_0.pth", "rng_state_1.pth", "model.safetensors", "trainer_state.json"} <= files
    assert not list((out / "run").glob("*.tmp*"))  # nothing half-written left by a second writer


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_ranks_train_and_sort_evaluation_like_one_unsorted_process(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER)]
    cmd += [str(tmp_path), "--max-steps", "8", "--predict"]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    _two_rank_checks(tmp_path, evaluations=3)  # evaluations at steps 4 and 8, then predict()
    # the trained weights, predicted by one process in dataset order (no sorting)
    single = _run(str(tmp_path / "one"), "--predict-only", str(tmp_path / "final.safetensors"), "--no-sort")
    assert single.returncode == 0, single.stderr[-3000:]
    record = json.loads((tmp_path / "one" / "rank0.json").read_text())
    assert (record["eval_batches"], record["sorted_eval"]) == ([4], False)
    two, one = np.load(tmp_path / "predict.npz"), np.load(tmp_path / "one" / "predict.npz")
    # every row once, in dataset order: no padding row of accelerate's is left, none is counted twice
    assert two["label_ids"].tolist() == one["label_ids"].tolist() == two["dataset_labels"].tolist()
    assert two["predictions"].shape == one["predictions"].shape == (50, 2)
    np.testing.assert_allclose(two["predictions"], one["predictions"], rtol=0, atol=1e-5)
    assert float(two["accuracy"]) == float(one["accuracy"])
    # HF averages the evaluation loss per batch; under 2 ranks the short last batch is padded (by accelerate,
    # as for unsorted evaluation) and its mean stands for its real rows, so the loss is close, not equal
    assert float(two["loss"]) == pytest.approx(float(one["loss"]), rel=0.02)


@pytest.mark.slow
@pytest.mark.distributed
def test_accelerate_launch_runs_two_gloo_ranks_on_cpu(tmp_path: Path) -> None:
    # `accelerate launch --cpu --num_processes 2` starts ONE process unless mpirun is set up; on a machine
    # without GPUs, `--multi_gpu` is accelerate's torchrun path, and the worker joins a gloo group on CPU
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += [
        "--main_process_port",
        str(_free_port()),
        str(WORKER),
        str(tmp_path),
        "--max-steps",
        "8",
        "--predict",
    ]
    env = dict(_env(), HF_HOME=str(tmp_path / "hf_home"))  # no default_config.yaml of the user's
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    _two_rank_checks(tmp_path, evaluations=3)
    got = np.load(tmp_path / "predict.npz")
    assert got["label_ids"].tolist() == got["dataset_labels"].tolist()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
