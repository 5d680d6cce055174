"""The manifest and the checkpoint folders it names: record, recover after a crash, set aside, evict.

``dirpath/manifest.json`` is replaced atomically. Every checkpoint folder also carries its own marker
(``checkpoint.json``) with the same record, written before the folder is renamed into place, so a folder
published just before a crash, or a lost manifest, can be rebuilt from the markers.

The folder is a trust boundary: every name read back (manifest entries, markers, file names) must be one path
component of the store's own naming before a path is built from it, and only folders whose marker names them
are ever deleted, so nothing outside ``dirpath`` and nothing the store did not create can be removed.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

from hfbridge.callbacks._atomic import (
    CHECKSUM,
    QUARANTINE_PREFIX,
    TMP_PREFIX,
    TRASH_PREFIX,
    check_free_space,
    checksum,
    dir_lock,
    disk_full_cause,
    fsync_dir,
    hidden_path,
    publish_dir,
    remove_dir,
    write_json_atomic,
)
from hfbridge.callbacks._files import (
    Loaded,
    MissingPartError,
    Payload,
    payload_nbytes,
    read_payload,
    write_payload,
)

__all__ = ["FORMAT", "ManifestStore", "decode_float", "encode_float", "is_checkpoint_name", "rank_best"]

FORMAT = "hfbridge-checkpoint"
MARKER_NAME = "checkpoint.json"
_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{0,199}")  # what format_name produces
_FILE = re.compile(r"(model_shards/\.?)?[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")  # sharded: model_shards/ files


def is_checkpoint_name(name: Any) -> bool:
    """Whether ``name`` is one path component of the store's naming (``[A-Za-z0-9._+=-]``, no ``..``)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None and ".." not in name


def encode_float(x: float | None) -> float | str | None:
    """JSON-safe float: non-finite values become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
    return x if x is None or math.isfinite(x) else str(x)  # str() spells them exactly so


def decode_float(x: Any) -> float | None:
    """Inverse of :func:`encode_float`."""
    return None if x is None else float(x)


def rank_best(entries: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Entries that carry a monitored score, best first; NaN ranks last, a tie keeps the earlier one first."""

    def key(e: dict[str, Any]) -> tuple[int, float, int]:
        s = float(e["score"])
        return (1, 0.0, e["seq"]) if math.isnan(s) else (0, s if mode == "min" else -s, e["seq"])

    return sorted((e for e in entries if e.get("score") is not None), key=key)


def _entry_problem(entry: Any) -> str | None:
    """Why a record read from disk cannot be trusted, or ``None``."""
    if not isinstance(entry, dict):
        return f"a record must be an object, got {type(entry).__name__}"
    if not is_checkpoint_name(entry.get("name")):
        return f"{entry.get('name')!r} is not a checkpoint name this store writes (one path component)"
    ints = all(type(entry.get(k)) is int for k in ("seq", "step"))
    if not ints or not isinstance(entry.get("files"), dict):
        return "the record lacks an int `seq`/`step` or a `files` table"
    bad = [f for f in entry["files"] if _FILE.fullmatch(f) is None or ".." in f]
    return f"file {bad[0]!r} is not a checkpoint name this store writes" if bad else None


def _files_problem(folder: Path, entry: dict[str, Any], *, verify: bool) -> str | None:
    """``None`` when every file the entry lists is in ``folder`` with its size (and checksum), else why."""
    if not folder.is_dir():
        return f"folder {str(folder)!r} is missing"
    for name, rec in entry["files"].items():
        path = folder / name
        if not path.is_file():
            return f"file {name!r} is missing"
        size, digest = (rec, None) if isinstance(rec, int) else (rec.get("size"), rec.get(CHECKSUM))
        if path.stat().st_size != size:
            return f"file {name!r} has {path.stat().st_size} bytes, the manifest recorded {size}"
        if verify and digest is not None and checksum(path) != digest:
            return f"file {name!r} fails its {CHECKSUM} checksum (bit rot or tampering)"
    return None


def _read_marker(folder: Path) -> dict[str, Any] | None:
    """The valid hfbridge marker record in ``folder``, or ``None``."""
    try:
        entry = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    ok = isinstance(entry, dict) and entry.get("format") == FORMAT and _entry_problem(entry) is None
    return entry if ok else None


def _empty() -> dict[str, Any]:
    return {"format": FORMAT, "version": 2, "run": uuid.uuid4().hex, "checkpoints": [], "next_seq": 0}


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


