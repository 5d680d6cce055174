"""Sharded (FSDP) checkpoints through ``torch.distributed.checkpoint`` (DCP): no full gather, no own format.

Every rank writes its shards of the model and optimizer state (``get_state_dict``) with ``dcp.save``
(or, opt-in, ``dcp.async_save``) into a hidden staging folder; the ranks then agree that every shard is on
disk before one rank publishes the checkpoint. Loading goes through ``dcp.load`` + ``set_state_dict``, so a
checkpoint saved on N ranks loads on any number of ranks, and into an unsharded model (DCP reshards on
load). Collectives of a save run on a dedicated gloo group with its own timeout: a rank that dies mid-save
makes the others raise, never hang.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfbridge._distributed import Failure, attempt, broadcast_object, get_rank, raise_first_failure
from hfbridge.callbacks._atomic import hidden_path

if TYPE_CHECKING:
    import torch
    from torch.distributed import ProcessGroup

__all__ = [
    "SHARDS_DIR",
    "ShardedSaves",
    "check_shards",
    "export_full_weights",
    "is_sharded",
    "load_sharded",
    "task_config",
]

# the DCP folder inside a checkpoint: .metadata plus one __{rank}_0.distcp per rank
SHARDS_DIR = "model_shards"
STAGE_PREFIX = ".shards-hfbridge-"  # hidden staging folders of a sharded save in progress
_METADATA = ".metadata"


def is_sharded(model: Any) -> bool:
    """Whether ``model`` holds an FSDP2 (``fully_shard``) or FSDP1 module at any wrapper depth."""
    import torch

    if not isinstance(model, torch.nn.Module):
        return False
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # pragma: no cover - a torch build without torch.distributed
        return False
    return any(isinstance(m, (FSDPModule, FullyShardedDataParallel)) for m in model.modules())


# --------------------------------------------------------------------------------------- collectives


class _Group:
    """The gloo group a sharded save or load runs its collectives on, with its own timeout."""

    def __init__(self, timeout: float) -> None:
        import torch.distributed as dist

        on = dist.is_available() and dist.is_initialized()
        self.timeout = timeout
        self.world, self.rank = (dist.get_world_size(), dist.get_rank()) if on else (1, 0)
        self.pg: ProcessGroup | None = (
            dist.new_group(backend="gloo", timeout=timedelta(seconds=timeout)) if on else None
        )

    def _run(self, collective: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            collective(*args, group=self.pg, **kwargs)
        except Exception as exc:
            raise _lost_rank(self.timeout, exc) from exc

    def all_gather(self, obj: Any) -> list[Any]:
        if self.pg is None:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world
        self._run(dist.all_gather_object, out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.pg is None:
            return obj
        import torch.distributed as dist

        box = [obj]
        self._run(dist.broadcast_object_list, box, src=0)
        return box[0]


_GROUPS: dict[float, _Group] = {}


def _group(timeout: float) -> _Group:
    """A save group per timeout, made on first use (``new_group`` is collective)."""
    import torch.distributed as dist

    current = dist.is_available() and dist.is_initialized()
    group = _GROUPS.get(timeout)
    if group is None or (group.pg is not None) != current or (current and not _alive(group.pg)):
        if not _GROUPS:
            # drop the cached groups while the interpreter is whole: a gloo group first freed during
            # interpreter shutdown can abort the process ("terminate called without an active exception")
            atexit.register(_GROUPS.clear)
        group = _GROUPS[timeout] = _Group(timeout)
    return group


def _alive(pg: Any) -> bool:
    """Whether ``pg`` belongs to the current default group (a re-initialised one makes old groups stale)."""
    import torch.distributed as dist

    try:
        return dist.get_world_size(group=pg) > 0
    except (RuntimeError, ValueError):
        return False


def _lost_rank(timeout: float, exc: BaseException) -> RuntimeError:
    return RuntimeError(
        f"sharded checkpoint: not every rank answered within {timeout:g} s (did a rank die or hang "
        "mid-save?); the checkpoint was not published and the previous one is intact. "
        f"Cause: {type(exc).__name__}: {exc}"
    )


class _RankError:
    """An exception on one rank, sent to the others so that every rank raises the same error."""

    def __init__(self, exc: BaseException) -> None:
        self.kind, self.message = type(exc).__name__, _last_line(exc)


def _last_line(exc: BaseException) -> str:
    """The message of ``exc``; for DCP's ``CheckpointException`` (a traceback per rank) its last line."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _agree(group: _Group, error: BaseException | None) -> None:
    """Every rank raises when any rank failed (``error``: this rank's failure or ``None``): this rank's own
    ``ValueError``/``TypeError`` (bad input) as is, else a ``RuntimeError`` naming the first failed rank."""
    results = group.all_gather(None if error is None else _RankError(error))
    for rank, item in enumerate(results):
        if isinstance(item, _RankError):
            if isinstance(error, (ValueError, TypeError)):
                raise error
            raise RuntimeError(
                f"sharded checkpoint failed on rank {rank}: {item.kind}: {item.message}"
            ) from error


