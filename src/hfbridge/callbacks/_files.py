"""The files of one checkpoint folder: what goes in, written into a temporary folder, and read back safely.

Layout (HF Trainer's names where it has one, so ``Trainer.train(resume_from_checkpoint=path)`` reads it)::

    model.safetensors        weights, tied tensors stored once
    trainable.safetensors    instead, with frozen="reference": what trains, plus buffers, and in its header
                             the fingerprint of the frozen rest (see below)
    optimizer.pt             optimizer.state_dict()            (torch.save, weights_only-loadable)
    scheduler.pt / scaler.pt
    rng_state.pth            python/numpy/torch RNG (rng_state_{rank}.pth per rank in distributed runs)
    hfbridge_state.pt        step, epoch, metrics, loader/sampler states, callback states, extra_state
    trainer_state.json       only from the HF Trainer bridge
    checkpoint.json          marker: the record of this checkpoint, written last

An FSDP-sharded model has ``model_shards/`` (a ``torch.distributed.checkpoint`` folder of model and
optimizer shards, written by every rank) and ``config.json`` instead of the weights and ``optimizer.pt``.

Weights go to safetensors; every other state is a tree of tensors and plain values saved with ``torch.save``
and loaded with ``torch.load(weights_only=True)``, so loading a checkpoint never runs pickled code.

Trainable-only checkpoints (``frozen="reference"``) hold the parameters with ``requires_grad=True`` and every
persistent buffer; the fingerprint of each frozen tensor (name, shape, dtype, xxh3-64 of its bytes) and the
base's origin go in the header metadata of ``trainable.safetensors`` (older checkpoints: ``frozen.json``).
Resume checks the user's base against the fingerprint, then loads the saved part on top.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from hfbridge._distributed import get_rank, unwrap_model
from hfbridge.callbacks._atomic import CHECKSUM, checksum, write_hashed, write_tensors, write_weights
from hfbridge.callbacks._sharded import SHARDS_DIR, check_shards, is_sharded, load_sharded, task_config

if TYPE_CHECKING:
    import torch

__all__ = [
    "Loaded",
    "MissingPartError",
    "Payload",
    "apply_payload",
    "capture_rng_state",
    "check_plain",
    "checkpoint_model",
    "payload_nbytes",
    "read_payload",
    "write_payload",
]

WEIGHTS = "model.safetensors"
STATE = "hfbridge_state.pt"
_PARTS = {"optimizer": "optimizer.pt", "scheduler": "scheduler.pt", "scaler": "scaler.pt"}
_SCALARS = (type(None), bool, int, float, str, bytes)


def _rng_file(rank: int, world_size: int) -> str:
    return "rng_state.pth" if world_size == 1 else f"rng_state_{rank}.pth"


def checkpoint_model(model: Any, what: str = "save") -> torch.nn.Module:
    """The bare module to save or load into: ``TypeError`` for a non-module or an FSDP-sharded one (gather
    its full state first), ``ValueError`` for tensors on the meta device (nothing to save or load into)."""
    module = unwrap_model(model)
    if is_sharded(module):
        raise TypeError(
            "`model` is FSDP-sharded: gather a full state dict first (e.g. accelerate's save_state); "
            "Checkpointer saves unsharded models"
        )
    tensors = itertools.chain(module.named_parameters(), module.named_buffers())
    meta = next((n for n, t in tensors if t.is_meta), None)
    if meta is not None:
        fix = (
            "load real weights first"
            if what == "save"
            else "materialize it first, e.g. `model.to_empty(device=...)`"
        )
        raise ValueError(
            f"`model` has tensors on the meta device (e.g. {meta!r}), so there is nothing to {what}; {fix}"
        )
    return module


def check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` unless ``obj`` (named ``where``) is tensors and plain containers ``weights_only``
    loading accepts."""
    import torch

    if isinstance(obj, (*_SCALARS, torch.Tensor, torch.dtype, torch.device, torch.Size)):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError(f"`{where}` has a key of type {type(key).__name__}; keys must be str or int")
            check_plain(value, f"{where}[{key!r}]")
        return
    raise TypeError(
        f"`{where}` is a {type(obj).__module__}.{type(obj).__qualname__}, which "
        "`torch.load(weights_only=True)` cannot load; store tensors, numbers, strings, None and "
        "lists/tuples/dicts of them (convert NumPy arrays with `.tolist()` or `torch.from_numpy`)"
    )


