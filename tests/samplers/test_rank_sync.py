"""agreed_batches in two real gloo processes: equal batch counts, a resumed rank repeats ``previous`` (the batch it
yielded last before the resume), and a rank with nothing to repeat stops every rank with a warning, not a hang."""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch.multiprocessing as mp

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.timeout(120)]

# case -> rank -> (this rank's batches, what its `previous` does: "batch" returns one, "none" None)
CASES: dict[str, dict[int, tuple[list[str], str]]] = {
    "all done": {0: ([], "batch"), 1: ([], "batch")},
    "repeat": {0: (["a", "b", "c"], "batch"), 1: ([], "batch")},
    "nothing to repeat": {0: (["a", "b"], "batch"), 1: ([], "none")},
    "drop": {0: (["a", "b", "c"], "batch"), 1: (["d"], "batch")},
}


def _previous(rank: int, kind: str, calls: list[int]) -> Callable[[], Any]:
    def previous() -> Any:
        calls.append(rank)
        return None if kind == "none" else f"previous{rank}"

    return previous


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    # a short timeout: a rank left alone in a collective fails the test in seconds instead of hanging it
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=10)
    )
    try:
        from hfbridge.samplers._streaming import agreed_batches

        result: dict[str, Any] = {}
        for name, case in CASES.items():
            batches, kind = case[rank]
            calls: list[int] = []
            got: list[Any] = []
            error = None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    uneven = "drop" if name == "drop" else "pad"
                    got.extend(agreed_batches(batches, uneven, previous=_previous(rank, kind, calls)))
                except Exception as exc:  # recorded for the test to check
                    error = f"{type(exc).__name__}: {exc}"
            result[name] = {
                "batches": got,
                "calls": len(calls),
                "error": error,
                "warnings": [str(w.message) for w in caught],
            }
            if error is not None and "gloo" in error.lower():
                break  # the group is broken: the rest would only time out
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.start_processes(_worker, args=(2, init_file, tmp), nprocs=2, join=True, start_method="spawn")
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(2)]


def test_ranks_resumed_past_their_batches_stop_together(ranks: list[dict[str, Any]]) -> None:
    for rank in ranks:
        assert rank["all done"] == {"batches": [], "calls": 1, "error": None, "warnings": []}


def test_a_rank_without_batches_repeats_previous_until_all_are_done(ranks: list[dict[str, Any]]) -> None:
    assert ranks[0]["repeat"]["batches"] == ["a", "b", "c"]
    assert ranks[1]["repeat"]["batches"] == ["previous1"] * 3
    assert [rank["repeat"]["calls"] for rank in ranks] == [0, 1]


def test_nothing_to_repeat_stops_every_rank_with_a_warning(ranks: list[dict[str, Any]]) -> None:
    for rank in ranks:
        case = rank["nothing to repeat"]
        assert (case["batches"], case["error"]) == ([], None)
        assert len(case["warnings"]) == 1
        assert "nothing to repeat" in case["warnings"][0]


def test_drop_stops_every_rank_when_one_runs_out(ranks: list[dict[str, Any]]) -> None:
    assert [rank["drop"]["batches"] for rank in ranks] == [["a"], ["d"]]
    assert [rank["drop"]["calls"] for rank in ranks] == [0, 0]
