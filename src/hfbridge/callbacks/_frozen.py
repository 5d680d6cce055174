"""Trainable-only checkpoints: save what trains, fingerprint the frozen rest, verify it on resume.

With ``Checkpointer(..., frozen="reference")`` a checkpoint holds the parameters with ``requires_grad=True``,
every persistent buffer (batch-norm statistics and the like change without gradients; they are small), and for
each frozen tensor its name, shape, dtype and an xxh3-64 hash of its bytes, plus where the base came from. The
fingerprint is stored in the header metadata of ``trainable.safetensors`` (one file fewer to write, fsync and
delete per checkpoint); a ``frozen.json`` beside it, from checkpoints written before, is still read.
Resume loads the base as the user does, checks every frozen tensor against the fingerprint, then loads the
saved part on top.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "FINGERPRINT",
    "FINGERPRINT_KEY",
    "TRAINABLE",
    "check_fingerprint",
    "fingerprint",
    "split_trainable",
]

TRAINABLE = "trainable.safetensors"
FINGERPRINT_KEY = "hfbridge_frozen"  # the fingerprint's key in TRAINABLE's header metadata (a JSON string)
FINGERPRINT = "frozen.json"  # where checkpoints written before 2026-12-06 keep it; read, no longer written


def _digest(tensor: torch.Tensor) -> str:
    import torch
    import xxhash

    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return xxhash.xxh3_64(flat.view(torch.uint8).numpy().data).hexdigest()


def _origin(module: torch.nn.Module) -> str | None:
    config = getattr(module, "config", None)
    origin = getattr(config, "name_or_path", None)
    return origin if isinstance(origin, str) and origin else None


def split_trainable(module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(tensors to save, frozen tensors)``: trainable parameters and buffers (each storage once), and the
    frozen parameters, which :func:`fingerprint` describes instead."""
    frozen_names = {n for n, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    saved: dict[str, torch.Tensor] = {}
    frozen: dict[str, torch.Tensor] = {}
    seen: dict[tuple[int, int], str] = {}  # (data_ptr, numel) -> the name a tied tensor is stored under
    for name, t in module.state_dict().items():
        if name in frozen_names:
            frozen[name] = t
        elif (t.data_ptr(), t.numel()) not in seen or t.numel() == 0:
            seen[(t.data_ptr(), t.numel())] = name
            saved[name] = t.detach().contiguous()
    return saved, frozen


def fingerprint(module: torch.nn.Module, frozen: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Name, shape, dtype and xxh3-64 content hash of each frozen tensor, and where the base came from.

    Every frozen byte is hashed on every save, on purpose: a cache keyed on tensor version counters would miss
    writes that bypass them (``param.data.add_()``, NumPy views, peft's merge/unmerge), and a frozen tensor
    changed in place must be caught on resume.
    """
    tensors = {
        name: [list(t.shape), str(t.dtype).removeprefix("torch."), _digest(t)] for name, t in frozen.items()
    }
    return {"format": "hfbridge-frozen", "checksum": "xxh3_64", "origin": _origin(module), "tensors": tensors}


def check_fingerprint(module: torch.nn.Module, fingerprint: dict[str, Any], saved: set[str]) -> None:
    """Refuse a base whose frozen tensors are not the checkpoint's, naming the first that differs.

    Raises:
        ValueError: for a missing or extra tensor (another architecture), or a frozen tensor whose shape,
            dtype or content differs (another base, or a frozen parameter that was trained after all).
    """
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
        if list(t.shape) != shape or str(t.dtype).removeprefix("torch.") != dtype:
            got = f"{list(t.shape)} {str(t.dtype).removeprefix('torch.')}"
            raise ValueError(f"frozen tensor {name!r} is {got} in `model`, {shape} {dtype} in the checkpoint")
        if _digest(t) != digest:
            raise ValueError(
                f"frozen tensor {name!r} of `model` differs from the checkpoint's (xxh3_64 {_digest(t)} != "
                f"{digest}): resume needs {base}, unchanged. If a frozen parameter was trained on purpose, "
                "checkpoint with frozen='save'"
            )
