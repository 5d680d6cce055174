"""Padding collators: every key padded with its own value, for every task, fast.

``PaddingCollator`` is the core; the task collators compose it; ``collator_for_task`` picks one by task name.
"""

from hfbridge.collators._causal_lm import CausalLMCollator
from hfbridge.collators._factory import collator_for_task
from hfbridge.collators._flattening import FlatteningCollator
from hfbridge.collators._masked_lm import MaskedLMCollator
from hfbridge.collators._packed import PACKING_ATTENTION, PackedCollator
from hfbridge.collators._padding import PaddingCollator
from hfbridge.collators._seq2seq import Seq2SeqCollator
from hfbridge.collators._token_classification import TokenClassificationCollator

__all__ = [
    "PACKING_ATTENTION",
    "CausalLMCollator",
    "FlatteningCollator",
    "MaskedLMCollator",
    "PackedCollator",
    "PaddingCollator",
    "Seq2SeqCollator",
    "TokenClassificationCollator",
    "collator_for_task",
]
