"""examples/chat_sft.py runs offline and learns: a few steps lower the loss on the assistant tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.examples.conftest import load_example


@pytest.mark.slow
def test_chat_sft_runs_and_learns(tmp_path: Path) -> None:
    example = load_example("chat_sft")
    result = example.main(["--max-steps", "6", "--row-length", "256", "--output-dir", str(tmp_path)])
    assert result["steps"] == 6
    assert result["loss_after"] < result["loss_before"]
    assert result["padding"] < 0.05
    assert (tmp_path / "loader_state.json").is_file()
    assert (tmp_path / "config.json").is_file()
