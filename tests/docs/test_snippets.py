"""Every fenced python and bash block of README.md and docs/*.md, run in page order (see harness.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
        PARAMS.append(
            pytest.param(_page, _i, id=f"{relative(_path)}:{_example.line}", marks=marks)
        )


@pytest.fixture(scope="module", autouse=True)
def _scratch_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Each page runs in its own scratch folder holding a link to examples/, as a clone's root would."""
    for param in PARAMS:
        page: Page = param.values[0]  # type: ignore[assignment]
        if page.workdir is None:
            page.workdir = tmp_path_factory.mktemp(page.path.stem)
            (page.workdir / "examples").symlink_to(ROOT / "examples")
    yield


@pytest.mark.parametrize(("page", "index"), PARAMS)
def test_snippet(page: Page, index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    page.run_to(index)
