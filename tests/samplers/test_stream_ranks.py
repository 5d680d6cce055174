"""Two real gloo processes over a stream whose shards differ in size: the ranks agree on every step, and a state
saved while a rank repeats its last batch resumes to the very batches of an uninterrupted run."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

from tests.conftest import end_gloo_worker

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(180)]

ROWS = {0: 300, 1: 170}  # this rank's shard: 19 and 11 batches of 16


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    # a short timeout: without agreement the longer rank blocks in the step all-reduce and fails instead of hanging
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=20)
    )
    try:
        from hfbridge.samplers import build_dataloader
        from tests.samplers.conftest import FakeIterableAdapter, news_lengths

        result: dict[str, list[list[int]]] = {}
        for uneven in ("drop", "pad"):
            loader = build_dataloader(
                FakeIterableAdapter(news_lengths(ROWS[rank], seed=rank)),
                batch_size=16,
                buffer_size=64,
                uneven=uneven,
            )
            rows = []
            for batch in loader:
                rows.append(batch["row"].tolist())
                step = torch.ones(1)
                dist.all_reduce(step)  # what DDP does every step: hangs when ranks' batch counts differ
            result[uneven] = rows
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
        end_gloo_worker()
    finally:
        dist.destroy_process_group()  # reached on a failure only


def test_stream_ranks_with_unequal_shards_yield_equal_counts() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_worker, args=(2, init_file, tmp), nprocs=2, join=True, start_method="spawn")
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]

    assert len(ranks[0]["drop"]) == len(ranks[1]["drop"]) == 11  # all stop when rank 1 runs out
    assert sorted(i for b in ranks[1]["drop"] for i in b) == list(range(170))
    assert len(ranks[0]["pad"]) == len(ranks[1]["pad"]) == 19  # rank 1 repeats its last batch
    assert sorted(i for b in ranks[0]["pad"] for i in b) == list(range(300))
    padded = ranks[1]["pad"]
    assert sorted(i for b in padded[:11] for i in b) == list(range(170))
    assert all(b == padded[10] for b in padded[11:])


# save points: rank 1 (11 batches) has just yielded its final batch at 11, repeats it at 14; 14 -> 16 saves again
# during the repeat phase of a resumed run (its stream yielded nothing since the resume)
SAVES = ([11], [14], [14, 16])


def _resume_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=20)
    )
    try:
        from hfbridge.samplers import build_dataloader
        from tests.samplers.conftest import FakeIterableAdapter, news_lengths

        def make() -> Any:
            loader = build_dataloader(
                FakeIterableAdapter(news_lengths(ROWS[rank], seed=rank)),
                batch_size=16,
                buffer_size=64,
                seed=3,
            )
            loader.set_epoch(1)
            return loader

        def run(loader: Any, stop: int | None) -> list[list[int]]:
            rows = []
            for batch in loader:
                rows.append(batch["row"].tolist())
                step = torch.ones(1)
                dist.all_reduce(step)
                if len(rows) == stop:
                    break
            return rows

        result: dict[str, Any] = {"full": run(make(), None)}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for saves in SAVES:
                loader, rows, done = make(), [], 0
                for save_at in saves:
                    rows += run(loader, save_at - done)
                    done = save_at
                    state = json.loads(json.dumps(loader.state_dict()))
                    loader = make()
                    loader.load_state_dict(state)
                    loader.set_epoch(1)
                result[str(saves)] = rows + run(loader, None)
        result["warnings"] = [str(w.message) for w in caught]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
        end_gloo_worker()
    finally:
        dist.destroy_process_group()  # reached on a failure only


def test_resume_while_a_rank_repeats_its_last_batch_is_exact() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(
            _resume_worker, args=(2, init_file, tmp), nprocs=2, join=True, start_method="spawn"
        )
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]

    for result in ranks:
        assert len(result["full"]) == 19
        assert result["warnings"] == []
        for saves in SAVES:
            assert result[str(saves)] == result["full"], saves
    assert all(b == ranks[1]["full"][10] for b in ranks[1]["full"][11:])
