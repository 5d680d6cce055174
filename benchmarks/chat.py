"""Chat SFT benchmark: TRL-style padded batches vs grouped batches vs padding-free packing; preprocessing vs TRL.

Run: ``PYTHONPATH=src python benchmarks/chat.py`` (no downloads; ``--quick`` for a smaller run; needs ``trl``).

1. Padding and time per epoch, on the demo chat data (``examples/data/chat_train.jsonl``) and on a synthetic
   long-tail set (conversations of 1-12 exchanges whose replies have log-normal lengths, up to ``--max-length``):

   * ``trl-padded``: random batches of ``--batch-size`` rows padded to the longest, with TRL's own collator (what
     ``SFTTrainer`` does without packing);
   * ``grouped``: hfbridge's ``LengthGroupedBatchSampler`` (same batch size) + ``CausalLMCollator``;
   * ``packed-bfd``: ``BinPackingBatchSampler`` (bins of ``--row-length`` tokens, ``batch-size * mean length /
     row-length`` bins per batch) + ``PackedCollator(row_length=...)``: fixed-shape rows, padding only at row ends;
   * ``packed-flat``: token-budget batches flattened by ``PackedCollator()`` into one row: no padding at all.

   The padding share is padded positions over all positions. The epoch time is forward + backward + AdamW step of
   a tiny Llama (sdpa) over every batch.
2. Preprocessing ``--n-preprocess`` conversations (default 100k): ``SFTTrainer(assistant_only_loss=True)``'s dataset
   preparation (template with ``{% generation %}`` markers; the trainer built on 10 rows is subtracted) against
   ``adapt(task="chat")`` on the same template and on the same template without markers (prefix renders).

Targets: packing leaves at most 1% padding; preprocessing at least as fast as TRL's. The machine is shared by
other jobs, so times are noisy; the ratios in one run compare like with like.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/chat/kit.py: the test kit's tokenizer and templates

from tests.chat import kit  # noqa: E402

import hfbridge  # noqa: E402
from hfbridge.collators import CausalLMCollator, PackedCollator  # noqa: E402
from hfbridge.samplers import (  # noqa: E402
    BinPackingBatchSampler,
    LengthGroupedBatchSampler,
    RandomBatchSampler,
    TokenBudgetBatchSampler,
)


def long_tail_conversations(n: int, seed: int) -> list[list[dict[str, str]]]:
    """Conversations with a long tail: 1-12 exchanges, reply lengths log-normal (median ~25 words)."""
    rng = random.Random(seed)
    words = " ".join(kit.corpus_lines()).split()
    convs = []
    for _ in range(n):
        messages = [{"role": "system", "content": "You are helpful."}] if rng.random() < 0.5 else []
        for _ in range(min(12, 1 + int(rng.expovariate(0.6)))):
            messages.append({"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(4, 30)))})
            k = min(600, int(rng.lognormvariate(3.2, 0.9)) + 1)
            messages.append({"role": "assistant", "content": " ".join(rng.choices(words, k=k))})
        convs.append(messages)
    return convs


def tiny_llama(tokenizer: Any) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        pad_token_id=tokenizer.pad_token_id,
    )
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def epoch(
    adapter: Any, batches: list[list[int]], collate: Any, model: Any, train: bool
) -> tuple[float, float]:
    """(padding share, seconds for one epoch of training steps, or of collation only when ``train`` is False)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    padded = real = 0
    start = time.perf_counter()
    for indices in batches:
        batch = collate(adapter.__getitems__(indices))
        positions = batch["input_ids"].numel()
        padded += positions
        real += int(adapter.lengths[indices].sum())
        if train:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return 1 - real / padded, time.perf_counter() - start


def padding_table(name: str, adapter: Any, tokenizer: Any, args: argparse.Namespace) -> list[tuple]:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    lengths = adapter.lengths
    bins_per_batch = max(1, round(args.batch_size * float(lengths.mean()) / args.row_length))
    budget = args.batch_size * int(lengths.mean())
    trl_collate = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)

    def trl(rows: list[dict[str, Any]]) -> Any:
        return trl_collate([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])

    plans = {
        "trl-padded": (RandomBatchSampler(len(adapter), args.batch_size, seed=0), trl),
        "grouped": (LengthGroupedBatchSampler(lengths, args.batch_size, seed=0), CausalLMCollator(tokenizer)),
        "packed-bfd": (
            BinPackingBatchSampler(lengths, args.row_length, bins_per_batch=bins_per_batch, seed=0),
            PackedCollator("sdpa", row_length=args.row_length, pad_token_id=tokenizer.pad_token_id),
        ),
        "packed-flat": (TokenBudgetBatchSampler(lengths, budget, seed=0), PackedCollator("sdpa")),
    }
    out = []
    for strategy, (sampler, collate) in plans.items():
        batches = list(sampler)
        model = tiny_llama(tokenizer)
        share, seconds = epoch(adapter, batches, collate, model, train=not args.no_train)
        out.append((name, strategy, len(batches), share, seconds))
        print(
            f"  {name:>9} {strategy:>12}: {len(batches):5d} batches, padding {share:7.2%}, epoch {seconds:7.1f} s"
        )
    return out


