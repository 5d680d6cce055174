"""``import hfbridge.samplers`` stays light; the top-level names resolve to this subpackage."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import SRC_DIR


def test_import_pulls_in_neither_transformers_nor_datasets() -> None:
    code = (
        "import sys, hfbridge.samplers as s; "
        "s.BatchingTrainerMixin; "
        "assert 'transformers' not in sys.modules and 'datasets' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(SRC_DIR)})


def test_top_level_names() -> None:
    import hfbridge
    from hfbridge import samplers

    for name in (
        "LengthGroupedBatchSampler",
        "TokenBudgetBatchSampler",
        "ClassBalancedSampler",
        "build_dataloader",
    ):
        assert getattr(hfbridge, name) is getattr(samplers, name)
    assert samplers.__all__ == sorted(samplers.__all__)
