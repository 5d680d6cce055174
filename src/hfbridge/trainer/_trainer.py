"""``hfbridge.Trainer``: HF's Trainer with hfbridge batching, sorted evaluation and atomic checkpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import torch
import transformers
from torch.utils.data import DataLoader, SequentialSampler
from transformers.trainer import TRAINING_ARGS_NAME

from hfbridge.callbacks import Checkpointer
from hfbridge.callbacks._sharded import task_config
from hfbridge.callbacks._store import rank_best
from hfbridge.trainer._arguments import TrainingArguments, option
from hfbridge.trainer._batching import (
    MetricsInDatasetOrder,
    SortedOrder,
    find_sorted_order,
    in_dataset_order,
    model_input_name,
    train_dataloader,
    train_lengths,
)
from hfbridge.trainer._callbacks import EarlyStoppingCallback

__all__ = ["Trainer", "retention"]

logger = logging.getLogger(__name__)

_PREFIX = "checkpoint"  # HF's folder prefix: checkpoint-<global step>


def _flag(args: Any, name: str) -> Any:
    """A flag of :class:`TrainingArguments`, or its default when ``args`` is HF's own class."""
    return getattr(args, name, TrainingArguments.__dataclass_fields__[name].default)


def masks_at_random(collator: Any) -> bool:
    """Whether ``collator`` masks tokens at random (HF's masked and permutation LM collators, hfbridge's
    ``MaskedLMCollator``): its output for a row depends on the rest of the batch."""
    from hfbridge.collators import MaskedLMCollator

    if isinstance(collator, (MaskedLMCollator, transformers.DataCollatorForPermutationLanguageModeling)):
        return True
    return isinstance(collator, transformers.DataCollatorForLanguageModeling) and bool(collator.mlm)


def resolved_batching(args: Any) -> str | None:
    """The hfbridge batching in effect for ``args``, or ``None`` when Trainer's own sampler is used."""
    batching = _flag(args, "batching")
    if batching is not None:
        return str(batching)
    return {"group_by_length": "length", "random": "random"}.get(option(args.train_sampling_strategy))


def _eval_key(metric: str) -> str:
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def retention(args: Any) -> dict[str, Any]:
    """The :class:`~hfbridge.Checkpointer` retention for HF's checkpoint flags (see ``docs/porting.md``).

    * no ``metric_for_best_model``: the ``save_total_limit`` newest (all when unset or <= 0), as HF;
    * ``metric_for_best_model`` without ``keep_last``: HF's rule, the best one plus the newest up to
      ``save_total_limit`` in all (``save_total_limit=1`` keeps the best and the newest);
    * ``metric_for_best_model`` with ``keep_last``: the ``save_total_limit`` best (all when unset) plus the
      ``keep_last`` newest; a checkpoint in both sets counts once.

    Returns:
        ``monitor``, ``mode``, ``keep_best`` and ``keep_last`` for :class:`~hfbridge.Checkpointer`.
    """
    limit = args.save_total_limit if args.save_total_limit is not None and args.save_total_limit > 0 else None
    metric = args.metric_for_best_model
    if metric is None:
        return {"monitor": None, "mode": "min", "keep_best": 0, "keep_last": limit, "keep_total": None}
    ranked = {"monitor": _eval_key(metric), "mode": "max" if args.greater_is_better else "min"}
    keep_last = _flag(args, "keep_last")
    if limit is None:
        return {**ranked, "keep_best": 1, "keep_last": None, "keep_total": None}
    if keep_last is None:
        # HF: the newest `limit`, the best protected among them (it and the newest at least)
        return {**ranked, "keep_best": 1, "keep_last": limit, "keep_total": limit}
    return {**ranked, "keep_best": limit, "keep_last": keep_last, "keep_total": None}


