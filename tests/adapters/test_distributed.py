"""Two real gloo processes: the streaming adapter reads its rank from torch.distributed and splits the stream."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

from tests.conftest import end_gloo_worker

N_ROWS = 40


def _worker(rank: int, init_file: str, out_dir: str, tokenizer: Any) -> None:
    import torch.distributed as dist
    from datasets import Dataset

    from hfbridge.adapters import adapt

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        words = ["alpha", "beta", "gamma", "delta", "omega", "market", "comet", "storm"]
        texts = [f"{words[i % 8]} {words[i // 8]}" for i in range(N_ROWS)]
        stream = Dataset.from_dict({"text": texts}).to_iterable_dataset(num_shards=4)
        adapter = adapt(stream, tokenizer, task="masked-lm")  # no num_replicas/rank: from torch.distributed
        rows = [row["input_ids"] for row in adapter]
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rows))
        dist.barrier()
        end_gloo_worker()
    finally:
        dist.destroy_process_group()  # reached on a failure only


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.timeout(180)
def test_two_gloo_ranks_split_a_stream_without_duplicates(wordpiece_tokenizer: Any, tmp_path: Path) -> None:
    context = mp.start_processes(
        _worker,
        args=(str(tmp_path / "init"), str(tmp_path), wordpiece_tokenizer),
        nprocs=2,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + 150
    while not context.join(timeout=5):  # True once every rank has exited (it raises if one failed)
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the two ranks did not finish within 150 s")
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    keys = [tuple(ids) for rows in ranks for ids in rows]
    assert len(ranks[0]) == len(ranks[1]) == N_ROWS // 2
    assert len(set(keys)) == len(keys) == N_ROWS
