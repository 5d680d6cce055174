"""HF ``Trainer`` callbacks for checkpoints, early stopping and gradual unfreezing (imports transformers)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from hfbridge._checks import check_type
from hfbridge._distributed import unwrap_model
from hfbridge.callbacks import Checkpointer, EarlyStopping

if TYPE_CHECKING:
    from hfbridge.models import GradualUnfreezer

__all__ = ["CheckpointCallback", "EarlyStoppingCallback", "GradualUnfreezingCallback"]

logger = logging.getLogger(__name__)


def _eval_key(monitor: Any) -> Any:
    """HF prefixes evaluation metrics with ``eval_``; read ``"loss"`` as ``"eval_loss"`` like Trainer does."""
    if isinstance(monitor, str) and monitor and not monitor.startswith("eval_"):
        return f"eval_{monitor}"
    return monitor


class EarlyStoppingCallback(TrainerCallback):
    """Stop HF ``Trainer`` when an evaluation metric stops improving; patience survives a resume.

    Built on :class:`~hfbridge.EarlyStopping` (same arguments). Unlike ``transformers.EarlyStoppingCallback``
    it needs neither ``load_best_model_at_end`` nor ``metric_for_best_model``, and when tracked by a
    :class:`CheckpointCallback` (``callbacks={"early_stopping": this}``) its state is saved with every
    checkpoint and restored on ``trainer.train(resume_from_checkpoint=...)`` (transformers #28544). Like
    :class:`CheckpointCallback`, it only counts evaluations during training: a ``trainer.evaluate(...)`` call
    before ``train()`` or after it (e.g. with ``metric_key_prefix="final"``) is ignored.

    Args:
        monitor: evaluation metric, e.g. ``"eval_loss"`` (``"loss"`` is read as ``"eval_loss"``).
        **kwargs: ``mode``, ``patience``, ``min_delta``, ``relative``, ``check_finite``,
            ``stopping_threshold``, ``divergence_threshold`` as for :class:`~hfbridge.EarlyStopping`.

    Example:
        >>> stop = EarlyStoppingCallback("eval_loss", patience=3)  # doctest: +SKIP
        >>> ckpt = CheckpointCallback("ckpts", monitor="loss", callbacks={"early_stopping": stop})
        >>> Trainer(..., callbacks=[ckpt, stop]).train(resume_from_checkpoint=ckpt.latest())  # doctest: +SKIP
    """

    def __init__(self, monitor: str, **kwargs: Any) -> None:
        self.early_stopping = EarlyStopping(_eval_key(monitor), **kwargs)
        self._last_step: int | None = None
        self._training = False

    @property
    def reason(self) -> str | None:
        """Why training was stopped, or ``None``."""
        return self.early_stopping.reason

    def observe(self, step: int, metrics: Mapping[str, Any]) -> bool:
        """Feed one evaluation (once per step, however many callbacks ask); return whether to stop."""
        if step != self._last_step:
            self.early_stopping.update(metrics)
            self._last_step = step
            if self.early_stopping.should_stop:
                logger.warning("early stopping at step %d: %s", step, self.early_stopping.reason)
        return self.early_stopping.should_stop

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = True

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if not self._training:
            return control  # a trainer.evaluate() call outside training: not part of the patience count
        metrics = kwargs.get("metrics") or {}
        if self.observe(state.global_step, metrics):
            control.should_training_stop = True
        return control

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = False

    def state_dict(self) -> dict[str, Any]:
        return {"early_stopping": self.early_stopping.state_dict(), "last_step": self._last_step}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.early_stopping.load_state_dict(state["early_stopping"])
        self._last_step = state.get("last_step")


class CheckpointCallback(TrainerCallback):
    """Write hfbridge crash-safe checkpoints from HF ``Trainer`` after each evaluation, keeping the best K.

    Each checkpoint folder uses Trainer's file names (``model.safetensors``, ``optimizer.pt``,
    ``scheduler.pt``, ``rng_state.pth``, ``trainer_state.json``), so
    ``trainer.train(resume_from_checkpoint=cb.latest())`` resumes from it; on that resume this callback
    restores the states of ``callbacks`` (e.g. early-stopping patience).
    Set ``save_strategy="no"`` in ``TrainingArguments`` to turn Trainer's own, non-atomic checkpoints off.

    Args:
        dirpath: checkpoint folder, or a ready :class:`~hfbridge.Checkpointer` (a checkpoint is written after
            every evaluation during training; its ``every_n_steps`` / ``every_n_epochs`` are not used).
        monitor: evaluation metric that ranks checkpoints (``"loss"`` reads ``"eval_loss"``); default: none,
            keep the last ``keep_last``.
        mode, keep_best, keep_last, filename, check_disk_space: as for :class:`~hfbridge.Checkpointer`
            (ignored when ``dirpath`` is a Checkpointer).
        callbacks: named stateful callbacks to save and restore, e.g. ``{"early_stopping": stop}``.
        load_best_at_end: load the best checkpoint's weights into the model when training ends.

    Raises:
        TypeError, ValueError: on a bad argument.
    """

    def __init__(
        self,
        dirpath: str | Path | Checkpointer,
        *,
        monitor: str | None = None,
        mode: Literal["min", "max"] = "min",
        keep_best: int = 1,
        keep_last: int | None = 1,
        filename: str = "checkpoint-{step}",
        check_disk_space: bool = True,
        callbacks: Mapping[str, Any] | None = None,
        load_best_at_end: bool = False,
    ) -> None:
        if isinstance(dirpath, Checkpointer):
            self.checkpointer = dirpath
        else:
            self.checkpointer = Checkpointer(
                dirpath,
                monitor=_eval_key(monitor),
                mode=mode,
                keep_best=keep_best,
                keep_last=keep_last,
                filename=filename,
                check_disk_space=check_disk_space,
            )
        self.callbacks = dict(callbacks or {})
        for key, cb in self.callbacks.items():
            if not (hasattr(cb, "state_dict") and hasattr(cb, "load_state_dict")):
                raise TypeError(
                    f"`callbacks[{key!r}]` must have state_dict() and load_state_dict(); "
                    f"got {type(cb).__name__}"
                )
        check_type("load_best_at_end", load_best_at_end, bool)
        self.load_best_at_end = load_best_at_end
        self._training = False

    def latest(self) -> str | None:
        """The newest complete checkpoint, as a string for ``resume_from_checkpoint``; ``None`` when none."""
        path = self.checkpointer.latest()
        return None if path is None else str(path)

    def best(self) -> str | None:
        """The best checkpoint by ``monitor``; ``None`` when none."""
        path = self.checkpointer.best()
        return None if path is None else str(path)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = True
        if state.global_step == 0:
            return
        # Trainer resumed at global_step: restore our callbacks' states from our checkpoint of that step.
        matches = [c for c in self.checkpointer.checkpoints() if c["step"] == state.global_step]
        if not matches:
            if self.callbacks:
                warnings.warn(
                    f"resumed at step {state.global_step}, but {str(self.checkpointer.dirpath)!r} has no "
                    f"checkpoint of that step; callback states ({sorted(self.callbacks)}) start fresh",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return
        path = self.checkpointer.dirpath / matches[-1]["name"]
        self.checkpointer.resume(path=path, callbacks=self.callbacks, restore_rng=False)

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self._training:
            return  # a trainer.evaluate() call outside training: nothing to checkpoint
        metrics = dict(kwargs.get("metrics") or {})
        for cb in self.callbacks.values():
            if isinstance(cb, EarlyStoppingCallback):
                cb.observe(state.global_step, metrics)  # so the saved state includes this evaluation
        self.checkpointer.save(
            state.global_step,
            model=kwargs["model"],
            optimizer=kwargs.get("optimizer"),
            scheduler=kwargs.get("lr_scheduler"),
            metrics=metrics,
            epoch=state.epoch,
            callbacks=self.callbacks,
            force=True,
            trainer_state=json.loads(json.dumps(dataclasses.asdict(state))),
        )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._training = False
        self.checkpointer.wait()  # an asynchronous sharded save still in flight is published (or raises) here
        if self.load_best_at_end:
            best = self.checkpointer.best()
            if best is None:
                warnings.warn(
                    "load_best_at_end=True but there is no best checkpoint", RuntimeWarning, stacklevel=2
                )
                return
            self.checkpointer.resume(path=best, model=kwargs["model"], restore_rng=False)


# ----------------------------------------------------------------------------------------- gradual unfreezing


class GradualUnfreezingCallback(TrainerCallback):
    """Applies a :class:`GradualUnfreezer` at train begin, each epoch begin and (``unit="step"``) each step.

    The stage comes from ``state.epoch``/``state.global_step`` alone, so
    ``trainer.train(resume_from_checkpoint=...)`` restores the right frozen state with no saved state.

    Args:
        unfreezer: the schedule to apply.
    """

    def __init__(self, unfreezer: GradualUnfreezer) -> None:
        self.unfreezer = unfreezer

    def _t(self, state: TrainerState) -> int:
        if self.unfreezer.unit == "step":
            return int(state.global_step)
        return math.floor(state.epoch or 0.0)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if args.world_size > 1 and not args.ddp_find_unused_parameters:
            raise ValueError(
                "gradual unfreezing on several processes needs "
                "`TrainingArguments(ddp_find_unused_parameters=True)`: frozen parameters get no gradient; "
                f"got ddp_find_unused_parameters={args.ddp_find_unused_parameters!r}"
            )
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:
            held = {id(p) for group in optimizer.param_groups for p in group["params"]}
            model = unwrap_model(self.unfreezer.model)
            missing = [n for n, p in model.named_parameters() if id(p) not in held]
            if missing:
                warnings.warn(
                    f"{len(missing)} parameters are not in the Trainer's optimizer (they were frozen when it "
                    "was built), so they will not train when the schedule thaws them: "
                    f"{', '.join(missing[:4])}, ... "
                    "Let the callback do the freezing: do not freeze the model before Trainer.train().",
                    stacklevel=2,
                )
        self.unfreezer.apply(self._t(state), force=True)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.unfreezer.apply(self._t(state))

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.unfreezer.unit == "step":
            self.unfreezer.apply(self._t(state))
