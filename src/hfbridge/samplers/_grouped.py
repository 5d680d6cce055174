"""Fixed-size batches: length-grouped (shuffle, sort in megabatches, shuffle the batches) and plain random."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from hfbridge._checks import check_positive_int, check_type
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

__all__ = ["LengthGroupedBatchSampler", "RandomBatchSampler"]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Batches of rows of similar length, in a random order of batches.

    Each epoch: shuffle the rows, cut them into megabatches of ``batch_size * megabatch_mult`` rows, sort each
    megabatch by length (longest first) and cut it into batches, then shuffle the batches themselves. The last
    step is what HF's ``LengthGroupedSampler`` lacks: without it every megabatch runs long-to-short and the
    loss saw-tooths (transformers #20810). Everything derives from ``(seed, epoch)``, so ranks agree without
    talking, and a resume draws the epoch again and starts at the saved batch, with no replay.

    Args:
        lengths: one token count per row (list, NumPy array, tensor or Arrow column), e.g.
            ``adapter.lengths``.
        batch_size: rows per batch.
        shuffle: shuffle rows and batches; ``False`` sorts the whole dataset by length (longest first), which
            is what you want for evaluation.
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        megabatch_mult: megabatch size in batches. Larger groups pad less but vary less between epochs.
        drop_last: drop ``len(lengths) % batch_size`` random rows so every batch is full.
        longest_first: put each rank's longest batch first, so an out-of-memory shows at step 0.
        num_replicas: number of ranks (default: ``torch.distributed`` world size, else 1).
        rank: this rank (default: ``torch.distributed`` rank, else 0).
        uneven: when the batch count does not split evenly over ranks: ``"pad"`` repeats batches so every rank
            gets the same count (training), ``"drop"`` drops the extra batches, ``"exact"`` yields every row
            once over all ranks (evaluation; counts may differ by one).

    Raises:
        TypeError: when ``lengths`` is not integer data or an option has the wrong type.
        ValueError: when ``lengths`` is empty or negative, or an option is out of range.

    Example:
        >>> sampler = LengthGroupedBatchSampler(adapter.lengths, batch_size=32, seed=0)  # doctest: +SKIP
        >>> loader = DataLoader(adapter, batch_sampler=sampler, collate_fn=adapter.collator)  # doctest: +SKIP
        >>> sampler.set_epoch(epoch)  # doctest: +SKIP
    """

    def __init__(
        self,
        lengths: Any,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        megabatch_mult: int = 256,
        drop_last: bool = False,
        longest_first: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        uneven: Uneven = "pad",
    ) -> None:
        self._lengths = to_index_array("lengths", lengths)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.megabatch_mult = check_positive_int("megabatch_mult", megabatch_mult)
        self.drop_last = check_type("drop_last", drop_last, bool)
        self.shuffle = check_type("shuffle", shuffle, bool)
        self.longest_first = check_type("longest_first", longest_first, bool)
        n = len(self._lengths)
        if drop_last and n < batch_size:
            raise ValueError(
                f"`batch_size` must be <= len(lengths)={n} with drop_last=True (no batch would be full); "
                f"got {batch_size}"
            )
        self._num_rows = n - n % batch_size if drop_last else n
        num_batches = -(-self._num_rows // batch_size)
        self._schedule = Schedule(
            type(self).__name__,
            self._draw,
            num_batches,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            uneven=uneven,
        )
        self.seed, self.uneven = seed, uneven
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        self._key = descending_key(self._lengths)
        config = {"batch_size": batch_size, "megabatch_mult": megabatch_mult, "drop_last": drop_last}
        self._schedule.set_fingerprint(
            {**config, "shuffle": shuffle, "longest_first": longest_first}, self._lengths
        )

    def _draw(self, seed: int, epoch: int) -> Batches:
        if self.shuffle:
            rows = epoch_rng(seed, epoch).permutation(len(self._lengths))[: self._num_rows]
            group = self.batch_size * self.megabatch_mult
            key, full = self._key[rows], (self._num_rows // group) * group
            # every full megabatch sorted longest first in one call, then the short last one
            head = np.argsort(key[:full].reshape(-1, group), axis=1, kind="stable")
            head += np.arange(0, full, group)[:, None]
            rows = rows[np.concatenate([head.ravel(), full + np.argsort(key[full:], kind="stable")])]
        else:
            rows = np.argsort(self._key, kind="stable")[: self._num_rows]
        bounds = np.minimum(np.arange(self._schedule.num_items + 1) * self.batch_size, self._num_rows)
        longest = self._lengths if self.longest_first else None
        return shuffled_batches(rows, bounds, self._schedule, epoch, shuffle=self.shuffle, longest=longest)

    def __len__(self) -> int:
        """Batches this rank yields per epoch (the same every epoch)."""
        return len(self._schedule)

    def __iter__(self) -> Iterator[list[int]]:
        return iter_batches(self._schedule)

    @property
    def epoch(self) -> int:
        """The epoch whose order is used (see :meth:`set_epoch`)."""
        return self._schedule.cursor.epoch

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch``; a position loaded by ``load_state_dict`` for the same epoch is kept."""
        self._schedule.cursor.set_epoch(epoch)

    @property
    def next_position(self) -> int:
        """Index (within this rank's epoch) of the batch the next ``__iter__`` starts from."""
        return self._schedule.cursor.next_position

    def seek(self, epoch: int, position: int) -> None:
        """Start the next ``__iter__`` at batch ``position`` of ``epoch``, its first ``position`` skipped."""
        self._schedule.seek(epoch, position)

    def state_dict(self, position: int | None = None) -> dict[str, Any]:
        """Seed, epoch, position (batches of this epoch already yielded) and a configuration fingerprint.

        Args:
            position: override the position (a loader passes the batches it handed to the user, fewer than the
                sampler yielded when workers prefetch).
        """
        return self._schedule.state_dict(position)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the next ``__iter__`` yields exactly the batches the saved run had not yet yielded.

        Raises:
            ValueError: when the state belongs to another sampler class or configuration, or the position is
                past the end of the epoch.
        """
        self._schedule.load_state_dict(state)
        self.seed = self._schedule.seed


class RandomBatchSampler(Sampler[list[int]]):
    """Random fixed-size batches with the same sharding, ``set_epoch`` and resume as the grouped sampler.

    Args:
        num_rows: dataset size.
        batch_size: rows per batch.
        shuffle: shuffle rows (``False``: rows in order).
        seed: base seed; epoch ``e`` uses ``(seed, e)``.
        drop_last: drop the last incomplete batch.
        num_replicas: number of ranks (default from ``torch.distributed``).
        rank: this rank (default from ``torch.distributed``).
        uneven: ``"pad"``, ``"drop"`` or ``"exact"``, as in :class:`LengthGroupedBatchSampler`.

    Raises:
        TypeError: when an option has the wrong type.
        ValueError: when an option is out of range.

    Example:
        >>> sampler = RandomBatchSampler(len(dataset), batch_size=32, seed=0)
        >>> len(sampler) == -(-len(dataset) // 32)  # doctest: +SKIP
    """

    def __init__(
        self,
        num_rows: int,
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
        uneven: Uneven = "pad",
    ) -> None:
        self.num_rows = check_positive_int("num_rows", num_rows)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.drop_last = check_type("drop_last", drop_last, bool)
        self.shuffle = check_type("shuffle", shuffle, bool)
        num_batches = num_rows // batch_size if drop_last else -(-num_rows // batch_size)
        self._schedule = Schedule(
            type(self).__name__,
            self._draw,
            num_batches,
            seed=seed,
            num_replicas=num_replicas,
            rank=rank,
            uneven=uneven,
        )
        self.seed, self.uneven = seed, uneven
        self.num_replicas, self.rank = self._schedule.num_replicas, self._schedule.rank
        config = {"num_rows": num_rows, "batch_size": batch_size, "drop_last": drop_last, "shuffle": shuffle}
        self._schedule.set_fingerprint(config)

    def _draw(self, seed: int, epoch: int) -> Batches:
        rows = epoch_rng(seed, epoch).permutation(self.num_rows) if self.shuffle else np.arange(self.num_rows)
        bounds = np.minimum(np.arange(self._schedule.num_items + 1) * self.batch_size, self.num_rows)
        return shuffled_batches(rows, bounds, self._schedule, epoch, shuffle=False)

    def __len__(self) -> int:
        """Batches this rank yields per epoch."""
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
