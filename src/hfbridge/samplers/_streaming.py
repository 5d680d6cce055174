"""Length bucketing for streams: fill a buffer, sort it by length, emit its batches in shuffled order.

HF ignores ``group_by_length`` for an ``IterableDataset``; this brings it back with a bounded buffer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any, NamedTuple

import numpy as np
from torch.utils.data import IterableDataset

from hfbridge._checks import check_non_negative_int, check_positive_int, check_type
from hfbridge.samplers._state import check_state, epoch_rng, fingerprint, make_state
from hfbridge.samplers._token_budget import padded_lengths, token_budget_bounds

__all__ = ["BucketedIterable"]


def _row_length(row: Any, key: str) -> int:
    if not isinstance(row, Mapping) or key not in row:
        keys = list(row) if isinstance(row, Mapping) else type(row).__name__
        raise ValueError(
            f"every streamed row must be a mapping with a `{key}` sequence (`length_key`); got {keys}"
        )
    return len(row[key])


class _BatchAt(NamedTuple):
    """Where a yielded batch came from: enough to cut it again from the source."""

    buffer_index: int
    source_state: Any  # the source's state at the buffer's start; None: the start of the epoch
    batch_index: int  # the batch's place among the buffer's batches, as cut


class _Progress(NamedTuple):
    """Where a stream stands in its epoch."""

    yielded: int  # batches yielded this epoch
    buffer_index: int  # the buffer being read
    source_state: Any  # the source's state at that buffer's start; None: the start of the epoch
    in_buffer: int  # the buffer's batches already emitted (or dropped)
    last: _BatchAt | None  # the batch yielded last this epoch, which uneven="pad" may have to repeat


_START = _Progress(0, 0, None, 0, None)


class BucketedIterable(IterableDataset):
    """Wrap an iterable dataset of feature rows so it yields *lists of rows* grouped by length.

    Rows are read ``buffer_size`` at a time; each buffer is sorted by length (ties broken at random) and cut into
    batches of ``batch_size`` rows or of at most ``max_tokens`` padded tokens, which are emitted in a random order.
    Use it with ``DataLoader(bucketed, batch_size=None, collate_fn=collator)``; :func:`build_dataloader` does this for
    an iterable adapter.

    Args:
        source: an iterable of feature rows (e.g. an ``IterableAdapter``); its ``set_epoch``/``state_dict``/
            ``load_state_dict`` are used when present.
        batch_size: rows per batch (give this or ``max_tokens``).
        max_tokens: padded-token budget per batch.
        max_batch_size: cap on rows per batch with ``max_tokens``.
        pad_to_multiple_of: the collator's ``pad_to_multiple_of``, for the token budget.
        buffer_size: rows per buffer (rounded up to a multiple of ``batch_size``); larger pads less.
        shuffle: shuffle ties and the batch order within each buffer.
        seed: base seed; buffer ``b`` of epoch ``e`` uses ``(seed, e, b)``.
        drop_last: drop a final batch with fewer than ``batch_size`` rows.
        length_key: the row key whose length is measured.

    Raises:
        ValueError: unless exactly one of ``batch_size``/``max_tokens`` is given, or an option is out of range.

    Example:
        >>> batches = BucketedIterable(stream, batch_size=32, buffer_size=4096)  # doctest: +SKIP
        >>> loader = DataLoader(batches, batch_size=None, collate_fn=collator)  # doctest: +SKIP
    """

    def __init__(
        self,
        source: Any,
        *,
        batch_size: int | None = None,
        max_tokens: int | None = None,
        max_batch_size: int | None = None,
        pad_to_multiple_of: int | None = None,
        buffer_size: int = 4096,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        length_key: str = "input_ids",
    ) -> None:
        if (batch_size is None) == (max_tokens is None):
            raise ValueError(
                f"give exactly one of `batch_size` or `max_tokens`; got batch_size={batch_size!r}, "
                f"max_tokens={max_tokens!r}"
            )
        self.source = source
        self.batch_size = check_positive_int("batch_size", batch_size, allow_none=True)
        self.max_tokens = check_positive_int("max_tokens", max_tokens, allow_none=True)
        self.max_batch_size = check_positive_int("max_batch_size", max_batch_size, allow_none=True)
        self.pad_to_multiple_of = check_positive_int(
            "pad_to_multiple_of", pad_to_multiple_of, allow_none=True
        )
        check_positive_int("buffer_size", buffer_size)
        if batch_size is not None:
            buffer_size = -(-buffer_size // batch_size) * batch_size
        self.buffer_size = buffer_size
        self.shuffle = check_type("shuffle", shuffle, bool)
        self.seed = check_non_negative_int("seed", seed)
        self.drop_last = check_type("drop_last", drop_last, bool)
        self.length_key = check_type("length_key", length_key, str)
        self.epoch = 0
        self._fingerprint = fingerprint(
            {
                "class": type(self).__name__,
                "batch_size": batch_size,
                "max_tokens": max_tokens,
                "max_batch_size": max_batch_size,
                "pad_to_multiple_of": pad_to_multiple_of,
                "buffer_size": buffer_size,
                "shuffle": shuffle,
                "drop_last": drop_last,
            }
        )
        self._progress = _START
        self._resume: _Progress | None = None
        # (epoch, the source's state before this stream first loaded one in that epoch)
        self._unloaded: tuple[int, Any] | None = None

    def _seek(self, source_state: Any) -> Iterator[Any]:
        """Iterate the source from ``source_state``, a buffer's start (``None``: the start of the epoch).

        A source may keep a loaded state for every later ``iter()`` of its epoch (a ``datasets.IterableDataset``
        does), so reading the epoch from its start once this stream has loaded a state into it first gives the
        source back the state it had before that load.
        """
        if source_state is not None:
            if self._unloaded is None or self._unloaded[0] != self.epoch:
                self._unloaded = (self.epoch, self.source.state_dict())
            self.source.load_state_dict(source_state)
        elif self._unloaded is not None and self._unloaded[0] == self.epoch:
            self.source.load_state_dict(self._unloaded[1])
        return iter(self.source)

    def _read_buffer(
        self, rows_iter: Iterator[Any], epoch: int, buffer_index: int
    ) -> tuple[list[Any], list[np.ndarray]]:
        """The next ``buffer_size`` rows of ``rows_iter`` and their batches (row indices), cut for the buffer."""
        rows = list(islice(rows_iter, self.buffer_size))
        if not rows:
            return rows, []
        lengths = np.fromiter((_row_length(r, self.length_key) for r in rows), np.int64, len(rows))
        return rows, self._cut(lengths, epoch, buffer_index)

    def _cut(self, lengths: np.ndarray, epoch: int, buffer_index: int) -> list[np.ndarray]:
        rng = epoch_rng(self.seed, epoch, stream=buffer_index)
        padded = padded_lengths(lengths, self.pad_to_multiple_of)
        rows = rng.permutation(len(padded)) if self.shuffle else np.arange(len(padded))
        order = rows[np.argsort(-padded[rows], kind="stable")]
        if self.batch_size is not None:
            bounds = np.arange(0, len(order) + self.batch_size, self.batch_size).clip(max=len(order))
            bounds = np.unique(bounds)
        else:
            bounds = token_budget_bounds(padded[order], self.max_tokens or 0, self.max_batch_size)
        batches = [order[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return batches

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shuffles and pass the epoch on to the source; a loaded position is kept."""
        check_non_negative_int("epoch", epoch)
        if epoch != self.epoch:
            self._resume = None
            self._progress = _START
        self.epoch = epoch
        self._source_epoch()

    def _source_epoch(self) -> None:
        """Pass the epoch on to the source, when it has ``set_epoch``."""
        if callable(getattr(self.source, "set_epoch", None)):
            self.source.set_epoch(self.epoch)

    def __iter__(self) -> Iterator[list[Any]]:
        epoch, source = self.epoch, self.source
        stateful = callable(getattr(source, "state_dict", None))
        self._progress, self._resume = self._resume or _START, None
        yielded, buffer_index, start_state, skip, _ = self._progress
        rows_iter = self._seek(start_state)
        while True:
            rows, batches = self._read_buffer(rows_iter, epoch, buffer_index)
            if not rows:
                break
            final = len(rows) < self.buffer_size
            for k in range(skip, len(batches)):
                batch = batches[k]
                if self.drop_last and final and self.batch_size and len(batch) < self.batch_size:
                    continue
                yielded += 1
                last = _BatchAt(buffer_index, start_state, k)
                self._progress = _Progress(yielded, buffer_index, start_state, k + 1, last)
                yield [rows[i] for i in batch]
            skip = 0
            buffer_index += 1
            start_state = source.state_dict() if stateful else None
            self._progress = self._progress._replace(
                buffer_index=buffer_index, source_state=start_state, in_buffer=0
            )

    def last_batch(self) -> list[Any] | None:
        """The rows of the batch yielded last this epoch, cut again from the source; ``None`` before the first.

        ``uneven="pad"`` repeats this batch on a rank whose stream ran out. A run resumed past it has not got it in
        memory, so the loader rebuilds it from here: the source is reloaded at the start of that batch's buffer (the
        epoch's start for the first buffer) and the buffer re-read and cut with the same ``(seed, epoch, buffer)``. Call it between iterations, as it moves
        the source.

        Returns:
            The batch's rows, or ``None`` when no batch was yielded this epoch.

        Raises:
            RuntimeError: when the batch lies past the first buffer of a source without ``state_dict()``.
            ValueError: when the source no longer yields the rows the batch was cut from.
        """
        last = (self._resume or self._progress).last
        if last is None:
            return None
        if last.source_state is None and last.buffer_index:
            raise RuntimeError(
                f"the last batch lies in buffer {last.buffer_index}, which only a source with `state_dict()` can "
                "re-read"
            )
        rows, batches = self._read_buffer(self._seek(last.source_state), self.epoch, last.buffer_index)
        if last.batch_index >= len(batches):
            raise ValueError(
                f"the source yields {len(rows)} rows for buffer {last.buffer_index}, too few for its batch "
                f"{last.batch_index}: it is not the source the position was saved from"
            )
        return [rows[i] for i in batches[last.batch_index]]

    def state_dict(self) -> dict[str, Any]:
        """Seed, epoch, batches yielded, where the current buffer started in the source (its state), and where the
        last batch yielded came from (``last_batch``, which ``uneven="pad"`` may repeat after a resume)."""
        yielded, buffer_index, source_state, in_buffer, last = self._resume or self._progress
        state = make_state(type(self).__name__, self._fingerprint, self.seed, self.epoch, yielded)
        state.update(
            buffer_index=buffer_index,
            buffer_position=in_buffer,
            source_state=source_state,
            last_batch=None if last is None else last._asdict(),
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: re-read only the current buffer from the source's saved state, then skip its emitted batches.

        The saved epoch is adopted and passed on to the source, so no ``set_epoch`` is needed afterwards.

        A state without ``last_batch`` (saved before it was kept) loads too; a rank resumed from it past its last
        batch has nothing for ``uneven="pad"`` to repeat, so all ranks stop that epoch there, with a warning.

        Raises:
            TypeError: when the state or its ``last_batch`` has the wrong shape.
            ValueError: when the state belongs to another configuration.
        """
        seed, epoch, position = check_state(state, type(self).__name__, self._fingerprint)
        buffer_index, source_state = _buffer_start(state, "state")
        last = _batch_at(state.get("last_batch"))
        self.seed, self.epoch = seed, epoch
        self._source_epoch()  # a buffer's start state may not restore it, and the first buffer has none
        self._resume = _Progress(position, buffer_index, source_state, int(state["buffer_position"]), last)


def _buffer_start(state: Mapping[str, Any], where: str) -> tuple[int, Any]:
    """A buffer's index and the source's state at its start, read from ``state`` (named ``where`` in errors); only
    the first buffer of an epoch may lack a source state."""
    buffer_index = check_non_negative_int(f"{where}['buffer_index']", state["buffer_index"])
    source_state = state.get("source_state")
    if source_state is None and buffer_index:
        raise ValueError(
            f"`{where}['source_state']` is missing: exact streaming resume needs a source with `state_dict()`"
        )
    return buffer_index, source_state


def _batch_at(value: Any) -> _BatchAt | None:
    """The ``last_batch`` field of a state (``None``: no batch yet, or a state saved before the field existed)."""
    if value is None:
        return None
    where = "state['last_batch']"
    if not isinstance(value, Mapping) or set(value) != set(_BatchAt._fields):
        raise TypeError(f"`{where}` must be None or a dict with keys {list(_BatchAt._fields)}; got {value!r}")
    batch_index = check_non_negative_int(f"{where}['batch_index']", value["batch_index"])
    return _BatchAt(*_buffer_start(value, where), batch_index)