def state_nbytes(obj: Any) -> int:
    """Approximate serialized size of a state tree: tensor bytes plus a little per plain value."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size() + 64
    if isinstance(obj, dict):
        return sum(state_nbytes(k) + state_nbytes(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return 16 + sum(state_nbytes(v) for v in obj)
    return len(obj) + 16 if isinstance(obj, (str, bytes)) else 16


def safe_torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)`` on CPU: ``pickle.UnpicklingError`` on any pickled code or class."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states in HF Trainer's ``rng_state.pth`` layout (``weights_only``-safe)."""
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002 - the global RNG
    state: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of ints, gauss or None): plain
        "numpy": (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # pragma: no cover - no GPU in CI
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    legacy = (kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))
    np.random.set_state(legacy)  # noqa: NPY002 - restoring the global RNG
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        torch.cuda.set_rng_state_all(state["cuda"])


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], frozen: set[str]) -> None:
    """Copy ``weights`` into ``model``; ``ValueError`` on unexpected keys, or missing ones that are neither
    tied to a loaded tensor (saved once) nor ``frozen`` (checked by a fingerprint)."""
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing:
        own = model.state_dict()
        loaded_ptrs = {own[k].data_ptr() for k in weights if k in own}
        untied = [k for k in missing if own[k].data_ptr() not in loaded_ptrs and k not in frozen]
        if untied:
            raise ValueError(f"checkpoint weights lack {len(untied)} key(s) of the model, e.g. {untied[:5]}")
    if unexpected:
        raise ValueError(
            f"checkpoint weights have {len(unexpected)} key(s) the model lacks: {unexpected[:5]}"
        )


@dataclass
class Payload:
    """Everything one checkpoint holds, gathered on the writing rank."""

    model: torch.nn.Module  # a sharded model is only read for its config.json
    state: dict[str, Any]  # -> hfbridge_state.pt
    rng_states: list[dict[str, Any]]  # one per rank
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    trainer_state: dict[str, Any] | None = None
    shards: Path | None = None  # a sharded model's staged DCP folder, moved in whole
    reference_frozen: bool = False  # save only what trains, fingerprint the rest
    extra_files: Callable[[Path], None] | None = None  # writes more files into the folder (checksummed too)


def payload_nbytes(payload: Payload) -> int:
    """Approximate size of ``payload`` on disk (a trainable-only one counts only what it writes)."""
    tensors = payload.model.state_dict(keep_vars=True)
    if payload.reference_frozen:
        frozen = _frozen_names(payload.model)
        tensors = {k: t for k, t in tensors.items() if k not in frozen}
    weights = sum(t.numel() * t.element_size() for t in tensors.values())
    return weights + sum(state_nbytes(x) for x in (payload.optimizer, payload.scheduler, payload.state))


def _torch_save(obj: Any, path: Path) -> dict[str, Any]:
    import torch

    # torch.save only calls write() and flush() on a file object (tests/callbacks/test_checksums.py)
    return write_hashed(path, lambda writer: torch.save(obj, cast("IO[bytes]", writer)))


def write_payload(folder: Path, payload: Payload) -> dict[str, dict[str, Any]]:
    """Write ``payload`` into ``folder``; return ``{file name: {"size": bytes, CHECKSUM: hex digest}}``.

    Files are checksummed while written, except those other writers made (the shards, ``config.json``,
    ``extra_files``), which are read back. Nothing is fsynced here: ``publish_dir`` does it for all at once.
    """
    records: dict[str, dict[str, Any]] = {}
    if payload.shards is not None:
        os.replace(payload.shards, folder / SHARDS_DIR)  # same file system: a rename; dcp fsynced the files
    elif payload.reference_frozen:
        tensors, frozen = split_trainable(payload.model)
        described = json.dumps(fingerprint(payload.model, frozen), sort_keys=True)
        meta = {"format": "pt", FINGERPRINT_KEY: described}
        records[TRAINABLE] = write_tensors(folder / TRAINABLE, tensors, meta)
    else:
        records[WEIGHTS] = write_weights(folder / WEIGHTS, payload.model, {"format": "pt"})
    for part, name in _PARTS.items():
        if getattr(payload, part) is not None:
            records[name] = _torch_save(getattr(payload, part), folder / name)
    for rank, rng in enumerate(payload.rng_states):
        name = _rng_file(rank, len(payload.rng_states))
        records[name] = _torch_save(rng, folder / name)
    records[STATE] = _torch_save(payload.state, folder / STATE)
    if payload.trainer_state is not None:
        text = (json.dumps(payload.trainer_state, indent=2, sort_keys=True) + "\n").encode("utf-8")
        records["trainer_state.json"] = write_hashed(folder / "trainer_state.json", lambda w: w.write(text))
    config = task_config(payload.model) if payload.shards is not None else None
    if config is not None:  # for export_full_weights
        config.to_json_file(str(folder / "config.json"))
    if payload.extra_files is not None:
        payload.extra_files(folder)
    for p in sorted(p for p in (*folder.iterdir(), *(folder / SHARDS_DIR).glob("*")) if p.is_file()):
        name = p.relative_to(folder).as_posix()
        if name not in records:  # written by another writer: read it back to checksum it
            records[name] = {"size": p.stat().st_size, CHECKSUM: checksum(p)}
    return dict(sorted(records.items()))


