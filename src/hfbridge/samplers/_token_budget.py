"""Token-budget batches: as many rows as fit in ``max_tokens`` padded tokens, in a random order of batches."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import numpy as np

from hfbridge._checks import check_choice, check_positive_int
from hfbridge.samplers._base import EpochBatchSampler, SlicedPlan, Uneven
from hfbridge.samplers._grouped import _sort_key
from hfbridge.samplers._permutation import Permutation
from hfbridge.samplers._state import epoch_rng, to_index_array

__all__ = ["TiedRunsPlan", "TokenBudgetBatchSampler", "token_budget_bounds"]

Oversized = Literal["warn", "error"]

_SMALL_RUN = 4096  # runs of equal length up to this size are shuffled whole (a bounded cost per run)
_LAZY_BATCHES = (
    32  # batches mapped one by one (a resume's first steps) before the whole epoch is mapped at once
)


def padded_lengths(lengths: np.ndarray, pad_to_multiple_of: int | None) -> np.ndarray:
    if pad_to_multiple_of is None:
        return lengths
    return -(-lengths // pad_to_multiple_of) * pad_to_multiple_of


def token_budget_bounds(sorted_padded: np.ndarray, max_tokens: int, max_batch_size: int | None) -> np.ndarray:
    """Batch boundaries over lengths sorted longest first: the first row of each batch is its longest, so a batch
    starting at ``i`` takes ``max_tokens // sorted_padded[i]`` rows (at least 1). One Python step per *batch*."""
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


class TiedRunsPlan:
    """Rows sorted longest first (one stable argsort, computed once per sampler) with ties shuffled per epoch.

    Rows of equal padded length form a run; position ``p`` of run ``[a, b)`` holds ``sorted[a + perm(p - a)]``,
    where ``perm`` is a keyed :class:`Permutation` of the run from ``(seed, epoch, run)`` (a plain shuffle for runs of
    at most 4096 rows, a bounded cost). A batch maps only its own
    positions, so building the plan and resuming are O(batch), not a sort of the epoch.
    """

    def __init__(
        self,
        sorted_rows: np.ndarray,
        run_starts: np.ndarray,
        bounds: np.ndarray,
        lengths: np.ndarray,
        entropy: tuple[int, int],
    ) -> None:
        self.sorted_rows, self.run_starts, self.bounds, self.lengths = (
            sorted_rows,
            run_starts,
            bounds,
            lengths,
        )
        self.entropy = entropy
        self._perms: dict[int, Callable[[np.ndarray], np.ndarray]] = {}
        self._order: np.ndarray | None = None  # the whole epoch, mapped once iteration goes on past a resume
        self._lazy_calls = 0

    def _run_stop(self, run: int) -> int:
        return int(self.run_starts[run + 1]) if run + 1 < len(self.run_starts) else len(self.sorted_rows)

    def _perm(self, run: int) -> Callable[[np.ndarray], np.ndarray]:
        perm = self._perms.get(run)
        if perm is None:
            size = self._run_stop(run) - int(self.run_starts[run])
            if size > _SMALL_RUN:  # sliceable: a resume maps only its batch's positions
                perm = Permutation(size, (*self.entropy, 2, run))
            else:  # bounded work, and far cheaper per run than a Feistel network with cycle-walking
                perm = (
                    epoch_rng(self.entropy[0], self.entropy[1], stream=2 + run).permutation(size).__getitem__
                )
            self._perms[run] = perm
        return perm

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Row indices at sorted positions ``start..stop-1`` after this epoch's tie shuffle (one slice per run)."""
        if self._order is not None:
            return self._order[start:stop]
        shuffled = np.empty(stop - start, dtype=np.int64)
        run = int(np.searchsorted(self.run_starts, start, side="right")) - 1
        position = start
        while position < stop:
            first, end = int(self.run_starts[run]), min(self._run_stop(run), stop)
            shuffled[position - start : end - start] = first + self._perm(run)(
                np.arange(position - first, end - first)
            )
            position, run = end, run + 1
        return self.sorted_rows[shuffled]

    def batch(self, index: int) -> np.ndarray:
        self._lazy_calls += 1
        if self._order is None and self._lazy_calls > _LAZY_BATCHES:
            # iterating on, not just resuming: map the whole epoch once (O(rows)) instead of batch by batch
            self._order = self.rows(0, len(self.sorted_rows))
        return self.rows(int(self.bounds[index]), int(self.bounds[index + 1]))

    def longest(self) -> np.ndarray:
        """The longest row of every batch (maps the whole epoch: O(rows), only for ``longest_first``)."""
        return np.maximum.reduceat(self.lengths[self.rows(0, len(self.sorted_rows))], self.bounds[:-1])


class TokenBudgetBatchSampler(EpochBatchSampler):
    """Variable-size batches whose padded size (rows x longest row) never exceeds ``max_tokens``.

    Rows are sorted longest first, ties broken at random each epoch, and cut greedily into batches; then the
    batches are shuffled. The sort is done once per sampler; an epoch only permutes rows within runs of equal
    length (a keyed permutation per run), so resuming maps one batch instead of re-sorting the epoch. The cut depends only on the multiset of lengths, so ``len(sampler)`` is the same every
    epoch, while batch composition (ties) and batch order change with ``(seed, epoch)``. This is the token-based
    batching HF lacks (transformers #10512, #34406).

    Args:
        lengths: one token count per row, e.g. ``adapter.lengths``.
        max_tokens: budget of padded tokens per batch: ``rows * padded(longest row) <= max_tokens``.
        max_batch_size: optional cap on rows per batch.
        pad_to_multiple_of: the collator's ``pad_to_multiple_of``, so the budget counts the real padded size.
        shuffle: shuffle ties and batch order; ``False`` yields batches longest first.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        oversized: a row longer than ``max_tokens``: ``"warn"`` gives it a batch of its own and warns, ``"error"``
            raises.
        longest_first: put each rank's batch with the longest row first, so an out-of-memory shows at step 0.
        num_replicas: number of ranks (default from ``torch.distributed``).
        rank: this rank (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"``, as in :class:`LengthGroupedBatchSampler`.

    Raises:
        TypeError: when ``lengths`` is not integer data or an option has the wrong type.
        ValueError: when an option is out of range, or a row exceeds ``max_tokens`` with ``oversized="error"``.

    Example:
        >>> sampler = TokenBudgetBatchSampler(adapter.lengths, max_tokens=4096, pad_to_multiple_of=8)  # doctest: +SKIP
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
        super().__init__(
            shuffle=shuffle,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            uneven=uneven,
            longest_first=longest_first,
        )
        self._padded = padded_lengths(self._lengths, pad_to_multiple_of)
        too_long = np.flatnonzero(self._padded > max_tokens)
        if too_long.size:
            message = (
                f"{too_long.size} row(s) are longer than `max_tokens`={max_tokens} after padding (e.g. row "
                f"{int(too_long[0])} with {int(self._padded[too_long[0]])} tokens)"
            )
            if oversized == "error":
                raise ValueError(
                    f"{message}; raise `max_tokens`, truncate (`max_length`), or pass oversized='warn' to give "
                    "each such row a batch of its own"
                )
            warnings.warn(f"{message}: each gets a batch of its own", UserWarning, stacklevel=2)
        key = _sort_key(self._padded)
        # the sort and the cut depend only on the lengths: compute them once; epochs only shuffle ties (cheaply)
        self._sorted = np.argsort(key, kind="stable")
        sorted_key = key[self._sorted]
        self._run_starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
        self._bounds = token_budget_bounds(-sorted_key.astype(np.int64), max_tokens, max_batch_size)
        self._set_fingerprint(self._lengths)

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "max_tokens": self.max_tokens,
            "max_batch_size": self.max_batch_size,
            "pad_to_multiple_of": self.pad_to_multiple_of,
        }

    def _num_global_batches(self) -> int:
        return len(self._bounds) - 1

    def largest_batch(self) -> int:
        """Rows in the largest batch (the same every epoch: the cut depends only on the lengths)."""
        return int(np.diff(self._bounds).max())

    def _global_plan(self, epoch: int) -> TiedRunsPlan | SlicedPlan:
        if not self.shuffle:
            return SlicedPlan(self._sorted, self._bounds, self._lengths)
        return TiedRunsPlan(self._sorted, self._run_starts, self._bounds, self._lengths, (self.seed, epoch))
