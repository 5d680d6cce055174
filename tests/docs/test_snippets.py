"""Every fenced python and bash block of README.md and docs/*.md, run in page order (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import tiny_config
from tests.docs import harness
from tests.docs.harness import PAGES, ROOT, Page, is_skip, known_failure, relative

PARAMS = []
for _path in PAGES:
    _page = Page(_path)
    for _i, _example in enumerate(_page.examples):
        if is_skip(_example):
            continue  # the directive itself; the block it marks is collected (and reported as skipped)
        marks = [pytest.mark.pretrained]
        if "bash" in repr(_example.region.evaluator):
            marks.append(pytest.mark.slow)
        if reason := known_failure(_example):
            marks.append(pytest.mark.xfail(reason=reason, strict=True))
        PARAMS.append(pytest.param(_page, _i, id=f"{relative(_path)}:{_example.line}", marks=marks))


@pytest.fixture(scope="module")
def six_layer_models(tmp_path_factory: pytest.TempPathFactory, wordpiece_tokenizer: Any) -> dict[str, Path]:
    """Tiny BERTs with MiniLM's 6 blocks (the docs freeze `layers:4`), for both example tasks, saved with their
    tokenizer: the stand-ins for the default MiniLM in the docs' shell commands."""
    import transformers as tf

    folders = {}
    for task, auto in [
        ("seq", tf.AutoModelForSequenceClassification),
        ("tok", tf.AutoModelForTokenClassification),
    ]:
        folder = tmp_path_factory.mktemp(f"six-layer-{task}")
        auto.from_config(tiny_config("bert", wordpiece_tokenizer, num_hidden_layers=6)).save_pretrained(
            folder
        )
        wordpiece_tokenizer.save_pretrained(folder)
        folders[task] = folder
    return folders


@pytest.fixture(scope="module", autouse=True)
def _scratch_folders(
    tmp_path_factory: pytest.TempPathFactory, six_layer_models: dict[str, Path]
) -> Iterator[None]:
    """Each page runs in its own scratch folder holding a link to examples/, as a clone's root would."""
    for param in PARAMS:
        page: Page = param.values[0]  # type: ignore[assignment]
        if page.workdir is None:
            page.workdir = tmp_path_factory.mktemp(page.path.stem)
            (page.workdir / "examples").symlink_to(ROOT / "examples")
    harness.SHELL_MODELS.update(
        {
            "examples/finetune.py": six_layer_models["seq"],
            "examples/train_loop.py": six_layer_models["seq"],
            "examples/token_classification.py": six_layer_models["tok"],
        }
    )
    yield
    harness.SHELL_MODELS.clear()


@pytest.mark.parametrize(("page", "index"), PARAMS)
def test_snippet(page: Page, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    page.run_to(index)