class Trainer(transformers.Trainer):
    """``transformers.Trainer`` that batches, evaluates, checkpoints and resumes the hfbridge way.

    Takes the same arguments as HF's Trainer; the extra flags live in :class:`TrainingArguments` (HF's own
    class works too, with their defaults). What changes:

    * **Training batches** come from hfbridge samplers for ``train_sampling_strategy="group_by_length"``
      (and the default ``"random"``) or the ``batching`` flag; lengths from ``.lengths``, the
      ``length_column_name`` column or the Arrow ``input_ids`` offsets. A resume seeks the sampler in O(1)
      instead of replaying batches. ``"sequential"`` and ``"batch_rebalance"`` keep Trainer's own samplers.
    * **Evaluation and prediction** run in length-sorted batches (``sort_eval_by_length``, also under
      several processes); ``compute_metrics`` and the returned predictions see rows in dataset order.
    * **Checkpoints** are written atomically by :class:`~hfbridge.Checkpointer` into HF's ``checkpoint-N``
      folders when ``save_strategy``/``save_steps`` say so, kept by :func:`retention`;
      ``resume_from_checkpoint=True`` picks the newest complete one; ``load_best_model_at_end`` and
      ``state.best_model_checkpoint`` follow the store's ranking.
    * **Early stopping** from ``early_stopping_patience``/``early_stopping_threshold`` on
      ``metric_for_best_model`` (``eval_loss`` when unset), its patience saved in every checkpoint.
    * **Freezing** from ``freeze``, applied here, before the optimizer is built.

    Raises:
        ValueError: when ``freeze`` freezes nothing in the model.
    """

    def __init__(self, model: Any = None, args: Any = None, *rest: Any, **kwargs: Any) -> None:
        if args is None:
            args = TrainingArguments(output_dir="trainer_output")
        super().__init__(model, args, *rest, **kwargs)
        self._checkpointers: dict[str, Checkpointer] = {}
        self._eval_metrics: dict[int, dict[str, Any]] = {}  # the last evaluation's, by step
        self._epoch_now = 0
        self._said_unsorted = False  # the note that a random-masking collator keeps evaluation unsorted
        self._weights_loaded_from: Path | None = None  # set by train(), taken by _load_from_checkpoint()
        if self.args.push_to_hub and self.args.hub_strategy in ("checkpoint", "all_checkpoints"):
            logger.warning(
                "hfbridge.Trainer writes checkpoints through its atomic store and does not push them: "
                "`push_to_hub` with `hub_strategy=%r` pushes only what save_model() writes",
                self.args.hub_strategy,
            )
        spec = _flag(self.args, "freeze")
        if spec is not None and self.model is not None:
            self._freeze(spec)
        self.early_stopping: EarlyStoppingCallback | None = None
        patience = _flag(self.args, "early_stopping_patience")
        if patience is not None:
            metric = self.args.metric_for_best_model
            self.early_stopping = EarlyStoppingCallback(
                metric or "loss",
                mode="max" if metric and self.args.greater_is_better else "min",
                patience=patience,
                min_delta=_flag(self.args, "early_stopping_threshold"),
            )
            self.add_callback(self.early_stopping)

    def _freeze(self, spec: str) -> None:
        from hfbridge.models import freeze

        model: Any = self.model
        try:
            report = freeze(model, spec, dry_run=True)
        except ValueError as exc:
            raise ValueError(f"`freeze={spec!r}` (TrainingArguments) does not fit the model: {exc}") from None
        if not report.frozen:
            raise ValueError(
                f"`freeze={spec!r}` freezes no parameter of {type(self.model).__name__}; name parts the "
                "model has (see hfbridge.summary(model)) or drop the flag"
            )
        freeze(model, spec)

    # ------------------------------------------------------------------------------------- training data

    def get_train_dataloader(self) -> DataLoader:
        """hfbridge batching when :func:`resolved_batching` names one, else Trainer's own loader."""
        batching = resolved_batching(self.args)
        if batching is None or self.train_dataset is None:
            return super().get_train_dataloader()
        fallback = super().get_train_dataloader
        return train_dataloader(self, batching, _flag(self.args, "max_tokens"), {}, fallback)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        self._epoch_now = int(kwargs["epoch"] if "epoch" in kwargs else args[1])
        return super()._run_epoch(*args, **kwargs)

    def get_resumed_dataloader(self, dataloader: DataLoader, num_batches: int) -> DataLoader:
        """Seek an hfbridge sampler to batch ``num_batches`` of this epoch in O(1); no batch is replayed."""
        batch_sampler = getattr(dataloader, "batch_sampler", None)
        sampler: Any = getattr(batch_sampler, "batch_sampler", batch_sampler)
        if not callable(getattr(sampler, "seek", None)):
            return super().get_resumed_dataloader(dataloader, num_batches)
        sampler.seek(self._epoch_now, int(num_batches))
        return dataloader

    # ------------------------------------------------------------------------------------- evaluation

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        """Rows longest first when ``sort_eval_by_length`` (under several processes too:
        ``gather_for_metrics`` restores sampler order), else dataset order; never HF's
        ``LengthGroupedSampler``, whose output is shuffled."""
        if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
            return None
        args = self.args
        sort = _flag(args, "sort_eval_by_length") and args.eval_do_concat_batches
        if sort and masks_at_random(self.data_collator):
            # which tokens get masked depends on the batch a row lands in (and, for HF's collators, on how
            # much of torch's global RNG each padded batch draws, which training then continues from):
            # sorted batches would change the metrics and every training step after an evaluation
            if not self._said_unsorted:
                logger.info(
                    "evaluation is not length-sorted: %s masks tokens at random, so the metrics (and the "
                    "RNG stream training continues from) depend on the batches; dataset order keeps HF's",
                    type(self.data_collator).__name__,
                )
                self._said_unsorted = True
            sort = False
        if sort and not args.dataloader_drop_last:  # drop_last: HF drops the last rows, not the shortest
            try:
                lengths = train_lengths(
                    eval_dataset, length_column=args.length_column_name, input_name=model_input_name(self)
                )
            except TypeError:
                logger.info("evaluation is not length-sorted: the dataset has no lengths")
            else:
                return SortedOrder(lengths)
        return SequentialSampler(eval_dataset) if args.world_size <= 1 else None

    def evaluation_loop(self, dataloader: DataLoader, *args: Any, **kwargs: Any) -> Any:
        """Trainer's loop; after a length-sorted pass, metrics and outputs see rows in dataset order."""
        order = find_sorted_order(dataloader)
        if order is None:
            return super().evaluation_loop(dataloader, *args, **kwargs)
        user_metrics = self.compute_metrics
        if user_metrics is not None and not self.args.batch_eval_metrics:
            self.compute_metrics = MetricsInDatasetOrder(user_metrics, order.inverse)
        try:
            output = super().evaluation_loop(dataloader, *args, **kwargs)
        finally:
            self.compute_metrics = user_metrics
        return output._replace(
            predictions=in_dataset_order(output.predictions, order.inverse),
            label_ids=in_dataset_order(output.label_ids, order.inverse),
        )

    # ------------------------------------------------------------------------------------- checkpoints

    def checkpointer(self, run_dir: str | None = None) -> Checkpointer:
        """The :class:`~hfbridge.Checkpointer` of ``run_dir`` (default ``args.output_dir``)."""
        folder = str(run_dir if run_dir is not None else self.args.output_dir)
        if folder not in self._checkpointers:
            self._checkpointers[folder] = Checkpointer(
                folder,
                filename=_PREFIX + "-{step}",
                frozen=_flag(self.args, "checkpoint_frozen"),
                **retention(self.args),
            )
        return self._checkpointers[folder]

    def _determine_best_metric(self, metrics: dict[str, float], trial: Any) -> bool:
        self._eval_metrics = {self.state.global_step: dict(metrics)}
        return super()._determine_best_metric(metrics, trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """Write ``checkpoint-<step>`` through the atomic store (every rank calls it; rank 0 writes)."""
        store = self.checkpointer(self._get_output_dir(trial=trial))
        if self.hp_search_backend is None and trial is None:
            self.store_flos()
        step = self.state.global_step
        metrics = dict(self._eval_metrics.get(step, {}))
        if store.monitor is not None:
            metrics.setdefault(store.monitor, float("nan"))  # not evaluated at this step: never the best
            self.state.best_model_checkpoint = self._best_after(store, step, float(metrics[store.monitor]))
        self._export_callback_states()
        full = not self.args.save_only_model
        store.save(
            step,
            model=model,
            optimizer=self.optimizer if full else None,
            scheduler=self.lr_scheduler if full else None,
            metrics=metrics,
            epoch=self.state.epoch,
            callbacks={"early_stopping": self.early_stopping} if self.early_stopping is not None else None,
            force=True,
            trainer_state=json.loads(json.dumps(dataclasses.asdict(self.state))),
            extra_files=partial(self._write_hf_files, model),
        )
        if store.monitor is not None:
            best = store.best()
            self.state.best_model_checkpoint = None if best is None else str(best)

    def _write_hf_files(self, model: Any, folder: Path) -> None:
        """What HF's ``checkpoint-N`` holds besides the states: ``config.json`` (and
        ``generation_config.json``) next to the full weights, so ``from_pretrained(folder)`` loads it, the
        ``processing_class`` files and ``training_args.bin``. Written into the unpublished folder, so they
        are checksummed and published with the rest."""
        unwrapped = self.accelerator.unwrap_model(model)
        config = task_config(unwrapped)  # names the task model, so tools that pick the class from it see it
        if (folder / "model.safetensors").is_file() and callable(getattr(config, "save_pretrained", None)):
            config.save_pretrained(str(folder))
            generation = getattr(unwrapped, "generation_config", None)
            can_generate = getattr(unwrapped, "can_generate", None)
            if generation is not None and callable(can_generate) and can_generate():
                generation.save_pretrained(str(folder))
        save_processor = getattr(self.processing_class, "save_pretrained", None)
        if callable(save_processor):
            save_processor(str(folder))
        torch.save(self.args, folder / TRAINING_ARGS_NAME)  # as HF; hfbridge never reads it

    def _best_after(self, store: Checkpointer, step: int, score: float) -> str | None:
        """The best folder once ``checkpoint-<step>`` with ``score`` is added (ties keep the earlier one; a
        NaN score is never the best)."""
        new = {"name": f"{_PREFIX}-{step}", "score": score, "seq": math.inf}
        ranked = [r for r in rank_best([*store.checkpoints(), new], store.mode) if not math.isnan(r["score"])]
        return str(store.dirpath / ranked[0]["name"]) if ranked else None

    def _export_callback_states(self) -> None:
        """As Trainer does before saving: ``ExportableState`` states into ``trainer_state.json``."""
        saved: Any = self.state.stateful_callbacks
        for cb in [*self.callback_handler.callbacks, self.control]:
            if not isinstance(cb, transformers.trainer_callback.ExportableState):
                continue
            name, state = type(cb).__name__, cb.state()
            if isinstance(saved.get(name), list):
                saved[name].append(state)
            else:
                saved[name] = state

    def _load_best_model(self) -> None:
        best = self.state.best_model_checkpoint
        store = self.checkpointer()
        if best is None or not any(store.dirpath / r["name"] == Path(best) for r in store.checkpoints()):
            return super()._load_best_model()
        logger.info("loading the best model from %s (score %s)", best, self.state.best_metric)
        store.resume(path=best, model=self.model, restore_rng=False)

    def _finalize_training(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        # Trainer deletes every folder but the best one at the end when save_total_limit == 1; the store
        # owns its folders (it keeps the best and the newest, as HF's documentation allows), so skip that.
        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            return super()._finalize_training(trial, *args, **kwargs)
        finally:
            self.args.save_total_limit = limit

    # ------------------------------------------------------------------------------------- resuming

    def _store_holding(self, folder: str | Path) -> Checkpointer | None:
        """The store whose manifest names ``folder`` as one of its complete checkpoints, or ``None``."""
        store = self.checkpointer(str(Path(folder).parent))
        return store if any(r["name"] == Path(folder).name for r in store.checkpoints()) else None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """The weights of one of the store's checkpoints come through the store: checksums verified, and a
        trainable-only checkpoint (``checkpoint_frozen="reference"``) loaded on top of the base after its
        fingerprint check. Any other folder goes to Trainer's own loader."""
        folder = Path(resume_from_checkpoint)
        loaded, self._weights_loaded_from = self._weights_loaded_from, None
        if loaded is not None and loaded == folder and model is None:
            return  # train() already restored these weights in its one read of the checkpoint
        store = self._store_holding(folder)
        if store is None:
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        store.resume(path=folder, model=self.model if model is None else model, restore_rng=False)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """Trainer's ``train``; ``resume_from_checkpoint=True`` takes the newest checkpoint that is complete
        and passes its checksums (a damaged one is set aside with a warning and the next newest tried; an
        explicit path that is damaged raises), early-stopping patience included. The string ``"True"``
        (any case; what ``--resume_from_checkpoint True`` gives an HF example script) means ``True`` unless a
        folder of that name exists.

        A checkpoint of the store is verified and read once, here, weights included; with ``model_init``,
        DeepSpeed or FSDP, Trainer loads the weights later as it does, reading the folder a second time.
        Should Trainer raise before its own loading step, the model already holds the checkpoint's weights.
        """
        path = resume_from_checkpoint
        if isinstance(path, str) and path.lower() == "true" and not Path(path).exists():
            path = True  # what `--resume_from_checkpoint True` gives; HF's Trainer raises on the string
        callbacks = {"early_stopping": self.early_stopping} if self.early_stopping else None
        plain = self.model_init is None and not (
            getattr(self, "is_deepspeed_enabled", False) or getattr(self, "is_fsdp_enabled", False)
        )
        weights = self.model if plain else None
        if path is True:
            result = self.checkpointer().resume(model=weights, callbacks=callbacks, restore_rng=False)
            if result is None:  # no checkpoint of ours: Trainer looks for its own folders (or raises)
                return super().train(True, *args, **kwargs)
            path = str(result.path)
            self._weights_loaded_from = None if weights is None else Path(path)
        elif isinstance(path, (str, Path)):
            store = self._store_holding(path)
            if store is not None:
                store.resume(path=path, model=weights, callbacks=callbacks, restore_rng=False)
                self._weights_loaded_from = None if weights is None else Path(path)
            path = str(path)
        try:
            return super().train(path, *args, **kwargs)
        finally:
            self._weights_loaded_from = None
