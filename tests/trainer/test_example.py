"""examples/run_classification.py: the HF-style script runs, checkpoints atomically and resumes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "run_classification.py"


def _run(*flags: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PATH"] = "/usr/bin:/bin"
    cmd = [sys.executable, str(SCRIPT), "--report_to", "none", "--use_cpu", "--disable_tqdm", "true", *flags]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
@pytest.mark.pretrained
def test_the_hf_style_script_trains_saves_and_resumes(tmp_path: Path, minilm_path: Path) -> None:
    flags = ["--output_dir", str(tmp_path), "--model_name_or_path", str(minilm_path)]
    flags += ["--max_train_samples", "48", "--per_device_train_batch_size", "16"]
    flags += ["--train_sampling_strategy", "group_by_length", "--eval_strategy", "steps", "--eval_steps", "1"]
    flags += ["--save_strategy", "steps", "--save_steps", "1", "--save_total_limit", "1"]
    flags += ["--metric_for_best_model", "accuracy", "--keep_last", "1", "--freeze", "embeddings"]
    done = _run(*flags, "--max_steps", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    steps = sorted(c["step"] for c in manifest["checkpoints"])
    assert 3 in steps  # the newest is always kept
    assert len(steps) <= 2  # best-1 plus last-1
    again = _run(*flags, "--max_steps", "4", "--resume_from_checkpoint", "true")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "'train_s'" in again.stdout
    state = json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
