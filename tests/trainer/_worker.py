"""A small HF-style training run with ``hfbridge.Trainer``, for the subprocess tests (kill/resume, torchrun).

Usage: ``python _worker.py OUT_DIR [--kill-at-step N] [--resume] [--max-steps N] [--predict] [--predict-only W]
[--no-sort]``. Writes the final weights to ``OUT_DIR/final.safetensors`` and, per rank, the steps it trained, the
evaluation batches it ran and the process group it saw to ``OUT_DIR/rank<r>.json``. ``--predict`` runs
``trainer.predict`` on the evaluation rows after training; ``--predict-only W`` loads the weights file ``W`` and
only predicts. Either writes the predictions, labels and metrics to ``OUT_DIR/predict.npz``.
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
    p.add_argument("--predict", action="store_true")
    p.add_argument("--predict-only", default=None)
    p.add_argument("--no-sort", action="store_true")
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
        sort_eval_by_length=not opts.no_sort,
        # HF scales a model's loss by the process count when the model takes loss kwargs (BERT does, and
        # ignores them): off, so the evaluation loss of 2 ranks compares with that of 1 process
        average_tokens_across_devices=False,
    )
    batches: list[int] = []
    eval_batches: list[int] = []  # batches of each evaluation/prediction run by this rank
    counting = [0]

    class Probe(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            batches.append(state.global_step)
            if opts.kill_at_step is not None and state.global_step == opts.kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no flush: a crash

        def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            counting[0] += 1

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            eval_batches.append(counting[0])
            counting[0] = 0

        on_predict = on_evaluate

    def accuracy(pred: Any) -> dict[str, float]:
        return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}

    net = model()
    if opts.predict_only is not None:
        from safetensors.torch import load_file

        net.load_state_dict(load_file(opts.predict_only))
    eval_rows = data(50, 2)  # 50 rows, 16 a batch: a short last batch, and padding rows under 2 ranks
    trainer = hfbridge.Trainer(
        model=net,
        args=args,
        train_dataset=data(160, 1),
        eval_dataset=eval_rows,
        data_collator=DataCollatorWithPadding(tokenizer()),
        compute_metrics=accuracy,
        callbacks=[Probe()],
    )
    if opts.predict_only is None:
        trainer.train(resume_from_checkpoint=True if opts.resume else None)
    rank = int(os.environ.get("RANK", "0"))
    if opts.predict or opts.predict_only is not None:
        import numpy as np

        got = trainer.predict(eval_rows)
        if rank == 0:
            np.savez(
                out / "predict.npz",
                predictions=got.predictions,
                label_ids=got.label_ids,
                dataset_labels=np.asarray(eval_rows["label"]),
                accuracy=got.metrics["test_accuracy"],
                loss=got.metrics["test_loss"],
            )
    from hfbridge.trainer._batching import find_sorted_order

    world = {
        "sorted_eval": find_sorted_order(trainer.get_eval_dataloader()) is not None,
        "world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "args_world_size": args.world_size,
    }
    record = {"steps": batches, "eval_batches": eval_batches, **world}
    (out / f"rank{rank}.json").write_text(json.dumps(record))
    if rank == 0 and opts.predict_only is None:
        weights = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(weights, str(out / "final.safetensors"))
        best = trainer.state.best_model_checkpoint
        (out / "state.json").write_text(json.dumps({"best": best, "step": trainer.state.global_step}))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
    # every result is on disk: leave without interpreter finalization, where gloo's threads can abort a process
    # (SIGABRT, "terminate called without an active exception"; see end_gloo_worker in tests/conftest.py)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
