"""Step agreement across ranks for streamed batches, whose per-rank counts differ.

A map-style sampler gives every rank the same number of batches by construction. A stream cannot: its shards hold
different numbers of rows (or a rank reads every n-th row of an uneven total), so one rank runs out first and the
others block forever in DDP's next gradient all-reduce. :func:`agreed_batches` makes every rank decide each step
together, with one tiny ``all_reduce`` per batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from hfbridge._distributed import get_world_size

__all__ = ["agreed_batches", "ranks_must_agree"]

_MISSING = object()


def ranks_must_agree(num_replicas: int, uneven: str) -> bool:
    """True when a stream's batches must be agreed across ranks: a live process group of several ranks, and
    ``uneven`` is ``"pad"`` or ``"drop"`` (``"exact"`` yields every rank's own batches, for loops that do not
    synchronise per step)."""
    return num_replicas > 1 and uneven != "exact" and get_world_size() > 1


def _flag_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":  # nccl only reduces CUDA tensors
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def agreed_batches(
    batches: Iterable[Any], uneven: str, previous: Callable[[], Any | None] | None = None
) -> Iterator[Any]:
    """Yield ``batches`` so that every rank of the default process group yields the same number.

    Each step the ranks ``all_reduce`` (MIN) whether they still have a batch. ``"drop"``: all stop as soon as any
    rank runs out (its extra batches are not seen this epoch). ``"pad"``: ranks that ran out repeat their last batch
    until every rank is done. A rank that runs out before yielding anything repeats the batch ``previous`` builds
    (its last one before a resume); if there is none either, the rank had no batch this epoch and nothing to
    repeat, so all stop there with a warning.

    Args:
        batches: this rank's batches.
        uneven: ``"pad"`` or ``"drop"``.
        previous: builds the batch this rank yielded last this epoch before ``batches`` began (``None`` when there
            was none); called at most once, only when ``"pad"`` needs it.

    Returns:
        An iterator of batches, the same length on every rank.
    """
    import torch.distributed as dist

    device = _flag_device()
    iterator = iter(batches)
    last: Any = _MISSING
    done = False
    while True:
        batch: Any = _MISSING
        if not done:
            batch = next(iterator, _MISSING)
            done = batch is _MISSING
            if not done:
                last = batch
            elif last is _MISSING and uneven == "pad" and previous is not None:
                restored = previous()
                last = _MISSING if restored is None else restored
        # [this rank has a batch, this rank is done, this rank can yield something]; MIN over ranks
        flags = torch.tensor([int(not done), int(done), int(last is not _MISSING)], device=device)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
        all_have, all_done, all_can = flags.tolist()
        if uneven == "drop":
            if not all_have:
                return
        elif all_done:
            return
        elif not all_can:
            warnings.warn(
                "a rank's stream had no batch this epoch, so uneven='pad' has nothing to repeat: all ranks stop "
                "here (as with uneven='drop')",
                UserWarning,
                stacklevel=2,
            )
            return
        yield last if done else batch
