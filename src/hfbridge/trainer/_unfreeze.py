"""The HF ``TrainerCallback`` face of :class:`~hfbridge.models.GradualUnfreezer` (imports transformers)."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from hfbridge._distributed import unwrap_model

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from hfbridge.models import GradualUnfreezer

__all__ = ["GradualUnfreezingCallback"]


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
