"""See through ``peft`` wrappers: the transformers model inside a ``PeftModel`` and its adapter parameters.

A LoRA-style ``PeftModel`` holds the task model at ``base_model.model``; its parameters are named
``base_model.model.<task model name>``, with the adapter weights inside the wrapped layers
(``...query.lora_A.default.weight``) and copies of the ``modules_to_save``
(``classifier.modules_to_save.default.weight``). Nothing here imports ``peft``: a model is recognised by the
class names in its MRO, so ``import hfbridge`` stays light and ``peft`` stays optional.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PeftView", "is_peft_model", "peft_view"]

#: the attribute path from a LoRA-style ``PeftModel`` to the task model it wraps
INNER_PATH = "base_model.model"


def is_peft_model(model: Any) -> bool:
    """Whether ``model`` is a ``peft.PeftModel`` (any task subclass), without importing ``peft``."""
    return any(c.__name__ == "PeftModel" and c.__module__.startswith("peft") for c in type(model).__mro__)


@dataclass(frozen=True)
class PeftView:
    """A LoRA-style ``PeftModel`` seen as the task model it wraps.

    Attributes:
        inner: the transformers task model (``peft_model.base_model.model``).
        prefix: ``"base_model.model."``, what the wrapper puts before every name of ``inner``.
        adapters: the adapter names (keys of ``peft_model.peft_config``).
        tuner_prefix: what every adapter weight's module name starts with (``"lora_"`` for LoRA).
    """

    inner: nn.Module
    prefix: str
    adapters: tuple[str, ...]
    tuner_prefix: str

    def is_adapter_param(self, name: str) -> bool:
        """Whether the parameter ``name`` (full or inner name) is adapter-owned: a tuner weight such as
        ``lora_A.default.weight`` or a ``modules_to_save`` copy -- what peft trains and saves."""
        parts = name.split(".")
        for i in range(1, len(parts)):
            if parts[i] in self.adapters:
                owner = parts[i - 1]
                if owner == "modules_to_save" or (self.tuner_prefix and owner.startswith(self.tuner_prefix)):
                    return True
        return False


def peft_view(model: nn.Module) -> PeftView | None:
    """The :class:`PeftView` of a LoRA-style ``PeftModel``; ``None`` for any other model.

    Raises:
        TypeError: for a prompt-learning ``PeftModel`` (prompt tuning, prefix tuning, P-tuning), whose trained
            part is a prompt encoder outside the task model's layers, so layer-based freezing has no meaning.
    """
    from torch import nn

    if not is_peft_model(model):
        return None
    tuner = getattr(model, "base_model", None)
    inner = getattr(tuner, "model", None)
    is_tuner = any(c.__name__ == "BaseTuner" for c in type(tuner).__mro__)
    if not is_tuner or not isinstance(inner, nn.Module):
        raise TypeError(
            f"`model` is a prompt-learning {type(model).__name__} (its adapter is a prompt encoder, not "
            "layers of the task model); freeze and layer discovery support adapter-style PEFT models "
            "(LoRA, IA3, ...) whose task model is at base_model.model"
        )
    config = getattr(model, "peft_config", {}) or {}
    return PeftView(
        inner=inner,
        prefix=INNER_PATH + ".",
        adapters=tuple(config) or ("default",),
        tuner_prefix=str(getattr(tuner, "prefix", "") or ""),
    )
