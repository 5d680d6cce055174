"""FSDP2-sharded models through ``Checkpointer``: gloo processes on CPU, DCP shards, exact and resharded resume."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch

from hfbridge.callbacks import Checkpointer, export_full_weights
from hfbridge.callbacks._sharded import is_sharded
from tests.conftest import end_gloo_worker

SLOW = [pytest.mark.distributed, pytest.mark.slow]
TASK = {"bert": "sequence-classification", "llama": "causal-lm"}
VOCAB = 120
STEPS, SAVE_AT = 6, 3


class _Tok:
    """What ``tiny_config`` reads from a tokenizer: no tokenizer training in every worker process."""

    pad_token_id, bos_token_id, eos_token_id, cls_token_id, sep_token_id = 0, 1, 2, 1, 2

    def __len__(self) -> int:
        return VOCAB


# ------------------------------------------------------------------------------------------ worker side


def _init(rank: int, world: int, init_file: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )


def _model(arch: str, *, shard: bool = True, freeze: str | None = None) -> Any:
    from torch.distributed.fsdp import fully_shard

    from tests.conftest import build_tiny_model

    model = build_tiny_model(arch, TASK[arch], _Tok(), seed=0)
    model.train()
    if freeze is not None:
        import hfbridge

        hfbridge.freeze(model, freeze)
    if shard:
        layers = model.bert.encoder.layer if arch == "bert" else model.model.layers
        for layer in layers:
            fully_shard(layer)
        fully_shard(model)
    return model


def _train_objects(model: Any) -> tuple[Any, Any]:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=0.01)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))


def _step(arch: str, model: Any, opt: Any, sched: Any, step: int, rank: int) -> None:
    g = torch.Generator().manual_seed(step * 100 + rank)
    ids = torch.randint(3, VOCAB, (2, 12), generator=g)
    labels = torch.randint(0, 3, (2,), generator=g) if arch == "bert" else ids
    torch.manual_seed(step * 7919 + rank)  # dropout
    model(input_ids=ids, labels=labels).loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def _full(model: Any) -> dict[str, torch.Tensor]:
    """Full weights (a collective for a sharded model)."""
    from torch.distributed.tensor import DTensor

    return {
        k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def _train_worker(rank: int, world: int, init_file: str, ckdir: str, out: str, arch: str, phase: str) -> None:
    import torch.distributed as dist

    from tests.callbacks.conftest import ShuffleSampler

    _init(rank, world, init_file)
    model = _model(arch)
    opt, sched = _train_objects(model)
    sampler = ShuffleSampler(10, seed=rank)
    ckpt = Checkpointer(ckdir, monitor="loss", keep_best=1, keep_last=1)
    first = 1
    if phase == "resume":
        result = ckpt.resume(model=model, optimizer=opt, scheduler=sched, loader=sampler)
        assert result is not None
        assert result.step == SAVE_AT
        assert sampler.state_dict() == {"seed": rank, "epoch": 0, "consumed": SAVE_AT}
        first = result.step + 1
    it = iter(sampler)
    for step in range(first, STEPS + 1):
        next(it)
        _step(arch, model, opt, sched, step, rank)
        if phase == "full" and step == SAVE_AT:
            ckpt.save(
                step, model=model, optimizer=opt, scheduler=sched, loader=sampler, metrics={"loss": 1.0}
            )
            weights = _full(model)
            if rank == 0:
                torch.save(weights, Path(out, f"{arch}-at-save.pt"))
    weights = _full(model)
    if rank == 0:
        torch.save(weights, Path(out, f"{arch}-{phase}.pt"))
    dist.barrier()
    end_gloo_worker()


def _reshard_worker(rank: int, world: int, init_file: str, ckdir: str, out: str, arch: str) -> None:
    import torch.distributed as dist

    _init(rank, world, init_file)
    model = _model(arch)
    opt, sched = _train_objects(model)
    result = Checkpointer(ckdir).resume(model=model, optimizer=opt, scheduler=sched)
    assert result is not None
    weights = _full(model)
    _step(arch, model, opt, sched, SAVE_AT + 1, rank)  # the optimizer state fits the new sharding
    if rank == 0:
        torch.save(weights, Path(out, f"{arch}-world{world}.pt"))
    dist.barrier()
    end_gloo_worker()


def _faults_worker(rank: int, world: int, init_file: str, ckdir: str, out: str) -> None:
    """Async saves, a failing background write, a rank killed mid-save; records what each rank saw."""
    import torch.distributed as dist
    from torch.distributed.checkpoint import FileSystemWriter

    _init(rank, world, init_file)
    arch = "llama"
    model = _model(arch, freeze="embeddings")
    frozen_before = _full(model)["model.embed_tokens.weight"]
    opt, sched = _train_objects(model)
    seen: dict[str, Any] = {}
    ckpt = Checkpointer(Path(ckdir, "async"), keep_last=3, async_save=True, sharded_timeout=15)
    _step(arch, model, opt, sched, 1, rank)
    started = time.perf_counter()
    seen["save_returned"] = ckpt.save(1, model=model, optimizer=opt, scheduler=sched)
    seen["visible_while_pending"] = len(ckpt.checkpoints())
    _step(arch, model, opt, sched, 2, rank)  # training goes on while the shards are written
    seen["trained_while_pending"] = time.perf_counter() - started
    published = ckpt.wait()
    seen["published"] = None if published is None else published.name
    seen["visible_after_wait"] = len(ckpt.checkpoints())
    weights = _full(model)
    seen["frozen_kept"] = torch.equal(weights["model.embed_tokens.weight"], frozen_before)
    seen["frozen_flags"] = not any(p.requires_grad for n, p in model.named_parameters() if "embed" in n)

    real_write = FileSystemWriter.write_data

    def failing_write(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError("disk on fire")

    if rank == 1:
        FileSystemWriter.write_data = failing_write  # type: ignore[method-assign]
    ckpt.save(2, model=model, optimizer=opt, scheduler=sched)  # returns: the failure is in the background
    try:
        ckpt.wait()
        seen["async_error"] = None
    except RuntimeError as exc:
        seen["async_error"] = str(exc)
    FileSystemWriter.write_data = real_write  # type: ignore[method-assign]
    seen["latest_after_failure"] = ckpt.latest().name  # type: ignore[union-attr]
    ckpt.save(3, model=model, optimizer=opt, scheduler=sched)
    ckpt.wait()

    # an unsharded checkpoint into a sharded model: a clear error on every rank
    plain = Checkpointer(Path(ckdir, "plain"))
    plain.save(1, model=_model(arch, shard=False))
    try:
        plain.resume(model=model)
        seen["plain_into_sharded"] = None
    except TypeError as exc:
        seen["plain_into_sharded"] = str(exc)

    # FSDP1 with a frozen part needs use_orig_params=True (and, on CPU, device_id=cpu); it checkpoints the same way
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    fsdp1 = FSDP(_model(arch, shard=False, freeze="embeddings"), use_orig_params=True, device_id="cpu")
    opt1, sched1 = _train_objects(fsdp1)
    _step(arch, fsdp1, opt1, sched1, 1, rank)
    ck1 = Checkpointer(Path(ckdir, "fsdp1"))
    seen["fsdp1_saved"] = str(ck1.save(1, model=fsdp1, optimizer=opt1, scheduler=sched1))
    seen["fsdp1_resumed"] = ck1.resume(model=fsdp1, optimizer=opt1, scheduler=sched1).step  # type: ignore[union-attr]

    # a rank killed mid-save: the other raises within the timeout, the previous checkpoint stays
    sync = Checkpointer(Path(ckdir, "sync"), keep_last=2, sharded_timeout=10)
    sync.save(1, model=model, optimizer=opt, scheduler=sched)
    Path(out, f"seen{rank}.json").write_text(json.dumps(seen))
    weights = _full(model)
    if rank == 0:
        torch.save(weights, Path(out, "sync-step1.pt"))
    dist.barrier()

    def dying_write(self: Any, *args: Any, **kwargs: Any) -> Any:
        os.kill(os.getpid(), signal.SIGKILL)

    if rank == 1:
        FileSystemWriter.write_data = dying_write  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        sync.save(2, model=model, optimizer=opt, scheduler=sched)
        seen["kill_error"] = None
    except RuntimeError as exc:
        seen["kill_error"] = str(exc)
    seen["kill_seconds"] = time.perf_counter() - started
    Path(out, f"seen{rank}.json").write_text(json.dumps(seen))
    os._exit(0)  # the default group lost a rank: skip its teardown


def _launch(fn: Any, world: int, *args: Any, limit: float = 240) -> list[int | None]:
    """Run ``fn(rank, world, init_file, *args)`` in ``world`` spawned processes; their exit codes."""
    import tempfile

    import torch.multiprocessing as mp

    init = Path(tempfile.mkdtemp()) / "init"
    ctx = mp.start_processes(
        fn, args=(world, str(init), *args), nprocs=world, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + limit
    while any(p.exitcode is None for p in ctx.processes):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{fn.__name__} did not finish within {limit} s (a hang)")
        time.sleep(0.5)
    return [p.exitcode for p in ctx.processes]


# ------------------------------------------------------------------------------------------ tests


_GROUP_AT_EXIT = """
import atexit, sys, tempfile
import torch.distributed as dist
from hfbridge.callbacks import _sharded

# atexit runs handlers last-registered first: this one, registered before the save group exists, runs after
# whatever the group's creation registered
atexit.register(lambda: print("groups at exit:", len(_sharded._GROUPS), flush=True))
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
_sharded._group(30.0)
print("groups before exit:", len(_sharded._GROUPS), flush=True)
dist.destroy_process_group()
"""


def test_the_cached_save_group_is_freed_before_interpreter_shutdown() -> None:
    # a gloo group first freed during interpreter shutdown can abort the process at exit
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _GROUP_AT_EXIT], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["groups before exit: 1", "groups at exit: 0"]


def test_is_sharded_sees_fsdp_at_any_wrapper_depth() -> None:
    from torch.distributed.fsdp import FSDPModule

    module = torch.nn.Linear(2, 2)
    module.__class__ = type("FSDPLinear", (FSDPModule, torch.nn.Linear), {})  # what fully_shard() does
    assert is_sharded(module)
    assert is_sharded(torch.nn.DataParallel(torch.nn.Sequential(torch.nn.ReLU(), module)))
    assert not is_sharded(torch.nn.Linear(2, 2))
    assert not is_sharded("not a module")


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.distributed
@pytest.mark.slow
def test_killed_and_resumed_run_is_bitwise_the_uninterrupted_one(tmp_path: Path, arch: str) -> None:
    ckdir, out = str(tmp_path / "ck"), str(tmp_path)
    assert _launch(_train_worker, 2, ckdir, out, arch, "full") == [0, 0]
    folder = tmp_path / "ck" / f"step{SAVE_AT}"
    files = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    assert {"model_shards/.metadata", "model_shards/__0_0.distcp", "model_shards/__1_0.distcp"} <= files
    assert "model.safetensors" not in files
    assert "optimizer.pt" not in files  # optimizer shards live in model_shards/ too
    assert {"rng_state_0.pth", "rng_state_1.pth", "scheduler.pt", "config.json"} <= files
    task_class = {"bert": "BertForSequenceClassification", "llama": "LlamaForCausalLM"}[arch]
    assert json.loads((folder / "config.json").read_text())["architectures"] == [task_class]  # not FSDP...
    manifest = json.loads((tmp_path / "ck" / "manifest.json").read_text())
    assert "model_shards/__1_0.distcp" in manifest["checkpoints"][0]["files"]  # checksummed like the rest
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith(".")]

    assert _launch(_train_worker, 2, ckdir, out, arch, "resume") == [0, 0]
    full, resumed = (torch.load(tmp_path / f"{arch}-{p}.pt") for p in ("full", "resume"))
    assert full.keys() == resumed.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)

    at_save = torch.load(tmp_path / f"{arch}-at-save.pt")
    # reshard: 2 ranks -> 1 rank gives the same weights, and the optimizer state fits for another step
    assert _launch(_reshard_worker, 1, ckdir, out, arch) == [0]
    one = torch.load(tmp_path / f"{arch}-world1.pt")
    assert all(torch.equal(at_save[k], one[k]) for k in at_save)
    if arch == "llama":  # and 2 -> 4 ranks
        assert _launch(_reshard_worker, 4, ckdir, out, arch) == [0, 0, 0, 0]
        four = torch.load(tmp_path / f"{arch}-world4.pt")
        assert all(torch.equal(at_save[k], four[k]) for k in at_save)
    # offline export: a plain folder that from_pretrained loads, with the same weights
    import transformers

    exported = export_full_weights(folder, tmp_path / "export")
    auto = (
        transformers.AutoModelForSequenceClassification
        if arch == "bert"
        else transformers.AutoModelForCausalLM
    )
    loaded = auto.from_pretrained(exported).state_dict()
    assert all(torch.equal(at_save[k], loaded[k]) for k in at_save)
    # Checkpointer.export into an unsharded base model reads the shards too (one process, DCP)
    again = Checkpointer(ckdir).export(tmp_path / "export2", model=_model(arch, shard=False))
    loaded = auto.from_pretrained(again).state_dict()
    assert all(torch.equal(at_save[k], loaded[k]) for k in at_save)


@pytest.mark.distributed
@pytest.mark.slow
def test_async_saves_failures_killed_rank_and_wrong_kind_of_checkpoint(tmp_path: Path) -> None:
    out = tmp_path
    codes = _launch(_faults_worker, 2, str(tmp_path / "ck"), str(out))
    assert codes[1] == -signal.SIGKILL
    assert codes[0] == 0
    r0, r1 = (json.loads((out / f"seen{r}.json").read_text()) for r in range(2))
    for seen in (r0, r1):
        # async: save returns at once, the checkpoint is invisible until wait() publishes it
        assert seen["save_returned"] is None
        assert seen["visible_while_pending"] == 0
        assert seen["published"] == "step1"
        assert seen["visible_after_wait"] == 1
        # a background failure on rank 1 is raised by wait() on every rank; the older checkpoint stays
        assert seen["async_error"] is not None
        assert "disk on fire" in seen["async_error"] or "rank 1" in seen["async_error"]
        assert seen["latest_after_failure"] == "step1"
        # frozen before fully_shard: still frozen after sharding, and unchanged by training
        assert seen["frozen_flags"]
        assert seen["frozen_kept"]
        assert "FSDP-sharded" in seen["plain_into_sharded"]
        assert seen["fsdp1_saved"].endswith("step1")
        assert seen["fsdp1_resumed"] == 1
    # rank 1 was killed mid-save: rank 0 raised a clear error instead of hanging
    assert "sharded checkpoint" in r0["kill_error"]
    assert r0["kill_seconds"] < 60
    sync = tmp_path / "ck" / "sync"
    assert sorted(p.name for p in sync.iterdir() if not p.name.startswith(".")) == ["manifest.json", "step1"]
    # the previous checkpoint loads: here in one plain process, into an unsharded model (DCP reshards)
    plain = _model("llama", shard=False)
    from hfbridge.callbacks import _sharded

    result = Checkpointer(sync, sharded_timeout=7).resume(model=plain)
    assert result is not None
    assert result.step == 1
    assert 7.0 in _sharded._GROUPS  # the load ran its collectives on a group with the Checkpointer's timeout
    want = torch.load(tmp_path / "sync-step1.pt")
    got = plain.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)

    # damaged checkpoints fall back to the previous one with a warning: a missing shard, a flipped byte in a
    # shard (checksum), a manifest that records another size for a shard
    import shutil

    def damage_missing(step: Path) -> None:
        (step / "model_shards" / "__1_0.distcp").unlink()

    def damage_bytes(step: Path) -> None:
        shard = step / "model_shards" / "__0_0.distcp"
        data = bytearray(shard.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shard.write_bytes(bytes(data))

    def damage_manifest(step: Path) -> None:
        path = step.parent / "manifest.json"
        manifest = json.loads(path.read_text())
        entry = next(e for e in manifest["checkpoints"] if e["name"] == step.name)
        entry["files"]["model_shards/__1_0.distcp"]["size"] += 1
        path.write_text(json.dumps(manifest))

    for damage in (damage_missing, damage_bytes, damage_manifest):
        copy = tmp_path / damage.__name__
        shutil.copytree(tmp_path / "ck" / "async", copy)
        damage(copy / "step3")
        with pytest.warns(RuntimeWarning, match="step3"):
            result = Checkpointer(copy, keep_last=3).resume(model=_model("llama", shard=False))
        assert result is not None
        assert result.step == 1, damage.__name__
