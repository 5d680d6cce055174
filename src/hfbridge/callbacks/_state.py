"""Kept only so that ``callbacks/_trainer.py`` imports until it moves to ``trainer/``; delete it then.

New code uses :meth:`hfbridge.Checkpointer.load_weights`.
"""

from __future__ import annotations

from typing import Any

from hfbridge._modules import unwrap_model
from hfbridge.callbacks._files import load_model_weights

__all__ = ["load_model_weights", "read_model_weights", "unwrap_model"]


def read_model_weights(path: Any) -> Any:
    import safetensors.torch

    return safetensors.torch.load_file(str(path), device="cpu")
