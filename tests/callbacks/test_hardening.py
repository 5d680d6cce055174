"""A checkpoint folder is a trust boundary: names read back are validated, refused checkpoints are set aside, bit
rot is caught, disk-full errors are uniform, and bad inputs fail early with an error naming the argument."""

from __future__ import annotations

import errno
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from hfbridge.callbacks import Checkpointer, EarlyStopping


def _manifest(dirpath: Path) -> dict[str, Any]:
    return json.loads((dirpath / "manifest.json").read_text())


def _write_manifest(dirpath: Path, data: dict[str, Any]) -> None:
    (dirpath / "manifest.json").write_text(json.dumps(data))


# ------------------------------------------------------------------------------------------- path traversal


@pytest.mark.parametrize("evil", ["../victim", "ABS", "step1/../../victim", "..", "."])
def test_manifest_entry_can_never_delete_outside_dirpath(tmp_path: Path, tiny_net: Any, evil: str) -> None:
    dirpath = tmp_path / "x" / "ckpts"
    victim = tmp_path / "x" / "victim"
    victim.mkdir(parents=True)
    (victim / "precious.txt").write_text("keep me")
    name = str(victim) if evil == "ABS" else evil
    ckpt = Checkpointer(dirpath, keep_best=1, keep_last=1)
    ckpt.save(1, model=tiny_net())
    data = _manifest(dirpath)
    forged = dict(data["checkpoints"][0], name=name, seq=-1, files={})  # nothing to check: "complete"
    data["checkpoints"].append(forged)
    _write_manifest(dirpath, data)
    with pytest.warns(RuntimeWarning, match="not a checkpoint name"):
        ckpt.save(2, model=tiny_net())
    ckpt.save(3, model=tiny_net())
    assert (victim / "precious.txt").read_text() == "keep me"
    assert [e["name"] for e in ckpt.checkpoints()] == ["step3"]


