"""hfbridge: the glue every Hugging Face fine-tuning script rewrites, done once.

``import hfbridge`` only defines names: each public name below is imported from its subpackage on first
access, so importing the package pulls in neither ``transformers`` nor ``datasets`` (nor ``torch``).

Example:
    >>> import hfbridge
    >>> train = hfbridge.adapt(dataset["train"], tokenizer, task="sequence-classification")  # doctest: +SKIP
    >>> loader = hfbridge.build_dataloader(train, batch_size=32, batching="length")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from hfbridge._version import __version__

if TYPE_CHECKING:
    from hfbridge.adapters import ChatAdapter, IterableAdapter, MapAdapter, adapt, adapt_chat
    from hfbridge.callbacks import CheckpointCallback, Checkpointer, EarlyStopping, EarlyStoppingCallback
    from hfbridge.collators import (
        CausalLMCollator,
        FlatteningCollator,
        MaskedLMCollator,
        PackedCollator,
        PaddingCollator,
        Seq2SeqCollator,
        TokenClassificationCollator,
        collator_for_task,
    )
    from hfbridge.models import (
        FreezeSpec,
        GradualUnfreezer,
        freeze,
        layerwise_param_groups,
        load_pretrained,
        summary,
    )
    from hfbridge.samplers import (
        BinPackingBatchSampler,
        ClassBalancedSampler,
        LengthGroupedBatchSampler,
        TokenBudgetBatchSampler,
        build_dataloader,
    )
    from hfbridge.trainer import Trainer, TrainingArguments

# public name -> subpackage that defines it
_LAZY: dict[str, str] = {
    "BinPackingBatchSampler": "samplers",
    "CausalLMCollator": "collators",
    "ChatAdapter": "adapters",
    "CheckpointCallback": "callbacks",
    "Checkpointer": "callbacks",
    "ClassBalancedSampler": "samplers",
    "EarlyStopping": "callbacks",
    "EarlyStoppingCallback": "callbacks",
    "FlatteningCollator": "collators",
    "FreezeSpec": "models",
    "GradualUnfreezer": "models",
    "IterableAdapter": "adapters",
    "LengthGroupedBatchSampler": "samplers",
    "MapAdapter": "adapters",
    "MaskedLMCollator": "collators",
    "PackedCollator": "collators",
    "PaddingCollator": "collators",
    "Seq2SeqCollator": "collators",
    "TokenBudgetBatchSampler": "samplers",
    "TokenClassificationCollator": "collators",
    "Trainer": "trainer",
    "TrainingArguments": "trainer",
    "adapt": "adapters",
    "adapt_chat": "adapters",
    "build_dataloader": "samplers",
    "collator_for_task": "collators",
    "freeze": "models",
    "layerwise_param_groups": "models",
    "load_pretrained": "models",
    "summary": "models",
}

__all__ = [
    "BinPackingBatchSampler",
    "CausalLMCollator",
    "ChatAdapter",
    "CheckpointCallback",
    "Checkpointer",
    "ClassBalancedSampler",
    "EarlyStopping",
    "EarlyStoppingCallback",
    "FlatteningCollator",
    "FreezeSpec",
    "GradualUnfreezer",
    "IterableAdapter",
    "LengthGroupedBatchSampler",
    "MapAdapter",
    "MaskedLMCollator",
    "PackedCollator",
    "PaddingCollator",
    "Seq2SeqCollator",
    "TokenBudgetBatchSampler",
    "TokenClassificationCollator",
    "Trainer",
    "TrainingArguments",
    "__version__",
    "adapt",
    "adapt_chat",
    "build_dataloader",
    "collator_for_task",
    "freeze",
    "layerwise_param_groups",
    "load_pretrained",
    "summary",
]


def __getattr__(name: str) -> Any:
    subpackage = _LAZY.get(name)
    if subpackage is None:
        raise AttributeError(f"module 'hfbridge' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hfbridge.{subpackage}"), name)
    globals()[name] = value  # cache: the next access skips __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
