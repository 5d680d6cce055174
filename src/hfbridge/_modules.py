"""Module helpers shared by ``models`` and ``callbacks``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["unwrap_model"]


def unwrap_model(model: Any) -> nn.Module:
    """The bare module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers.

    Raises:
        TypeError: when what is left is not a ``torch.nn.Module``.
    """
    from torch import nn

    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(model, nn.Module) and isinstance(model._modules.get("_orig_mod"), nn.Module):
            model = model._modules["_orig_mod"]  # torch.compile's OptimizedModule
        else:
            break
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    return model
