"""Sampler state: the cursor, rank shares, configuration fingerprints and the schedule every sampler delegates
to.

A sampler state is a plain dict of python scalars and strings, so ``json.dumps`` and
``torch.load(weights_only=True)`` both take it::

    {"sampler": "LengthGroupedBatchSampler", "fingerprint": "3f1c...", "seed": 0, "epoch": 2, "position": 117}

Resuming never replays batches: a sampler draws its whole epoch from ``(seed, epoch)`` in a few vectorised
NumPy calls and indexes it at the saved position, so the cost does not depend on the position.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, Literal, NamedTuple, Protocol, TypeVar, overload

import numpy as np

from hfbridge._checks import check_choice, check_non_negative_int
from hfbridge._distributed import resolve_replicas

__all__ = [
    "Batches",
    "Cursor",
    "Schedule",
    "Scheduled",
    "Uneven",
    "check_state",
    "descending_key",
    "epoch_rng",
    "fingerprint",
    "iter_scheduled_batches",
    "make_state",
    "scheduled_epoch",
    "scheduled_len",
    "scheduled_load_state_dict",
    "scheduled_next_position",
    "scheduled_seek",
    "scheduled_set_epoch",
    "scheduled_state_dict",
    "shard_len",
    "shard_positions",
    "shuffled_batches",
    "to_index_array",
    "uneven_options",
]

Uneven = Literal["pad", "drop", "exact"]
uneven_options = ("pad", "drop", "exact")
_STATE_KEYS = ("sampler", "fingerprint", "seed", "epoch", "position")
# in every map sampler's fingerprint: a state saved by a version that drew other orders is refused
ORDER_VERSION = 3
T = TypeVar("T")


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """A NumPy generator that depends only on ``(seed, epoch, stream)``: every rank draws the same numbers."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, stream]))


def descending_key(lengths: np.ndarray) -> np.ndarray:
    """Negated lengths in the smallest signed dtype: a stable sort on it is longest first (and a radix
    sort)."""
    top = int(lengths.max()) if lengths.size else 0
    dtype = np.int16 if top < 2**15 else np.int32 if top < 2**31 else np.int64
    return (-lengths).astype(dtype)


def shard_positions(num_items: int, num_replicas: int, rank: int, uneven: str) -> np.ndarray:
    """Positions ``0..num_items-1`` (of batches or indices) owned by ``rank``, interleaved over the ranks.

    ``"pad"`` repeats items from the start so every rank gets ``ceil(n / R)``; ``"drop"`` drops the tail so
    every rank gets ``n // R``; ``"exact"`` gives each item to exactly one rank (counts may differ by one).
    """
    if uneven == "pad":
        positions = np.arange(shard_len(num_items, num_replicas, rank, uneven) * num_replicas)
        positions %= max(num_items, 1)
    elif uneven == "drop":
        positions = np.arange((num_items // num_replicas) * num_replicas)
    else:
        positions = np.arange(num_items)
    return positions[rank::num_replicas]


def shard_len(num_items: int, num_replicas: int, rank: int, uneven: str) -> int:
    """How many positions :func:`shard_positions` gives ``rank``."""
    if uneven == "pad":
        return -(-num_items // num_replicas)
    if uneven == "drop":
        return num_items // num_replicas
    return len(range(rank, num_items, num_replicas))


def fingerprint(config: Mapping[str, Any], *arrays: np.ndarray) -> str:
    """A short hash of a configuration dict and the data arrays (lengths, labels) it was built over."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(json.dumps(dict(config), sort_keys=True, default=str).encode())
    for array in arrays:
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()


def make_state(name: str, fp: str, seed: int, epoch: int, position: int) -> dict[str, Any]:
    return {
        "sampler": name,
        "fingerprint": fp,
        "seed": int(seed),
        "epoch": int(epoch),
        "position": int(position),
    }


def check_state(state: Any, name: str, fp: str) -> tuple[int, int, int]:
    """Validate a state for the sampler ``name`` with fingerprint ``fp``; return ``(seed, epoch, position)``.

    Raises:
        TypeError: when ``state`` is not a mapping or a field has the wrong type.
        ValueError: when a key is missing, the state belongs to another sampler, or the configuration differs.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"`state` must be a dict from `state_dict()`; got {type(state).__name__}")
    missing = [key for key in _STATE_KEYS if key not in state]
    if missing:
        raise ValueError(f"`state` is missing keys {missing}; a sampler state has keys {list(_STATE_KEYS)}")
    if state["sampler"] != name:
        raise ValueError(f"`state` was saved by a {state['sampler']!r}, cannot load it into a {name!r}")
    if state["fingerprint"] != fp:
        raise ValueError(
            f"`state` was saved by a {name} configured differently (fingerprint {state['fingerprint']!r}, "
            f"this one is {fp!r}): lengths/labels, batch size or token budget, shuffle, drop_last, "
            "num_replicas or uneven must match the run that saved it, and so must the order's algorithm (a "
            "state from an hfbridge version that drew another order is refused too)"
        )
    for key in ("seed", "epoch", "position"):
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise TypeError(f"`state[{key!r}]` must be a non-negative integer; got {value!r}")
    return int(state["seed"]), int(state["epoch"]), int(state["position"])


def to_index_array(name: str, values: Any) -> np.ndarray:
    """Convert lengths/labels (list, NumPy array, tensor, Arrow column) to a 1-D int64 array, or raise.

    Raises:
        TypeError: when ``values`` is not integer data.
        ValueError: when ``values`` is not 1-D, is empty, or holds negative numbers.
    """
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):
        values = values.to_numpy()
    elif hasattr(values, "numpy") and hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except Exception as exc:  # ragged or odd input
        raise TypeError(f"`{name}` must be a 1-D sequence of integers; got {type(values).__name__}") from exc
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one value per row); got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"`{name}` must not be empty; got 0 values")
    whole_floats = array.dtype.kind == "f" and np.all(np.mod(array, 1) == 0)
    if array.dtype.kind not in "iu" and not whole_floats:
        raise TypeError(f"`{name}` must hold integers; got dtype {array.dtype}")
    array = array.astype(np.int64, copy=False)
    if array.min() < 0:
        raise ValueError(
            f"`{name}` must be non-negative; got {int(array.min())} at index {int(array.argmin())}"
        )
    return array


