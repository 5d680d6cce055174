"""``hfbridge.TrainingArguments``: HF's arguments plus the few flags hfbridge adds, checked when built."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Literal

import transformers

from hfbridge._checks import check_choice, check_non_negative_int, check_positive_int, check_real
from hfbridge.samplers._loader import BATCHINGS

__all__ = ["TrainingArguments", "option"]

_OWN_SAMPLERS = ("sequential", "batch_rebalance")  # HF strategies hfbridge leaves to Trainer's own samplers


def option(value: object) -> str:
    """An HF option as its string: ``IntervalStrategy.NO`` -> ``"no"``, a plain string unchanged."""
    return str(getattr(value, "value", value))


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=5)  # _warn, _check_*, __post_init__, __init__, caller


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """``transformers.TrainingArguments`` with hfbridge's additions; every HF flag keeps its meaning.

    ``HfArgumentParser((..., hfbridge.TrainingArguments))`` picks up the new flags as it does HF's. What the
    HF flags gain under :class:`hfbridge.Trainer` (hfbridge samplers, sorted evaluation, atomic checkpoints)
    is listed there and in ``docs/porting.md``.

    Args:
        batching: ``"length"``, ``"tokens"`` (token budget), ``"random"`` or ``"balanced"`` (class-balanced).
            Default: ``"length"`` for ``train_sampling_strategy="group_by_length"``, ``"random"`` for
            ``"random"``. When set it takes precedence over ``train_sampling_strategy`` (a warning names both
            when they disagree).
        max_tokens: token budget per batch; needs ``batching="tokens"``, where
            ``per_device_train_batch_size`` caps the rows of a batch.
        freeze: a :class:`~hfbridge.FreezeSpec` string (e.g. ``"embeddings,layers:4"``), applied to the model
            when the Trainer is built; a spec that freezes nothing is an error.
        keep_last: with ``metric_for_best_model``: keep the ``save_total_limit`` best checkpoints plus the
            ``keep_last`` newest. Unset: HF's rule (the best plus the newest up to ``save_total_limit``).
        early_stopping_patience: stop after this many evaluations without improvement of
            ``metric_for_best_model`` (``eval_loss`` when unset); survives a resume.
        early_stopping_threshold: the least change that counts as an improvement.
        sort_eval_by_length: evaluate and predict in length-sorted batches, also under several processes
            (same metrics, predictions in dataset order); off, evaluation runs in dataset order. A collator
            that masks tokens at random (masked or permutation LM) always evaluates in dataset order: its
            masks depend on the batches, so sorting would change the metrics.
        checkpoint_frozen: ``"save"`` writes every weight into each checkpoint; ``"reference"`` writes only
            what trains (a LoRA adapter, an unfrozen head) plus a fingerprint of the frozen rest, which a
            resume checks against the base model you load (see :class:`~hfbridge.Checkpointer`'s ``frozen``).

    Raises:
        ValueError: for a bad value, or two flags that contradict each other (the message names both).
    """

    batching: Literal["length", "tokens", "random", "balanced"] | None = field(
        default=None,
        metadata={
            "help": "hfbridge batching: length, tokens, random, balanced (default: train_sampling_strategy)."
        },
    )
    max_tokens: int | None = field(
        default=None, metadata={"help": "Token budget per batch; needs --batching tokens."}
    )
    freeze: str | None = field(
        default=None, metadata={"help": "What to freeze, as a FreezeSpec string, e.g. 'embeddings,layers:4'."}
    )
    keep_last: int | None = field(
        default=None,
        metadata={"help": "With metric_for_best_model: keep the save_total_limit best and this many newest."},
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement."}
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "The least change of the metric that counts as an improvement."}
    )
    sort_eval_by_length: bool = field(
        default=True, metadata={"help": "Evaluate in length-sorted batches (same metrics, less padding)."}
    )
    checkpoint_frozen: Literal["save", "reference"] = field(
        default="save",
        metadata={
            "help": "save: every weight in each checkpoint; reference: only what trains + a fingerprint."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.batching is not None:
            check_choice("batching", self.batching, BATCHINGS)
        check_positive_int("max_tokens", self.max_tokens, allow_none=True)
        check_non_negative_int("keep_last", self.keep_last, allow_none=True)
        check_positive_int("early_stopping_patience", self.early_stopping_patience, allow_none=True)
        check_real("early_stopping_threshold", self.early_stopping_threshold, low=0.0)
        check_choice("checkpoint_frozen", self.checkpoint_frozen, ("save", "reference"))
        self._check_batching()
        self._check_freeze()
        self._check_checkpoints()
        self._check_early_stopping()

    def _check_batching(self) -> None:
        strategy = option(self.train_sampling_strategy)
        if self.max_tokens is not None and self.batching != "tokens":
            raise ValueError(
                f"`max_tokens` is a token budget for `batching='tokens'`; got max_tokens={self.max_tokens} "
                f"with batching={self.batching!r}. Pass --batching tokens, or drop --max_tokens"
            )
        if self.batching == "tokens" and self.max_tokens is None:
            raise ValueError("`batching='tokens'` needs `max_tokens` (the token budget per batch); got None")
        if self.batching is not None and strategy in _OWN_SAMPLERS:
            raise ValueError(
                f"`batching={self.batching!r}` contradicts `train_sampling_strategy={strategy!r}`: "
                "set one of them (train_sampling_strategy 'random' or 'group_by_length' work with batching)"
            )
        if strategy == "group_by_length" and self.batching not in (None, "length"):
            _warn(
                f"`batching={self.batching!r}` takes precedence over "
                "`train_sampling_strategy='group_by_length'`"
            )

    def _check_freeze(self) -> None:
        if self.freeze is None:
            return
        from hfbridge.models import FreezeSpec

        try:
            FreezeSpec.parse(self.freeze)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`freeze` must be a FreezeSpec string; got {self.freeze!r}: {exc}") from None

    def _check_checkpoints(self) -> None:
        saving = option(self.save_strategy) != "no"
        if self.keep_last is not None and self.metric_for_best_model is None:
            raise ValueError(
                f"`keep_last={self.keep_last}` adds newest checkpoints next to the best ones, which need "
                "`metric_for_best_model`; got metric_for_best_model=None (use save_total_limit alone to keep "
                "the newest N)"
            )
        if self.keep_last == 0 and self.save_total_limit is not None and self.save_total_limit <= 0:
            raise ValueError(
                f"`keep_last=0` with `save_total_limit={self.save_total_limit}` keeps no checkpoint at all"
            )
        if not saving and (self.save_total_limit is not None or self.keep_last is not None):
            _warn("`save_total_limit`/`keep_last` do nothing with `save_strategy='no'`: nothing is saved")
        if saving and self.metric_for_best_model is not None and option(self.eval_strategy) == "no":
            _warn(
                f"`metric_for_best_model={self.metric_for_best_model!r}` cannot rank checkpoints with "
                "`eval_strategy='no'`: no checkpoint gets a score, so only the newest are kept"
            )

    def _check_early_stopping(self) -> None:
        if self.early_stopping_patience is None:
            if self.early_stopping_threshold:
                _warn("`early_stopping_threshold` does nothing without `early_stopping_patience`")
            return
        if option(self.eval_strategy) == "no":
            _warn(
                f"`early_stopping_patience={self.early_stopping_patience}` never stops training with "
                "`eval_strategy='no'`: nothing is evaluated"
            )
        if option(self.save_strategy) == "no":
            _warn(
                "`early_stopping_patience` with `save_strategy='no'`: its patience cannot survive a resume, "
                "because no checkpoint is written"
            )
