"""Per-epoch collators (``set_epoch``, e.g. the masked-LM one) in DataLoader workers, persistent ones
included.

A worker holds its own copy of ``collate_fn``. Without persistent workers the copy is made anew every epoch,
after ``set_epoch``; persistent workers keep theirs, so ``set_epoch`` in the main process would never reach
it. The loader then hands the workers an :class:`EpochSyncedCollator`, whose epoch lives in shared memory:
every call in a worker reads it and passes a change on to the worker's collator.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

__all__ = ["EpochSyncedCollator", "set_collator_epoch"]


def set_collator_epoch(collate_fn: Any, epoch: int) -> None:
    """Call ``collate_fn.set_epoch(epoch)`` when the collator has one (e.g. per-epoch masks of the masked-LM
    collator); collators without it are left alone."""
    set_epoch = getattr(collate_fn, "set_epoch", None)
    if callable(set_epoch):
        set_epoch(epoch)


class EpochSyncedCollator:
    """``collator`` with its epoch shared between the main process and persistent DataLoader workers.

    Args:
        collator: a collator with ``set_epoch(epoch)``.
        context: the multiprocessing context the workers start from (the loader's); the shared value is made
            in it, so ``fork``, ``spawn`` and ``forkserver`` workers all see it.
    """

    def __init__(self, collator: Any, context: Any = None) -> None:
        self.collator = collator
        ctx = context if context is not None else multiprocessing.get_context()
        self._shared = ctx.RawValue("q", -1)  # the epoch set last; -1: none yet
        self._applied = -1  # the epoch this process's copy of the collator has

    def set_epoch(self, epoch: int) -> None:
        """Set ``epoch`` here and, through shared memory, in every worker's copy at its next batch."""
        self._shared.value = epoch
        self.collator.set_epoch(epoch)
        self._applied = epoch

    def __call__(self, features: Any) -> Any:
        epoch = self._shared.value
        if epoch != self._applied and epoch >= 0:
            self.collator.set_epoch(epoch)
            self._applied = epoch
        return self.collator(features)
