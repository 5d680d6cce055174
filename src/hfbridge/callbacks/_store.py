"""The manifest on disk: reading it, recovering after a crash, and evicting checkpoints retention drops."""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

from hfbridge.callbacks._atomic import (
    TMP_PREFIX,
    TRASH_PREFIX,
    check_free_space,
    fsync_dir,
    new_tmp_dir,
    publish_dir,
    remove_dir,
    write_json_atomic,
)
from hfbridge.callbacks._io import Loaded, MissingPartError, Payload, read_payload, write_payload
from hfbridge.callbacks._manifest import (
    FORMAT,
    MANIFEST_NAME,
    MARKER_NAME,
    entry_is_complete,
    read_json,
    select_kept,
)
from hfbridge.callbacks._state import check_plain, state_nbytes

__all__ = ["ManifestStore"]

_VERSION = 1


def _empty() -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": _VERSION,
        "run": uuid.uuid4().hex,
        "checkpoints": [],
        "next_seq": 0,
        "best": [],
        "last": [],
    }


class ManifestStore:
    """``dirpath/manifest.json`` plus the checkpoint folders it names.

    Only names this store created are ever deleted: checkpoint folders recorded in the manifest (or carrying a
    marker with this manifest's ``run`` id) and hidden ``.tmp-hfbridge-*`` / ``.trash-hfbridge-*`` leftovers of an
    interrupted write. Writers hold :func:`dir_lock` on the folder, so a leftover is never another writer's work.
    """

    def __init__(self, dirpath: Path, *, mode: str, keep_best: int, keep_last: int | None) -> None:
        self.dirpath = dirpath
        self.mode, self.keep_best, self.keep_last = mode, keep_best, keep_last
        self.path = dirpath / MANIFEST_NAME

    def read(self) -> dict[str, Any]:
        """The manifest (an empty one when there is none); a corrupt file is rebuilt from the folder markers."""
        if not self.path.is_file():
            return _empty()
        try:
            data = read_json(self.path)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("not an hfbridge manifest")
            data.setdefault("run", uuid.uuid4().hex)  # a manifest from before run ids: adopts no marker
            return data
        except (ValueError, OSError) as exc:
            warnings.warn(
                f"manifest {str(self.path)!r} is unreadable ({exc}); rebuilding it from checkpoint markers",
                RuntimeWarning,
                stacklevel=3,
            )
            return self._rebuild()

    def write(self, manifest: dict[str, Any]) -> None:
        """Record the current best-K / last-N choice and replace the manifest atomically."""
        best, last = select_kept(
            manifest["checkpoints"], mode=self.mode, keep_best=self.keep_best, keep_last=self.keep_last
        )
        manifest["best"], manifest["last"] = best, last
        write_json_atomic(self.path, manifest)

    def recover(self) -> dict[str, Any]:
        """After a crash: finish or undo an interrupted same-name replacement, clear our hidden leftovers, forget
        missing folders, adopt this run's published-but-unrecorded ones.

        Returns the (possibly updated) manifest. Called by the writing rank, under :func:`dir_lock`, before each
        save: any ``.tmp-hfbridge-*`` / ``.trash-hfbridge-*`` left then is a crashed writer's, never a live one's.
        """
        manifest = self.read()
        self._restore_replaced(manifest)
        for entry in self.dirpath.iterdir():
            if entry.name.startswith((TMP_PREFIX, TRASH_PREFIX)):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        before = json.dumps(manifest, sort_keys=True)
        kept = []
        for e in manifest["checkpoints"]:
            current, _, reason = self.resolve(e)
            if current is not None:
                kept.append(current)
            else:
                warnings.warn(f"forgetting checkpoint {e['name']!r}: {reason}", RuntimeWarning, stacklevel=3)
        known = {e["name"] for e in kept}
        for marker in self._markers(manifest["run"]):
            if marker["name"] not in known:
                kept.append(marker)  # renamed into place just before a crash, never recorded
        manifest["checkpoints"] = sorted(kept, key=lambda e: e["seq"])
        manifest["next_seq"] = max([manifest["next_seq"], *(e["seq"] + 1 for e in kept)])
        if json.dumps(manifest, sort_keys=True) != before:
            self.write(manifest)
            self.apply_retention(manifest)
        return manifest

    def resolve(self, entry: dict[str, Any]) -> tuple[dict[str, Any] | None, Path, str | None]:
        """What a manifest entry names on disk now: ``(record, folder, None)``, or ``(None, folder, reason)``.

        Two crash windows of a same-name replacement (a ``filename`` without ``{step}``) are read through: the new
        folder already renamed into place but not yet recorded (its own marker, a later ``seq`` of this run, is the
        record), and the old folder moved aside to a hidden trash name before the new one was published (the hidden
        copy is read until the next save's :meth:`recover` renames it back).
        """
        folder = self.dirpath / entry["name"]
        marker = _read_marker(folder)
        if (
            marker is not None
            and marker.get("run") == entry.get("run")
            and isinstance(marker.get("seq"), int)
            and marker["seq"] > entry["seq"]
            and entry_is_complete(folder, marker) is None
        ):
            return marker, folder, None
        reason = entry_is_complete(folder, entry)
        if reason is None:
            return entry, folder, None
        if not folder.exists():
            aside = self._moved_aside(entry)
            if aside is not None:
                return entry, aside, None
        return None, folder, reason

    def _moved_aside(self, entry: dict[str, Any]) -> Path | None:
        """The complete hidden copy of ``entry`` moved aside by an interrupted same-name replacement, if any."""
        for folder in sorted(self.dirpath.glob(f"{TRASH_PREFIX}*")):
            marker = _read_marker(folder)
            if (
                marker is not None
                and marker.get("name") == entry["name"]
                and marker.get("seq") == entry["seq"]
                and entry_is_complete(folder, entry) is None
            ):
                return folder
        return None

    def _restore_replaced(self, manifest: dict[str, Any]) -> None:
        """Rename a recorded checkpoint moved aside by a replacement that crashed before publishing back."""
        for e in manifest["checkpoints"]:
            final = self.dirpath / e["name"]
            if final.exists():
                continue
            aside = self._moved_aside(e)
            if aside is not None:
                os.replace(aside, final)
                fsync_dir(self.dirpath)

    def apply_retention(self, manifest: dict[str, Any]) -> None:
        """Drop checkpoints outside best-K and last-N: first from the manifest, then from disk."""
        best, last = select_kept(
            manifest["checkpoints"], mode=self.mode, keep_best=self.keep_best, keep_last=self.keep_last
        )
        keep = set(best) | set(last)
        evicted = [e for e in manifest["checkpoints"] if e["name"] not in keep]
        if not evicted:
            return
        manifest["checkpoints"] = [e for e in manifest["checkpoints"] if e["name"] in keep]
        self.write(manifest)
        for e in evicted:
            remove_dir(self.dirpath / e["name"])

    def add(
        self, manifest: dict[str, Any], entry: dict[str, Any], payload: Payload, *, check_disk_space: bool
    ) -> Path | None:
        """Write ``payload`` as checkpoint ``entry["name"]``, record it, then evict what retention drops.

        Returns ``None`` without writing when retention would drop the new checkpoint at once.

        Raises:
            OSError: ``ENOSPC`` before writing (estimate) or while writing (partial folder removed).
            FileExistsError: when the target name exists but was not written by us.
        """
        for what, obj in (
            ("optimizer.state_dict()", payload.optimizer),
            ("scheduler.state_dict()", payload.scheduler),
            ("scaler.state_dict()", payload.scaler),
            ("extra_state", payload.state["extra_state"]),
            ("callbacks", payload.state["callbacks"]),
        ):
            check_plain(obj, what)
        name = entry["name"]
        others = [e for e in manifest["checkpoints"] if e["name"] != name]
        best, last = select_kept(
            [*others, entry], mode=self.mode, keep_best=self.keep_best, keep_last=self.keep_last
        )
        if name not in best and name not in last:
            return None  # retention would drop it at once: don't write it
        final = self.dirpath / name
        if final.exists() and len(others) == len(manifest["checkpoints"]):
            raise FileExistsError(
                f"{str(final)!r} exists and was not written by this Checkpointer; it is never overwritten. "
                "Choose another `dirpath` or `filename`"
            )
        if check_disk_space:
            estimate = sum(p.numel() * p.element_size() for p in payload.model.state_dict().values())
            estimate += sum(state_nbytes(x) for x in (payload.optimizer, payload.scheduler, payload.state))
            check_free_space(self.dirpath, int(estimate * 1.05) + (1 << 20))
        tmp = new_tmp_dir(self.dirpath, name)
        aside: Path | None = (
            None  # our earlier checkpoint of the same name, moved aside until the new one is in
        )
        try:
            entry["files"] = write_payload(tmp, payload)
            write_json_atomic(tmp / MARKER_NAME, entry)
            if final.exists():
                target = self.dirpath / f"{TRASH_PREFIX}{name}-{uuid.uuid4().hex}"
                os.replace(final, target)  # still recorded: a crash now leaves it to recover() to rename back
                aside = target  # only once it really moved: the error path below must not delete `final`
                fsync_dir(self.dirpath)
            publish_dir(tmp, final)
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if aside is not None:
                remove_dir(final)  # the new one, if the rename got that far
                os.replace(aside, final)
                fsync_dir(self.dirpath)
            if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                raise OSError(
                    errno.ENOSPC,
                    f"the disk under {str(self.dirpath)!r} filled up while writing checkpoint {name!r}; the "
                    "partial checkpoint was removed and earlier checkpoints are intact. Free some space or lower "
                    "`keep_best`/`keep_last`",
                ) from exc
            raise
        recorded = manifest["checkpoints"]
        manifest["checkpoints"] = [*others, entry]
        manifest["next_seq"] += 1
        try:
            self.write(manifest)
        except BaseException:
            remove_dir(final)  # not recorded: undo, so the manifest stays the truth
            if aside is not None:
                os.replace(aside, final)
                fsync_dir(self.dirpath)
            manifest["checkpoints"] = recorded
            manifest["next_seq"] -= 1
            raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
        self.apply_retention(manifest)
        return final

    def choose(
        self, path: str | Path | None, wanted: dict[str, bool], *, world_size: int
    ) -> tuple[Path, Loaded] | None:
        """The newest checkpoint folder that reads in full (or ``path``), with rank 0's part read; bad ones skipped.

        Raises:
            MissingPartError: when a part in ``wanted`` was never saved (a usage error, not corruption).
        """
        if path is not None:
            return Path(path), read_payload(Path(path), rank=0, world_size=world_size, **wanted)
        for entry in sorted(self.read()["checkpoints"], key=lambda e: e["seq"], reverse=True):
            current, folder, reason = self.resolve(entry)
            if current is not None:
                try:
                    return folder, read_payload(folder, rank=0, world_size=world_size, **wanted)
                except MissingPartError:
                    raise
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"skipping checkpoint {entry['name']!r}: {reason}", RuntimeWarning, stacklevel=3)
        return None

    def complete_entries(self) -> list[tuple[dict[str, Any], Path]]:
        """``(record, folder)`` of every complete checkpoint the manifest lists (see :meth:`resolve`)."""
        out = []
        for entry in self.read()["checkpoints"]:
            current, folder, _ = self.resolve(entry)
            if current is not None:
                out.append((current, folder))
        return out

    def _markers(self, run: str | None) -> list[dict[str, Any]]:
        """Complete checkpoints whose marker names their folder and carries run id ``run`` (``None``: any run)."""
        out = []
        for folder in sorted(self.dirpath.iterdir()):
            if folder.name.startswith("."):
                continue
            entry = _read_marker(folder)
            if entry is None or (run is not None and entry.get("run") != run):
                continue
            if entry.get("name") == folder.name and entry_is_complete(folder, entry) is None:
                out.append(entry)
        return out

    def _rebuild(self) -> dict[str, Any]:
        manifest = _empty()
        markers = [m for m in self._markers(None) if isinstance(m.get("seq"), int)]
        if markers:  # adopt the newest checkpoint's run only: folders copied in from another run stay foreign
            manifest["run"] = max(markers, key=lambda m: m["seq"]).get("run")
            markers = [m for m in markers if m.get("run") == manifest["run"]]
        manifest["checkpoints"] = sorted(markers, key=lambda e: e["seq"])
        manifest["next_seq"] = max([0, *(e["seq"] + 1 for e in manifest["checkpoints"])])
        return manifest


def _read_marker(folder: Path) -> dict[str, Any] | None:
    """The hfbridge marker record in ``folder``, or ``None`` (no folder, no marker, unreadable, not ours)."""
    marker = folder / MARKER_NAME
    if not marker.is_file():
        return None
    try:
        entry = read_json(marker)
    except (ValueError, OSError):
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == FORMAT else None