class Cursor:
    """Where a sampler stands: its epoch, what the running iterator has yielded, and a position loaded by
    ``load_state_dict`` (or ``seek``) for the next iterator."""

    def __init__(self) -> None:
        self.epoch = 0
        self.yielded = 0  # items (batches or indices) of this epoch handed out by the running iterator
        self.resume_at: int | None = None  # set by `resume`, consumed by the next `start`

    def set_epoch(self, epoch: int) -> None:
        """Move to ``epoch``; a position loaded for the same epoch is kept."""
        check_non_negative_int("epoch", epoch)
        if epoch != self.epoch:
            self.resume_at = None
            self.yielded = 0
        self.epoch = epoch

    @property
    def next_position(self) -> int:
        """The position the next iterator starts from."""
        return self.resume_at if self.resume_at is not None else 0

    def start(self) -> int:
        """Begin an iterator: consume a loaded position and return where to start."""
        start = self.next_position
        self.resume_at = None
        self.yielded = start
        return start

    def position(self, override: int | None = None) -> int:
        """The position to save: ``override``, else a loaded one not yet consumed, else what was yielded."""
        if override is not None:
            return override
        return self.resume_at if self.resume_at is not None else self.yielded

    def resume(self, epoch: int, position: int, limit: int) -> None:
        """Make the next iterator start at ``position`` of ``epoch``; ``ValueError`` past ``limit``."""
        if position > limit:
            raise ValueError(f"`state['position']` must be <= {limit} per epoch; got {position}")
        self.epoch, self.resume_at, self.yielded = epoch, position, position


class Schedule(Generic[T]):
    """What every map sampler delegates to: seed, rank share, cursor, fingerprint and the epoch's draw.

    ``draw(seed, epoch)`` returns this rank's epoch (whatever the sampler indexes) and is cached per epoch;
    ``num_items`` counts items (batches or indices) per epoch over all ranks; ``name`` goes into the state.
    """

    def __init__(
        self,
        name: str,
        draw: Callable[[int, int], T],
        num_items: int,
        seed: int,
        num_replicas: int | None,
        rank: int | None,
        uneven: Uneven,
    ) -> None:
        self.name, self._draw, self.num_items = name, draw, num_items
        self.seed = check_non_negative_int("seed", seed)
        self.uneven = check_choice("uneven", uneven, uneven_options)
        self.num_replicas, self.rank = resolve_replicas(num_replicas, rank)
        self.cursor = Cursor()
        self.fingerprint = ""
        self._cache: tuple[int, int, T] | None = None

    def set_fingerprint(self, config: Mapping[str, Any], *arrays: np.ndarray) -> None:
        config = {"class": self.name, "order": ORDER_VERSION, "num_replicas": self.num_replicas, **config}
        self.fingerprint = fingerprint({**config, "uneven": self.uneven}, *arrays)

    def __len__(self) -> int:
        return shard_len(self.num_items, self.num_replicas, self.rank, self.uneven)

    def positions(self) -> np.ndarray:
        """This rank's positions in the all-ranks epoch (see :func:`shard_positions`)."""
        return shard_positions(self.num_items, self.num_replicas, self.rank, self.uneven)

    def drawn(self) -> T:
        """This epoch's draw, computed once per ``(seed, epoch)``."""
        cache = self._cache
        if cache is None or cache[:2] != (self.seed, self.cursor.epoch):
            cache = self._cache = (self.seed, self.cursor.epoch, self._draw(self.seed, self.cursor.epoch))
        return cache[2]

    def steps(self) -> Iterator[int]:
        """This rank's positions from the cursor on, counting each as yielded as it is handed out."""
        for position in range(self.cursor.start(), len(self)):
            self.cursor.yielded = position + 1
            yield position


