"""A small HF-style training run with ``hfbridge.Trainer``, for the subprocess tests (kill/resume, torchrun).

Usage: ``python _worker.py OUT_DIR [--kill-at-step N] [--resume] [--max-steps N]``. Writes the final weights to
``OUT_DIR/final.safetensors`` and, per rank, the number of batches it trained on to ``OUT_DIR/rank<r>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, 64)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def data(n: int, seed: int) -> Any:
    """Rows tokenized by ``.map`` like an HF script: label 1 when the text mentions ``w7``."""
    import random

    from datasets import Dataset

    rng = random.Random(seed)
    texts = [" ".join(f"w{rng.randrange(2, 64)}" for _ in range(rng.randint(2, 30))) for _ in range(n)]
    raw = Dataset.from_dict({"text": texts, "label": [int("w7 " in t + " ") for t in texts]})
    tok = tokenizer()
    return raw.map(lambda b: tok(b["text"]), batched=True, remove_columns=["text"])


def model() -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
    )
    return BertForSequenceClassification(cfg)


def main(argv: list[str]) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import DataCollatorWithPadding, TrainerCallback

    import hfbridge

    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--kill-at-step", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--max-steps", type=int, default=24)
    opts = p.parse_args(argv)
    out = Path(opts.out)
    args = hfbridge.TrainingArguments(
        output_dir=str(out / "run"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        max_steps=opts.max_steps,
        learning_rate=5e-3,
        train_sampling_strategy="group_by_length",
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
        save_total_limit=2,
        metric_for_best_model="accuracy",
        early_stopping_patience=50,
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        seed=11,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    batches: list[int] = []

    class Probe(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            batches.append(state.global_step)
            if opts.kill_at_step is not None and state.global_step == opts.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no flush: a crash

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    trainer = hfbridge.Trainer(
        model=model(),
        args=args,
        train_dataset=data(160, 1),
        eval_dataset=data(48, 2),
        data_collator=DataCollatorWithPadding(tokenizer()),
        compute_metrics=accuracy,
        callbacks=[Probe()],
    )
    trainer.train(resume_from_checkpoint=True if opts.resume else None)
    rank = int(os.environ.get("RANK", "0"))
    (out / f"rank{rank}.json").write_text(json.dumps({"steps": batches}))
    if rank == 0:
        weights = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(weights, str(out / "final.safetensors"))
        best = trainer.state.best_model_checkpoint
        (out / "state.json").write_text(json.dumps({"best": best, "step": trainer.state.global_step}))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
