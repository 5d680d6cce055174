"""Files written and checksummed in one pass: the hash is taken over exactly the bytes handed to the file.

Every file of a checkpoint is written through :class:`HashingWriter`, which feeds each buffer to xxh3-64 and
then to the file, in order, so no second read of the file is needed for the manifest's checksum.
:func:`write_hashed` then flushes the file and checks that it holds exactly as many bytes as were hashed: a
writer that seeks, truncates or writes around the hasher fails the save instead of recording a checksum of
other bytes. Files are fsynced later, all at once, by ``publish_dir``. Verification on resume reads the files
back from disk and is independent of all this.

Model weights are streamed as safetensors straight from each tensor's memory (:func:`write_safetensors`,
written from the format's public specification: an 8-byte little-endian header length, a JSON header, then
the raw little-endian tensor bytes). Anything it does not cover (another dtype, tensors that share memory
partially, a big-endian host) is left to ``safetensors`` itself, with the checksum read back from the file.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hfbridge.callbacks._atomic import CHECKSUM, checksum

if TYPE_CHECKING:
    import torch

__all__ = [
    "HashingWriter",
    "model_tensors",
    "safetensors_dtypes",
    "write_hashed",
    "write_safetensors",
    "write_tensors",
    "write_weights",
]


def _new_hasher() -> Any:
    import xxhash

    return xxhash.xxh3_64()


class HashingWriter:
    """A write-only binary stream: each buffer passed to :meth:`write` is hashed, then written to ``raw``."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.nbytes = 0
        self._hash = _new_hasher()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._hash.update(view)
        written = self.raw.write(view)
        if written != len(view):  # a buffered file writes all or raises; anything else is a short write
            raise OSError(f"short write: {written} of {len(view)} bytes")
        self.nbytes += written
        return written

    def flush(self) -> None:
        self.raw.flush()

    def hexdigest(self) -> str:
        return str(self._hash.hexdigest())


def write_hashed(path: Path, fill: Callable[[HashingWriter], Any]) -> dict[str, Any]:
    """Create ``path`` (it must not exist) and let ``fill`` write it through a :class:`HashingWriter`.

    Returns:
        The file's manifest record, ``{"size": bytes, CHECKSUM: xxh3-64 hex digest}``.

    Raises:
        OSError: when the file on disk does not hold exactly the bytes that were hashed, or on a write error.
    """
    with open(path, "xb") as fh:
        writer = HashingWriter(fh)
        fill(writer)
        fh.flush()
        size = os.fstat(fh.fileno()).st_size
    if size != writer.nbytes:
        raise OSError(
            f"{str(path)!r} holds {size} bytes but {writer.nbytes} bytes were checksummed while writing it; "
            "something wrote to the file around the checksum"
        )
    return {"size": size, CHECKSUM: writer.hexdigest()}


def safetensors_dtypes() -> dict[Any, str]:
    """torch dtype -> safetensors dtype name, for the dtypes :func:`write_safetensors` streams."""
    import torch

    names = {
        "bool": "BOOL",
        "uint8": "U8",
        "int8": "I8",
        "int16": "I16",
        "uint16": "U16",
        "int32": "I32",
        "uint32": "U32",
        "int64": "I64",
        "uint64": "U64",
        "float16": "F16",
        "bfloat16": "BF16",
        "float32": "F32",
        "float64": "F64",
        "float8_e4m3fn": "F8_E4M3",
        "float8_e5m2": "F8_E5M2",
    }
    return {getattr(torch, k): v for k, v in names.items() if hasattr(torch, k)}


def _view(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.data_ptr(), t.shape, t.stride(), t.dtype)


def model_tensors(module: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The tensors of ``module.state_dict()`` to store, each shared storage once, and the metadata naming the
    dropped aliases (``{dropped: kept}``, the name kept being the first in sorted order, as
    ``safetensors.torch.save_model`` does); ``None`` when :func:`write_safetensors` cannot stream them."""
    dtypes = safetensors_dtypes()
    groups: dict[int, list[str]] = {}
    state = module.state_dict()
    for name, t in state.items():
        if t.dtype not in dtypes:
            return None
        if t.numel():
            groups.setdefault(t.untyped_storage().data_ptr(), []).append(name)
    tensors, aliases = dict(state), {}
    for names in groups.values():
        if len(names) < 2:
            continue
        first = state[names[0]]
        whole = first.untyped_storage().nbytes() == first.numel() * first.element_size()
        same = all(_view(state[n]) == _view(first) for n in names)
        if not (whole and same):
            return None  # partly shared memory: safetensors' own rules decide
        keep, *dropped = sorted(names)
        for name in dropped:
            del tensors[name]
            aliases[name] = keep
    return tensors, aliases


def write_safetensors(
    writer: HashingWriter, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Stream ``tensors`` as one safetensors file into ``writer``, each tensor's bytes straight from memory.

    Tensors are laid out by decreasing element size, then name, and the header is padded with spaces to a
    multiple of 8 bytes, so every tensor starts aligned to its element size.

    Raises:
        TypeError: for a dtype outside :func:`safetensors_dtypes` (check with :func:`model_tensors` first).
    """
    import torch

    if sys.byteorder != "little":  # pragma: no cover - torch runs little-endian in practice
        raise TypeError("write_safetensors streams native bytes, which must be little-endian")
    dtypes = safetensors_dtypes()
    order = sorted(tensors, key=lambda n: (-tensors[n].element_size(), n))
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    start = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in dtypes:
            raise TypeError(f"tensor {name!r} has dtype {t.dtype}, which write_safetensors does not stream")
        end = start + t.numel() * t.element_size()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [start, end]}
        start = end
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    writer.write(struct.pack("<Q", len(text)))
    writer.write(text)
    for name in order:
        t = tensors[name].detach()
        if t.numel():
            flat = t.to("cpu").contiguous().reshape(-1).view(torch.uint8)
            writer.write(flat.numpy())


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: Mapping[str, str]
) -> dict[str, Any]:
    """Write ``tensors`` (no two sharing memory) as safetensors to ``path``; return its record."""
    dtypes = safetensors_dtypes()
    if sys.byteorder == "little" and all(t.dtype in dtypes for t in tensors.values()):
        return write_hashed(path, lambda w: write_safetensors(w, tensors, metadata))
    import safetensors.torch

    safetensors.torch.save_file(tensors, str(path), metadata=dict(metadata))
    return _read_back(path)


def write_weights(path: Path, module: torch.nn.Module, metadata: Mapping[str, str]) -> dict[str, Any]:
    """Write ``module``'s weights as safetensors to ``path`` (tied tensors once); return its record."""
    found = model_tensors(module) if sys.byteorder == "little" else None
    if found is not None:
        tensors, aliases = found
        return write_tensors(path, tensors, {**aliases, **metadata})
    import safetensors.torch

    safetensors.torch.save_model(module, str(path), metadata=dict(metadata))
    return _read_back(path)


def _read_back(path: Path) -> dict[str, Any]:
    """Checksum a file another writer made by reading it back (the second pass the fast paths avoid)."""
    return {"size": path.stat().st_size, CHECKSUM: checksum(path)}