# ---------------------------------------------------------------------------------------------- saving


def stage_folder(parent: Path, name: str, group: _Group) -> Path:
    """A fresh hidden staging folder under ``parent``, made by rank 0 and known to every rank (collective).
    Rank 0 first removes staging folders left by a crashed save (call it only when no save is in flight)."""
    made: Any = None
    if group.rank == 0:
        try:
            parent.mkdir(parents=True, exist_ok=True)
            for old in parent.glob(f"{STAGE_PREFIX}*"):
                shutil.rmtree(old, ignore_errors=True)
            folder = hidden_path(parent / name, STAGE_PREFIX)
            folder.mkdir()
            made = str(folder)
        except OSError as exc:
            made = _RankError(exc)
    made = group.broadcast(made)
    if isinstance(made, _RankError):
        raise OSError(f"sharded checkpoint: rank 0 could not create a staging folder: {made.message}")
    return Path(made)


def _state_dicts(model: torch.nn.Module, optimizer: Any) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, [] if optimizer is None else [optimizer])
    return {"model": model_sd} if optimizer is None else {"model": model_sd, "optim": optim_sd}


def save_sharded(
    folder: Path, model: torch.nn.Module, optimizer: Any, group: _Group, *, asynchronous: bool
) -> tuple[Any, BaseException | None]:
    """Every rank writes its shards of ``model`` (and ``optimizer``) into the staging ``folder`` with DCP
    (collective; ``asynchronous``: ``dcp.async_save`` copies the state to CPU memory and a background thread
    writes it). Returns ``(future or None, this rank's error or None)`` for :func:`wait_for_shards`."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        state = _state_dicts(model, optimizer)
        if asynchronous:
            return dcp.async_save(state, checkpoint_id=str(folder), process_group=group.pg), None
        dcp.save(state, checkpoint_id=str(folder), process_group=group.pg)
    except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
        lost = group.pg is not None and "gloo" in str(exc).lower()
        return None, _lost_rank(group.timeout, exc) if lost else exc
    return None, None


def wait_for_shards(folder: Path, group: _Group, future: Any, error: BaseException | None) -> None:
    """Block until every rank's shards are written and fsynced (collective); a failure on any rank, or in
    the background writer, raises ``RuntimeError`` on every rank (also when a rank does not answer in time).
    """
    if error is None and future is not None:
        try:
            future.result(timeout=group.timeout)
        except BaseException as exc:  # the background writer's error reaches the caller here
            error = exc if not isinstance(exc, TimeoutError) else _lost_rank(group.timeout, exc)
    _agree(group, error)  # all ranks agree every shard is durable (dcp fsyncs data and metadata)
    meta = folder / _METADATA
    if group.rank == 0 and not meta.is_file():  # not the others: rank 0 may be moving the folder
        raise RuntimeError(f"sharded checkpoint: {str(meta)!r} is missing after a save that reported success")


# --------------------------------------------------------------------------------------------- loading


@contextlib.contextmanager
def _single_process_ok() -> Iterator[None]:
    """Silence DCP's warning that it loads in one process: here that is what was asked for."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def check_shards(folder: Path) -> str | None:
    """Why the DCP folder ``folder`` cannot be loaded (bad metadata, a missing or short shard), or None."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        meta = FileSystemReader(str(folder)).read_metadata()
    except Exception as exc:
        return f"unreadable {_METADATA} in {str(folder)!r}: {type(exc).__name__}: {exc}"
    need: dict[str, int] = {}
    for item in (meta.storage_data or {}).values():
        end = int(item.offset) + int(item.length)
        need[item.relative_path] = max(need.get(item.relative_path, 0), end)
    for rel, size in sorted(need.items()):
        path = folder / rel
        if not path.is_file():
            return f"shard file {rel!r} is missing from {str(folder)!r}"
        if path.stat().st_size < size:
            return (
                f"shard file {rel!r} in {str(folder)!r} is truncated ({path.stat().st_size} < {size} bytes)"
            )
    return None


def load_sharded(
    folder: Path, model: torch.nn.Module, optimizer: Any = None, *, timeout: float = 600.0
) -> None:
    """Load a DCP checkpoint into ``model`` (and ``optimizer``) on every rank (collective), the model sharded
    on any number of ranks or not at all; ``ValueError`` when it lacks the optimizer state ``optimizer``
    needs, or the model's keys or shapes do not match."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import set_state_dict

    group = _group(timeout)
    error: BaseException | None = None
    state: dict[str, Any] = {}
    try:
        state = _state_dicts(model, optimizer)
        with _single_process_ok():
            dcp.load(state, checkpoint_id=str(folder), process_group=group.pg, no_dist=group.pg is None)
    except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
        error = exc
        if isinstance(exc, (RuntimeError, CheckpointException)):
            optim = optimizer and "optim" in str(exc)
            what = "cannot fill the optimizer (saved without it?)" if optim else "does not match the model"
            error = ValueError(f"sharded checkpoint {str(folder)!r} {what}: {_last_line(exc)}")
    _agree(group, error)  # nothing is set until every rank has read its part
    set_state_dict(
        model,
        [] if optimizer is None else [optimizer],
        model_state_dict=state["model"],
        optim_state_dict=state.get("optim", {}),
    )


