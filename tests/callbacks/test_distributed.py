"""DDP: two gloo processes; only rank 0 writes, nobody deadlocks, every rank sees the same outcome."""

from __future__ import annotations

import errno
import io
import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import end_gloo_worker

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

WORLD = 2


def _worker(rank: int, init_file: str, dirpath: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    import hfbridge.callbacks._store as store
    from hfbridge.callbacks import Checkpointer
    from tests.callbacks.conftest import ShuffleSampler

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    writes = {"n": 0}
    real_write = store.write_payload

    def counting_write(*args: Any, **kwargs: Any) -> Any:
        writes["n"] += 1
        return real_write(*args, **kwargs)

    store.write_payload = counting_write  # type: ignore[assignment]
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 4))
    torch.manual_seed(100 + rank)  # ranks have different RNG streams
    sampler = ShuffleSampler(10, seed=rank)
    it = iter(sampler)
    for _ in range(rank + 1):
        next(it)  # ranks have different loader positions
    ckpt = Checkpointer(dirpath, monitor="loss", keep_best=1, keep_last=1)
    paths = []
    for step, loss in ((1, 0.5), (2, 0.7), (3, 0.6)):
        paths.append(str(ckpt.save(step, model=model, loader=sampler, metrics={"loss": loss})))
    after_save = torch.rand(1).item()

    # rank 0's disk fills up: every rank gets the error, nobody hangs in a collective
    real_save = torch.save

    def full(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, io.BytesIO):  # collectives pickle through torch.save into memory: leave those alone
            return real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    if rank == 0:
        torch.save = full  # type: ignore[assignment]
    try:
        ckpt.save(4, model=model, loader=sampler, metrics={"loss": 0.1})
        enospc = None
    except OSError as exc:
        enospc = exc.errno
    torch.save = real_save  # type: ignore[assignment]

    torch.manual_seed(999)
    fresh = ShuffleSampler(10, seed=55)
    model2 = torch.nn.Linear(4, 4)
    result = ckpt.resume(model=model2, loader=fresh)
    assert result is not None
    out = {
        "writes": writes["n"],
        "paths": paths,
        "enospc": enospc,
        "resumed_step": result.step,
        "loader": fresh.state_dict(),
        "rng_restored": torch.rand(1).item() == after_save,
        "weights_equal": all(
            torch.equal(a, b) for a, b in zip(model.module.parameters(), model2.parameters())
        ),
        "best": str(ckpt.best()),
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    del model  # the DDP reducer: freed with the group, not at exit
    end_gloo_worker()


def test_two_process_gloo_single_writer_and_agreement(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path / "ck"), str(tmp_path)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed checkpointing deadlocked (no exit within 120 s)")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert r0["writes"] == 4  # three saves plus the one that hit ENOSPC
    assert r1["writes"] == 0  # a single writer
    assert r0["paths"] == r1["paths"] == [str(tmp_path / "ck" / f"step{s}") for s in (1, 2, 3)]
    assert r0["enospc"] == r1["enospc"] == errno.ENOSPC
    assert r0["resumed_step"] == r1["resumed_step"] == 3
    assert r0["best"] == r1["best"] == str(tmp_path / "ck" / "step1")
    # each rank gets its own loader position and RNG stream back
    assert r0["loader"] == {"seed": 0, "epoch": 0, "consumed": 1}
    assert r1["loader"] == {"seed": 1, "epoch": 0, "consumed": 2}
    assert r0["rng_restored"]
    assert r1["rng_restored"]
    assert r0["weights_equal"]
    assert r1["weights_equal"]
    files = {p.name for p in (tmp_path / "ck" / "step3").iterdir()}
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= files
    assert not any(p.name.startswith(".") for p in (tmp_path / "ck").iterdir())


def _rank0_metrics_worker(rank: int, init_file: str, dirpath: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    from hfbridge.callbacks import Checkpointer

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=20)
    )
    model = torch.nn.Linear(4, 4)
    ckpt = Checkpointer(dirpath, monitor="loss", keep_best=1, keep_last=1)
    out: dict[str, Any] = {}
    # only rank 0 evaluates: its metrics are the ones used, rank 1 passes none
    path = ckpt.save(1, model=model, metrics={"loss": 0.5} if rank == 0 else None)
    out["path"] = str(path)
    out["metrics"] = ckpt.checkpoints()[-1]["metrics"]
    # rank 0 lacks the monitor: every rank raises the same error instead of one waiting forever
    try:
        ckpt.save(2, model=model, metrics={"acc": 1.0} if rank == 0 else {"loss": 0.1})
        out["missing"] = None
    except ValueError as exc:
        out["missing"] = str(exc)
    # loading fails on rank 1 only (a model of another shape): every rank raises
    wrong = torch.nn.Linear(4, 4) if rank == 0 else torch.nn.Linear(4, 8)
    try:
        ckpt.resume(model=wrong)
        out["load"] = None
    except Exception as exc:
        out["load"] = f"{type(exc).__name__}: {exc}"
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(out))
    dist.barrier()
    end_gloo_worker()


def test_rank0_metrics_are_authoritative_and_one_rank_failures_reach_all(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    ctx = mp.start_processes(
        _rank0_metrics_worker,
        args=(str(tmp_path / "init"), str(tmp_path / "ck"), str(tmp_path)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 90
    while not ctx.join(timeout=2):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed checkpointing deadlocked (no exit within 90 s)")
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    assert r0["path"] == r1["path"] == str(tmp_path / "ck" / "step1")
    assert r0["metrics"] == r1["metrics"] == {"loss": 0.5}
    assert r0["missing"] == r1["missing"]
    assert "must contain the monitored key 'loss'" in r0["missing"]
    assert r0["load"] is not None
    assert r1["load"] is not None
    assert "on rank 1" in r0["load"]
