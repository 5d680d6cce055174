"""``collator_for_task``: the right collator for a task name, with its defaults from the tokenizer and model."""

from __future__ import annotations

import dataclasses
from typing import Any

from hfbridge._tasks import check_task
from hfbridge.collators._causal_lm import CausalLMCollator
from hfbridge.collators._masked_lm import MaskedLMCollator
from hfbridge.collators._padding import PaddingCollator
from hfbridge.collators._seq2seq import Seq2SeqCollator
from hfbridge.collators._token_classification import TokenClassificationCollator

__all__ = ["collator_for_task"]

Collator = (
    PaddingCollator | TokenClassificationCollator | Seq2SeqCollator | CausalLMCollator | MaskedLMCollator
)

_BY_TASK: dict[str, type] = {
    "sequence-classification": PaddingCollator,
    "token-classification": TokenClassificationCollator,
    "seq2seq": Seq2SeqCollator,
    "causal-lm": CausalLMCollator,
    "masked-lm": MaskedLMCollator,
}


def collator_for_task(task: str, tokenizer: Any, *, model: Any = None, **kwargs: Any) -> Collator:
    """Return the picklable collator for ``task``, configured from ``tokenizer`` (and ``model`` where needed).

    ``sequence-classification`` -> ``PaddingCollator(label_mode="classification")``, ``token-classification`` ->
    ``TokenClassificationCollator``, ``seq2seq`` -> ``Seq2SeqCollator`` (``model`` builds ``decoder_input_ids``),
    ``causal-lm`` -> ``CausalLMCollator``, ``masked-lm`` -> ``MaskedLMCollator``. A ``model`` is accepted for every
    task and used only where the collator needs one.

    Args:
        task: one of ``hfbridge._tasks.TASKS``.
        tokenizer: the tokenizer the rows were encoded with.
        model: the model being trained (optional).
        **kwargs: the collator's options, e.g. ``pad_to_multiple_of=8`` or ``mlm_probability=0.2``.

    Returns:
        The collator, a callable ``list[Mapping] -> dict[str, Tensor]``.

    Raises:
        ValueError: an unknown task.
        TypeError: an option the task's collator does not have (the message lists the valid ones).

    Example:
        >>> collate = collator_for_task("sequence-classification", tokenizer, pad_to_multiple_of=8)  # doctest: +SKIP
        >>> loader = DataLoader(dataset, batch_size=32, collate_fn=collate)  # doctest: +SKIP
    """
    cls = _BY_TASK[check_task(task)]
    valid = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "tokenizer"}
    unknown = sorted(set(kwargs) - valid)
    if unknown:
        raise TypeError(
            f"{cls.__name__} (for task {task!r}) has no option {', '.join(map(repr, unknown))}; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    if cls is PaddingCollator:
        kwargs.setdefault("label_mode", "classification")
    if cls is Seq2SeqCollator:
        kwargs["model"] = model
    return cls(tokenizer, **kwargs)
