"""Same-name replacement survives a crash; only our own run's folders are adopted; one writer at a time."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from hfbridge.callbacks import Checkpointer
from tests.conftest import SRC_DIR

_KILLER = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {src!r})
    import torch
    import hfbridge.callbacks._store as store
    from hfbridge.callbacks import Checkpointer

    where = {where!r}
    model = torch.nn.Linear(4, 4)
    ckpt = Checkpointer({dirpath!r}, filename="last", keep_last=1)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ckpt.save(1, model=model, extra_state={{"step": 1}})
    with torch.no_grad():
        model.weight.fill_(2.0)

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    if where == "publish":  # killed just before the new folder is renamed into place
        store.publish_dir = die
    else:  # killed just after it was renamed into place, before the manifest records it
        real_publish = store.publish_dir

        def publish_then_arm(tmp, final):
            real_publish(tmp, final)
            store.write_json_atomic = die

        store.publish_dir = publish_then_arm
    ckpt.save(2, model=model, extra_state={{"step": 2}})
    """
)


@pytest.mark.parametrize("where", ["publish", "manifest"])
def test_same_name_replacement_killed_midway_keeps_a_checkpoint(tmp_path: Path, where: str) -> None:
    """filename without ``{step}``: a crash while replacing ``last`` must never leave no checkpoint at all."""
    dirpath = tmp_path / "ck"
    script = tmp_path / "worker.py"
    script.write_text(_KILLER.format(src=str(SRC_DIR), dirpath=str(dirpath), where=where))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    ckpt = Checkpointer(dirpath, filename="last", keep_last=1)
    latest = ckpt.latest()
    assert latest is not None
    if where == "publish":  # the old one sits under its hidden name until the next writer renames it back
        assert latest.name.startswith(".trash-hfbridge-last-")
    else:
        assert latest == dirpath / "last"
    model = torch.nn.Linear(4, 4)
    result = ckpt.resume(model=model)
    assert result is not None
    expected = 1 if where == "publish" else 2  # the old one until the new one is in place, then the new one
    assert result.step == expected
    assert result.extra_state == {"step": expected}
    assert torch.all(model.weight == float(expected))
    ckpt._store.recover()  # what the next save does first: the recorded checkpoint is back under its name
    assert ckpt.latest() == dirpath / "last"
    assert [c["step"] for c in ckpt.checkpoints()] == [expected]
    assert sorted(p.name for p in dirpath.iterdir()) == ["last", "manifest.json"]
    ckpt.save(3, model=model)
    assert [c["step"] for c in ckpt.checkpoints()] == [3]
    assert sorted(p.name for p in dirpath.iterdir()) == ["last", "manifest.json"]


def test_same_name_replacement_failure_restores_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hfbridge.callbacks._store as store

    ckpt = Checkpointer(tmp_path, filename="last", keep_last=1)
    ckpt.save(1, model=torch.nn.Linear(4, 4))

    def boom(tmp: Path, final: Path) -> None:
        raise OSError("rename failed")

    monkeypatch.setattr(store, "publish_dir", boom)
    with pytest.raises(OSError, match="rename failed"):
        ckpt.save(2, model=torch.nn.Linear(4, 4))
    assert [c["step"] for c in ckpt.checkpoints()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "manifest.json"]


def test_folder_from_another_run_is_not_adopted_or_deleted(tmp_path: Path) -> None:
    other = Checkpointer(tmp_path / "other", keep_last=1)
    other.save(7, model=torch.nn.Linear(4, 4))
    mine = Checkpointer(tmp_path / "mine", keep_last=1)
    mine.save(1, model=torch.nn.Linear(4, 4))
    shutil.copytree(tmp_path / "other" / "step7", tmp_path / "mine" / "step7")  # e.g. copied in by the user
    for step in (2, 3):
        mine.save(step, model=torch.nn.Linear(4, 4))
    assert [c["name"] for c in mine.checkpoints()] == ["step3"]
    assert (tmp_path / "mine" / "step7" / "model.safetensors").is_file()  # never ours, never deleted


def test_corrupt_manifest_rebuild_adopts_only_the_newest_run(tmp_path: Path) -> None:
    other = Checkpointer(tmp_path / "other", keep_last=1)
    other.save(7, model=torch.nn.Linear(4, 4))
    mine = Checkpointer(tmp_path / "mine", keep_last=2)
    for step in (1, 2):
        mine.save(step, model=torch.nn.Linear(4, 4))
    shutil.copytree(tmp_path / "other" / "step7", tmp_path / "mine" / "step7")
    (tmp_path / "mine" / "manifest.json").write_text("{ not json")
    with pytest.warns(RuntimeWarning, match="rebuilding"):
        mine.save(3, model=torch.nn.Linear(4, 4))
    assert [c["name"] for c in mine.checkpoints()] == ["step2", "step3"]
    assert (tmp_path / "mine" / "step7").is_dir()


def test_a_second_writer_waits_for_the_first(tmp_path: Path) -> None:
    """Writers hold an advisory lock on the folder, so one never clears another's temporary folder."""
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(0, model=torch.nn.Linear(4, 4))
    busy = tmp_path / ".tmp-hfbridge-step9-0123"  # another writer's folder, being written right now
    busy.mkdir()
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # that writer holds the lock
    done = threading.Event()
    worker = threading.Thread(target=lambda: (ckpt.save(1, model=torch.nn.Linear(4, 4)), done.set()))
    worker.start()
    try:
        time.sleep(1.0)
        assert not done.is_set()  # waits for the lock ...
        assert busy.is_dir()  # ... and leaves the other writer's folder alone
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        worker.join(timeout=60)
    assert done.is_set()
    assert not busy.exists()  # once the lock is ours, a leftover is stale: cleared
    assert [c["name"] for c in ckpt.checkpoints()] == ["step1"]


def test_a_failed_move_aside_leaves_the_old_checkpoint_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If moving the old same-name checkpoint aside fails, the error is the real one and nothing is deleted."""
    import hfbridge.callbacks._store as store

    ckpt = Checkpointer(tmp_path, filename="last", keep_last=1)
    ckpt.save(1, model=torch.nn.Linear(4, 4))
    real_replace = os.replace
    failures = [OSError("no room to rename")]  # the first move aside fails, as on a full directory

    def failing_move_aside(src: os.PathLike[str] | str, dst: os.PathLike[str] | str) -> None:
        if Path(dst).name.startswith(store.TRASH_PREFIX) and failures:
            raise failures.pop()
        real_replace(src, dst)

    monkeypatch.setattr(store.os, "replace", failing_move_aside)
    with pytest.raises(OSError, match="no room to rename"):
        ckpt.save(2, model=torch.nn.Linear(4, 4))
    monkeypatch.setattr(store.os, "replace", real_replace)
    assert [c["step"] for c in ckpt.checkpoints()] == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "manifest.json"]
    assert ckpt.latest() == tmp_path / "last"
