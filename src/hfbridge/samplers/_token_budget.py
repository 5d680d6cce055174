"""Token-budget batches: as many rows as fit in ``max_tokens`` padded tokens, in a random order of batches."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_choice, check_positive_int, check_type
from hfbridge.samplers._state import (
    Batches,
    Schedule,
    Uneven,
    descending_key,
    epoch_rng,
    iter_batches,
    shuffled_batches,
    to_index_array,
)

__all__ = ["TokenBudgetBatchSampler", "padded_lengths", "token_budget_bounds"]

Oversized = Literal["warn", "error"]


def padded_lengths(lengths: np.ndarray, pad_to_multiple_of: int | None) -> np.ndarray:
    """``lengths`` rounded up to a multiple of ``pad_to_multiple_of`` (unchanged for ``None``)."""
    if pad_to_multiple_of is None:
        return lengths
    return -(-lengths // pad_to_multiple_of) * pad_to_multiple_of


def token_budget_bounds(sorted_padded: np.ndarray, max_tokens: int, max_batch_size: int | None) -> np.ndarray:
    """Batch boundaries over lengths sorted longest first: the first row of each batch is its longest, so a
    batch starting at ``i`` takes ``max_tokens // sorted_padded[i]`` rows (at least 1). One Python step per
    *batch*."""
    n = len(sorted_padded)
    cap = max_batch_size or n
    # rows a batch may take when it starts at each row, computed for all rows at once
    take = np.clip(max_tokens // np.maximum(sorted_padded, 1), 1, cap).tolist()
    bounds = [0]
    start = 0
    while start < n:
        start = min(start + take[start], n)
        bounds.append(start)
    return np.asarray(bounds, dtype=np.int64)


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Variable-size batches whose padded size (rows x longest row) never exceeds ``max_tokens``.

    Rows are sorted longest first, ties broken at random each epoch, and cut greedily into batches; then the
    batches are shuffled. The cut depends only on the multiset of lengths, so ``len(sampler)`` is the same
    every epoch, while batch composition (ties) and batch order change with ``(seed, epoch)``. This is the
    token-based batching HF lacks (transformers #10512, #34406).

    Args:
        lengths: one token count per row, e.g. ``adapter.lengths``.
        max_tokens: budget of padded tokens per batch: ``rows * padded(longest row) <= max_tokens``.
        max_batch_size: optional cap on rows per batch.
        pad_to_multiple_of: the collator's ``pad_to_multiple_of``, so the budget counts the real padded size.
        shuffle: shuffle ties and batch order; ``False`` yields batches longest first.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        oversized: a row longer than ``max_tokens``: ``"warn"`` gives it a batch of its own and warns,
            ``"error"`` raises.
        longest_first: put each rank's batch with the longest row first, so an out-of-memory shows at step 0.
        num_replicas: number of ranks (default from ``torch.distributed``).
        rank: this rank (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"``, as in :class:`LengthGroupedBatchSampler`.

    Raises:
        TypeError: when ``lengths`` is not integer data or an option has the wrong type.
        ValueError: when an option is out of range, or a row exceeds ``max_tokens`` with
            ``oversized="error"``.

    Example:
        >>> sampler = TokenBudgetBatchSampler(adapter.lengths, max_tokens=4096)  # doctest: +SKIP
        >>> loader = DataLoader(adapter, batch_sampler=sampler, collate_fn=adapter.collator)  # doctest: +SKIP
    """

    def __init__(
        self,
        lengths: Any,
        max_tokens: int,
        *,
        max_batch_size: int | None = None,
        pad_to_multiple_of: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        oversized: Oversized = "warn",
        longest_first: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        uneven: Uneven = "pad",
    ) -> None:
        self._lengths = to_index_array("lengths", lengths)
        self.max_tokens = check_positive_int("max_tokens", max_tokens)
        self.max_batch_size = check_positive_int("max_batch_size", max_batch_size, allow_none=True)
        self.pad_to_multiple_of = check_positive_int(
            "pad_to_multiple_of", pad_to_multiple_of, allow_none=True
        )
        self.oversized = check_choice("oversized", oversized, ("warn", "error"))
        self.shuffle = check_type("shuffle", shuffle, bool)
        self.longest_first = check_type("longest_first", longest_first, bool)
        self._padded = padded_lengths(self._lengths, pad_to_multiple_of)
        too_long = np.flatnonzero(self._padded > max_tokens)
        if too_long.size:
            message = (
                f"{too_long.size} row(s) are longer than `max_tokens`={max_tokens} after padding (e.g. row "
                f"{int(too_long[0])} with {int(self._padded[too_long[0]])} tokens)"
            )
            if oversized == "error":
                raise ValueError(
                    f"{message}; raise `max_tokens`, truncate (`max_length`), or pass oversized='warn' to "
                    "give each such row a batch of its own"
                )
            warnings.warn(f"{message}: each gets a batch of its own", UserWarning, stacklevel=2)
        self._key = descending_key(self._padded)
        self._sorted = np.argsort(self._key, kind="stable")  # the cut depends only on the lengths: cut once
        self._bounds = token_budget_bounds(self._padded[self._sorted], max_tokens, max_batch_size)
        self._schedule = Schedule(
            type(self).__name__,
            self._draw,
            len(self._bounds) - 1,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            uneven=uneven,
        )
        self.seed, self.uneven = seed, uneven
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        config = {"max_tokens": max_tokens, "max_batch_size": max_batch_size, "shuffle": shuffle}
        config.update(pad_to_multiple_of=pad_to_multiple_of, longest_first=longest_first)
        self._schedule.set_fingerprint(config, self._lengths)

    def largest_batch(self) -> int:
        """Rows in the largest batch (the same every epoch: the cut depends only on the lengths)."""
        return int(np.diff(self._bounds).max())

    def _draw(self, seed: int, epoch: int) -> Batches:
        rows = self._sorted
        if self.shuffle:  # the same sort after a random permutation: ties in a random order
            shuffled = epoch_rng(seed, epoch).permutation(len(rows))
            rows = shuffled[np.argsort(self._key[shuffled], kind="stable")]
        longest = self._lengths if self.longest_first else None
        return shuffled_batches(
            rows, self._bounds, self._schedule, epoch, shuffle=self.shuffle, longest=longest
        )

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same every epoch)."""
        return len(self._schedule)

    def __iter__(self) -> Iterator[list[int]]:
        return iter_batches(self._schedule)

    @property
    def epoch(self) -> int:
        """The epoch whose order is used."""
        return self._schedule.cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``; a position loaded for the same epoch is kept."""
        self._schedule.cursor.set_epoch(epoch)

    @property
    def next_position(self) -> int:
        """Index of the batch the next ``__iter__`` starts from."""
        return self._schedule.cursor.next_position

    def seek(self, epoch: int, position: int) -> None:
        """Start the next ``__iter__`` at batch ``position`` of ``epoch``, its first ``position`` skipped."""
        self._schedule.seek(epoch, position)

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Seed, epoch, position and a configuration fingerprint (see :class:`LengthGroupedBatchSampler`)."""
        return self._schedule.state_dict(position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume after ``state['position']`` batches of ``state['epoch']``."""
        self._schedule.load_state_dict(state)
        self.seed = self._schedule.seed
