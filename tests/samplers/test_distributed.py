"""Two real gloo processes: defaults come from torch.distributed; shares are disjoint, counts equal, exact covers."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from tests.conftest import end_gloo_worker

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(180)]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        from hfbridge.samplers import (
            BatchedSampler,
            BinPackingBatchSampler,
            ClassBalancedSampler,
            LengthGroupedBatchSampler,
            TokenBudgetBatchSampler,
        )
        from tests.samplers.conftest import news_lengths

        lengths = news_lengths(1001, seed=5)
        result: dict[str, list[list[int]]] = {}
        for name, sampler in {
            "grouped": LengthGroupedBatchSampler(lengths, 16, seed=3),
            "grouped-drop": LengthGroupedBatchSampler(lengths, 16, uneven="drop"),
            "tokens": TokenBudgetBatchSampler(lengths, 600),
            "balanced": BatchedSampler(ClassBalancedSampler([i % 3 for i in range(1001)]), 8),
            "exact": LengthGroupedBatchSampler(lengths, 16, shuffle=False, uneven="exact"),
            "exact-tokens": TokenBudgetBatchSampler(lengths, 600, shuffle=False, uneven="exact"),
            "bin-packing": BinPackingBatchSampler(lengths, 600),
        }.items():
            assert sampler.num_replicas == world
            assert sampler.rank == rank
            sampler.set_epoch(1)
            result[name] = list(sampler)
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
        end_gloo_worker()
    finally:
        dist.destroy_process_group()  # reached on a failure only


def test_two_gloo_ranks() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_worker, args=(2, init_file, tmp), nprocs=2, join=True, start_method="spawn")
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]

    for name in ("grouped", "grouped-drop", "tokens", "balanced", "bin-packing"):
        a, b = ranks[0][name], ranks[1][name]
        assert len(a) == len(b), name
        rows_a, rows_b = [i for x in a for i in x], [i for x in b for i in x]
        if name == "grouped-drop":
            assert not set(rows_a) & set(rows_b)
    # padding repeats at most one batch; otherwise disjoint
    a, b = ranks[0]["grouped"], ranks[1]["grouped"]
    overlap = {i for x in a for i in x} & {i for x in b for i in x}
    assert len(overlap) <= 16
    # bin packing: each rank gets its own bins (the last one may wrap), together every row
    bins_a = {tuple(x) for x in ranks[0]["bin-packing"]}
    bins_b = {tuple(x) for x in ranks[1]["bin-packing"]}
    assert len(bins_a & bins_b) <= 1
    assert {i for x in bins_a | bins_b for i in x} == set(range(1001))
    tok_a = {i for x in ranks[0]["tokens"] for i in x}
    tok_b = {i for x in ranks[1]["tokens"] for i in x}
    assert tok_a | tok_b == set(range(1001))
    for name in ("exact", "exact-tokens"):
        rows = [i for r in range(2) for x in ranks[r][name] for i in x]
        assert sorted(rows) == list(range(1001)), name