@dataclass
class Loaded:
    """A checkpoint read fully into memory (so a bad file is found before anything is restored)."""

    state: dict[str, Any]
    weights: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    rng: dict[str, Any] | None = None
    shards: Path | None = None  # a sharded checkpoint's DCP folder, loaded by every rank in apply_payload
    fingerprint: dict[str, Any] | None = None  # a trainable-only checkpoint's frozen part


class MissingPartError(ValueError):
    """``resume`` was asked to restore a part (e.g. the optimizer) that the checkpoint was saved without."""


def read_payload(folder: Path, *, rank: int, world_size: int, wanted: Mapping[str, bool]) -> Loaded:
    """Read the parts of ``folder`` in ``wanted`` (``model``, ``optimizer``, ...) through safe loaders only.
    Raises ``MissingPartError`` for a part never saved, ``pickle.UnpicklingError`` for pickled code (refused,
    never run), ``OSError`` or ``RuntimeError`` for unreadable or truncated files."""
    out = Loaded(state=safe_torch_load(folder / STATE))
    if not isinstance(out.state, dict) or "step" not in out.state:
        raise ValueError(f"{STATE} in {str(folder)!r} is not an hfbridge checkpoint state")
    if (folder / SHARDS_DIR).is_dir():  # model and optimizer are in the shards, read by every rank later
        reason = check_shards(folder / SHARDS_DIR)
        if reason is not None:
            raise ValueError(reason)
        out.shards = folder / SHARDS_DIR
        wanted = {**wanted, "model": False, "optimizer": False}
    if wanted.get("model"):
        import safetensors.torch

        reference = (folder / TRAINABLE).is_file()
        out.weights = safetensors.torch.load_file(
            str(folder / (TRAINABLE if reference else WEIGHTS)), device="cpu"
        )
        if reference:
            out.fingerprint = _read_fingerprint(folder)
    for part, name in _PARTS.items():
        if wanted.get(part):
            if not (folder / name).is_file():
                raise MissingPartError(
                    f"checkpoint {str(folder)!r} has no {part} state ({name}); it was saved without "
                    f"`{part}=`, so pass `{part}=None` to resume, or resume from a checkpoint that has it"
                )
            setattr(out, part, safe_torch_load(folder / name))
    saved_world = int(out.state.get("world_size", 1))
    rng_path = folder / _rng_file(rank if saved_world > 1 else 0, saved_world)
    if saved_world == world_size and rng_path.is_file():
        out.rng = safe_torch_load(rng_path)
    return out


def _read_fingerprint(folder: Path) -> dict[str, Any]:
    """A trainable-only checkpoint's frozen fingerprint: in its weights' header, or (older) frozen.json."""
    if (folder / FINGERPRINT).is_file():
        return dict(json.loads((folder / FINGERPRINT).read_text(encoding="utf-8")))
    from safetensors import safe_open

    with safe_open(str(folder / TRAINABLE), "pt") as fh:
        meta = fh.metadata() or {}
    if FINGERPRINT_KEY not in meta:
        raise ValueError(f"{TRAINABLE} in {str(folder)!r} has no frozen fingerprint ({FINGERPRINT_KEY!r})")
    return dict(json.loads(meta[FINGERPRINT_KEY]))


def apply_payload(
    loaded: Loaded,
    objects: Mapping[str, Any],
    callbacks: Mapping[str, Any],
    restore_rng: bool,
    *,
    sharded_timeout: float,
) -> None:
    """Restore each object in ``objects`` (``model``, ``optimizer``, ..., ``loader``) from ``loaded``; a
    sharded load waits ``sharded_timeout`` seconds for the other ranks."""
    model = objects.get("model")
    if loaded.shards is not None and model is not None:
        # collective, resharding
        load_sharded(loaded.shards, model, objects.get("optimizer"), timeout=sharded_timeout)
    if model is not None and loaded.weights is not None:
        if is_sharded(model):
            raise TypeError(
                "the checkpoint holds full (unsharded) weights but `model` is FSDP-sharded: resume into the "
                "model before `fully_shard` (with `optimizer=None`: unsharded optimizer state does not fit "
                "sharded parameters), or save it sharded in the first place"
            )
        module = checkpoint_model(model, "load into")
        if loaded.fingerprint is not None:
            check_fingerprint(module, loaded.fingerprint, set(loaded.weights))
        load_model_weights(module, loaded.weights, frozen=set((loaded.fingerprint or {}).get("tensors", ())))
    for part in _PARTS:  # a sharded checkpoint's optimizer came with its shards (read_payload left it None)
        sd = getattr(loaded, part)
        if objects.get(part) is not None and sd is not None:
            objects[part].load_state_dict(sd)
    state = loaded.state
    if objects.get("loader") is not None and state.get("loader") is not None:
        ls = state["loader"]
        objects["loader"].load_state_dict(ls[get_rank()] if int(state.get("world_size", 1)) > 1 else ls)
    saved_cbs = state.get("callbacks") or {}
    for key, cb in callbacks.items():
        if key in saved_cbs:
            cb.load_state_dict(saved_cbs[key])
        else:
            warnings.warn(f"checkpoint has no state for callback {key!r}", RuntimeWarning, stacklevel=3)
    if restore_rng and loaded.rng is not None:
        _restore_rng_state(loaded.rng)


