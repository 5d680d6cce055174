"""Module helpers shared by ``models`` and ``callbacks``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["unwrap_model"]


def unwrap_model(model: Any, *, refuse: Callable[[Any], str | None] | None = None) -> nn.Module:
    """The bare module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers.

    Wrappers may nest in any order (``torch.compile(DDP(model))``); each layer is peeled off in turn.

    Args:
        model: the model, wrapped or not.
        refuse: called on every layer (the outer wrapper, each one inside it, the bare module); a string it
            returns is raised as a ``TypeError`` (e.g. the checkpointer refuses FSDP-sharded models).

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
        elif type(model).__name__ == "OptimizedModule" and isinstance(model, nn.Module):
            model = model.get_submodule(
                "_orig_mod"
            )  # torch.compile's wrapper holds the module under this name
        else:
            break
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    return model
