"""Crash-safe file-system primitives: fsync, atomic JSON replace, atomic folder publish, disk-space checks.

A checkpoint is written into a hidden temporary folder next to its final place (same file system, so the rename is
atomic), every file and the folder are fsynced, the folder is renamed into place and the parent is fsynced. After a
``kill -9`` at any moment, the final name either does not exist or names a complete folder.
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
    "TMP_PREFIX",
    "TRASH_PREFIX",
    "check_free_space",
    "dir_lock",
    "fsync_dir",
    "fsync_file",
    "new_tmp_dir",
    "publish_dir",
    "remove_dir",
    "write_json_atomic",
]

# Names of the hidden folders and files we create; only these are ever cleaned up automatically.
TMP_PREFIX = ".tmp-hfbridge-"
TRASH_PREFIX = ".trash-hfbridge-"


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Flush ``path``'s data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (new, renamed or removed names) to disk; a no-op where folders cannot be opened."""
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

    Two writers on one folder (two jobs pointed at the same ``dirpath``) then take turns, so neither clears the
    other's temporary folder as a crash leftover. The lock is on the folder, so no lock file is left behind; it is
    released when the process dies. A no-op where ``flock`` is unavailable (Windows) or refused (some network file
    systems): one writer per folder is then up to you.
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
    """Fsync every file in ``tmp`` and ``tmp`` itself, rename it to ``final`` and fsync the parent."""
    for entry in tmp.iterdir():
        if entry.is_file():
            fsync_file(entry)
    fsync_dir(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def remove_dir(path: Path) -> None:
    """Delete a folder we created: first rename it to a hidden trash name (atomic), then remove it.

    A crash mid-removal leaves only a hidden ``.trash-hfbridge-*`` folder, never a half-deleted checkpoint under
    its real name; the next :class:`~hfbridge.Checkpointer` clears such leftovers.
    """
    if not path.exists():
        return
    trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{uuid.uuid4().hex}")
    os.replace(path, trash)
    fsync_dir(path.parent)
    shutil.rmtree(trash, ignore_errors=True)


def check_free_space(dirpath: Path, needed: int, *, what: str = "checkpoint") -> None:
    """Raise ``OSError(ENOSPC)`` with a clear message when ``needed`` bytes do not fit on ``dirpath``'s disk.

    Raises:
        OSError: ``errno.ENOSPC`` when the free space is below ``needed``.
    """
    free = shutil.disk_usage(dirpath).free
    if needed > free:
        raise OSError(
            errno.ENOSPC,
            f"not enough disk space for the {what}: it needs about {_human(needed)} but only {_human(free)} is "
            f"free under {str(dirpath)!r}; free some space, point `dirpath` at a larger disk, or lower "
            "`keep_best`/`keep_last` (old checkpoints are only deleted after a new one is complete)",
        )


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover
