"""Checkpointer: format, retention (best-K / last-N), naming, recovery and argument checks."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.callbacks import Checkpointer, EarlyStopping
from tests.callbacks.conftest import ShuffleSampler


def _names(ckpt: Checkpointer) -> list[str]:
    return [c["name"] for c in ckpt.checkpoints()]


def _save(ckpt: Checkpointer, step: int, model: Any, value: float | None = None, **kw: Any) -> Path | None:
    metrics = None if value is None else {"loss": value}
    return ckpt.save(step, model=model, metrics=metrics, **kw)


def test_round_trip_restores_everything(tmp_path: Path, train_objects: Any) -> None:
    model, opt, sched = train_objects(0)
    sampler = ShuffleSampler(10, seed=3)
    it = iter(sampler)
    [next(it) for _ in range(4)]
    es = EarlyStopping("loss", patience=5)
    es.update({"loss": 1.0})
    es.update({"loss": 2.0})
    ckpt = Checkpointer(tmp_path / "ck")
    random.seed(11)
    np.random.seed(12)  # noqa: NPY002 - resume must restore the legacy global RNG
    torch.manual_seed(13)
    path = ckpt.save(
        7,
        model=model,
        optimizer=opt,
        scheduler=sched,
        loader=sampler,
        epoch=1,
        metrics={"loss": torch.tensor(0.5), "note": "text is ignored"},
        extra_state={"tokens_seen": 123, "hist": [1.5, 2.5]},
        callbacks={"early_stopping": es},
    )
    assert path == tmp_path / "ck" / "step7"
    expected = (random.random(), np.random.rand(), torch.rand(1))  # noqa: NPY002
    # every non-weight file loads with weights_only=True; weights are safetensors
    files = sorted(os.listdir(path))
    assert files == sorted(
        [
            "checkpoint.json",
            "hfbridge_state.pt",
            "model.safetensors",
            "optimizer.pt",
            "rng_state.pth",
            "scheduler.pt",
        ]
    )
    for name in files:
        if name.endswith((".pt", ".pth")):
            torch.load(path / name, weights_only=True)

    model2, opt2, sched2 = train_objects(1)
    sampler2, es2 = ShuffleSampler(10, seed=0), EarlyStopping("loss", patience=5)
    result = ckpt.resume(
        model=model2,
        optimizer=opt2,
        scheduler=sched2,
        loader=sampler2,
        callbacks={"early_stopping": es2},
    )
    assert result is not None
    assert (result.step, result.epoch, result.path) == (7, 1, path)
    assert result.metrics == {"loss": 0.5}
    assert result.extra_state == {"tokens_seen": 123, "hist": [1.5, 2.5]}
    for (k, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), k
    assert model2.out.weight.data_ptr() == model2.emb.weight.data_ptr()  # still tied
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert sched2.state_dict() == sched.state_dict()
    assert sampler2.state_dict() == {"seed": 3, "epoch": 0, "consumed": 4}
    assert es2.state_dict() == es.state_dict()
    assert (random.random(), np.random.rand()) == expected[:2]  # noqa: NPY002
    assert torch.equal(torch.rand(1), expected[2])


def test_weights_are_plain_safetensors(tmp_path: Path, tiny_net: Any) -> None:
    from safetensors.torch import load_file

    path = Checkpointer(tmp_path).save(0, model=tiny_net())
    assert path is not None
    tensors = load_file(str(path / "model.safetensors"))
    assert "scale" in tensors
    assert len({"emb.weight", "out.weight"} & set(tensors)) == 1  # the tied weight is stored once


def test_keep_last_without_monitor(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    model = tiny_net()
    for step in range(5):
        _save(ckpt, step, model)
    assert _names(ckpt) == ["step3", "step4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "step3", "step4"]
    assert ckpt.latest() == tmp_path / "step4"
    assert ckpt.best() is None


@pytest.mark.parametrize(
    ("losses", "total", "kept"),
    [
        (
            [5.0, 1.0, 4.0, 3.0, 2.0],
            3,
            ["step1", "step3", "step4"],
        ),  # best outside the newest: best + 2 newest
        ([5.0, 4.0, 3.0, 1.0, 2.0], 3, ["step2", "step3", "step4"]),  # best among the newest 3: those 3
        ([5.0, 1.0, 4.0, 3.0, 2.0], 1, ["step1", "step4"]),  # the best and the newest always stay
        ([5.0, 4.0, 3.0, 2.0, 1.0], 1, ["step4"]),  # the newest is the best
    ],
)
def test_keep_total_caps_the_union_as_hf_save_total_limit(
    tmp_path: Path, tiny_net: Any, losses: list[float], total: int, kept: list[str]
) -> None:
    ckpt = Checkpointer(tmp_path, monitor="loss", keep_best=1, keep_last=total, keep_total=total)
    model = tiny_net()
    for step, v in enumerate(losses):
        _save(ckpt, step, model, v)
    assert _names(ckpt) == kept
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "manifest.json") == kept


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_keep_total(tmp_path: Path, bad: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="keep_total"):
        Checkpointer(tmp_path, keep_total=bad)


def test_best_k_with_ties_and_nan_across_resume(tmp_path: Path, tiny_net: Any) -> None:
    model = tiny_net()
    values = [3.0, 2.0, math.nan, 2.0, 5.0]
    ckpt = Checkpointer(tmp_path, monitor="loss", keep_best=2, keep_last=1)
    for step, v in enumerate(values):
        _save(ckpt, step, model, v)
    # best: 2.0 at step 1 (the tie at step 3 does not displace it), then 2.0 at step 3; last: step 4
    assert _names(ckpt) == ["step1", "step3", "step4"]
    assert ckpt.best() == tmp_path / "step1"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["best"] == ["step1", "step3"]
    assert manifest["last"] == ["step4"]

    # a new process: the bookkeeping comes back from the manifest
    again = Checkpointer(tmp_path, monitor="loss", keep_best=2, keep_last=1)
    _save(again, 5, model, math.nan)  # NaN ranks worst: kept only as the last one
    assert _names(again) == ["step1", "step3", "step5"]
    _save(again, 6, model, 1.0)
    assert _names(again) == ["step1", "step6"]
    assert again.best() == tmp_path / "step6"


def test_mode_max_and_no_write_when_dropped(tmp_path: Path, tiny_net: Any) -> None:
    model = tiny_net()
    ckpt = Checkpointer(tmp_path, monitor="acc", mode="max", keep_best=1, keep_last=0)
    assert ckpt.save(0, model=model, metrics={"acc": 0.5}) is not None
    assert ckpt.save(1, model=model, metrics={"acc": 0.4}) is None  # would be evicted at once: not written
    assert not (tmp_path / "step1").exists()
    assert ckpt.save(2, model=model, metrics={"acc": 0.7}) == tmp_path / "step2"
    assert _names(ckpt) == ["step2"]


def test_nan_scores_round_trip_in_manifest(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, monitor="loss", keep_best=1, keep_last=1)
    _save(ckpt, 0, tiny_net(), math.nan)
    records = ckpt.checkpoints()
    assert math.isnan(records[0]["score"])
    assert '"nan"' in (tmp_path / "manifest.json").read_text()  # strict JSON, no bare NaN


def test_schedule(tmp_path: Path, tiny_net: Any) -> None:
    model = tiny_net()
    ckpt = Checkpointer(tmp_path, keep_last=None, every_n_steps=3, every_n_epochs=2)
    written = [step for step in range(1, 8) if ckpt.save(step, model=model) is not None]
    assert written == [3, 6]
    assert ckpt.save(7, model=model, epoch=0, epoch_end=True) is None
    assert ckpt.save(7, model=model, epoch=1, epoch_end=True) is not None
    assert ckpt.save(8, model=model, force=True) is not None


def format_name(template: str, step: int, epoch: Any, metrics: dict[str, Any]) -> str:
    return Checkpointer("unused", filename=template).format_name(step, epoch, metrics)


def test_filename_template_is_sanitized(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, monitor="loss", filename="e{epoch}-s{step}-loss{loss:.3f}")
    path = ckpt.save(4, model=tiny_net(), metrics={"loss": 0.12345}, epoch=2)
    assert path == tmp_path / "e2-s4-loss0.123"
    assert format_name("v{x}", 1, None, {"x": -1.5}) == "v-1.5"
    assert format_name("a{x}", 1, None, {"x": math.inf}) == "ainf"
    assert "/" not in format_name("{x}", 1, None, {"x": float("nan")})
    with pytest.raises(ValueError, match=r"cannot be filled.*'acc'"):
        format_name("s{step}-{acc}", 1, None, {"loss": 1.0})


def test_filename_values_cannot_traverse() -> None:
    values: dict[str, Any] = {"tag": "a/b\\c", "up": "../../etc/passwd"}
    assert format_name("s{step}-{tag}", 1, None, values) == "s1-a_b_c"
    with pytest.raises(ValueError, match="unsafe folder name"):
        format_name("{up}", 1, None, values)
    with pytest.raises(ValueError, match="unsafe folder name"):
        format_name("{step}..{step}", 1, None, {})


def test_never_touches_foreign_files(tmp_path: Path, tiny_net: Any) -> None:
    (tmp_path / "step0").mkdir()
    (tmp_path / "step0" / "mine.txt").write_text("user data")
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "checkpoint-5").mkdir()  # e.g. an HF Trainer checkpoint
    ckpt = Checkpointer(tmp_path, keep_last=1)
    with pytest.raises(FileExistsError, match="not written by this Checkpointer"):
        ckpt.save(0, model=tiny_net())
    for step in (1, 2, 3):
        ckpt.save(step, model=tiny_net())
    assert (tmp_path / "step0" / "mine.txt").read_text() == "user data"
    assert (tmp_path / "notes.txt").exists()
    assert (tmp_path / "checkpoint-5").is_dir()
    assert _names(ckpt) == ["step3"]


def test_recovers_leftovers_and_adopts_published_checkpoint(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=3)
    model = tiny_net()
    for step in range(3):
        ckpt.save(step, model=model)
    manifest = (tmp_path / "manifest.json").read_text()
    ckpt.save(3, model=model)
    # crash simulation: step3 renamed into place but the manifest update was lost; plus leftovers
    (tmp_path / "manifest.json").write_text(manifest)
    (tmp_path / ".tmp-hfbridge-step4-abc").mkdir()
    (tmp_path / ".trash-hfbridge-step0-abc").mkdir()
    assert ckpt.latest() == tmp_path / "step2"  # readers trust only the manifest
    shutil.rmtree(tmp_path / "step1")
    with pytest.warns(RuntimeWarning) as record:
        ckpt.save(4, model=model)
    # step0 was evicted by the lost update and step1 deleted by hand: both are forgotten, with a warning
    assert sorted(str(w.message).split(":")[0] for w in record) == [
        "forgetting checkpoint 'step0'",
        "forgetting checkpoint 'step1'",
    ]
    assert _names(ckpt) == ["step2", "step3", "step4"]
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


def test_corrupt_manifest_is_rebuilt_from_markers(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in range(2):
        ckpt.save(step, model=tiny_net())
    (tmp_path / "manifest.json").write_text("{ not json")
    with pytest.warns(RuntimeWarning, match="rebuilding it from checkpoint markers"):
        assert ckpt.latest() == tmp_path / "step1"


def test_a_lost_manifest_is_reported_once_per_checkpointer(tmp_path: Path, tiny_net: Any) -> None:
    import warnings

    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in range(2):
        ckpt.save(step, model=tiny_net())
    (tmp_path / "manifest.json").unlink()  # e.g. checkpoint folders copied without it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert ckpt.latest() == tmp_path / "step1"
        assert [c["name"] for c in ckpt.checkpoints()] == ["step0", "step1"]
        assert ckpt.resume(model=tiny_net()) is not None
    said = [str(w.message) for w in caught if "rebuilding it" in str(w.message)]
    assert len(said) == 1
    assert "is missing; rebuilding it from checkpoint markers (2 found)" in said[0]
    ckpt.save(2, model=tiny_net())  # the save writes the rebuilt manifest
    assert (tmp_path / "manifest.json").is_file()
    (tmp_path / "manifest.json").unlink()  # lost again: said again
    with pytest.warns(RuntimeWarning, match=r"is missing; rebuilding it from checkpoint markers \(2 found\)"):
        assert ckpt.latest() == tmp_path / "step2"


def test_resume_without_checkpoints_returns_none(tmp_path: Path, tiny_net: Any) -> None:
    assert Checkpointer(tmp_path / "empty").resume(model=tiny_net()) is None
    assert Checkpointer(tmp_path / "empty").latest() is None


def test_resume_asking_for_unsaved_part_is_an_error(tmp_path: Path, train_objects: Any) -> None:
    model, opt, _ = train_objects(0)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(0, model=model)
    with pytest.raises(ValueError, match="saved without `optimizer=`"):
        ckpt.resume(model=model, optimizer=opt)


def test_resume_specific_path(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, keep_last=2)
    for step in range(2):
        ckpt.save(step, model=tiny_net(step))
    model = tiny_net(5)
    result = ckpt.resume(model=model, path=tmp_path / "step0")
    assert result is not None
    assert result.step == 0
    assert torch.equal(model.emb.weight, tiny_net(0).emb.weight)


def test_unsafe_state_is_refused_before_writing(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path)
    with pytest.raises(TypeError, match=r"`extra_state\['arr'\]` is a numpy.ndarray"):
        ckpt.save(0, model=tiny_net(), extra_state={"arr": np.zeros(3)})
    with pytest.raises(TypeError, match="must have state_dict"):
        ckpt.save(0, model=tiny_net(), callbacks={"x": object()})
    with pytest.raises(TypeError, match=r"`model` must be a torch\.nn\.Module"):
        ckpt.save(0, model="bert")
    assert list(tmp_path.iterdir()) in ([], [tmp_path / "manifest.json"])


def test_monitor_must_be_in_metrics(tmp_path: Path, tiny_net: Any) -> None:
    ckpt = Checkpointer(tmp_path, monitor="eval_loss")
    with pytest.raises(ValueError, match="must contain the monitored key 'eval_loss'"):
        ckpt.save(0, model=tiny_net(), metrics={"loss": 1.0})
    with pytest.raises(TypeError, match="`metrics` must be a mapping"):
        ckpt.save(0, model=tiny_net(), metrics=[1.0])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"dirpath": 3}, TypeError, "`dirpath` must be a str or pathlib.Path"),
        ({"mode": "lowest"}, ValueError, "`mode` must be one of 'min', 'max'; got 'lowest'"),
        ({"keep_best": -1}, ValueError, "`keep_best` must be a non-negative integer"),
        ({"keep_last": 1.5}, TypeError, "`keep_last` must be a non-negative integer or None"),
        ({"keep_last": 0}, ValueError, "`keep_last=0` keeps no checkpoint"),
        ({"every_n_steps": 0}, ValueError, "`every_n_steps` must be a positive integer"),
        ({"every_n_epochs": "2"}, TypeError, "`every_n_epochs` must be a positive integer"),
        ({"filename": "../x{step}"}, ValueError, "`filename` must be a non-empty folder-name template"),
        ({"filename": ".hidden"}, ValueError, "not starting with '.'"),
        ({"monitor": 1}, TypeError, "`monitor` must be str"),
        ({"check_disk_space": "yes"}, TypeError, "`check_disk_space` must be bool"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any], exc: type, match: str) -> None:
    kwargs.setdefault("dirpath", tmp_path)
    dirpath = kwargs.pop("dirpath")
    with pytest.raises(exc, match=match):
        Checkpointer(dirpath, **kwargs)


def test_bad_step(tmp_path: Path, tiny_net: Any) -> None:
    with pytest.raises(ValueError, match="`step` must be a non-negative integer"):
        Checkpointer(tmp_path).save(-1, model=tiny_net())


def test_scaler_round_trip(tmp_path: Path, tiny_net: Any) -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=512.0, growth_interval=7)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(0, model=tiny_net(), scaler=scaler)
    fresh = torch.amp.GradScaler("cpu")
    ckpt.resume(model=tiny_net(), scaler=fresh)
    assert fresh.state_dict() == scaler.state_dict()
    assert fresh.get_scale() == 512.0


def test_wrapped_models_are_unwrapped(tmp_path: Path, tiny_net: Any) -> None:
    model = tiny_net(3)
    ckpt = Checkpointer(tmp_path)
    ckpt.save(0, model=torch.nn.DataParallel(model))
    fresh = tiny_net(4)
    ckpt.resume(model=torch.nn.DataParallel(fresh))
    assert torch.equal(fresh.emb.weight, model.emb.weight)
