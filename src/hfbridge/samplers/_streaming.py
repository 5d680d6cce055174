"""Length bucketing for streams (fill a buffer, sort it by length, emit its batches in shuffled order), and
the step agreement that keeps ranks of a stream in lockstep.

HF ignores ``group_by_length`` for an ``IterableDataset``; this brings it back with a bounded buffer. A
stream's shards hold different numbers of rows, so one rank runs out first and the others would block forever
in DDP's next gradient all-reduce: :func:`agreed_batches` makes every rank decide each step together, with one
tiny ``all_reduce`` per batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import IterableDataset

from hfbridge._checks import check_non_negative_int, check_positive_int, check_type
from hfbridge._distributed import get_world_size
from hfbridge.samplers._batch_samplers import padded_lengths, token_budget_bounds
from hfbridge.samplers._state import check_state, epoch_rng, fingerprint, make_state

__all__ = ["BucketedIterable", "agreed_batches", "ranks_must_agree"]


def _row_length(row: Any, key: str) -> int:
    if not isinstance(row, Mapping) or key not in row:
        keys = list(row) if isinstance(row, Mapping) else type(row).__name__
        raise ValueError(
            f"every streamed row must be a mapping with a `{key}` sequence (`length_key`); got {keys}"
        )
    return len(row[key])


class _Progress(NamedTuple):
    """Where a stream stands in its epoch: the buffer holding the batch yielded last, and how far into it."""

    yielded: int  # batches yielded this epoch
    buffer_index: int  # the buffer being read
    source_state: Any  # the source's state at that buffer's start; None: the start of the epoch
    in_buffer: int  # the buffer's batches already emitted (or dropped)


_START = _Progress(0, 0, None, 0)
_MISSING = object()


class BucketedIterable(IterableDataset):
    """Wrap an iterable dataset of feature rows so it yields *lists of rows* grouped by length.

    Rows are read ``buffer_size`` at a time; each buffer is sorted by length (ties broken at random) and cut
    into batches of ``batch_size`` rows or of at most ``max_tokens`` padded tokens, which are emitted in a
    random order. Use it with ``DataLoader(bucketed, batch_size=None, collate_fn=collator)``;
    :func:`build_dataloader` does this for an iterable adapter.

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
        ValueError: unless exactly one of ``batch_size``/``max_tokens`` is given, or an option is out of
            range.

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
        self._last: list[Any] | None = None  # the rows of the batch yielded last this epoch

    def _seek(self, source_state: Any) -> Iterator[Any]:
        """Iterate the source from ``source_state``, a buffer's start (``None``: the start of the epoch).

        A source may keep a loaded state for every later ``iter()`` of its epoch (a
        ``datasets.IterableDataset`` does), so reading the epoch from its start once this stream has loaded a
        state into it first gives the source back the state it had before that load.
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
        """The next ``buffer_size`` rows of ``rows_iter`` and their batches (row indices), as emitted."""
        rows = list(islice(rows_iter, self.buffer_size))
        if not rows:
            return rows, []
        lengths = np.fromiter((_row_length(r, self.length_key) for r in rows), np.int64, len(rows))
        padded = padded_lengths(lengths, self.pad_to_multiple_of)
        rng = epoch_rng(self.seed, epoch, stream=buffer_index)
        shuffled = rng.permutation(len(rows)) if self.shuffle else np.arange(len(rows))
        order = shuffled[np.argsort(-padded[shuffled], kind="stable")]
        if self.batch_size is not None:
            bounds = np.minimum(np.arange(0, len(order) + self.batch_size, self.batch_size), len(order))
        else:
            bounds = token_budget_bounds(padded[order], self.max_tokens or 0, self.max_batch_size)
        batches = np.split(order, bounds[1:-1])
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return rows, batches

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shuffles and pass the epoch on to the source; a loaded position is kept."""
        check_non_negative_int("epoch", epoch)
        if epoch != self.epoch:
            self._resume, self._progress, self._last = None, _START, None
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
        yielded, buffer_index, start_state, skip = self._progress
        rows_iter = self._seek(start_state)
        self._last = None
        while True:
            rows, batches = self._read_buffer(rows_iter, epoch, buffer_index)
            if not rows:
                break
            final = len(rows) < self.buffer_size
            kept = [k for k, batch in enumerate(batches) if not self._dropped(batch, final)]
            # emitted before a resume: the last of them is the batch yielded last
            done = [k for k in kept if k < skip]
            if done:
                self._last = [rows[i] for i in batches[done[-1]]]
            for k in kept[len(done) :]:
                yielded += 1
                self._progress = _Progress(yielded, buffer_index, start_state, k + 1)
                self._last = [rows[i] for i in batches[k]]
                yield self._last
            skip = 0
            buffer_index += 1
            start_state = source.state_dict() if stateful else None

    def _dropped(self, batch: np.ndarray, final: bool) -> bool:
        """Whether ``drop_last`` drops ``batch`` (a short batch of the stream's final buffer)."""
        return self.drop_last and final and self.batch_size is not None and len(batch) < self.batch_size

    def last_batch(self) -> list[Any] | None:
        """The rows of the batch yielded last this epoch, which ``uneven="pad"`` repeats on a rank whose
        stream ran out; ``None`` before the first.

        A resumed stream knows it once its iteration has started: resuming re-reads the buffer that holds it.
        """
        return self._last

    def state_dict(self) -> dict[str, Any]:
        """Seed, epoch, batches yielded, the buffer holding the batch yielded last (its index and the source's
        state at its start) and how many of its batches were emitted."""
        yielded, buffer_index, source_state, in_buffer = self._resume or self._progress
        state = make_state(type(self).__name__, self._fingerprint, self.seed, self.epoch, yielded)
        state.update(buffer_index=buffer_index, buffer_position=in_buffer, source_state=source_state)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: re-read only the saved buffer from the source's saved state, then skip its emitted batches.

        The saved epoch is adopted and passed on to the source, so no ``set_epoch`` is needed afterwards.

        Raises:
            TypeError: when the state has the wrong shape.
            ValueError: when the state belongs to another configuration, or lacks the source state that a
                buffer after the first needs.
        """
        seed, epoch, position = check_state(state, type(self).__name__, self._fingerprint)
        buffer_index = check_non_negative_int("state['buffer_index']", state["buffer_index"])
        source_state = state.get("source_state")
        if source_state is None and buffer_index:
            raise ValueError(
                "`state['source_state']` is missing: exact streaming resume needs a source with "
                "`state_dict()`"
            )
        in_buffer = check_non_negative_int("state['buffer_position']", state["buffer_position"])
        self.seed, self.epoch = seed, epoch
        self._source_epoch()  # a buffer's start state may not restore it, and the first buffer has none
        self._resume = _Progress(position, buffer_index, source_state, in_buffer)
        self._last = None

    def seek(self, epoch: int, position: int) -> None:
        """Start the next iteration at the top of ``epoch``; a stream cannot skip batches without reading
        them.

        Raises:
            ValueError: for a ``position`` other than 0 (save and load a ``state_dict()`` to resume a stream).
        """
        if position != 0:
            raise ValueError(
                f"`position` must be 0 for a stream, which cannot skip batches without reading them; got "
                f"{position}: resume a stream from its `state_dict()`"
            )
        self.set_epoch(epoch)
        self._resume = None


def ranks_must_agree(num_replicas: int, uneven: str) -> bool:
    """True when a stream's batches must be agreed across ranks: a live process group of several ranks, and
    ``uneven`` is ``"pad"`` or ``"drop"`` (``"exact"`` yields every rank's own batches, for loops that do not
    synchronise per step)."""
    return num_replicas > 1 and uneven != "exact" and get_world_size() > 1


def _all_min(values: list[int]) -> list[int]:
    """The minimum of each value over the ranks of the default process group."""
    import torch.distributed as dist

    nccl = dist.get_backend() == "nccl"  # nccl only reduces CUDA tensors
    flags = torch.tensor(values, device=torch.device("cuda", torch.cuda.current_device()) if nccl else "cpu")
    dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return [int(v) for v in flags.tolist()]


def agreed_batches(
    batches: Iterable[Any], uneven: str, previous: Callable[[], Any | None] | None = None
) -> Iterator[Any]:
    """Yield this rank's ``batches`` so that every rank of the default process group yields the same number.

    Each step the ranks ``all_reduce`` (MIN) whether they still have a batch. ``"drop"``: all stop as soon as
    any rank runs out (its extra batches are not seen this epoch). ``"pad"``: ranks that ran out repeat their
    last batch until every rank is done; a rank that runs out before yielding anything (resumed past its last
    batch) repeats ``previous()``, the batch it yielded last this epoch before ``batches`` began; if that is
    ``None`` too, the rank had no batch this epoch and nothing to repeat, so all stop there with a warning.
    """
    iterator = iter(batches)
    last: Any = _MISSING
    done = False
    while True:
        batch: Any = _MISSING
        if not done:
            batch = next(iterator, _MISSING)
            done = batch is _MISSING
            last = last if done else batch
            if done and last is _MISSING and uneven == "pad" and previous is not None:
                restored = previous()
                last = _MISSING if restored is None else restored
        all_have, all_done, all_can = _all_min([int(not done), int(done), int(last is not _MISSING)])
        if uneven == "drop":
            if not all_have:
                return
            yield batch
        elif all_done:
            return
        elif not all_can:
            warnings.warn(
                "a rank's stream had no batch this epoch, so uneven='pad' has nothing to repeat: all ranks "
                "stop here (as with uneven='drop')",
                UserWarning,
                stacklevel=2,
            )
            return
        else:
            yield last if done else batch
