"""Gradual unfreezing under 2-process DDP (gloo): find_unused_parameters=True keeps every rank in step."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import end_gloo_worker

WORLD = 2
TIMEOUT_S = 120


def _worker(rank: int, init_method: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from transformers import BertConfig, BertForSequenceClassification

    from hfbridge.models import GradualUnfreezer

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
    )
    try:
        torch.manual_seed(0)  # same initial weights on both ranks
        cfg = BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20
        )
        model = BertForSequenceClassification(cfg)
        # built while every parameter still requires grad, so DDP synchronises the ones that thaw later
        ddp = DistributedDataParallel(model, find_unused_parameters=True)
        unfreezer = GradualUnfreezer(ddp)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.5)
        data = torch.Generator().manual_seed(100 + rank)  # each rank sees different data
        changed = []
        for epoch in range(3):
            unfreezer.apply(epoch)
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            for _ in range(2):
                ids = torch.randint(0, 50, (4, 8), generator=data)
                labels = torch.randint(0, 2, (4,), generator=data)
                optimizer.zero_grad(set_to_none=True)
                ddp(input_ids=ids, labels=labels).loss.backward()
                optimizer.step()
            changed.append(sorted(n for n, p in model.named_parameters() if not torch.equal(p, before[n])))
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        result = {"changed": changed, "in_sync": all(torch.equal(g, gathered[0]) for g in gathered)}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
        del ddp, optimizer, unfreezer  # free the DDP reducer before its process group goes
        end_gloo_worker()
    finally:
        dist.destroy_process_group()  # reached on a failure only


@pytest.mark.slow
@pytest.mark.distributed
def test_gradual_unfreezing_under_ddp(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = mp.start_processes(
        _worker,
        args=(f"tcp://127.0.0.1:{port}", str(tmp_path)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for proc in context.processes:
                proc.kill()
            pytest.fail(f"DDP workers did not finish within {TIMEOUT_S}s")
    results: list[dict[str, Any]] = [
        json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)
    ]
    assert all(r["in_sync"] for r in results)  # thawed blocks were all-reduced like the rest
    assert results[0]["changed"] == results[1]["changed"]
    changed = results[0]["changed"]

    def modules(names: list[str]) -> set[str]:  # bert.encoder.layer.N, bert.pooler.dense, classifier
        return {
            ".".join(n.split(".")[:4]) if n.startswith("bert.encoder.") else n.rsplit(".", 1)[0]
            for n in names
        }

    top = {"classifier", "bert.pooler.dense"}
    assert modules(changed[0]) == top
    assert modules(changed[1]) == top | {"bert.encoder.layer.1"}
    assert modules(changed[2]) == top | {"bert.encoder.layer.1", "bert.encoder.layer.0"}
    assert not any(n.startswith("bert.embeddings") for epoch in changed for n in epoch)
