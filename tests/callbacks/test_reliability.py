"""Reliability: pickle payloads refused, corrupt checkpoints skipped, disk full, and kill -9 mid-save."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path
from typing import Any

import pytest
import torch
import xxhash

from hfbridge.callbacks import Checkpointer
from tests.conftest import SRC_DIR

# ---------------------------------------------------------------------------------------------- pickle refused


class _Exploit:
    """Unpickling this runs ``os.system``-like code: here it only creates a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.marker),))


def _two_checkpoints(tmp_path: Path, tiny_net: Any) -> Checkpointer:
    ckpt = Checkpointer(tmp_path / "ck", keep_last=2)
    ckpt.save(1, model=tiny_net(1), extra_state={"tag": "old"})
    ckpt.save(2, model=tiny_net(2), extra_state={"tag": "new"})
    return ckpt


def _tamper(path: Path, obj: Any) -> None:
    """Replace ``path`` with ``obj`` pickled by ``torch.save``, keeping the recorded size so only loading can tell."""
    size = path.stat().st_size
    torch.save(obj, path)
    assert path.stat().st_size <= size
    with open(path, "ab") as fh:  # pad to the old size: the zip reader ignores trailing bytes
        fh.write(b"\0" * (size - path.stat().st_size))


@pytest.mark.parametrize("victim", ["hfbridge_state.pt", "optimizer.pt", "rng_state.pth"])
def test_pickle_payload_is_refused(tmp_path: Path, train_objects: Any, victim: str) -> None:
    model, opt, _ = train_objects(0)
    ckpt = Checkpointer(tmp_path / "ck", keep_last=2)
    ckpt.save(1, model=model, optimizer=opt, extra_state={"tag": "old"})
    ckpt.save(2, model=model, optimizer=opt, extra_state={"tag": "new"})
    marker = tmp_path / "pwned"
    target = tmp_path / "ck" / "step2" / victim
    payload = {"step": 2, "evil": _Exploit(str(marker))}
    torch.save(payload, target)
    # the raw loader refuses it ...
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        torch.load(target, weights_only=True)
    # ... and resume skips the tampered checkpoint with a warning, falling back to the older one
    with pytest.warns(RuntimeWarning, match="skipping checkpoint 'step2'"):
        result = ckpt.resume(model=model, optimizer=opt)
    assert result is not None
    assert result.extra_state == {"tag": "old"}
    assert not marker.exists()


