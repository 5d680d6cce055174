"""Fixtures for the example-script tests: load a script as a module, run one as a subprocess."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import SRC_DIR

ROOT = SRC_DIR.parent
EXAMPLES = ROOT / "examples"
DATA = EXAMPLES / "data"


def load_example(name: str) -> ModuleType:
    """``examples/<name>.py`` as a fresh module (its ``main(argv)`` runs in-process)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1"
    )
    return env


def run_command(cmd: list[str], *, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` from the repository root with ``src`` importable; never hangs the suite."""
    return subprocess.run(
        cmd, cwd=ROOT, env=example_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def tiny_seqcls(tiny_model_dir: Callable[[str, str], Path]) -> Path:
    """A saved tiny BERT classifier (3 labels: the demo data has 4, so tests pass --ignore-mismatched-sizes)."""
    return tiny_model_dir("bert", "sequence-classification")


@pytest.fixture(scope="session")
def tiny_tokcls(tiny_model_dir: Callable[[str, str], Path]) -> Path:
    return tiny_model_dir("bert", "token-classification")


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str]) -> Callable[..., Any]:
    """``run_main(name, *argv)`` -> (exit code, stdout, stderr) of the example's ``main`` run in-process."""

    def run(name: str, *argv: str) -> tuple[int, str, str]:
        module = load_example(name)
        try:
            code = module.main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Any:
    saved = list(sys.path)
    yield
    sys.path[:] = saved
