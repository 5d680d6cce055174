"""Fixtures of the chat tests: tokenizers with the chat templates of ``tests/chat/kit.py``."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chat import kit


@pytest.fixture(scope="session")
def chat_tok() -> Any:
    """The chat tokenizer with the ChatML-like template (no generation markers)."""
    return kit.chat_tokenizer(kit.CHATML)


@pytest.fixture(scope="session")
def templated(chat_tok: Any) -> Any:
    """``templated(name)`` -> the chat tokenizer with template ``name`` of ``kit.TEMPLATES`` (cached)."""
    cache: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in cache:
            cache[name] = kit.with_template(chat_tok, kit.TEMPLATES.get(name, getattr(kit, name, None)))
        return cache[name]

    return get