# --------------------------------------------------------------------------------- trainable-only checkpoints

TRAINABLE = "trainable.safetensors"
FINGERPRINT_KEY = "hfbridge_frozen"  # the fingerprint's key in TRAINABLE's header metadata (a JSON string)
FINGERPRINT = "frozen.json"  # where checkpoints written before 2026-12-06 keep it; read, no longer written


def _digest(tensor: torch.Tensor) -> str:
    import torch
    import xxhash

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return xxhash.xxh3_64(flat.view(torch.uint8).numpy().data).hexdigest()


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def _frozen_names(module: torch.nn.Module) -> set[str]:
    return {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def split_trainable(module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(tensors to save, frozen tensors)``: trainable parameters and buffers (each storage once), and the
    frozen parameters, which :func:`fingerprint` describes instead."""
    frozen_names = _frozen_names(module)
    saved: dict[str, torch.Tensor] = {}
    frozen: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()  # (data_ptr, numel) of stored tensors: a tied one is stored once
    for name, t in module.state_dict().items():
        if name in frozen_names:
            frozen[name] = t
        elif (t.data_ptr(), t.numel()) not in seen or t.numel() == 0:
            seen.add((t.data_ptr(), t.numel()))
            saved[name] = t.detach().contiguous()
    return saved, frozen


def fingerprint(module: torch.nn.Module, frozen: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Name, shape, dtype and xxh3-64 content hash of each frozen tensor, and where the base came from.

    Every frozen byte is hashed on every save, on purpose: a cache keyed on tensor version counters would miss
    writes that bypass them (``param.data.add_()``, NumPy views, peft's merge/unmerge).
    """
    origin = getattr(getattr(module, "config", None), "name_or_path", None)
    origin = origin if isinstance(origin, str) and origin else None
    tensors = {name: [list(t.shape), _dtype_name(t), _digest(t)] for name, t in frozen.items()}
    return {"format": "hfbridge-frozen", "checksum": "xxh3_64", "origin": origin, "tensors": tensors}


def check_fingerprint(module: torch.nn.Module, fingerprint: dict[str, Any], saved: set[str]) -> None:
    """``ValueError`` naming the first tensor of ``module`` that is missing or extra (another architecture),
    or frozen with another shape, dtype or content (another base, or a frozen parameter trained after all)."""
    origin = fingerprint.get("origin")
    base = f"the base the run started from ({origin!r})" if origin else "the base the run started from"
    own = module.state_dict()
    # a tied trainable tensor is saved once, under its first name: its other names share that storage
    stored = {(own[n].data_ptr(), own[n].numel()) for n in saved if n in own and own[n].numel()}
    known = {*fingerprint["tensors"], *saved}
    extra = [n for n, t in own.items() if n not in known and (t.data_ptr(), t.numel()) not in stored]
    missing = [n for n in fingerprint["tensors"] if n not in own]
    if missing or extra:
        what = f"lacks {missing[:3]}" if missing else f"has {extra[:3]}, which the checkpoint does not know"
        raise ValueError(
            f"`model` is not the architecture this trainable-only checkpoint was saved from: it {what}; load "
            f"{base} with the same freeze or adapter setup"
        )
    for name, t in own.items():  # the model's order, so the first differing tensor is named
        if name not in fingerprint["tensors"]:
            continue
        shape, dtype, digest = fingerprint["tensors"][name]
        if list(t.shape) != shape or _dtype_name(t) != dtype:
            got = f"{list(t.shape)} {_dtype_name(t)}"
            raise ValueError(f"frozen tensor {name!r} is {got} in `model`, {shape} {dtype} in the checkpoint")
        if _digest(t) != digest:
            raise ValueError(
                f"frozen tensor {name!r} of `model` differs from the checkpoint's (xxh3_64 {_digest(t)} != "
                f"{digest}): resume needs {base}, unchanged. If a frozen parameter was trained on purpose, "
                "checkpoint with frozen='save'"
            )