def test_forged_file_name_in_entry_is_refused(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    ckpt.save(1, model=tiny_net(1))
    ckpt.save(2, model=tiny_net(2))
    data = _manifest(tmp_path)
    data["checkpoints"][-1]["files"]["../../outside"] = data["checkpoints"][-1]["files"]["model.safetensors"]
    _write_manifest(tmp_path, data)
    with pytest.warns(RuntimeWarning, match="not a checkpoint name"):
        assert ckpt.resume(model=tiny_net()).step == 1


# ------------------------------------------------------------------------------------------- lost manifest


def test_deleted_manifest_is_rebuilt_from_markers(tmp_path: Path, train_objects: Any) -> None:
    model, opt, _ = train_objects(0)
    ckpt = Checkpointer(tmp_path, keep_last=None)
    ckpt.save(1, model=model, optimizer=opt)
    ckpt.save(2, model=model, optimizer=opt, extra_state={"tag": 2})
    (tmp_path / "manifest.json").unlink()
    with pytest.warns(RuntimeWarning, match=r"rebuilding it from checkpoint markers \(2 found\)"):
        result = ckpt.resume(model=model, optimizer=opt)
    assert result is not None
    assert (result.step, result.extra_state) == (2, {"tag": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once above: the save that writes the rebuilt manifest is quiet
        assert ckpt.save(2, model=model, optimizer=opt) is not None  # the same name: replaced, not refused
    ckpt.save(3, model=model, optimizer=opt)
    assert [e["step"] for e in ckpt.checkpoints()] == [1, 2, 3]
    assert _manifest(tmp_path)["checkpoints"]  # written again


# ------------------------------------------------------------------------------------------- quarantine


def test_corrupt_newest_is_set_aside_so_the_run_can_save_again(tmp_path: Path, train_objects: Any) -> None:
    model, opt, _ = train_objects(0)
    ckpt = Checkpointer(tmp_path, keep_last=3)
    for step in (1, 2, 3):
        ckpt.save(step, model=model, optimizer=opt)
    victim = tmp_path / "step3" / "optimizer.pt"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.warns(
        RuntimeWarning, match=r"skipping checkpoint 'step3': .*optimizer\.pt.*set it aside as '\.quarantine-"
    ):
        result = ckpt.resume(model=model, optimizer=opt)
    assert result is not None
    assert result.step == 2
    aside = [p for p in tmp_path.iterdir() if p.name.startswith(".quarantine-")]
    assert len(aside) == 1
    assert (aside[0] / "optimizer.pt").is_file()
    assert ckpt.save(3, model=model, optimizer=opt) == tmp_path / "step3"
    for step in (4, 5, 6):
        ckpt.save(step, model=model, optimizer=opt)
    assert aside[0].is_dir()  # a set-aside checkpoint is never deleted by the store
    assert ckpt.resume(model=model, optimizer=opt).step == 6


def test_setting_aside_on_resume_deletes_no_other_checkpoint(tmp_path: Path, train_objects: Any) -> None:
    # a resume changes nothing but the refused folder, even from a Checkpointer with tighter retention
    # (here the default keep_last=1) than the run's: valid older checkpoints used to be evicted
    model, opt, _ = train_objects(0)
    writer = Checkpointer(tmp_path, keep_last=None)
    for step in (1, 2, 3):
        writer.save(step, model=model, optimizer=opt)
    victim = tmp_path / "step3" / "optimizer.pt"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.warns(RuntimeWarning, match=r"skipping checkpoint 'step3'"):
        result = Checkpointer(tmp_path).resume(model=model, optimizer=opt)
    assert result is not None
    assert result.step == 2
    assert (tmp_path / "step1").is_dir()
    assert (tmp_path / "step2").is_dir()
    assert [e["step"] for e in writer.checkpoints()] == [1, 2]


def test_incomplete_recorded_folder_is_set_aside_by_the_next_save(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=3)
    ckpt.save(1, model=tiny_net())
    ckpt.save(2, model=tiny_net())
    (tmp_path / "step2" / "hfbridge_state.pt").unlink()
    with pytest.warns(
        RuntimeWarning, match=r"skipping checkpoint 'step2': .*hfbridge_state\.pt.*set it aside"
    ):
        assert ckpt.save(2, model=tiny_net()) == tmp_path / "step2"
    assert [e["step"] for e in ckpt.checkpoints()] == [1, 2]


# ------------------------------------------------------------------------------------------- bit rot


@pytest.mark.parametrize("victim", ["model.safetensors", "optimizer.pt"])
def test_bit_rot_is_detected_and_resume_falls_back(tmp_path: Path, train_objects: Any, victim: str) -> None:
    model, opt, _ = train_objects(0)
    ckpt = Checkpointer(tmp_path, keep_last=2)
    ckpt.save(1, model=model, optimizer=opt, extra_state={"tag": 1})
    ckpt.save(2, model=model, optimizer=opt, extra_state={"tag": 2})
    path = tmp_path / "step2" / victim
    data = bytearray(path.read_bytes())
    mid = len(data) - 64 if victim == "model.safetensors" else len(data) // 2
    data[mid : mid + 16] = bytes(b ^ 0xFF for b in data[mid : mid + 16])
    path.write_bytes(bytes(data))
    with pytest.warns(RuntimeWarning, match=rf"{victim}.*checksum"):
        result = ckpt.resume(model=model, optimizer=opt)
    assert result is not None
    assert result.extra_state == {"tag": 1}
    assert ckpt.save(2, model=model, optimizer=opt) is not None


def test_manifest_records_a_checksum_of_every_file(tmp_path: Path, tiny_net: Any) -> None:
    Checkpointer(tmp_path).save(1, model=tiny_net())
    files = _manifest(tmp_path)["checkpoints"][0]["files"]
    assert set(files) >= {"model.safetensors", "hfbridge_state.pt", "rng_state.pth"}
    assert all(set(v) == {"size", "xxh3_64"} for v in files.values())


# ------------------------------------------------------------------------------------------- disk full


def test_torch_save_short_write_becomes_enospc(
    tmp_path: Path, train_objects: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, opt, _ = train_objects(0)
    ckpt = Checkpointer(tmp_path, keep_last=1)

    def short_write(obj: Any, f: Any, *a: Any, **k: Any) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4736 vs 4672")

    monkeypatch.setattr(torch, "save", short_write)
    with pytest.raises(OSError, match=r"filled up while writing checkpoint 'step1'") as info:
        ckpt.save(1, model=model, optimizer=opt)
    assert info.value.errno == errno.ENOSPC
    assert info.value.filename == str(tmp_path / "step1")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_safetensors_error_disk_full_becomes_enospc(
    tmp_path: Path, tiny_net: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights the streaming writer cannot take (see _atomic.model_tensors) go through safetensors itself."""
    import safetensors.torch
    from safetensors import SafetensorError

    import hfbridge.callbacks._atomic as hashed

    def full(*a: Any, **k: Any) -> None:
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, ... })")

    monkeypatch.setattr(hashed, "model_tensors", lambda module: None)
    monkeypatch.setattr(safetensors.torch, "save_model", full)
    with pytest.raises(OSError, match="filled up") as info:
        Checkpointer(tmp_path).save(1, model=tiny_net())
    assert info.value.errno == errno.ENOSPC
    assert isinstance(info.value.__cause__, SafetensorError)


# ------------------------------------------------------------------------------------------- meta device


def test_resume_into_meta_model_is_an_error(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, model=tiny_net())
    with torch.device("meta"):
        meta = tiny_net()
    with pytest.raises(
        ValueError, match=r"`model` has tensors on the meta device \(e\.g\. '(scale|emb\.weight)'\)"
    ):
        ckpt.resume(model=meta)


def test_saving_meta_model_is_an_error(tmp_path: Path, tiny_net: Any) -> None:
    with torch.device("meta"):
        meta = tiny_net()
    with pytest.raises(ValueError, match=r"`model` has tensors on the meta device"):
        Checkpointer(tmp_path).save(1, model=meta)
    assert not any(tmp_path.iterdir())


def test_meta_metric_is_an_error(tmp_path: Path, tiny_net: Any) -> None:
    loss = torch.tensor(0.5, device="meta")
    with pytest.raises(ValueError, match=r"`metrics\['eval_loss'\]` is a tensor on the meta device"):
        Checkpointer(tmp_path, monitor="eval_loss").save(1, model=tiny_net(), metrics={"eval_loss": loss})
    with pytest.raises(ValueError, match=r"`metrics\['eval_loss'\]` is a tensor on the meta device"):
        EarlyStopping("eval_loss").update({"eval_loss": loss})


# ------------------------------------------------------------------------------------------- inputs


@pytest.mark.parametrize(
    "template", ["s{step:.2q}", "s{step[0]}", "s{step.real}", "s{step!z}", "s{", "s{:d}"]
)
def test_bad_filename_template_is_refused_at_construction(tmp_path: Path, template: str) -> None:
    with pytest.raises(ValueError, match=r"`filename`"):
        Checkpointer(tmp_path, filename=template)


def test_metric_fields_in_filename_are_checked_as_numbers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"`filename`.*eval_loss"):
        Checkpointer(tmp_path, filename="s{eval_loss:d}")
    Checkpointer(tmp_path, filename="s{step:05d}-{eval_loss:.3f}-e{epoch}")  # fine


@pytest.mark.parametrize("method", ["save", "resume"])
def test_callbacks_given_as_a_list_is_a_type_error(tmp_path: Path, tiny_net: Any, method: str) -> None:
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, model=tiny_net())
    es = EarlyStopping("eval_loss")
    call = (
        (lambda: ckpt.save(2, model=tiny_net(), callbacks=[es]))
        if method == "save"
        else (lambda: ckpt.resume(model=tiny_net(), callbacks=[es]))
    )
    with pytest.raises(TypeError, match=r"`callbacks` must be a mapping of name -> object.*got list"):
        call()


def test_extra_files_must_be_callable(tmp_path: Path, tiny_net: Any) -> None:
    with pytest.raises(TypeError, match=r"`extra_files` must be a callable .*got list"):
        Checkpointer(tmp_path).save(1, model=tiny_net(), extra_files=["config.json"])  # type: ignore[arg-type]
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # refused before anything was written


def test_extra_files_are_checksummed_and_published_with_the_checkpoint(tmp_path: Path, tiny_net: Any) -> None:
    path = Checkpointer(tmp_path).save(
        1, model=tiny_net(), extra_files=lambda folder: (folder / "config.json").write_text("{}")
    )
    assert path is not None
    assert (path / "config.json").read_text() == "{}"
    manifest = _manifest(tmp_path)
    assert "config.json" in manifest["checkpoints"][0]["files"]


def test_dirpath_that_is_a_file_is_refused_at_construction(tmp_path: Path) -> None:
    (tmp_path / "ckpts").write_text("not a folder")
    with pytest.raises(ValueError, match=r"`dirpath` must be a folder .* is a file"):
        Checkpointer(tmp_path / "ckpts")
