"""The files of one checkpoint folder: writing them into a temporary folder, reading them back safely.

Layout (HF Trainer names where HF has one, so ``Trainer.train(resume_from_checkpoint=path)`` can read it too)::

    model.safetensors        weights, tied tensors stored once
    optimizer.pt             optimizer.state_dict()            (torch.save, weights_only-loadable)
    scheduler.pt / scaler.pt
    rng_state.pth            python/numpy/torch RNG (rng_state_{rank}.pth per rank in distributed runs)
    hfbridge_state.pt        step, epoch, metrics, loader/sampler states, callback states, extra_state
    trainer_state.json       only from the HF Trainer bridge
    checkpoint.json          marker: the record of this checkpoint, written last
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfbridge._distributed import get_rank
from hfbridge.callbacks._state import (
    load_model_weights,
    read_model_weights,
    restore_rng_state,
    safe_torch_load,
    save_model_weights,
    unwrap_model,
)

if TYPE_CHECKING:
    import torch

__all__ = ["Loaded", "MissingPartError", "Payload", "apply_payload", "read_payload", "write_payload"]

WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
SCALER = "scaler.pt"
STATE = "hfbridge_state.pt"
TRAINER_STATE = "trainer_state.json"


def rng_file(rank: int, world_size: int) -> str:
    return "rng_state.pth" if world_size == 1 else f"rng_state_{rank}.pth"


@dataclass
class Payload:
    """Everything one checkpoint holds, gathered on the writing rank."""

    model: torch.nn.Module
    state: dict[str, Any]  # -> hfbridge_state.pt
    rng_states: list[dict[str, Any]]  # one per rank
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None


def _torch_save(obj: Any, path: Path) -> None:
    import torch

    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def write_payload(folder: Path, payload: Payload) -> dict[str, int]:
    """Write ``payload`` into ``folder`` (fsyncing each file); return ``{file name: size in bytes}``."""
    save_model_weights(payload.model, folder / WEIGHTS)
    for name, obj in (
        (OPTIMIZER, payload.optimizer),
        (SCHEDULER, payload.scheduler),
        (SCALER, payload.scaler),
    ):
        if obj is not None:
            _torch_save(obj, folder / name)
    world = len(payload.rng_states)
    for rank, rng in enumerate(payload.rng_states):
        _torch_save(rng, folder / rng_file(rank, world))
    _torch_save(payload.state, folder / STATE)
    if payload.trainer_state is not None:
        with open(folder / TRAINER_STATE, "w", encoding="utf-8") as fh:
            json.dump(payload.trainer_state, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}


@dataclass
class Loaded:
    """A checkpoint read fully into memory (so a bad file is found before anything is restored)."""

    state: dict[str, Any]
    weights: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class MissingPartError(ValueError):
    """``resume`` was asked to restore a part (e.g. the optimizer) that the checkpoint was saved without."""


def _need(folder: Path, name: str, what: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise MissingPartError(
            f"checkpoint {str(folder)!r} has no {what} state ({name}); it was saved without `{what}=`, so pass "
            f"`{what}=None` to resume, or resume from a checkpoint that has it"
        )
    return path


def read_payload(
    folder: Path,
    *,
    rank: int,
    world_size: int,
    model: bool,
    optimizer: bool,
    scheduler: bool,
    scaler: bool,
) -> Loaded:
    """Read the parts of ``folder`` that will be restored; every file goes through a safe loader.

    Raises:
        MissingPartError: when a requested part was never saved.
        pickle.UnpicklingError: when a file carries pickled code (it is refused, never run).
        OSError, RuntimeError: on unreadable or truncated files.
    """
    out = Loaded(state=safe_torch_load(folder / STATE))
    if not isinstance(out.state, dict) or "step" not in out.state:
        raise ValueError(f"{STATE} in {str(folder)!r} is not an hfbridge checkpoint state")
    if model:
        out.weights = read_model_weights(folder / WEIGHTS)
    if optimizer:
        out.optimizer = safe_torch_load(_need(folder, OPTIMIZER, "optimizer"))
    if scheduler:
        out.scheduler = safe_torch_load(_need(folder, SCHEDULER, "scheduler"))
    if scaler:
        out.scaler = safe_torch_load(_need(folder, SCALER, "scaler"))
    saved_world = int(out.state.get("world_size", 1))
    rng_path = folder / rng_file(rank if saved_world > 1 else 0, saved_world)
    if saved_world == world_size and rng_path.is_file():
        out.rng = safe_torch_load(rng_path)
    return out


def apply_payload(
    loaded: Loaded,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    scaler: Any,
    loader: Any,
    callbacks: Mapping[str, Any] | None,
    restore_rng: bool,
) -> None:
    """Restore each given object from ``loaded`` (read in full beforehand by :func:`read_payload`)."""
    if model is not None and loaded.weights is not None:
        load_model_weights(unwrap_model(model), loaded.weights)
    for obj, sd in (
        (optimizer, loaded.optimizer),
        (scheduler, loaded.scheduler),
        (scaler, loaded.scaler),
    ):
        if obj is not None and sd is not None:
            obj.load_state_dict(sd)
    state = loaded.state
    if loader is not None and state.get("loader") is not None:
        ls = state["loader"]
        loader.load_state_dict(ls[get_rank()] if int(state.get("world_size", 1)) > 1 else ls)
    saved_cbs = state.get("callbacks") or {}
    for key, cb in (callbacks or {}).items():
        if key in saved_cbs:
            cb.load_state_dict(saved_cbs[key])
        else:
            warnings.warn(f"checkpoint has no state for callback {key!r}", RuntimeWarning, stacklevel=3)
    if restore_rng and loaded.rng is not None:
        restore_rng_state(loaded.rng)
