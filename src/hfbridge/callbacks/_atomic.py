"""Crash-safe file-system steps: fsync, atomic JSON replace and folder publish, checksums, disk-full errors;
files written and checksummed in one pass.

A checkpoint is written into a hidden temporary folder next to its final place (same file system, so the
rename is atomic); every file and the folder are fsynced (concurrently, all before the rename), the folder is
renamed into place, and the parent is fsynced once, together with the manifest's replacement
(``ManifestStore.add``). After a ``kill -9`` at any moment the final name is absent or a complete folder.

Every file is written through :class:`HashingWriter`, which hashes each buffer (xxh3-64) before handing it
to the file, so the manifest's checksum needs no second read; :func:`write_hashed` then checks that the file
holds exactly the bytes hashed, so a writer that seeks or writes around the hasher fails the save. Resume
verifies by reading the files back, independently of this.

Weights are streamed as safetensors straight from tensor memory (:func:`write_safetensors`, after the
format's specification: 8-byte little-endian header length, JSON header, raw little-endian bytes); other
dtypes, partly shared memory or a big-endian host go to ``safetensors`` itself, checksummed by reading back.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import struct
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = [
    "CHECKSUM",
    "QUARANTINE_PREFIX",
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "HashingWriter",
    "check_free_space",
    "checksum",
    "dir_lock",
    "disk_full_cause",
    "fsync_dir",
    "hidden_path",
    "model_tensors",
    "publish_dir",
    "remove_dir",
    "safetensors_dtypes",
    "write_hashed",
    "write_json_atomic",
    "write_safetensors",
    "write_tensors",
    "write_weights",
]

# Hidden names we create. Temporary and trash folders are crash leftovers, cleared by the next writer;
# quarantined checkpoints (refused on resume) are kept for the user to inspect and never deleted by the store.
TMP_PREFIX = ".tmp-hfbridge-"
TRASH_PREFIX = ".trash-hfbridge-"
QUARANTINE_PREFIX = ".quarantine-hfbridge-"
CHECKSUM = "xxh3_64"  # the manifest key of a file's checksum: ~7x faster than zlib.crc32 (docs/callbacks.md)


def checksum(path: Path) -> str:
    """The xxh3-64 hex digest of the file at ``path`` (memory-mapped: no copy through Python buffers)."""
    import mmap

    import xxhash

    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            return xxhash.xxh3_64(b"").hexdigest()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return xxhash.xxh3_64(view).hexdigest()


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (new, renamed, removed names) to disk; a no-op where it cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # e.g. Windows: folders cannot be opened, renames are durable on their own
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on folders
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.EACCES):
            raise
    finally:
        os.close(fd)


def hidden_path(path: Path, prefix: str) -> Path:
    """A fresh hidden sibling of ``path``: ``{prefix}{path.name}-{uuid}``."""
    return path.with_name(f"{prefix}{path.name}-{uuid.uuid4().hex}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see either the old or the new file, never a mix."""
    tmp = hidden_path(path, TMP_PREFIX)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, allow_nan=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def dir_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory ``flock`` on the folder ``path`` while writing into it, so two writers take
    turns and neither clears the other's temporary folder as a crash leftover. No lock file; released when
    the process dies. A no-op where ``flock`` is unavailable (Windows) or refused (some network file
    systems)."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except (ImportError, OSError):  # pragma: no cover - Windows: no fcntl, folders cannot be opened
        yield
        return
    try:
        with contextlib.suppress(OSError):  # e.g. a file system without flock
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def publish_dir(tmp: Path, final: Path) -> None:
    """Fsync every file in ``tmp`` and ``tmp`` itself, concurrently (the file system can commit them
    together), all before renaming it to ``final``. The caller fsyncs ``final.parent`` before relying on the
    rename: ``ManifestStore.add`` does it once, with the manifest's replacement right after."""
    from concurrent.futures import ThreadPoolExecutor

    files = [entry for entry in tmp.iterdir() if entry.is_file() and not entry.is_symlink()]
    with ThreadPoolExecutor(max_workers=min(8, len(files) + 1)) as pool:
        for done in [pool.submit(_fsync_file, f) for f in files] + [pool.submit(fsync_dir, tmp)]:
            done.result()  # re-raises the first failure, after every fsync has finished
    os.replace(tmp, final)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_dir(path: Path) -> None:
    """Delete a folder we created: rename it to a hidden trash name (atomic), then remove it, so a crash
    leaves a ``.trash-hfbridge-*`` leftover, never a half-deleted checkpoint. A symlink is unlinked, not
    followed."""
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    trash = hidden_path(path, TRASH_PREFIX)
    os.replace(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def disk_full_cause(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it chains is a full disk: ``OSError(ENOSPC)``, a ``SafetensorError``
    naming OS error 28 / ``StorageFull``, or torch.save's ``inline_container.cc ... unexpected pos``."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            return True
        text = str(seen)
        if any(s in text for s in ("No space left", "code: 28,", "StorageFull")) or (
            "inline_container" in text and "unexpected pos" in text
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def check_free_space(dirpath: Path, needed: int) -> None:
    """Raise ``OSError(ENOSPC)``, clearly worded, when ``needed`` bytes do not fit on ``dirpath``'s disk."""
    free = shutil.disk_usage(dirpath).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"not enough disk space for the checkpoint: it needs about {_human(needed)} but only "
            f"{_human(free)} is free under {str(dirpath)!r}; free some space, point `dirpath` at a larger "
            "disk, or lower `keep_best`/`keep_last` (old checkpoints are only deleted after a new one is "
            "complete)",
            str(dirpath),
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---------------------------------------------------------------------------------------------- hashed writes


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
    """Create ``path`` (it must not exist), let ``fill`` write it through a :class:`HashingWriter`, and return
    its manifest record ``{"size": bytes, CHECKSUM: hex digest}``; ``OSError`` when the file does not hold
    exactly the bytes hashed."""
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
    dropped aliases (``{dropped: kept}``); ``None`` when :func:`write_safetensors` cannot stream them.

    The name kept is ``save_pretrained``'s: not a tie target of ``all_tied_weights_keys`` (GPT-2 keeps
    ``transformer.wte.weight``), then the first in sorted order, as ``safetensors.torch.save_model`` does.
    """
    tied = getattr(module, "all_tied_weights_keys", None)
    targets = {str(k) for k in tied} if isinstance(tied, Mapping) else set()

    def tie_target(name: str) -> bool:  # also under a wrapper's prefix (a PEFT model's base_model.model.)
        return name in targets or any(name.endswith(f".{t}") for t in targets)

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
        keep = min(names, key=lambda n: (tie_target(n), n))
        for name in names:
            if name == keep:
                continue
            del tensors[name]
            aliases[name] = keep
    return tensors, aliases


def write_safetensors(
    writer: HashingWriter, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Stream ``tensors`` as one safetensors file into ``writer``, each tensor's bytes straight from memory;
    ``TypeError`` for a dtype outside :func:`safetensors_dtypes`. Tensors are laid out by decreasing element
    size, then name, after a header padded to 8 bytes, so each starts aligned to its element size."""
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
