"""``add_lora``: wrap a task model in a LoRA ``PeftModel`` (what ``load_pretrained(..., lora=...)`` does).

``peft`` is imported only here, and only when a LoRA model is asked for.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hfbridge._checks import LABEL_TASKS, check_task
from hfbridge.models._layout import resolve_layout

if TYPE_CHECKING:
    from peft import LoraConfig
    from torch import nn

__all__ = ["PEFT_TASK_TYPES", "add_lora"]

#: hfbridge task -> ``peft.TaskType`` name (masked-lm has none: peft wraps it as a plain PeftModel)
PEFT_TASK_TYPES: dict[str, str] = {
    "sequence-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "seq2seq": "SEQ_2_SEQ_LM",
    "causal-lm": "CAUSAL_LM",
}


def _import_peft() -> Any:
    try:
        import peft
    except ImportError as e:
        raise ImportError(
            "`lora` needs the optional dependency peft: pip install 'hfbridge[peft]' (or pip install peft)"
        ) from e
    return peft


def _coerce(peft: Any, lora: Any) -> Any:
    if isinstance(lora, peft.LoraConfig):
        return copy.deepcopy(lora)  # the caller's config is left as it was
    if isinstance(lora, Mapping):
        valid = {f.name for f in dataclasses.fields(peft.LoraConfig) if f.init}
        unknown = sorted(str(k) for k in lora if k not in valid)
        if unknown:
            raise ValueError(
                "`lora` keys must be fields of peft.LoraConfig; got unknown "
                f"{', '.join(map(repr, unknown))}; valid fields include r, lora_alpha, lora_dropout, "
                "target_modules, modules_to_save, bias"
            )
        return peft.LoraConfig(**lora)
    raise TypeError(
        f"`lora` must be a peft.LoraConfig or a dict of its fields; got {type(lora).__name__} {lora!r} "
        "(for other PEFT methods call peft.get_peft_model on the loaded model)"
    )


def _linear_names(model: nn.Module) -> list[str]:
    from torch import nn

    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and n})


def add_lora(model: nn.Module, lora: LoraConfig | Mapping[str, Any], *, task: str) -> nn.Module:
    """Wrap the transformers task ``model`` in a LoRA ``PeftModel``.

    Args:
        model: a transformers model loaded for ``task``.
        lora: a ``peft.LoraConfig`` (copied, never changed) or a dict of its fields.
        task: the hfbridge task; sets ``task_type`` when the config has none, and for classification tasks
            puts the task head (found by :func:`resolve_layout`: ``classifier``, ``score``, ...) in
            ``modules_to_save`` when the config names none -- a new head starts random, so it must train
            and be saved with the adapter.

    Returns:
        The ``PeftModel``: the base frozen, the LoRA weights and the head copies trainable.

    Raises:
        ImportError: when ``peft`` is not installed (the ``peft`` extra).
        TypeError: when ``lora`` is neither a ``LoraConfig`` nor a dict.
        ValueError: for unknown dict keys, a ``task_type`` that contradicts ``task``, or a config whose
            ``target_modules`` the model does not have (peft has no default for its type, or a named module
            is missing); the message lists the model's ``Linear`` layer names.
    """
    peft = _import_peft()
    task = check_task(task)
    config = _coerce(peft, lora)
    wanted = PEFT_TASK_TYPES.get(task)
    given = getattr(config.task_type, "value", config.task_type)
    if given is None and wanted is not None:
        config.task_type = peft.TaskType[wanted]
    elif given is not None and given != wanted:
        raise ValueError(
            f"`lora.task_type` must match task={task!r} ({wanted!r}, or None to let load_pretrained set it); "
            f"got {given!r}"
        )
    if task in LABEL_TASKS and config.modules_to_save is None:
        config.modules_to_save = list(resolve_layout(model).head)
    try:
        return peft.get_peft_model(model, config)
    except ValueError as e:
        raise ValueError(
            f"`lora` cannot target {type(model).__name__} (model_type "
            f"{getattr(model.config, 'model_type', '?')!r}) with target_modules={config.target_modules!r}: "
            f"{str(e).rstrip('.')}. Name some of its Linear layers in target_modules, e.g. from: "
            f"{', '.join(_linear_names(model))}"
        ) from e
