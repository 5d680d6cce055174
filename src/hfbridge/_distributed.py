"""Rank and world-size helpers that work with or without ``torch.distributed`` initialised."""

from __future__ import annotations

import sys

__all__ = ["barrier", "broadcast_object", "get_rank", "get_world_size", "is_main_process", "resolve_replicas"]


def _dist_ready() -> bool:
    # a process group can only exist once torch.distributed is imported: never import torch just to ask
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """Number of processes in the default group, 1 when not distributed."""
    if _dist_ready():
        import torch.distributed as dist

        return dist.get_world_size()
    return 1


def get_rank() -> int:
    """Rank in the default group, 0 when not distributed."""
    if _dist_ready():
        import torch.distributed as dist

        return dist.get_rank()
    return 0


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """``torch.distributed.barrier()`` when distributed, else nothing."""
    if _dist_ready():
        import torch.distributed as dist

        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Send ``obj`` from rank ``src`` to every rank; returns it unchanged when not distributed."""
    if not _dist_ready():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def resolve_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Fill ``num_replicas``/``rank`` from ``torch.distributed`` when ``None`` and validate them.

    Raises:
        ValueError: when ``num_replicas`` < 1 or ``rank`` is outside ``[0, num_replicas)``.
    """
    if num_replicas is None:
        num_replicas = get_world_size()
    if rank is None:
        rank = get_rank()
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"`num_replicas` must be a positive integer; got {num_replicas!r}")
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < num_replicas:
        raise ValueError(
            f"`rank` must be an integer in [0, {num_replicas - 1}] (num_replicas={num_replicas}); got {rank!r}"
        )
    return num_replicas, rank
