"""Supervised fine-tuning of a causal LM on conversations, offline in about a minute.

What it shows:

* ``hfbridge.adapt(..., task="chat")``: labels only on what the assistant says (every assistant turn and its
  end-of-turn token), from a chat template *without* ``{% generation %}`` markers;
* padding-free packing: ``BinPackingBatchSampler`` packs conversations into rows of ``--row-length`` tokens by
  best-fit decreasing, ``PackedCollator`` restarts ``position_ids`` per conversation so none attends to another;
* exact resume: the loader's ``state_dict`` is saved with the model every ``--save-every`` steps.

The model is a tiny Llama built from a config, and the tokenizer is trained on the demo data (nothing is
downloaded). Run ``python examples/chat_sft.py`` (``--help`` for options); it prints the validation loss on the
assistant tokens before and after training, the packing's padding share, and a reply generated for a held-out
question.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, default=DATA / "chat_train.jsonl")
    parser.add_argument("--validation", type=Path, default=DATA / "chat_validation.jsonl")
    parser.add_argument("--row-length", type=int, default=512, help="tokens per packed row")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", type=Path, default=None, help="save the model and loader state here")
    parser.add_argument(
        "--max-steps", type=int, default=None, help="stop after this many steps (smoke tests)"
    )
    args = parser.parse_args(argv)
    for flag in ("train", "validation"):
        if not getattr(args, flag).is_file():
            parser.error(f"--{flag}: no such file: {getattr(args, flag)}")
    if args.row_length < 64:
        parser.error(f"--row-length must be at least 64; got {args.row_length}")
    return args


def read_conversations(path: Path) -> list[list[dict[str, str]]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line)["messages"] for line in f if line.strip()]


def train_tokenizer(conversations: list[list[dict[str, str]]]) -> Any:
    """A byte-level BPE tokenizer trained on the demo texts, with the chat special tokens and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [m["content"] for conv in conversations for m in conv]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok.train_from_iterator(
        texts, trainers.BpeTrainer(vocab_size=1024, special_tokens=SPECIALS, initial_alphabet=alphabet)
    )
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[4:],
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_llama(tokenizer: Any, seed: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def assistant_loss(model: Any, loader: Any) -> float:
    """Mean loss per labelled (assistant) token."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch).loss) * n
            count += n
    model.train()
    return total / max(count, 1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    import hfbridge
    from hfbridge.collators import PackedCollator
    from hfbridge.samplers import BinPackingBatchSampler, ResumableDataLoader

    torch.manual_seed(args.seed)
    train_convs = read_conversations(args.train)
    tokenizer = train_tokenizer(train_convs)
    train = hfbridge.adapt(train_convs, tokenizer, task="chat", max_length=args.row_length)
    validation = hfbridge.adapt(
        read_conversations(args.validation), tokenizer, task="chat", max_length=args.row_length
    )
    model = tiny_llama(tokenizer, args.seed)
    collate = PackedCollator.for_model(model, row_length=args.row_length)
    sampler = BinPackingBatchSampler(train.lengths, args.row_length, bins_per_batch=2, seed=args.seed)
    loader = ResumableDataLoader(train, seed=args.seed, rank=0, batch_sampler=sampler, collate_fn=collate)
    val_sampler = BinPackingBatchSampler(validation.lengths, args.row_length, shuffle=False)
    val_loader = ResumableDataLoader(
        validation, seed=0, rank=0, batch_sampler=val_sampler, collate_fn=collate
    )

    labelled = sum(int((torch.tensor(r["labels"]) != -100).sum()) for r in train)
    print(
        f"train: {len(train)} conversations, {int(train.lengths.sum())} tokens, {labelled} assistant tokens "
        f"labelled; {len(sampler.bins)} packed rows of {args.row_length} "
        f"(padding {sampler.padding_share:.2%})"
    )
    before = assistant_loss(model, val_loader)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    steps_per_epoch = len(loader)
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * min(s / total_steps, 1.0))),
    )
    step, start = 0, time.perf_counter()
    model.train()
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            if step % 20 == 0:
                print(f"epoch {epoch} step {step}/{total_steps} loss {loss.item():.3f}")
            if step >= total_steps:
                break
        if step >= total_steps:
            break
    seconds = time.perf_counter() - start
    after = assistant_loss(model, val_loader)
    print(f"validation loss on assistant tokens: {before:.3f} -> {after:.3f} ({step} steps, {seconds:.0f} s)")

    question = [{"role": "user", "content": "How many metres are in 7 kilometres?"}]
    prompt = tokenizer.apply_chat_template(
        question, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    model.eval()
    with torch.no_grad():
        out = model.generate(
            **prompt,
            max_new_tokens=16,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    print(f"user: {question[0]['content']}\nassistant: {reply}")
    if args.output_dir is not None:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.output_dir)
        tokenizer.save_pretrained(args.output_dir)
        (args.output_dir / "loader_state.json").write_text(json.dumps(loader.state_dict()))
    return {
        "loss_before": before,
        "loss_after": after,
        "steps": step,
        "padding": sampler.padding_share,
        "reply": reply,
    }


if __name__ == "__main__":
    main()
