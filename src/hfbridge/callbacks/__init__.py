"""Crash-safe checkpointing (best-K, last-N, exact resume, DDP-safe) and early stopping.

``Checkpointer`` and ``EarlyStopping`` work in any loop; ``CheckpointCallback`` and ``EarlyStoppingCallback``
are ``transformers.TrainerCallback`` subclasses built on them, imported (with ``transformers``) on first
access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hfbridge.callbacks._checkpointer import Checkpointer, ResumeResult
from hfbridge.callbacks._early_stopping import EarlyStopping
from hfbridge.callbacks._sharded import export_full_weights

if TYPE_CHECKING:
    from hfbridge.trainer import CheckpointCallback, EarlyStoppingCallback

__all__ = [
    "CheckpointCallback",
    "Checkpointer",
    "EarlyStopping",
    "EarlyStoppingCallback",
    "ResumeResult",
    "export_full_weights",
]

_MOVED_TO_TRAINER = ("CheckpointCallback", "EarlyStoppingCallback")  # now in hfbridge.trainer; old path kept


def __getattr__(name: str) -> Any:
    if name not in _MOVED_TO_TRAINER:
        raise AttributeError(f"module 'hfbridge.callbacks' has no attribute {name!r}")
    value = getattr(importlib.import_module("hfbridge.trainer"), name)
    globals()[name] = value
    return value