def test_pickle_payload_with_unchanged_size_is_refused(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path / "ck", keep_last=2)
    for step in (1, 2):
        ckpt.save(step, model=tiny_net(), extra_state={"notes": "x" * 4096})
    marker = tmp_path / "pwned"
    target = tmp_path / "ck" / "step2" / "hfbridge_state.pt"
    _tamper(target, {"step": 2, "evil": _Exploit(str(marker))})
    manifest = json.loads(
        (tmp_path / "ck" / "manifest.json").read_text()
    )  # the tamperer fixes the checksum too
    manifest["checkpoints"][-1]["files"][target.name]["xxh3_64"] = xxhash.xxh3_64_hexdigest(
        target.read_bytes()
    )
    (tmp_path / "ck" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(RuntimeWarning, match=r"skipping checkpoint 'step2': .*(Unpickling|Weights only)"):
        result = ckpt.resume(model=tiny_net())
    assert result is not None
    assert result.step == 1
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------- corrupt files


@pytest.mark.parametrize(
    ("victim", "damage"),
    [("model.safetensors", "truncate"), ("hfbridge_state.pt", "garbage"), ("model.safetensors", "delete")],
)
def test_corrupt_newest_checkpoint_is_skipped(
    tmp_path: Path, tiny_net: Any, victim: str, damage: str
) -> None:
    ckpt = _two_checkpoints(tmp_path, tiny_net)
    target = tmp_path / "ck" / "step2" / victim
    if damage == "truncate":
        with open(target, "r+b") as fh:
            fh.truncate(target.stat().st_size // 2)
    elif damage == "garbage":
        target.write_bytes(os.urandom(target.stat().st_size))
    else:
        target.unlink()
    model = tiny_net(7)
    with pytest.warns(RuntimeWarning, match="skipping checkpoint 'step2'"):
        result = ckpt.resume(model=model)
    assert result is not None
    assert result.step == 1
    assert torch.equal(model.emb.weight, tiny_net(1).emb.weight)


def test_all_corrupt_returns_none(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = _two_checkpoints(tmp_path, tiny_net)
    for step in (1, 2):
        (tmp_path / "ck" / f"step{step}" / "hfbridge_state.pt").write_bytes(b"junk")
    with pytest.warns(RuntimeWarning, match="skipping checkpoint"):
        assert ckpt.resume(model=tiny_net()) is None


# ---------------------------------------------------------------------------------------------- disk full


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_enospc_mid_write_cleans_up_and_keeps_earlier(
    tmp_path: Path, train_objects: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt, sched = train_objects(0)
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(1, model=model, optimizer=opt, scheduler=sched)
    before = _snapshot(tmp_path)
    real_save = torch.save
    calls = {"n": 0}

    def filling_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the optimizer went through; the scheduler hits a full disk half-way
            f.write(b"partial bytes")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", filling_save)
    with pytest.raises(
        OSError, match=r"filled up while writing checkpoint 'step2'.*earlier checkpoints are intact"
    ) as info:
        ckpt.save(2, model=model, optimizer=opt, scheduler=sched)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.setattr(torch, "save", real_save)
    assert _snapshot(tmp_path) == before  # no temp folder left, step1 and the manifest untouched
    result = ckpt.resume(model=model, optimizer=opt, scheduler=sched)
    assert result is not None
    assert result.step == 1


@pytest.mark.parametrize("writer", ["streaming", "safetensors"])
def test_enospc_in_safetensors_writer(
    tmp_path: Path, tiny_net: Any, monkeypatch: pytest.MonkeyPatch, writer: str
) -> None:
    import safetensors.torch

    import hfbridge.callbacks._atomic as hashed

    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(1, model=tiny_net())
    before = _snapshot(tmp_path)

    def full(model: Any, filename: str, *a: Any, **k: Any) -> None:
        Path(filename).write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_midway(out: Any, *a: Any, **k: Any) -> None:  # the file takes the header, then the disk is full
        out.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    if writer == "safetensors":  # weights the streaming writer cannot take go through safetensors itself
        monkeypatch.setattr(hashed, "model_tensors", lambda module: None)
        monkeypatch.setattr(safetensors.torch, "save_model", full)
    else:
        monkeypatch.setattr(hashed, "write_safetensors", full_midway)
    with pytest.raises(OSError, match="filled up"):
        ckpt.save(2, model=tiny_net())
    assert _snapshot(tmp_path) == before


def test_size_estimate_refuses_before_writing(
    tmp_path: Path, train_objects: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt, _ = train_objects(0)
    ckpt = Checkpointer(tmp_path, keep_last=1)
    ckpt.save(1, model=model, optimizer=opt)
    before = _snapshot(tmp_path)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 4096, 4096))
    with pytest.raises(
        OSError, match=r"not enough disk space for the checkpoint: it needs about .* but only 4.0 KiB"
    ):
        ckpt.save(2, model=model, optimizer=opt)
    assert _snapshot(tmp_path) == before
    assert Checkpointer(tmp_path, check_disk_space=False).save(2, model=model, optimizer=opt) is not None


# ---------------------------------------------------------------------------------------------- kill -9


_WORKER = textwrap.dedent(
    """
    import sys, random
    sys.path.insert(0, {src!r})
    import torch
    from hfbridge.callbacks import Checkpointer

    torch.set_num_threads(1)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ckpt = Checkpointer({dirpath!r}, monitor="loss", keep_best=2, keep_last=2)
    latest = ckpt.latest()
    step = 0 if latest is None else int(latest.name[4:]) + 1
    rng = random.Random(step)
    print("ready", flush=True)
    while True:
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(step))  # the weights encode the step, so a reader can check consistency
        loss = float("nan") if rng.random() < 0.15 else rng.random()
        ckpt.save(step, model=model, optimizer=opt, metrics={{"loss": loss}}, extra_state={{"step": step}})
        print("saved", step, flush=True)
        step += 1
    """
)


def _check_consistent(dirpath: Path) -> int:
    """Everything the manifest lists is complete and loads; the newest loads with matching weights."""
    manifest = json.loads((dirpath / "manifest.json").read_text())
    for entry in manifest["checkpoints"]:
        for name, rec in entry["files"].items():  # every file there, with its recorded size and checksum
            data = (dirpath / entry["name"] / name).read_bytes()
            assert (len(data), xxhash.xxh3_64_hexdigest(data)) == (rec["size"], rec["xxh3_64"]), entry["name"]
    assert len(manifest["checkpoints"]) <= 2 + 2 + 1
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the newest listed checkpoint must load: no skipping
        result = Checkpointer(dirpath, monitor="loss", keep_best=2, keep_last=2).resume(
            model=model, optimizer=opt
        )
    assert result is not None
    assert result.extra_state == {"step": result.step}
    assert all(torch.all(p == result.step) for p in model.parameters())
    return result.step


@pytest.mark.slow
def test_kill_9_mid_save_never_breaks_the_latest_checkpoint(tmp_path: Path) -> None:
    dirpath = tmp_path / "ck"
    script = tmp_path / "worker.py"
    script.write_text(_WORKER.format(src=str(SRC_DIR), dirpath=str(dirpath)))
    rng = random.Random(0)
    total_saves, kills, last_step = 0, 0, -1
    deadline = time.monotonic() + 120  # a safety net: ~15 s on 2 free cores
    while (total_saves < 20 or kills < 5) and time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        # let a random number of saves complete, then kill at a random moment inside the next ones
        seen = rng.randint(1, 7)
        for _ in range(seen):
            assert proc.stdout.readline().startswith("saved")
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        kills += 1
        total_saves += seen + out.count("saved")
        if (dirpath / "manifest.json").exists():
            step = _check_consistent(dirpath)
            assert step >= last_step
            last_step = step
    assert kills >= 5
    assert total_saves >= 20, f"only {total_saves} saves in {kills} runs"
