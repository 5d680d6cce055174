"""Property-based round trips: un-padding any collated batch gives back the rows, whatever the options."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hfbridge.collators import FlatteningCollator, PaddingCollator, TokenClassificationCollator
from tests.collators.conftest import as_container

ids = st.lists(st.integers(min_value=0, max_value=2**40), min_size=0, max_size=12)
options = st.fixed_dictionaries(
    {
        "padding_side": st.sampled_from(["left", "right"]),
        "pad_to_multiple_of": st.one_of(st.none(), st.integers(1, 5)),
        "return_tensors": st.sampled_from(["pt", "np"]),
    }
)
SETTINGS = settings(max_examples=60, deadline=None)


def _unpad(padded: Any, mask: Any) -> list[list[int]]:
    padded, mask = np.asarray(padded), np.asarray(mask).astype(bool)
    return [row[m].tolist() for row, m in zip(padded, mask)]


@SETTINGS
@given(
    rows=st.lists(ids, min_size=1, max_size=6),
    opts=options,
    container=st.sampled_from(["list", "np", "pt"]),
    pad=st.integers(-5, 5),
)
def test_padding_round_trips(rows: list[list[int]], opts: dict[str, Any], container: str, pad: int) -> None:
    features = [
        {"input_ids": r, "token_type_ids": [i % 2] * len(r), "labels": [x % 7 for x in r], "label2": i}
        for i, r in enumerate(rows)
    ]
    batch = PaddingCollator(pad_token_id=pad, label_mode="sequence", **opts)(
        as_container(features, container)
    )
    mask = batch["attention_mask"]
    width = max(len(r) for r in rows)
    multiple = opts["pad_to_multiple_of"] or 1
    assert batch["input_ids"].shape == (len(rows), -(-width // multiple) * multiple)
    assert _unpad(batch["input_ids"], mask) == rows
    assert _unpad(batch["labels"], mask) == [[x % 7 for x in r] for r in rows]
    assert _unpad(batch["token_type_ids"], mask) == [[i % 2] * len(r) for i, r in enumerate(rows)]
    off = ~np.asarray(mask).astype(bool)
    assert (np.asarray(batch["input_ids"])[off] == pad).all()
    assert (np.asarray(batch["labels"])[off] == -100).all()
    assert (np.asarray(batch["token_type_ids"])[off] == 0).all()
    assert np.asarray(batch["label2"]).tolist() == list(range(len(rows)))
    # the real tokens sit on the padding side's opposite end
    lengths = np.asarray(mask).sum(axis=1)
    first_real = np.asarray(mask).argmax(axis=1) if width else lengths
    expected = 0 if opts["padding_side"] == "right" else mask.shape[1] - lengths
    assert (first_real == expected)[lengths > 0].all()
    kind = torch.Tensor if opts["return_tensors"] == "pt" else np.ndarray
    assert all(isinstance(v, kind) for v in batch.values())


@SETTINGS
@given(
    rows=st.lists(st.lists(ids, min_size=2, max_size=2), min_size=1, max_size=4),
    side=st.sampled_from(["left", "right"]),
)
def test_nested_round_trips(rows: list[list[list[int]]], side: str) -> None:
    batch = PaddingCollator(pad_token_id=0, padding_side=side)([{"input_ids": r} for r in rows])
    assert batch["input_ids"].shape[:2] == (len(rows), 2)
    for b, row in enumerate(rows):
        assert _unpad(batch["input_ids"][b], batch["attention_mask"][b]) == row


@SETTINGS
@given(
    rows=st.lists(ids, min_size=1, max_size=6),
    max_length=st.integers(1, 8),
    side=st.sampled_from(["left", "right"]),
)
def test_truncation_keeps_the_chosen_end(rows: list[list[int]], max_length: int, side: str) -> None:
    collate = PaddingCollator(
        pad_token_id=0, max_length=max_length, overflow="truncate", truncation_side=side
    )
    batch = collate([{"input_ids": r} for r in rows])
    kept = [r[:max_length] if side == "right" else r[max(0, len(r) - max_length) :] for r in rows]
    assert _unpad(batch["input_ids"], batch["attention_mask"]) == kept


@SETTINGS
@given(rows=st.lists(ids, min_size=1, max_size=6), container=st.sampled_from(["list", "np", "pt"]))
def test_token_labels_stay_aligned(rows: list[list[int]], container: str) -> None:
    features = [{"input_ids": r, "labels": [x % 3 for x in r]} for r in rows]
    batch = TokenClassificationCollator(pad_token_id=0)(as_container(features, container))
    assert batch["labels"].shape == batch["input_ids"].shape
    assert _unpad(batch["labels"], batch["attention_mask"]) == [[x % 3 for x in r] for r in rows]


@SETTINGS
@given(rows=st.lists(ids, min_size=1, max_size=6), start=st.integers(0, 3))
def test_flattening_round_trips(rows: list[list[int]], start: int) -> None:
    if not any(rows):
        return
    batch = FlatteningCollator(return_flash_attn_kwargs=True, position_ids_start=start)(
        [{"input_ids": r} for r in rows]
    )
    kept = [r for r in rows if r]
    cu = batch["cu_seq_lens_q"].tolist()
    flat = batch["input_ids"][0].tolist()
    assert [flat[a:b] for a, b in itertools.pairwise(cu)] == kept
    positions = batch["position_ids"][0].tolist()
    assert all(positions[a:b] == list(range(start, start + b - a)) for a, b in itertools.pairwise(cu))
    assert batch["max_length_q"] == max(len(r) for r in kept)