class Batches(NamedTuple):
    """One epoch's batches as this rank sees them: batch ``b`` is ``rows[bounds[b]:bounds[b + 1]]``, and the
    rank yields the batches ``ids`` in order."""

    rows: np.ndarray
    bounds: np.ndarray
    ids: np.ndarray


def shuffled_batches(
    rows: np.ndarray,
    bounds: np.ndarray,
    schedule: Schedule[Any],
    epoch: int,
    *,
    shuffle: bool,
    longest: np.ndarray | None = None,
) -> Batches:
    """Cut rows into batches at ``bounds``, shuffle them with ``(seed, epoch)``, take this rank's share.

    Args:
        longest: the row lengths, to put the rank's batch with the longest row first (``longest_first``).
    """
    num_batches = len(bounds) - 1
    order = epoch_rng(schedule.seed, epoch, 1).permutation(num_batches) if shuffle else np.arange(num_batches)
    ids = order[schedule.positions()]
    if longest is not None and len(ids) > 1:
        top = int(np.argmax(np.maximum.reduceat(longest[rows], bounds[:-1])[ids]))
        ids[[0, top]] = ids[[top, 0]]
    return Batches(rows, bounds, ids)


class Scheduled(Protocol):
    """A sampler that keeps its position, rank share and state in a :class:`Schedule`.

    The ``scheduled_*`` names below are such a sampler's protocol methods and attributes, written once: a
    sampler class names them in its body (``set_epoch = scheduled_set_epoch``), so every sampler over a
    schedule behaves and documents alike without inheriting from a base class.
    """

    _schedule: Schedule[Any]
    seed: int


class FromCursor:
    """A read-only sampler attribute read from its schedule's cursor (typed, unlike ``property(f)``)."""

    def __init__(self, name: str, doc: str) -> None:
        self.name, self.__doc__ = name, doc

    @overload
    def __get__(self, sampler: None, owner: type) -> FromCursor: ...
    @overload
    def __get__(self, sampler: Scheduled, owner: type) -> int: ...
    def __get__(self, sampler: Scheduled | None, owner: type) -> FromCursor | int:
        return self if sampler is None else int(getattr(sampler._schedule.cursor, self.name))

    def __set__(self, sampler: Scheduled, value: Any) -> None:  # read-only, as a property without a setter
        raise AttributeError(f"{type(sampler).__name__}.{self.name} is read-only; use set_epoch() or seek()")


scheduled_epoch = FromCursor("epoch", "The epoch whose order is used (see ``set_epoch``).")
scheduled_next_position = FromCursor(
    "next_position", "Index (within this rank's epoch) of the item the next ``__iter__`` starts from."
)


def scheduled_len(self: Scheduled) -> int:
    """Items (batches, or indices) this rank yields per epoch: the same every epoch."""
    return len(self._schedule)


def scheduled_set_epoch(self: Scheduled, epoch: int) -> None:
    """Use the order of ``epoch``; a position loaded by ``load_state_dict`` for the same epoch is kept."""
    self._schedule.cursor.set_epoch(epoch)


def scheduled_seek(self: Scheduled, epoch: int, position: int) -> None:
    """Start the next ``__iter__`` at item ``position`` of ``epoch``, its first ``position`` skipped.

    Raises:
        ValueError: when ``epoch`` or ``position`` is negative or ``position`` is past the epoch's end.
    """
    check_non_negative_int("epoch", epoch)
    check_non_negative_int("position", position)
    limit = len(self._schedule)
    if position > limit:
        raise ValueError(f"`position` must be <= {limit} (this rank's items per epoch); got {position}")
    self._schedule.cursor.resume(epoch, position, limit)


def scheduled_state_dict(self: Scheduled, position: int | None = None) -> dict[str, Any]:
    """Seed, epoch, position (items of this epoch already yielded) and a configuration fingerprint.

    Args:
        position: override the position (a loader passes the batches it handed to the user, fewer than the
            sampler yielded when workers prefetch).
    """
    schedule = self._schedule
    cursor = schedule.cursor
    return make_state(
        schedule.name, schedule.fingerprint, schedule.seed, cursor.epoch, cursor.position(position)
    )


def scheduled_load_state_dict(self: Scheduled, state: dict[str, Any]) -> None:
    """Resume: the next ``__iter__`` yields exactly the items the saved run had not yet yielded.

    Raises:
        TypeError: when ``state`` is not a dict from ``state_dict()`` or a field has the wrong type.
        ValueError: when the state belongs to another sampler class or configuration, or the position is
            past the end of the epoch.
    """
    schedule = self._schedule
    seed, epoch, position = check_state(state, schedule.name, schedule.fingerprint)
    schedule.cursor.resume(epoch, position, len(schedule))
    self.seed = schedule.seed = seed


def iter_scheduled_batches(self: Scheduled) -> Iterator[list[int]]:
    """Yield this rank's batches of the epoch (a :class:`Batches` draw) from the cursor on."""
    schedule = self._schedule
    rows, bounds, ids = schedule.drawn()
    for position in schedule.steps():
        batch = int(ids[position])
        yield rows[int(bounds[batch]) : int(bounds[batch + 1])].tolist()
