"""Collective helpers so a failure on one rank makes every rank raise the same error instead of hanging."""

from __future__ import annotations

from typing import Any

__all__ = ["Failure", "gather", "raise_first_failure"]


class Failure:
    """An exception on one rank, sent to the others so that every rank raises instead of hanging."""

    def __init__(self, exc: BaseException) -> None:
        self.kind = type(exc).__name__
        self.message = str(exc)
        self.errno: int | None = getattr(exc, "errno", None)


def raise_first_failure(items: list[Any]) -> None:
    """Raise the first :class:`Failure` in ``items`` (one entry per rank), keeping ``errno`` for OS errors."""
    for rank, item in enumerate(items):
        if isinstance(item, Failure):
            where = f"on rank {rank}" if len(items) > 1 else "on rank 0"
            if item.errno is not None:
                raise OSError(item.errno, f"{item.message} ({where})")
            exc_type = {"ValueError": ValueError, "TypeError": TypeError}.get(item.kind, RuntimeError)
            raise exc_type(f"{item.kind} {where}: {item.message}")


def gather(obj: Any, world: int) -> list[Any]:
    """``all_gather_object`` when distributed, ``[obj]`` otherwise."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out
