"""Padding collators: every key padded with its own value, for every task, fast.

``PaddingCollator`` is the core; the task collators compose it; ``collator_for_task`` picks one by task name.
``ColumnRows`` is the list of rows that also carries its columns, which producers such as the adapters return.
"""

from hfbridge.collators._arrays import ColumnRows
from hfbridge.collators._masked_lm import MaskedLMCollator
from hfbridge.collators._packing import PACKING_ATTENTION, FlatteningCollator, PackedCollator
from hfbridge.collators._padding import PaddingCollator
from hfbridge.collators._task_collators import (
    CausalLMCollator,
    Seq2SeqCollator,
    TokenClassificationCollator,
    collator_for_task,
)

__all__ = [
    "PACKING_ATTENTION",
    "CausalLMCollator",
    "ColumnRows",
    "FlatteningCollator",
    "MaskedLMCollator",
    "PackedCollator",
    "PaddingCollator",
    "Seq2SeqCollator",
    "TokenClassificationCollator",
    "collator_for_task",
]
