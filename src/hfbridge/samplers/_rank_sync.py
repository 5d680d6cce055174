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


def _all_min(values: list[int], device: torch.device) -> list[int]:
    """The minimum of each value over the ranks of the default process group."""
    import torch.distributed as dist

    flags = torch.tensor(values, device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return [int(v) for v in flags.tolist()]


def _agreed_previous(previous: Callable[[], Any | None] | None, device: torch.device) -> tuple[Any, bool]:
    """Build ``previous()`` on the ranks that pass it (the others pass ``None``) and agree on the outcome.

    Returns:
        This rank's batch from ``previous`` (``_MISSING`` without one) and whether every rank has a batch to yield.

    Raises:
        Exception: ``previous``'s own error on the rank where it failed.
        RuntimeError: on every other rank, naming the rank where it failed.
    """
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    restored: Any = _MISSING
    error: Exception | None = None
    if previous is not None:
        try:
            built = previous()
        except Exception as exc:  # raised below, once every rank knows
            error = exc
        else:
            restored = _MISSING if built is None else built
    # [the lowest rank where `previous` failed, or the world size], [this rank has a batch to yield]
    failed, all_can = _all_min(
        [rank if error is not None else world, int(previous is None or restored is not _MISSING)], device
    )
    if error is not None:
        raise error
    if failed < world:
        raise RuntimeError(
            f"rank {failed} could not rebuild the batch it yielded last before the resume, which uneven='pad' "
            "must repeat there while other ranks still have batches (see that rank's error); all ranks stop here"
        )
    return restored, bool(all_can)


def agreed_batches(
    batches: Iterable[Any], uneven: str, previous: Callable[[], Any | None] | None = None
) -> Iterator[Any]:
    """Yield ``batches`` so that every rank of the default process group yields the same number.

    Each step the ranks ``all_reduce`` (MIN) whether they still have a batch. ``"drop"``: all stop as soon as any
    rank runs out (its extra batches are not seen this epoch). ``"pad"``: ranks that ran out repeat their last batch
    until every rank is done. A rank that runs out before yielding anything repeats the batch ``previous`` builds
    (its last one before a resume), once the ranks know that some rank still has batches; if there is none either,
    the rank had no batch this epoch and nothing to repeat, so all stop there with a warning.

    Args:
        batches: this rank's batches.
        uneven: ``"pad"`` or ``"drop"``.
        previous: builds the batch this rank yielded last this epoch before ``batches`` began (``None`` when there
            was none); called at most once, only when ``"pad"`` needs it.

    Returns:
        An iterator of batches, the same length on every rank.

    Raises:
        Exception: ``previous``'s error, on the rank where it failed.
        RuntimeError: on every other rank when ``previous`` failed on one (all ranks stop together, none is left
            waiting in a collective).
    """
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
        restore = done and last is _MISSING and uneven == "pad" and previous is not None
        # [this rank has a batch, this rank is done, this rank can yield something (or may, from `previous`),
        # this rank need not call `previous`]; MIN over ranks
        all_have, all_done, all_can, none_restore = _all_min(
            [int(not done), int(done), int(last is not _MISSING or restore), int(not restore)], device
        )
        if uneven == "drop":
            if not all_have:
                return
            yield batch
            continue
        if all_done:
            return
        if all_can and not none_restore:  # some rank must rebuild its batch, and some rank still has one
            restored, all_can = _agreed_previous(previous if restore else None, device)
            if restore and restored is not _MISSING:
                last = restored
        if not all_can:
            warnings.warn(
                "a rank's stream had no batch this epoch, so uneven='pad' has nothing to repeat: all ranks stop "
                "here (as with uneven='drop')",
                UserWarning,
                stacklevel=2,
            )
            return
        yield last if done else batch