# ---------------------------------------------------------------------------------------------- export


def export_full_weights(
    checkpoint: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, config: Any = None
) -> Path:
    """Write the full model weights of a sharded checkpoint as ``out_dir/model.safetensors``, offline.

    Runs in one plain process (no ``torch.distributed`` needed). With ``config`` (a ``PretrainedConfig``), or
    a ``config.json`` in the checkpoint folder, ``out_dir`` is a folder ``from_pretrained`` loads.

    Args:
        checkpoint: a sharded checkpoint folder (holding ``model_shards/``) or a DCP folder itself.
        out_dir: the folder to write (created if needed).
        config: an HF config to save next to the weights.

    Returns:
        The ``out_dir`` path.

    Raises:
        ValueError: when ``checkpoint`` is not a sharded checkpoint, or a shard is missing.
    """
    import torch
    import torch.distributed.checkpoint as dcp
    from safetensors.torch import save_file
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    root = Path(checkpoint)
    folder = root / SHARDS_DIR if (root / SHARDS_DIR).is_dir() else root
    if not (folder / _METADATA).is_file():
        raise ValueError(
            f"`checkpoint` must be a sharded checkpoint folder (with {SHARDS_DIR}/{_METADATA}); "
            f"got {str(root)!r}"
        )
    reason = check_shards(folder)
    if reason is not None:
        raise ValueError(f"`checkpoint` {str(root)!r} cannot be exported: {reason}")
    meta = FileSystemReader(str(folder)).read_metadata()
    state: dict[str, torch.Tensor] = {}
    for key, item in meta.state_dict_metadata.items():
        if key.startswith("model.") and isinstance(item, TensorStorageMetadata):
            state[key] = torch.empty(item.size, dtype=item.properties.dtype)
    with _single_process_ok():
        dcp.load(state, storage_reader=FileSystemReader(str(folder)), no_dist=True)
    weights = {key[len("model.") :]: t.contiguous() for key, t in state.items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    if config is not None:
        config.save_pretrained(str(out))
    elif (root / "config.json").is_file():
        shutil.copyfile(root / "config.json", out / "config.json")
    return out


def task_config(model: Any) -> Any:
    """``model.config`` as ``save_pretrained`` writes it, ``None`` without an HF config.

    ``architectures`` names the model's class (a base model's config names the base class), without the
    ``FSDP`` prefix that ``fully_shard`` gives it. A copy when changed; the model's config stays as it was.
    """
    import copy
    import sys

    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_json_file"):
        return None
    hf = sys.modules.get("transformers")  # an HF config came with transformers imported
    if hf is not None and isinstance(model, hf.PreTrainedModel):
        config = copy.deepcopy(config)
        config.architectures = [type(model).__name__.removeprefix("FSDP")]
    return config


# -------------------------------------------------------------------------------- Checkpointer's part


class ShardedSaves:
    """The sharded path of :class:`~hfbridge.Checkpointer`: every rank writes its shards, rank 0 publishes.
    ``build()`` (rank 0) takes the other states at save time, even for a background write; ``write(built,
    stage)`` (rank 0) writes them, moves the shards in and publishes the checkpoint like an unsharded one."""

    def __init__(self, dirpath: Path, *, asynchronous: bool, timeout: float) -> None:
        self.dirpath, self.asynchronous, self.timeout = dirpath, asynchronous, timeout
        self._publish: Callable[[], Path | None] | None = None

    def save(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: Any,
        build: Callable[[], Any],
        write: Callable[[Any, Path], str | None],
    ) -> Path | None:
        """Write the shards (collective) and publish them now, or, when asynchronous, at the next ``wait``."""
        self.wait()
        group = _group(self.timeout)
        stage = stage_folder(self.dirpath, f"step{step}", group)
        future, error = save_sharded(stage, model, optimizer, group, asynchronous=self.asynchronous)
        built: Any = attempt(build) if get_rank() == 0 else None

        def publish() -> Path | None:
            wait_for_shards(stage, group, future, error)  # every shard durable, or every rank raises
            outcome: Any = built
            if get_rank() == 0 and not isinstance(built, Failure):
                outcome = attempt(lambda: write(built, stage))
                if outcome is None or isinstance(outcome, Failure):
                    shutil.rmtree(stage, ignore_errors=True)  # retention dropped it, or the write failed
            outcome = broadcast_object(outcome)
            raise_first_failure([outcome])
            return None if outcome is None else Path(str(outcome))

        if self.asynchronous:
            self._publish = publish
            return None
        return publish()

    def wait(self) -> Path | None:
        """Finish a pending async save (collective): its folder, or ``None``; its failure is raised here."""
        publish, self._publish = self._publish, None
        return None if publish is None else publish()
