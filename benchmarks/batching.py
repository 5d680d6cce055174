"""Batching benchmark: random vs HF ``LengthGroupedSampler`` vs hfbridge (grouped, token budget), one run.

Run: ``PYTHONPATH=src python benchmarks/batching.py`` (a few minutes; no downloads; ``--help`` for options).

Measures, on the same synthetic lengths (news-like: mean ~44, p95 ~71, max 256; long documents: mean ~900, max 4096):

* padding share (padded tokens that are padding), number of batches, correlation of the longest row between adjacent
  batches (the saw-tooth of transformers #20810);
* sampler setup for 1M lengths: construction plus the first batch (HF computes the whole order in ``__iter__``);
* resume cost at batch 10, 10^4 and 10^6 of one epoch (one row per batch over 1.05M rows, so position 10^6 exists)
  for every sampler (grouped, token budget, class-balanced with and without replacement): ``load_state_dict`` +
  first batch on a freshly built sampler, as in a new process; replay = drawing and dropping the first batches,
  as accelerate's ``skip_first_batches`` does, on our grouped sampler and on HF's.

Timings are medians over repeats; the machine is shared, so expect noise.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import numpy as np
import torch
from transformers.trainer_pt_utils import LengthGroupedSampler

from hfbridge.samplers import (
    BatchedSampler,
    ClassBalancedSampler,
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
)

BATCH = 32


def news_lengths(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(3.70, 0.33, n).astype(np.int64) + 2
    tail = rng.random(n) < 0.002  # a thin tail of long articles up to the 256 cap
    lengths[tail] = rng.integers(100, 257, tail.sum())
    return np.clip(lengths, 3, 256)


def long_doc_lengths(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(6.6, 0.6, n).astype(np.int64), 64, 4096)


def median_time(fn: Callable[[], Any], repeats: int, setup: Callable[[], Any] | None = None) -> float:
    """Median seconds of ``fn(setup())`` (``fn()`` without ``setup``); ``setup`` is not timed."""
    times = []
    for _ in range(repeats):
        args = () if setup is None else (setup(),)
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def chunk(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def hf_batches(lengths: np.ndarray, seed: int = 0) -> list[list[int]]:
    sampler = LengthGroupedSampler(
        BATCH, lengths=lengths.tolist(), generator=torch.Generator().manual_seed(seed)
    )
    return chunk(list(sampler), BATCH)


def quality(lengths: np.ndarray, batches: list[list[int]]) -> tuple[float, int, float]:
    sizes = np.fromiter((len(b) for b in batches), np.int64, len(batches))
    flat = np.fromiter((i for b in batches for i in b), np.int64, int(sizes.sum()))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    longest = np.maximum.reduceat(lengths[flat], starts)
    padded = float((longest * sizes).sum())
    corr = float(np.corrcoef(longest[:-1], longest[1:])[0, 1])
    return 1 - lengths.sum() / padded, len(batches), corr


def quality_table(name: str, lengths: np.ndarray, max_tokens: int) -> None:
    rows: dict[str, list[list[int]]] = {
        "random": list(RandomBatchSampler(len(lengths), BATCH)),
        "HF LengthGroupedSampler": hf_batches(lengths),
        "hfbridge grouped": list(LengthGroupedBatchSampler(lengths, BATCH)),
        f"hfbridge tokens ({max_tokens})": list(TokenBudgetBatchSampler(lengths, max_tokens)),
    }
    print(
        f"\n## {name}: {len(lengths):,} rows, mean {lengths.mean():.0f}, p95 "
        f"{np.percentile(lengths, 95):.0f}, max {lengths.max()}, batch {BATCH}"
    )
    print(f"| {'batching':<28} | padding | batches | adjacent corr |")
    print(f"| {'-' * 28} | ------: | ------: | ------------: |")
    for label, batches in rows.items():
        pad, count, corr = quality(lengths, batches)
        print(f"| {label:<28} | {pad:6.1%} | {count:7,} | {corr:13.3f} |")


def setup_table(lengths: np.ndarray) -> None:
    def hf(first_only: bool) -> None:
        iterator = iter(LengthGroupedSampler(BATCH, lengths=lengths.tolist(), generator=torch.Generator()))
        chunk(list(islice(iterator, BATCH) if first_only else iterator), BATCH)

    def ours(make: Callable[[], Any], first_only: bool) -> None:
        iterator = iter(make())
        next(iterator) if first_only else list(iterator)

    makers: dict[str, Callable[[], Any]] = {
        "hfbridge grouped": lambda: LengthGroupedBatchSampler(lengths, BATCH),
        "hfbridge tokens": lambda: TokenBudgetBatchSampler(lengths, 2048),
    }
    times = {"HF LengthGroupedSampler": (median_time(lambda: hf(True), 3), median_time(lambda: hf(False), 3))}
    for label, make in makers.items():
        times[label] = (
            median_time(lambda make=make: ours(make, True), 5),
            median_time(lambda make=make: ours(make, False), 3),
        )
    base = times["HF LengthGroupedSampler"]
    print(f"\n## Setup for {len(lengths):,} lengths: construct + first batch, and + the whole epoch, seconds")
    print("| sampler                   | first batch | vs HF | whole epoch | vs HF |")
    print("| ------------------------- | ----------: | ----: | ----------: | ----: |")
    for label, (first, whole) in times.items():
        print(
            f"| {label:<25} | {first:11.3f} | {first / base[0]:4.2f}x | {whole:11.3f} | {whole / base[1]:4.2f}x |"
        )


def _skip(batches: Iterable[Any], k: int) -> Any:
    return next(islice(iter(batches), k, None))


def _resumable(kind: str, lengths: np.ndarray) -> Any:
    """One batch per row (so position 10^6 exists) for each sampler."""
    if kind == "grouped":
        return LengthGroupedBatchSampler(lengths, 1, seed=0)
    if kind == "tokens":
        return TokenBudgetBatchSampler(lengths, int(lengths.max()), max_batch_size=1, seed=0)
    labels = np.minimum(lengths // 20, 9)  # ten imbalanced classes
    return BatchedSampler(ClassBalancedSampler(labels, replacement=kind == "balanced", seed=0), 1)


def resume_table(lengths: np.ndarray, positions: list[int]) -> None:
    kinds = ["grouped", "tokens", "balanced", "balanced (no replacement)"]

    def ours(kind: str, position: int) -> float:
        saved = {**_resumable(kind, lengths).state_dict(), "position": position}

        def resume(sampler: Any) -> None:
            sampler.load_state_dict(saved)
            next(iter(sampler))

        # a fresh sampler each time, as in a new process; its construction is not part of resuming
        return median_time(resume, 5, setup=lambda: _resumable(kind, lengths))

    def replay(position: int) -> float:  # skip_first_batches-style: draw and drop `position` batches
        return median_time(lambda: _skip(LengthGroupedBatchSampler(lengths, 1, seed=0), position), 3)

    def hf(position: int) -> float:
        def run() -> None:
            sampler = LengthGroupedSampler(
                1, lengths=lengths.tolist(), generator=torch.Generator().manual_seed(0)
            )
            _skip(([i] for i in sampler), position)

        return median_time(run, 3)

    print(
        f"\n## Resume in one epoch of {len(lengths):,} batches (batch_size=1): load_state_dict + first batch, ms"
    )
    print(
        "(issue 14 allows up to 300 ms at 1M rows; replay = draw and drop, as skip_first_batches does; "
        "HF = LengthGroupedSampler + skip)"
    )
    header = " | ".join(f"{k:>9}" for k in kinds)
    print(f"| position  | {header} | replay (skip) | HF + skip |")
    print(
        f"| --------: | {' | '.join('-' * max(9, len(k) - 1) + ':' for k in kinds)} | ------------: | --------: |"
    )
    for position in positions:
        cells = " | ".join(f"{ours(k, position) * 1e3:>{max(9, len(k))}.1f}" for k in kinds)
        print(f"| {position:>9,} | {cells} | {replay(position) * 1e3:13.0f} | {hf(position) * 1e3:9.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="news-like rows (default: %(default)s)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    news = news_lengths(args.rows)
    quality_table("News-like", news, max_tokens=2048)
    quality_table("Long documents", long_doc_lengths(args.rows // 5), max_tokens=32 * 1024)
    setup_table(news)
    last = args.rows
    resume_table(news_lengths(args.rows + args.rows // 20, seed=2), [10, min(10_000, last // 100), last])
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
