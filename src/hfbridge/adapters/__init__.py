"""Adapters: any ``datasets`` object, dict, list or DataFrame becomes a torch dataset for a named task.

``adapt(source, tokenizer, task=...)`` returns a ``MapAdapter`` (sized sources), an ``IterableAdapter``
(streaming sources) or a dict of them (``DatasetDict``). Rows stay in Arrow and are tokenized in batches.
"""

from hfbridge.adapters._adapt import adapt
from hfbridge.adapters._chat_adapter import ChatAdapter, adapt_chat
from hfbridge.adapters._config import AdapterConfig
from hfbridge.adapters._iterable import IterableAdapter
from hfbridge.adapters._map import MapAdapter
from hfbridge.adapters._sources import token_lengths

__all__ = [
    "AdapterConfig",
    "ChatAdapter",
    "IterableAdapter",
    "MapAdapter",
    "adapt",
    "adapt_chat",
    "token_lengths",
]