def trl_preprocess_seconds(dataset: Any, tokenizer: Any) -> float:
    import trl

    model = tiny_llama(tokenizer)

    def build(data: Any) -> float:
        args = trl.SFTConfig(
            output_dir=tempfile.mkdtemp(),
            report_to=[],
            bf16=False,
            use_cpu=True,
            max_length=None,
            assistant_only_loss=True,
        )
        start = time.perf_counter()
        trl.SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        return time.perf_counter() - start

    overhead = build(dataset.select(range(10)))
    return build(dataset) - overhead


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets (a smoke run)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--row-length", type=int, default=2048)
    parser.add_argument("--max-length", type=int, default=2048)
    parser.add_argument("--n-long-tail", type=int, default=1000)
    parser.add_argument("--n-preprocess", type=int, default=100_000)
    parser.add_argument("--no-train", action="store_true", help="time collation only, no model steps")
    parser.add_argument("--skip-preprocess", action="store_true")
    parser.add_argument("--skip-epochs", action="store_true", help="only the preprocessing comparison")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_long_tail, args.n_preprocess = 200, 2000
    warnings.simplefilter("ignore")
    from datasets import Dataset, disable_progress_bars

    disable_progress_bars()
    torch.set_num_threads(2)
    plain = kit.chat_tokenizer(kit.CHATML)
    marked = kit.with_template(plain, kit.CHATML_MARKED)
    demo = [json.loads(line)["messages"] for line in (ROOT / "examples/data/chat_train.jsonl").open()]
    sets = {
        "demo": hfbridge.adapt(demo, plain, task="chat", max_length=args.max_length),
        "long-tail": hfbridge.adapt(
            long_tail_conversations(args.n_long_tail, seed=1), plain, task="chat", max_length=args.max_length
        ),
    }
    rows = []
    print("1. padding and time per epoch" + (" (skipped)" if args.skip_epochs else ""))
    for name, adapter in () if args.skip_epochs else sets.items():
        lengths = adapter.lengths
        print(
            f"  {name}: {len(adapter)} conversations, tokens mean {lengths.mean():.0f}, p50 "
            f"{np.median(lengths):.0f}, p99 {np.percentile(lengths, 99):.0f}, max {lengths.max()}"
        )
        rows += padding_table(name, adapter, plain, args)
    if rows:
        print("\n| set | batching | batches | padding | epoch s | time vs trl-padded |")
        print("| --- | --- | --- | --- | --- | --- |")
    for name, strategy, n, share, seconds in rows:
        base = next(r[4] for r in rows if r[0] == name and r[1] == "trl-padded")
        print(f"| {name} | {strategy} | {n} | {share:.2%} | {seconds:.1f} | {seconds / base:.2f} |")
    if args.skip_preprocess:
        return
    n = args.n_preprocess
    print(f"\n2. preprocessing {n} conversations (assistant-only labels)")
    convs = kit.conversations(n, seed=7)
    dataset = Dataset.from_dict({"messages": convs})
    trl_seconds = trl_preprocess_seconds(dataset, marked)
    timings = {"TRL SFTTrainer (markers)": trl_seconds}
    for label, tok in (("hfbridge (markers)", marked), ("hfbridge (prefix renders, no markers)", plain)):
        start = time.perf_counter()
        hfbridge.adapt(dataset, tok, task="chat")
        timings[label] = time.perf_counter() - start
    print("\n| preprocessing | seconds | conversations/s | speed vs TRL |\n| --- | --- | --- | --- |")
    for label, seconds in timings.items():
        print(f"| {label} | {seconds:.1f} | {n / seconds:.0f} | {trl_seconds / seconds:.2f}x |")


if __name__ == "__main__":
    main()
