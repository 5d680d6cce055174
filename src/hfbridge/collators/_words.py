"""Word boundaries from the vocabulary, for whole-word masking without offset mappings."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["continuation_table"]

# (how a word-start token begins, or how a continuation token begins) per sub-word scheme
_CONTINUATION_PREFIX = "##"  # WordPiece: "##ing" continues a word
_START_PREFIXES = ("\u0120", "\u2581")  # byte-level BPE "Ġword", SentencePiece "▁word" start a word


def continuation_table(tokenizer: Any) -> np.ndarray:
    """Return a boolean array over token ids: ``True`` where the token continues the previous token's word.

    Raises:
        ValueError: the vocabulary shows no known sub-word scheme (WordPiece ``##``, byte-level ``Ġ``,
            SentencePiece ``▁``), so words cannot be told apart.
    """
    vocab: dict[str, int] = tokenizer.get_vocab()
    size = max(len(tokenizer), max(vocab.values(), default=-1) + 1)
    tokens = [""] * size
    for token, index in vocab.items():
        tokens[index] = token
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    table = np.zeros(size, dtype=bool)
    if any(t.startswith(_CONTINUATION_PREFIX) for t in tokens):
        for i, t in enumerate(tokens):
            table[i] = t.startswith(_CONTINUATION_PREFIX) and t not in special
        return table
    for prefix in _START_PREFIXES:
        if any(t.startswith(prefix) for t in tokens):
            for i, t in enumerate(tokens):
                table[i] = bool(t) and not t.startswith(prefix) and t not in special
            return table
    raise ValueError(
        "`whole_word_mask=True` needs word boundaries, but the tokenizer's vocabulary uses none of the known "
        "sub-word markers (WordPiece '##', byte-level 'Ġ', SentencePiece '▁'); use whole_word_mask=False"
    )
