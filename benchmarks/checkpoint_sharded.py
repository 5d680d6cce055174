"""Training stall per checkpoint of an FSDP2 model on 2 gloo ranks: sync DCP vs async DCP vs a full gather.

Three ways to checkpoint the same ``fully_shard`` Llama with AdamW, in one run:

* **full gather** (the baseline: what a FULL_STATE_DICT save does, e.g. Accelerate's / Trainer's default FSDP
  checkpoint): ``get_state_dict(..., full_state_dict=True, cpu_offload=True)`` gathers model and optimizer on
  rank 0, which ``torch.save``s them into one file while the other rank waits at a barrier;
* **sync DCP**: ``Checkpointer.save`` of the sharded model (every rank writes its shards, rank 0 publishes);
* **async DCP**: the same with ``Checkpointer(async_save=True)``: the state is copied to memory and written by a
  background thread while training goes on; the next save (or ``wait()``) publishes it.

The stall is the time the training loop spends inside the checkpoint calls (``save`` plus, for async, the wait at
the next save and at the end), per save, with ``--steps`` training steps between saves. Size is the bytes on disk
of one checkpoint.

Run: ``PYTHONPATH=src torchrun --nproc_per_node=2 benchmarks/checkpoint_sharded.py [--saves 4] [--hidden 256]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist


def _model(hidden: int, layers: int, vocab: int) -> Any:
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 64),
        max_position_embeddings=256,
    )
    model = LlamaForCausalLM(cfg)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def _train_step(model: Any, opt: Any, vocab: int, step: int) -> None:
    g = torch.Generator().manual_seed(step * 10 + dist.get_rank())
    ids = torch.randint(0, vocab, (4, 64), generator=g)
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    opt.zero_grad()


def _full_gather_save(model: Any, opt: Any, folder: Path) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, [opt], options=opts)
    if dist.get_rank() == 0:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model_sd, "optimizer": optim_sd}, folder / "checkpoint.pt")
    dist.barrier()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _run(kind: str, args: argparse.Namespace, root: Path) -> tuple[list[float], int]:
    from hfbridge import Checkpointer

    model = _model(args.hidden, args.layers, args.vocab)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    folder = root / kind
    ckpt = Checkpointer(folder, keep_last=1, async_save=kind == "async DCP", check_disk_space=False)
    stalls: list[float] = []
    step = 0
    for i in range(args.saves + 1):  # the first save is a warm-up (process groups, planner caches)
        for _ in range(args.steps):
            step += 1
            _train_step(model, opt, args.vocab, step)
        dist.barrier()
        start = time.perf_counter()
        if kind == "full gather":
            _full_gather_save(model, opt, folder / f"step{step}")
        else:
            ckpt.save(step, model=model, optimizer=opt)
        stall = time.perf_counter() - start
        if i > 0:
            stalls.append(stall)
    for _ in range(args.steps):
        step += 1
        _train_step(model, opt, args.vocab, step)
    start = time.perf_counter()
    ckpt.wait()  # async: the last checkpoint is published here; its wait counts as stall
    stalls[-1] += time.perf_counter() - start
    dist.barrier()
    size = _size(folder / f"step{step - args.steps}") if dist.get_rank() == 0 else 0
    return stalls, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="training steps between saves")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8000)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="ckpt-sharded-bench-")) if dist.get_rank() == 0 else None
    box = [str(root)]
    dist.broadcast_object_list(box, src=0)
    root = Path(box[0])
    results = {}
    for kind in ("full gather", "sync DCP", "async DCP"):
        stalls, size = _run(kind, args, root)
        per_rank: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, stalls)
        results[kind] = ([max(s) for s in zip(*per_rank)], size)  # a save stalls training until the slowest
    if dist.get_rank() == 0:
        base = statistics.median(results["full gather"][0])
        sync = statistics.median(results["sync DCP"][0])
        n_params = sum(p.numel() for p in _model_shapes(args))
        print(
            f"FSDP2 Llama, {n_params / 1e6:.1f}M parameters + AdamW, 2 gloo ranks on CPU, "
            f"{args.steps} steps between saves; median over {args.saves} saves (after a warm-up)\n"
        )
        print("| method | stall per save | vs full gather | vs sync DCP | size on disk |")
        print("| --- | --- | --- | --- | --- |")
        for kind, (stalls, size) in results.items():
            med = statistics.median(stalls)
            print(
                f"| {kind} | {med * 1e3:.0f} ms | {med / base:.2f}x | {med / sync:.2f}x | "
                f"{size / 2**20:.1f} MiB |"
            )
        shutil.rmtree(root, ignore_errors=True)
    dist.destroy_process_group()


def _model_shapes(args: argparse.Namespace) -> list[torch.Tensor]:
    from transformers import LlamaConfig, LlamaForCausalLM

    with torch.device("meta"):
        cfg = LlamaConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            intermediate_size=4 * args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=max(1, args.hidden // 64),
            num_key_value_heads=max(1, args.hidden // 64),
        )
        return list(LlamaForCausalLM(cfg).parameters())


if __name__ == "__main__":
    main()
