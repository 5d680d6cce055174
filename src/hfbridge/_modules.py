"""Module helpers shared by ``models`` and ``callbacks``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["unwrap_model"]


def unwrap_model(model: Any, *, refuse: Callable[[Any], str | None] | None = None) -> nn.Module:
    """The bare module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers.

    Args:
        model: the model, wrapped or not.
        refuse: called on every layer (the outer wrapper, each one inside it, the bare module); a string it
            returns is raised as a ``TypeError``.

    Raises:
        TypeError: when what is left is not a ``torch.nn.Module``, or ``refuse`` refused a layer.
    """
    from torch import nn

    while True:
        reason = refuse(model) if refuse is not None else None
        if reason:
            raise TypeError(reason)
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(model, nn.Module) and isinstance(model._modules.get("_orig_mod"), nn.Module):
            model = model._modules["_orig_mod"]  # torch.compile's OptimizedModule
        else:
            break
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    return model
