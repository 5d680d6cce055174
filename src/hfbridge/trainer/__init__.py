"""Everything that touches ``transformers.Trainer``, in one place; each name is loaded on first access.

* :class:`Trainer` / :class:`TrainingArguments` -- drop-in subclasses of HF's: hfbridge batching,
  length-sorted evaluation, atomic checkpoints with best-K / last-N, O(1) exact resume and early stopping,
  all from flags.
* :class:`BatchingTrainerMixin` -- hfbridge batching for a Trainer subclass of your own.
* :class:`CheckpointCallback`, :class:`EarlyStoppingCallback`, :class:`GradualUnfreezingCallback` -- the
  ``TrainerCallback`` faces of :class:`~hfbridge.Checkpointer`, :class:`~hfbridge.EarlyStopping` and
  :class:`~hfbridge.GradualUnfreezer`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hfbridge.trainer._arguments import TrainingArguments
    from hfbridge.trainer._batching import BatchingTrainerMixin
    from hfbridge.trainer._callbacks import (
        CheckpointCallback,
        EarlyStoppingCallback,
        GradualUnfreezingCallback,
    )
    from hfbridge.trainer._trainer import Trainer, retention

# public name -> module that defines it (BatchingTrainerMixin does not import transformers; the rest do)
_LAZY = {
    "BatchingTrainerMixin": "_batching",
    "CheckpointCallback": "_callbacks",
    "EarlyStoppingCallback": "_callbacks",
    "GradualUnfreezingCallback": "_callbacks",
    "Trainer": "_trainer",
    "TrainingArguments": "_arguments",
    "retention": "_trainer",
}

__all__ = [
    "BatchingTrainerMixin",
    "CheckpointCallback",
    "EarlyStoppingCallback",
    "GradualUnfreezingCallback",
    "Trainer",
    "TrainingArguments",
    "retention",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hfbridge.trainer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hfbridge.trainer.{module}"), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
