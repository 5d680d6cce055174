"""The HF ``TrainerCallback`` face of :class:`~hfbridge.models.GradualUnfreezer` (imports transformers)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hfbridge.models._unfreeze import GradualUnfreezer

__all__ = ["GradualUnfreezingCallback"]


class GradualUnfreezingCallback(TrainerCallback):
    """Applies a :class:`GradualUnfreezer` at train begin, each epoch begin and (``unit="step"``) each step begin.

    The stage comes from ``state.epoch``/``state.global_step`` alone, so ``trainer.train(resume_from_checkpoint=...)``
    restores the right frozen state without any saved callback state.

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
