"""The task collators that only add to padding (token classification, seq2seq, causal LM) and the factory.

Each composes a ``PaddingCollator`` (its ``padder``), takes every padding option that padding collator takes,
and reads them back as its own attributes (``collate.pad_to_multiple_of``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from hfbridge._checks import check_task, check_type
from hfbridge.collators._arrays import ALIGNED_KEYS, Batch
from hfbridge.collators._masked_lm import MaskedLMCollator
from hfbridge.collators._padding import (
    PADDING_OPTIONS,
    PaddingCollator,
    padding_collator,
    padding_option,
    task_options,
)

__all__ = ["CausalLMCollator", "Seq2SeqCollator", "TokenClassificationCollator", "collator_for_task"]

_ALIGNED_WITH_LABELS = ALIGNED_KEYS | {"labels"}


class TokenClassificationCollator:
    """Pad a token-classification batch: per-token ``labels`` padded with ``label_pad_token_id`` (-100).

    The same as ``DataCollatorForTokenClassification``, plus a check that every row has exactly one label per
    input id (HF pads a misaligned row silently), and ``label`` is renamed ``labels`` (HF keeps ``label``).

    Args:
        tokenizer: the pad id and padding side come from it.
        **padding: every ``PaddingCollator`` option but ``label_mode`` (always ``"sequence"``).

    Raises:
        ValueError: a row whose ``labels`` is not as long as its ``input_ids`` (and every ``PaddingCollator``
            error).

    Example:
        >>> collate = TokenClassificationCollator(tokenizer, pad_to_multiple_of=8)  # doctest: +SKIP
        >>> rows = [{"input_ids": [2, 9, 3], "labels": [0, 1, 0]}, {"input_ids": [2, 3], "labels": [0, 1]}]
        >>> batch = collate(rows)  # doctest: +SKIP
    """

    OPTIONS: ClassVar[tuple[str, ...]] = task_options((), ("label_mode",))

    def __init__(self, tokenizer: Any = None, **padding: Any) -> None:
        self.padder = padding_collator(type(self).__name__, tokenizer, padding, label_mode="sequence")

    __getattr__ = padding_option  # the padding options read back from `padder`: collate.pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        """Collate ``features`` into a dict of tensors (or arrays)."""
        return self.padder.to_output(self.padder.collate_arrays(features, aligned=_ALIGNED_WITH_LABELS))


class Seq2SeqCollator:
    """Pad a seq2seq batch: ``labels`` padded with -100 to the longest target; ``decoder_input_ids`` built.

    The same tensors as ``DataCollatorForSeq2Seq``: encoder keys are padded to the longest source, ``labels``
    to the longest target (both rounded up to ``pad_to_multiple_of``), and, when ``model`` has
    ``prepare_decoder_input_ids_from_labels`` (T5, BART, ...), ``decoder_input_ids`` are built from the padded
    labels, so a label-smoothing loss need not run the model twice. Rows without labels give a batch without
    ``labels`` (HF puts ``labels: None`` in it).

    Args:
        tokenizer: the pad id and padding side come from it.
        model: optional; its ``prepare_decoder_input_ids_from_labels`` builds ``decoder_input_ids``.
        **padding: every ``PaddingCollator`` option but ``label_mode`` (always ``"sequence"``).

    Example:
        >>> collate = Seq2SeqCollator(tokenizer, model=model)  # doctest: +SKIP
        >>> rows = [{"input_ids": [5, 6, 1], "labels": [7, 1]}, {"input_ids": [5, 1], "labels": [8, 9, 1]}]
        >>> batch = collate(rows)  # doctest: +SKIP
    """

    OPTIONS: ClassVar[tuple[str, ...]] = task_options(("model",), ("label_mode",))

    def __init__(self, tokenizer: Any = None, model: Any = None, **padding: Any) -> None:
        self.model = model
        self.padder = padding_collator(type(self).__name__, tokenizer, padding, label_mode="sequence")

    __getattr__ = padding_option  # the padding options read back from `padder`: collate.pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        """Collate ``features`` into a dict of tensors (or arrays)."""
        batch = self.padder.collate_arrays(features)
        prepare = getattr(self.model, "prepare_decoder_input_ids_from_labels", None)
        if "labels" in batch and prepare is not None and "decoder_input_ids" not in batch:
            import torch

            batch["decoder_input_ids"] = np.asarray(prepare(labels=torch.from_numpy(batch["labels"])).cpu())
        return self.padder.to_output(batch)


class CausalLMCollator:
    """Pad a causal-LM batch; ``labels`` are ``input_ids`` where the attention mask is 1 and -100 elsewhere.

    Like ``DataCollatorForLanguageModeling(mlm=False)``, except that the labels are masked by the *attention
    mask* rather than by comparing ids with the pad id: when the pad token is the EOS token (the usual
    GPT-2/Llama set-up), HF also turns every real EOS into -100 and the model never learns to stop
    (transformers #23530); here the EOS stays a label. Rows that already carry ``labels`` (e.g. prompt tokens
    set to -100 for instruction tuning) keep them, padded with ``label_pad_token_id``. ``special_tokens_mask``
    is dropped, as HF does, since models do not take it.

    Args:
        tokenizer: the pad id and padding side come from it.
        return_attention_mask: return the attention mask (the labels are masked by it either way).
        **padding: every other ``PaddingCollator`` option but ``label_mode`` (always ``"sequence"``).

    Example:
        >>> collate = CausalLMCollator(tokenizer)  # doctest: +SKIP
        >>> collate([{"input_ids": [5, 6, 2]}, {"input_ids": [7, 2]}])["labels"].tolist()  # doctest: +SKIP
        [[5, 6, 2], [7, 2, -100]]
    """

    OPTIONS: ClassVar[tuple[str, ...]] = task_options((), ("label_mode",))

    def __init__(self, tokenizer: Any = None, *, return_attention_mask: bool = True, **padding: Any) -> None:
        check_type("return_attention_mask", return_attention_mask, bool)
        self.return_attention_mask = return_attention_mask
        self.padder = padding_collator(
            type(self).__name__, tokenizer, padding, label_mode="sequence", return_attention_mask=True
        )

    __getattr__ = padding_option  # the padding options read back from `padder`: collate.pad_to_multiple_of

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> Batch:
        """Collate ``features`` into a dict of tensors (or arrays)."""
        batch = self.padder.collate_arrays(features)
        batch.pop("special_tokens_mask", None)
        if "labels" not in batch and "input_ids" in batch:
            attended = batch["attention_mask"].astype(bool, copy=False)
            batch["labels"] = np.where(attended, batch["input_ids"], np.int64(self.padder.label_pad_token_id))
        if not self.return_attention_mask:
            batch.pop("attention_mask", None)
        return self.padder.to_output(batch)


Collator = (
    PaddingCollator | TokenClassificationCollator | Seq2SeqCollator | CausalLMCollator | MaskedLMCollator
)

_BY_TASK: dict[str, Any] = {
    "sequence-classification": PaddingCollator,
    "token-classification": TokenClassificationCollator,
    "seq2seq": Seq2SeqCollator,
    "causal-lm": CausalLMCollator,
    "masked-lm": MaskedLMCollator,
}


def collator_for_task(task: str, tokenizer: Any, *, model: Any = None, **kwargs: Any) -> Collator:
    """Return the picklable collator for ``task``, configured from ``tokenizer`` (and ``model`` where needed).

    ``sequence-classification`` -> ``PaddingCollator(label_mode="classification")``, ``token-classification``
    -> ``TokenClassificationCollator``, ``seq2seq`` -> ``Seq2SeqCollator`` (``model`` builds
    ``decoder_input_ids``), ``causal-lm`` -> ``CausalLMCollator``, ``masked-lm`` -> ``MaskedLMCollator``. A
    ``model`` is accepted for every task and used only where the collator needs one.

    Args:
        task: one of ``hfbridge._checks.TASKS``.
        tokenizer: the tokenizer the rows were encoded with.
        model: the model being trained (optional).
        **kwargs: the collator's options, e.g. ``pad_to_multiple_of=8`` or ``mlm_probability=0.2``.

    Returns:
        The collator, a callable ``list[Mapping] -> dict[str, Tensor]``.

    Raises:
        ValueError: an unknown task.
        TypeError: an option the task's collator does not have (the message lists the valid ones).

    Example:
        >>> collate = collator_for_task("token-classification", tok, pad_to_multiple_of=8)  # doctest: +SKIP
        >>> loader = DataLoader(dataset, batch_size=32, collate_fn=collate)  # doctest: +SKIP
    """
    cls = _BY_TASK[check_task(task)]
    valid = PADDING_OPTIONS if cls is PaddingCollator else cls.OPTIONS
    unknown = sorted(set(kwargs) - set(valid))
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