class ManifestStore:
    """``dirpath/manifest.json`` plus the checkpoint folders it names; writers hold :func:`dir_lock`."""

    def __init__(
        self, dirpath: Path, *, mode: str, keep_best: int, keep_last: int | None, keep_total: int | None
    ) -> None:
        self.dirpath = dirpath
        self.mode, self.keep_best, self.keep_last, self.keep_total = mode, keep_best, keep_last, keep_total
        self.path = dirpath / "manifest.json"
        self._rebuilt: set[str] = set()  # why the manifest was rebuilt in memory, each said once

    def read(self) -> dict[str, Any]:
        """The manifest with untrusted records dropped; rebuilt from the markers when lost or unreadable."""
        if not self.path.is_file():
            return self._rebuild("is missing") if self.dirpath.is_dir() else _empty()
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("not an hfbridge manifest")
            if not isinstance(data.get("checkpoints"), list) or type(data.get("next_seq")) is not int:
                raise ValueError("no `checkpoints` list or `next_seq`")
        except (ValueError, OSError) as exc:
            return self._rebuild(f"is unreadable ({exc})")
        if not isinstance(data.get("run"), str):
            data["run"] = uuid.uuid4().hex  # a manifest from before run ids: adopts no marker
        kept = []
        for e in data["checkpoints"]:
            problem = _entry_problem(e)
            if problem is None:
                kept.append(e)
            else:
                _warn(f"ignoring a record in {str(self.path)!r}: {problem}")
        data["checkpoints"] = kept
        return data

    def _rebuild(self, why: str) -> dict[str, Any]:
        manifest = _empty()
        markers = self._markers(None)
        if markers:  # adopt the newest checkpoint's run only: folders copied in from another run stay foreign
            manifest["run"] = max(markers, key=lambda m: m["seq"]).get("run")
            markers = [m for m in markers if m.get("run") == manifest["run"]]
        if (markers or why != "is missing") and why not in self._rebuilt:
            # read-only calls (latest, resume, ...) rebuild it in memory each time; the next save writes it
            self._rebuilt.add(why)
            _warn(
                f"manifest {str(self.path)!r} {why}; rebuilding it from checkpoint markers "
                f"({len(markers)} found)"
            )
        manifest["checkpoints"] = sorted(markers, key=lambda e: e["seq"])
        manifest["next_seq"] = max([0, *(e["seq"] + 1 for e in markers)])
        return manifest

    def _markers(self, run: str | None) -> list[dict[str, Any]]:
        """Complete checkpoints whose marker names their folder and has run id ``run`` (``None``: any run)."""
        out = []
        for folder in sorted(self.dirpath.iterdir()):
            entry = None if folder.name.startswith(".") else _read_marker(folder)
            if entry is None or (run is not None and entry.get("run") != run):
                continue
            if entry["name"] == folder.name and _files_problem(folder, entry, verify=False) is None:
                out.append(entry)
        return out

    def kept(self, entries: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
        """Names of the best ``keep_best`` (best first) and newest ``keep_last`` (newest first) entries; with
        ``keep_total``, newest ones outside the best go, oldest first, until at most ``keep_total`` are kept
        in all (the newest one always stays, so that the run can resume)."""
        best = [e["name"] for e in rank_best(entries, self.mode)[: self.keep_best]]
        newest = [e["name"] for e in sorted(entries, key=lambda e: e["seq"], reverse=True)[: self.keep_last]]
        if self.keep_total is None:
            return best, newest
        room = self.keep_total - len(best)  # places left for newest checkpoints that are not among the best
        last = []
        for k, name in enumerate(newest):
            if name in best or k == 0 or room > 0:
                last.append(name)
                room -= name not in best
        return best, last

    def write(self, manifest: dict[str, Any], *, evict: bool = True) -> list[dict[str, Any]]:
        """Drop the records best-K / last-N no longer keep (``evict=False``: none), replace the manifest
        atomically, return the dropped records for :meth:`remove` (folders go only once the manifest no
        longer names them)."""
        best, last = self.kept(manifest["checkpoints"])
        evicted = [e for e in manifest["checkpoints"] if e["name"] not in {*best, *last}] if evict else []
        manifest["checkpoints"] = [e for e in manifest["checkpoints"] if e not in evicted]
        manifest["best"], manifest["last"] = best, last
        write_json_atomic(self.path, manifest)
        self._rebuilt.clear()  # a later loss of this manifest is news again
        return evicted

    def remove(self, evicted: list[dict[str, Any]]) -> None:
        """Delete the folders of records dropped by :meth:`write`, each only when its own marker names it."""
        for e in evicted:
            folder = self.dirpath / e["name"]
            marker = _read_marker(folder)
            if marker is not None and marker["name"] == e["name"]:  # only a folder this store wrote
                remove_dir(folder)
            elif folder.exists():
                _warn(f"not deleting {str(folder)!r}: it carries no hfbridge marker naming it")

    def recover(self) -> dict[str, Any]:
        """Before each save, under :func:`dir_lock`: finish or undo an interrupted same-name replacement,
        clear crash leftovers, set aside recorded folders that are no longer complete, adopt this run's
        published but unrecorded folders. Returns the (possibly updated) manifest."""
        manifest = self.read()
        self._restore_replaced(manifest)
        for entry in self.dirpath.iterdir():  # a crashed writer's leftovers (a live one holds the lock)
            if not entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        before = json.dumps(manifest, sort_keys=True)
        kept = []
        for e in manifest["checkpoints"]:
            current, folder, reason = self.resolve(e)
            if current is not None:
                kept.append(current)
            elif folder.exists():
                self._quarantine(folder, e["name"], reason)
            else:
                _warn(f"forgetting checkpoint {e['name']!r}: {reason}")
        known = {e["name"] for e in kept}
        kept += [m for m in self._markers(manifest["run"]) if m["name"] not in known]  # published, unrecorded
        manifest["checkpoints"] = sorted(kept, key=lambda e: e["seq"])
        manifest["next_seq"] = max([manifest["next_seq"], *(e["seq"] + 1 for e in kept)])
        if json.dumps(manifest, sort_keys=True) != before or (kept and not self.path.is_file()):
            self.remove(self.write(manifest))
        return manifest

    def resolve(
        self, entry: dict[str, Any], *, verify: bool = False
    ) -> tuple[dict[str, Any] | None, Path, str | None]:
        """What a manifest entry names on disk now: ``(record, folder, None)``, or ``(None, folder, reason)``.

        Reads through the two crash windows of a same-name replacement: the new folder renamed into place but
        not yet recorded (its marker, a later ``seq`` of this run, is the record), and the old one moved aside
        to a trash name before the new one was published.
        """
        folder = self.dirpath / entry["name"]
        marker = _read_marker(folder)
        if (
            marker is not None
            and marker.get("run") == entry.get("run")
            and marker["seq"] > entry["seq"]
            and _files_problem(folder, marker, verify=verify) is None
        ):
            return marker, folder, None
        reason = _files_problem(folder, entry, verify=verify)
        if reason is None:
            return entry, folder, None
        aside = self._moved_aside(entry)
        return (entry, aside, None) if aside is not None else (None, folder, reason)

    def _moved_aside(self, entry: dict[str, Any]) -> Path | None:
        """The complete hidden copy of ``entry`` moved aside by an interrupted same-name replacement (only
        while nothing is under its name)."""
        if (self.dirpath / entry["name"]).exists():
            return None
        for folder in sorted(self.dirpath.glob(f"{TRASH_PREFIX}*")):
            marker = _read_marker(folder)
            if (
                marker is not None
                and (marker["name"], marker["seq"]) == (entry["name"], entry["seq"])
                and _files_problem(folder, entry, verify=False) is None
            ):
                return folder
        return None

    def _restore_replaced(self, manifest: dict[str, Any]) -> None:
        """Rename a recorded checkpoint moved aside by a replacement that crashed before publishing back."""
        for e in manifest["checkpoints"]:
            aside = self._moved_aside(e)
            if aside is not None:
                self._move(aside, self.dirpath / e["name"])

    def _move(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)
        fsync_dir(self.dirpath)

    def _put_back(self, final: Path, aside: Path | None) -> None:
        """Undo a save: remove the new ``final`` and rename our moved-aside earlier checkpoint back."""
        remove_dir(final)
        if aside is not None:
            self._move(aside, final)

    def _quarantine(self, folder: Path, name: str, reason: str | None) -> None:
        aside = self.dirpath / f"{QUARANTINE_PREFIX}{name}-{uuid.uuid4().hex[:8]}"
        self._move(folder, aside)
        _warn(
            f"skipping checkpoint {name!r}: {reason}; set it aside as {aside.name!r}, kept for inspection "
            "and never deleted by hfbridge"
        )

    def set_aside(self, entry: dict[str, Any], folder: Path, reason: str) -> None:
        """Drop a checkpoint resume refused from the manifest and rename its folder to a quarantine name."""
        with dir_lock(self.dirpath):
            manifest = self.read()
            same = [
                e for e in manifest["checkpoints"] if (e["name"], e["seq"]) == (entry["name"], entry["seq"])
            ]
            if same:
                manifest["checkpoints"] = [e for e in manifest["checkpoints"] if e not in same]
                # no eviction here: a resume (perhaps by a Checkpointer with other retention settings)
                # changes nothing but the refused folder; the next save applies retention
                self.write(manifest, evict=False)
            if folder.is_dir() and not folder.is_symlink():
                self._quarantine(folder, entry["name"], reason)

    def add(
        self, manifest: dict[str, Any], entry: dict[str, Any], payload: Payload, *, check_disk_space: bool
    ) -> Path | None:
        """Write ``payload`` as checkpoint ``entry["name"]``, record it, then evict what retention drops;
        ``None`` without writing when retention would drop it at once. Raises ``OSError(ENOSPC)`` before
        writing (estimate) or while writing (partial folder removed), ``FileExistsError`` when the name is
        taken by a folder we did not write."""
        name = entry["name"]
        others = [e for e in manifest["checkpoints"] if e["name"] != name]
        best, last = self.kept([*others, entry])
        if name not in best and name not in last:
            return None  # retention would drop it at once: don't write it
        final = self.dirpath / name
        if (final.exists() or final.is_symlink()) and len(others) == len(manifest["checkpoints"]):
            raise FileExistsError(
                f"{str(final)!r} exists and was not written by this Checkpointer; it is never overwritten. "
                "Choose another `dirpath` or `filename`"
            )
        if check_disk_space:
            needed = payload_nbytes(payload) if payload.shards is None else 0  # shards: already written
            check_free_space(self.dirpath, int(needed * 1.05) + (1 << 20))
        tmp = hidden_path(final, TMP_PREFIX)
        tmp.mkdir()
        aside: Path | None = None  # our earlier checkpoint of this name, moved aside until the new one is in
        try:
            entry["files"] = write_payload(tmp, payload)
            (tmp / MARKER_NAME).write_text(json.dumps(entry, indent=2, sort_keys=True), encoding="utf-8")
            if final.exists():
                target = hidden_path(final, TRASH_PREFIX)
                os.replace(final, target)  # still recorded: a crash now leaves it to recover() to rename back
                aside = target  # only once it really moved: the error path below must not delete `final`
                fsync_dir(self.dirpath)
            # One fsync of dirpath, in self.write() below, makes both the folder's rename and the manifest's
            # durable. Until it returns, a power loss may keep either rename without the other: the folder
            # alone is adopted from its marker by recover(); the manifest alone names a folder that is not
            # there, whose record is dropped (recover() warns; resume moves on to the next older one): a save
            # that never returned. Nothing older is at risk: evicted folders are only removed after that
            # fsync, each with its own.
            publish_dir(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if aside is not None:
                self._put_back(final, aside)  # the new one goes, if the rename got that far
            if isinstance(exc, Exception) and disk_full_cause(exc):
                raise OSError(
                    errno.ENOSPC,
                    f"the disk under {str(self.dirpath)!r} filled up while writing checkpoint {name!r}; the "
                    "partial checkpoint was removed and earlier checkpoints are intact. Free some space or "
                    "lower `keep_best`/`keep_last`",
                    str(final),
                ) from exc
            raise
        recorded, manifest["checkpoints"] = manifest["checkpoints"], [*others, entry]
        manifest["next_seq"] += 1
        try:
            evicted = self.write(manifest)
        except BaseException:
            self._put_back(final, aside)  # not recorded: undo, so the manifest stays the truth
            manifest["checkpoints"] = recorded
            manifest["next_seq"] -= 1
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        self.remove(evicted)
        return final

    def choose(
        self, path: Path | None, wanted: dict[str, bool], world_size: int
    ) -> tuple[Path, Loaded] | None:
        """The newest checkpoint that verifies and reads in full (or ``path``), with rank 0's part read. One
        that fails is set aside (:meth:`set_aside`) with a warning and the next older tried; a transient
        ``OSError`` only skips it. Raises ``MissingPartError`` for a part in ``wanted`` never saved (a usage
        error, not corruption), ``ValueError`` when ``path`` is recorded and fails its checks."""
        entries = sorted(self.read()["checkpoints"], key=lambda e: e["seq"], reverse=True)
        if path is not None:
            for e in (e for e in entries if self.dirpath / e["name"] == path):
                if (reason := self.resolve(e, verify=True)[2]) is not None:
                    raise ValueError(f"checkpoint `path` {str(path)!r} is damaged: {reason}")
            return path, read_payload(path, rank=0, world_size=world_size, wanted=wanted)
        for entry in entries:
            current, folder, reason = self.resolve(entry, verify=True)
            if current is not None:
                try:
                    return folder, read_payload(folder, rank=0, world_size=world_size, wanted=wanted)
                except MissingPartError:
                    raise
                except OSError as exc:
                    _warn(f"skipping checkpoint {entry['name']!r}: {type(exc).__name__}: {exc}")
                    continue
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
            self.set_aside(entry, folder, str(reason))
        return None

    def complete_entries(self) -> list[tuple[dict[str, Any], Path]]:
        """``(record, folder)`` of every complete checkpoint the manifest lists (see :meth:`resolve`)."""
        found = (self.resolve(e) for e in self.read()["checkpoints"])
        return [(current, folder) for current, folder, _ in found if current is not None]
