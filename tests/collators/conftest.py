"""Fixtures for the collator tests: pre-tokenized rows from the kit's tokenizers, in three container types."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch


def as_container(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Copy ``rows`` with every list value turned into ``kind``: ``list``, ``np`` (arrays) or ``pt`` (tensors)."""
    if kind == "list":
        return [{k: list(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]
    convert: Callable[[Any], Any] = np.asarray if kind == "np" else torch.tensor
    return [{k: convert(v) if isinstance(v, list) else v for k, v in row.items()} for row in rows]


def encode(tokenizer: Any, texts: list[str], **kwargs: Any) -> list[dict[str, Any]]:
    """Tokenize ``texts`` one row each (lists of ints), as an adapter hands them to the collator."""
    enc = tokenizer(texts, truncation=True, max_length=128, **kwargs)
    return [{k: enc[k][i] for k in enc} for i in range(len(texts))]


@pytest.fixture(scope="session")
def texts(corpus: list[str]) -> list[str]:
    """12 texts of spread lengths, including a one-word row."""
    picked = [corpus[i * 7 % len(corpus)] for i in range(11)]
    return ["Happy", *picked[:5], " ".join(picked[5:9]), *picked[9:]]


@pytest.fixture(scope="session")
def wp_rows(wordpiece_tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
    """WordPiece rows with input_ids, token_type_ids, attention_mask and an int ``label``."""
    rows = encode(wordpiece_tokenizer, texts)
    return [{**row, "label": i % 3} for i, row in enumerate(rows)]


@pytest.fixture(scope="session")
def bpe_rows(bpe_tokenizer: Any, texts: list[str]) -> list[dict[str, Any]]:
    """Byte-level BPE rows with input_ids and attention_mask."""
    return encode(bpe_tokenizer, texts)


def assert_batches_equal(ours: dict[str, Any], theirs: dict[str, Any], keys: Any = None) -> None:
    """Same keys (or just ``keys``), same dtypes, same values."""
    keys = sorted(theirs) if keys is None else keys
    if keys is theirs or keys == sorted(theirs):
        assert sorted(ours) == sorted(theirs)
    for key in keys:
        a, b = ours[key], theirs[key]
        if isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor), key
            assert a.dtype == b.dtype, (key, a.dtype, b.dtype)
            assert torch.equal(a, b), key
        elif isinstance(b, np.ndarray):
            assert a.dtype == b.dtype, (key, a.dtype, b.dtype)
            np.testing.assert_array_equal(a, b, err_msg=key)
        else:
            assert a == b, key
