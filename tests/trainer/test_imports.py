"""The Trainer glue lives in ``hfbridge.trainer``; the old names still resolve to it, lazily."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_old_import_paths_resolve_to_the_trainer_package() -> None:
    import hfbridge.callbacks
    import hfbridge.samplers
    import hfbridge.trainer
    from hfbridge.models import GradualUnfreezer

    assert hfbridge.samplers.BatchingTrainerMixin is hfbridge.trainer.BatchingTrainerMixin
    assert hfbridge.callbacks.CheckpointCallback is hfbridge.trainer.CheckpointCallback
    assert hfbridge.callbacks.EarlyStoppingCallback is hfbridge.trainer.EarlyStoppingCallback
    assert hfbridge.trainer.GradualUnfreezingCallback.__module__.startswith("hfbridge.trainer")
    assert GradualUnfreezer.as_callback.__qualname__ == "GradualUnfreezer.as_callback"


def test_subpackages_do_not_import_transformers_until_a_trainer_name_is_used() -> None:
    code = (
        "import sys, hfbridge, hfbridge.samplers, hfbridge.callbacks, hfbridge.models\n"
        "print('transformers' in sys.modules, 'hfbridge.trainer' in sys.modules)\n"
        "hfbridge.samplers.BatchingTrainerMixin\n"
        "print('transformers' in sys.modules, 'hfbridge.trainer' in sys.modules)\n"
        "hfbridge.callbacks.CheckpointCallback\n"
        "print('transformers' in sys.modules)\n"
        "hfbridge.Trainer, hfbridge.TrainingArguments\n"
    )
    assert _run(code).split("\n") == ["False False", "False True", "True"]


def test_the_models_package_no_longer_imports_a_trainer_module() -> None:
    code = "import sys, hfbridge.models\nprint(sorted(m for m in sys.modules if 'unfreeze' in m))"
    assert "callback" not in _run(code)
