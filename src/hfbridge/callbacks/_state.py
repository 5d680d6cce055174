"""What goes into a checkpoint and how it comes back: safe formats only.

Weights go to safetensors; every other state is a tree of tensors and plain Python values saved with ``torch.save``
and loaded with ``torch.load(weights_only=True)``, so loading a checkpoint never runs arbitrary pickle code.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfbridge._modules import unwrap_model as _unwrap

if TYPE_CHECKING:
    import torch

__all__ = [
    "capture_rng_state",
    "check_plain",
    "load_model_weights",
    "read_model_weights",
    "restore_rng_state",
    "safe_torch_load",
    "save_model_weights",
    "state_nbytes",
    "unwrap_model",
]

_SCALARS = (type(None), bool, int, float, str, bytes)


def check_plain(obj: Any, name: str, _path: str = "") -> None:
    """Raise ``TypeError`` unless ``obj`` is tensors and plain containers that ``weights_only`` loading accepts.

    Raises:
        TypeError: naming the offending entry and its type.
    """
    import torch

    where = f"{name}{_path}"
    if isinstance(obj, (*_SCALARS, torch.Tensor, torch.dtype, torch.device, torch.Size)):
        return
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            check_plain(item, name, f"{_path}[{i}]")
        return
    if isinstance(obj, (dict, OrderedDict)):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError(f"`{where}` has a key of type {type(key).__name__}; keys must be str or int")
            check_plain(value, name, f"{_path}[{key!r}]")
        return
    raise TypeError(
        f"`{where}` is a {type(obj).__module__}.{type(obj).__qualname__}, which `torch.load(weights_only=True)` "
        "cannot load; store tensors, numbers, strings, None and lists/tuples/dicts of them "
        "(convert NumPy arrays with `.tolist()` or `torch.from_numpy`)"
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
    if isinstance(obj, (str, bytes)):
        return len(obj) + 16
    return 16


def safe_torch_load(path: Path) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")``: refuses any pickled code or class.

    Raises:
        pickle.UnpicklingError: when the file carries anything but tensors and plain containers.
    """
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


# ------------------------------------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and, when present, CUDA) RNG states, in ``weights_only``-loadable form.

    The layout matches HF Trainer's ``rng_state.pth`` (``python``, ``numpy``, ``cpu``, ``cuda`` keys), so
    ``Trainer.train(resume_from_checkpoint=...)`` restores it too; NumPy's key array is stored as a list of ints.
    """
    import numpy as np
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002 - saving the legacy global RNG
    state: dict[str, Any] = {
        "python": random.getstate(),  # (version, tuple of ints, gauss or None): plain
        "numpy": (str(kind), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # pragma: no cover - no GPU in CI
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    import numpy as np
    import torch

    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    legacy = (kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))
    np.random.set_state(legacy)  # noqa: NPY002 - restoring the legacy global RNG
    torch.random.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():  # pragma: no cover - no GPU in CI
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------------------- weights


def _refuse_fsdp(layer: Any) -> str | None:
    try:
        from torch.distributed.fsdp import FSDPModule, FullyShardedDataParallel
    except ImportError:  # a torch build without torch.distributed cannot hold an FSDP model
        return None

    if isinstance(layer, (FSDPModule, FullyShardedDataParallel)):
        return (
            "`model` is FSDP-sharded: gather a full state dict first (e.g. accelerate's save_state); "
            "Checkpointer saves unsharded models"
        )
    return None


def unwrap_model(model: Any) -> torch.nn.Module:
    """The bare module inside DDP / DataParallel / ``torch.compile`` wrappers, refusing FSDP at any layer.

    Raises:
        TypeError: for a non-module, or an FSDP-sharded model (its full state must be gathered first).
    """
    return _unwrap(model, refuse=_refuse_fsdp)


def save_model_weights(model: torch.nn.Module, path: Path) -> None:
    """Save ``model``'s state dict to safetensors; tied (shared) tensors are stored once."""
    from safetensors.torch import save_model

    save_model(model, str(path), metadata={"format": "pt"})


def read_model_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read (and thereby validate) a safetensors weights file into CPU tensors."""
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def load_model_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    """Copy ``weights`` into ``model``; keys dropped at save time because they were tied must stay tied.

    Raises:
        ValueError: on unexpected keys or missing keys that are not tied to a loaded tensor.
    """
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing:
        own = model.state_dict()
        loaded_ptrs = {own[k].data_ptr() for k in weights if k in own}
        untied = [k for k in missing if own[k].data_ptr() not in loaded_ptrs]
        if untied:
            raise ValueError(f"checkpoint weights lack {len(untied)} key(s) of the model, e.g. {untied[:5]}")
    if unexpected:
        raise ValueError(
            f"checkpoint weights have {len(unexpected)} key(s) the model lacks: {unexpected[:5]}"
        )
