"""Crash-safe file-system steps: fsync, atomic JSON replace and folder publish, checksums, disk-full errors.

A checkpoint is written into a hidden temporary folder next to its final place (same file system, so the
rename is atomic), every file and the folder are fsynced (concurrently, all before the rename), the folder is
renamed into place, and the parent is fsynced (once, together with the manifest's replacement: see
``ManifestStore.add``). After a ``kill -9`` at any moment, the final name either does not exist or names a
complete folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "CHECKSUM",
    "QUARANTINE_PREFIX",
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "check_free_space",
    "checksum",
    "dir_lock",
    "disk_full_cause",
    "fsync_dir",
    "new_tmp_dir",
    "publish_dir",
    "remove_dir",
    "write_json_atomic",
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


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see either the old or the new file, never a mix."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}-{uuid.uuid4().hex}")
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
    """Hold an exclusive advisory lock (``flock``) on the folder ``path`` itself while writing into it.

    Two writers on one folder then take turns, so neither clears the other's temporary folder as a crash
    leftover. No lock file is left behind, and the lock is released when the process dies. A no-op where
    ``flock`` is unavailable (Windows) or refused (some network file systems): one writer per folder is then
    up to you.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - folders cannot be opened here
        yield
        return
    try:
        with contextlib.suppress(OSError):  # e.g. a file system without flock
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def new_tmp_dir(parent: Path, name: str) -> Path:
    """Create and return a fresh hidden temporary folder for checkpoint ``name`` under ``parent``."""
    tmp = parent / f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}"
    tmp.mkdir()
    return tmp


def publish_dir(tmp: Path, final: Path) -> None:
    """Fsync every file in ``tmp`` and ``tmp`` itself, then rename it to ``final``.

    The fsyncs run concurrently and all complete before the rename: each still returns only once its file is
    on disk, but the file system can commit them together instead of one journal commit after another. The
    caller must fsync ``final.parent`` before relying on the rename being durable: ``ManifestStore.add`` does
    it once, when it replaces the manifest in the same folder right after.
    """
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
    """Delete a folder we created: first rename it to a hidden trash name (atomic), then remove it.

    A crash mid-removal leaves only a hidden ``.trash-hfbridge-*`` folder, never a half-deleted checkpoint
    under its real name; the next writer clears such leftovers. A symbolic link is removed, never followed.
    """
    if path.is_symlink():
        path.unlink()
        return
    if not path.exists():
        return
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex}")
    os.replace(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def disk_full_cause(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it chains) is a full disk, under any of the types writers raise it as.

    ``OSError(ENOSPC)`` from Python, ``SafetensorError`` naming OS error 28 / ``StorageFull``, and
    torch.save's ``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos`` (a short write).
    """
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
