"""Rank and world-size helpers that work with or without ``torch.distributed``; ``unwrap_model``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Failure",
    "attempt",
    "barrier",
    "broadcast_object",
    "gather_object",
    "get_rank",
    "get_world_size",
    "raise_first_failure",
    "resolve_replicas",
    "unwrap_model",
]

T = TypeVar("T")


def _dist() -> Any:
    """``torch.distributed`` when a process group is up, else ``None``."""
    # a process group can only exist once torch.distributed is imported: never import torch just to ask
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def get_world_size() -> int:
    """Number of processes in the default group, 1 when not distributed."""
    dist = _dist()
    return 1 if dist is None else dist.get_world_size()


def get_rank() -> int:
    """Rank in the default group, 0 when not distributed."""
    dist = _dist()
    return 0 if dist is None else dist.get_rank()


def barrier() -> None:
    """``torch.distributed.barrier()`` when distributed, else nothing."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send ``obj`` from rank ``src`` to every rank; returns it unchanged when not distributed."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Fill ``num_replicas``/``rank`` from ``torch.distributed`` when ``None`` and validate them.

    Raises:
        ValueError: when ``num_replicas`` < 1 or ``rank`` is outside ``[0, num_replicas)``.
    """
    num_replicas = get_world_size() if num_replicas is None else num_replicas
    rank = get_rank() if rank is None else rank
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"`num_replicas` must be a positive integer; got {num_replicas!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(
            f"`rank` must be an integer in [0, {num_replicas - 1}] (num_replicas={num_replicas}); "
            f"got {rank!r}"
        )
    return num_replicas, rank


class Failure:
    """An exception on one rank, sent to the others so that every rank raises instead of hanging."""

    def __init__(self, exc: BaseException) -> None:
        self.kind = type(exc).__name__
        self.message = str(exc)
        self.errno: int | None = getattr(exc, "errno", None)


def attempt(fn: Callable[[], T]) -> T | Failure:
    """``fn()``; in a distributed run, an exception it raises is returned as a :class:`Failure` to share."""
    try:
        return fn()
    except Exception as exc:
        if get_world_size() == 1:
            raise
        return Failure(exc)


def gather_object(obj: object) -> list[object]:
    """``all_gather_object`` when distributed, ``[obj]`` otherwise."""
    dist = _dist()
    world = 1 if dist is None else dist.get_world_size()
    if world == 1:
        return [obj]
    out: list[object] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def raise_first_failure(items: list[object]) -> None:
    """Raise the first :class:`Failure` in ``items`` (one entry per rank), keeping ``errno`` for OS errors."""
    for rank, item in enumerate(items):
        if isinstance(item, Failure):
            where = f"on rank {rank}"
            if item.errno is not None:
                raise OSError(item.errno, f"{item.message} ({where})")
            exc_type = {"ValueError": ValueError, "TypeError": TypeError}.get(item.kind, RuntimeError)
            raise exc_type(f"{item.kind} {where}: {item.message}")


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
            # torch.compile's wrapper holds the module under this name
            model = model.get_submodule("_orig_mod")
        else:
            break
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    return model
