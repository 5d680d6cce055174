"""The fast paths of PaddingCollator and FlatteningCollator: taken for common batches, identical to the general
path, never raising errors of their own."""

from __future__ import annotations

import pickle
import re
from typing import Any

import numpy as np
import pytest
import torch

import hfbridge.collators._flattening as flattening_module
import hfbridge.collators._padding as padding_module
from hfbridge.collators import (
    FlatteningCollator,
    PaddingCollator,
    Seq2SeqCollator,
    TokenClassificationCollator,
)
from tests.collators.conftest import as_container

CONTAINERS = ["list", "np", "pt"]


def _rows(pair: bool = False) -> list[dict[str, Any]]:
    lengths = [5, 1, 7, 3]
    return [
        {
            "input_ids": [2, *range(10 + i, 10 + i + n - 2), 3][:n],
            "token_type_ids": [int(pair and j >= n // 2) for j in range(n)],
            "attention_mask": [1] * n,
            "label": i % 3,
        }
        for i, n in enumerate(lengths)
    ]


def _general(collate: Any, features: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What the general path gives for ``features`` (the fast path switched off)."""
    with monkeypatch.context() as patch:
        patch.setattr(padding_module, "fast_collate", lambda *args: None)
        return collate(features)


def _assert_same(fast: dict[str, Any], general: dict[str, Any]) -> None:
    assert list(fast) == list(general)  # same keys, same order
    for key, value in general.items():
        assert type(fast[key]) is type(value)
        if isinstance(value, (np.ndarray, torch.Tensor)):
            assert fast[key].dtype == value.dtype, key
            assert fast[key].shape == value.shape, key
            assert np.asarray(fast[key]).tolist() == np.asarray(value).tolist(), key
        else:
            assert fast[key] == value


def _took_fast_path(collate: PaddingCollator) -> bool:
    return any(plan is not None for plan in collate._plans.values())


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"padding_side": "left"},
        {"pad_to_multiple_of": 4},
        {"padding": "max_length", "max_length": 9},
        {"max_length": 7},
        {"attention_mask_dtype": "bool"},
        {"return_tensors": "np"},
        {"pad_token_id": 5, "pad_token_type_id": 1},
    ],
)
@pytest.mark.parametrize("pair", [False, True])
def test_fast_path_matches_general_path(
    container: str, options: dict[str, Any], pair: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    collate = PaddingCollator(**{"pad_token_id": 0, **options})
    features = as_container(_rows(pair), container)
    fast = collate(features)
    assert _took_fast_path(collate)
    _assert_same(fast, _general(collate, features, monkeypatch))


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("drop", ["attention_mask", "token_type_ids"])
@pytest.mark.parametrize("return_attention_mask", [True, False])
def test_fast_path_builds_or_omits_the_attention_mask(
    container: str, drop: str, return_attention_mask: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    collate = PaddingCollator(pad_token_id=0, return_attention_mask=return_attention_mask)
    features = as_container([{k: v for k, v in row.items() if k != drop} for row in _rows()], container)
    _assert_same(collate(features), _general(collate, features, monkeypatch))


@pytest.mark.parametrize("container", CONTAINERS)
def test_task_collators_take_the_fast_path(container: str, monkeypatch: pytest.MonkeyPatch) -> None:
    tok_rows = [{**row, "labels": [-100, *row["input_ids"][1:]]} for row in _rows()]
    for row in tok_rows:
        del row["label"]
    collate = TokenClassificationCollator(pad_token_id=0)
    features = as_container(tok_rows, container)
    _assert_same(collate(features), _general(collate, features, monkeypatch))
    assert _took_fast_path(collate._padding)
    s2s_rows = [{"input_ids": row["input_ids"], "labels": row["input_ids"][::-1] * 2} for row in _rows()]
    collate_s2s = Seq2SeqCollator(pad_token_id=0)
    features = as_container(s2s_rows, container)
    _assert_same(collate_s2s(features), _general(collate_s2s, features, monkeypatch))
    assert _took_fast_path(collate_s2s._padding)


class _RowLike:
    """Indexable by key and sized like a dict row, but not a Mapping: the general path rejects it."""

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    def __getitem__(self, key: str) -> Any:
        return self.row[key]

    def __len__(self) -> int:
        return len(self.row)


def _variants() -> list[tuple[str, list[Any]]]:
    """Batches the fast path must hand to the general path (same result or same error)."""
    base = _rows()
    int32 = [{**r, "input_ids": np.asarray(r["input_ids"], dtype=np.int32)} for r in as_container(base, "np")]
    as_bool = [
        {**r, "attention_mask": np.ones(len(r["input_ids"]), dtype=bool)} for r in as_container(base, "np")
    ]
    empty = [
        {**r, "input_ids": [], "token_type_ids": [], "attention_mask": []} if i == 1 else r
        for i, r in enumerate(base)
    ]
    empty_np = as_container(empty, "np")  # np.asarray([]) is float64
    tuples = [{**r, "input_ids": tuple(r["input_ids"])} if i == 2 else r for i, r in enumerate(base)]
    floats = [{**r, "input_ids": [1.0, 2.0]} if i == 3 else r for i, r in enumerate(base)]
    misaligned = [{**r, "attention_mask": [1]} if i == 2 else r for i, r in enumerate(base)]
    # same total length, but rows 0 and 2 swap one mask position: only a per-row check sees it
    shifted = [
        {**r, "attention_mask": [1] * (len(r["input_ids"]) + {0: 1, 2: -1}.get(i, 0))}
        for i, r in enumerate(base)
    ]
    float_mask = [{**r, "attention_mask": [1.0] * len(r["input_ids"])} for r in base]
    not_mapping = [_RowLike(r) if i == 1 else r for i, r in enumerate(base)]
    mixed = [{**r, "input_ids": torch.tensor(r["input_ids"])} if i == 1 else r for i, r in enumerate(base)]
    missing = [{k: v for k, v in r.items() if k != "label"} if i == 3 else r for i, r in enumerate(base)]
    renamed = [
        {**{k: v for k, v in r.items() if k != "label"}, "labels": 0} if i == 1 else r
        for i, r in enumerate(base)
    ]
    multi_hot = [{**r, "label": [0.0, 1.0]} for r in base]
    list_label = [{**r, "label": [1, 2]} if i == 2 else r for i, r in enumerate(base)]
    float_label = [{**r, "label": 0.5 * i} for i, r in enumerate(base)]
    strings = [{**r, "text": "hello"} for r in base]
    over = [
        {**r, "input_ids": list(range(20)), "token_type_ids": [0] * 20, "attention_mask": [1] * 20}
        for r in base
    ]
    nested_np = [
        {**r, "input_ids": np.ones((2, 3), dtype=np.int64)} if i == 2 else r
        for i, r in enumerate(as_container(base, "np"))
    ]
    return [
        ("int32", int32),
        ("bool", as_bool),
        ("empty", empty),
        ("empty_np", empty_np),
        ("empty_pt", as_container(empty, "pt")),
        ("tuples", tuples),
        ("floats", floats),
        ("floats_np", as_container(floats, "np")),
        ("floats_pt", as_container(floats, "pt")),
        ("misaligned", misaligned),
        ("misaligned_pt", as_container(misaligned, "pt")),
        ("shifted", shifted),
        ("shifted_np", as_container(shifted, "np")),
        ("shifted_pt", as_container(shifted, "pt")),
        ("float_mask", float_mask),
        ("mixed", mixed),
        ("not_mapping", not_mapping),
        ("missing", missing),
        ("renamed", renamed),
        ("multi_hot", multi_hot),
        ("list_label", list_label),
        ("float_label", float_label),
        ("strings", strings),
        ("over_max_length", over),
        ("nested_np", nested_np),
    ]


@pytest.mark.parametrize(("name", "features"), _variants(), ids=[name for name, _ in _variants()])
@pytest.mark.parametrize("label_mode", ["auto", "classification"])
def test_unusual_batches_give_what_the_general_path_gives(
    name: str, features: list[Any], label_mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    collate = PaddingCollator(pad_token_id=0, max_length=16, label_mode=label_mode)  # type: ignore[arg-type]
    try:
        expected = _general(collate, features, monkeypatch)
    except (TypeError, ValueError) as err:
        with pytest.raises(type(err), match=re.escape(str(err))):
            collate(features)
        return
    _assert_same(collate(features), expected)


def test_a_used_collator_pickles_and_plans_per_key_set() -> None:
    collate = PaddingCollator(pad_token_id=0)
    for container in CONTAINERS:
        collate(as_container(_rows(), container))
    assert len(collate._plans) == 3
    clone = pickle.loads(pickle.dumps(collate))
    assert clone == collate
    got, want = clone(_rows()), collate(_rows())
    assert all(torch.equal(got[k], want[k]) for k in want)


def _plain(value: Any) -> Any:
    return (
        value.tolist()
        if isinstance(value, (np.ndarray, torch.Tensor))
        else list(value)
        if isinstance(value, list)
        else value
    )


def test_fast_path_never_aliases_or_changes_the_features() -> None:
    for container in CONTAINERS:
        features = as_container(_rows(), container)
        before = [{k: _plain(v) for k, v in row.items()} for row in features]
        batch = PaddingCollator(pad_token_id=0, return_tensors="np")(features)
        for value in batch.values():
            value[...] = -7
        assert [{k: _plain(v) for k, v in row.items()} for row in features] == before


def _flat_general(collate: Any, features: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as patch:
        patch.setattr(flattening_module, "_pack_fast", lambda features: None)
        return collate(features)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_flash_attn_kwargs": True, "return_seq_idx": True},
        {"position_ids_start": 2, "separator_id": -1},
    ],
)
def test_flattening_fast_path_matches_general_path(
    container: str, with_labels: bool, options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"input_ids": row["input_ids"]} for row in _rows()]
    if with_labels:
        rows = [{**row, "labels": [x % 5 for x in row["input_ids"]]} for row in rows]
    collate = FlatteningCollator(**options)
    features = as_container(rows, container)
    _assert_same(collate(features), _flat_general(collate, features, monkeypatch))


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize(
    "case", ["empty_row", "other_keys", "different_other_keys", "short_labels", "floats", "different_keys"]
)
def test_flattening_unusual_batches_give_what_the_general_path_gives(
    container: str, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows: list[dict[str, Any]] = [{"input_ids": row["input_ids"]} for row in _rows()]
    if case == "empty_row":
        rows[1] = {"input_ids": []}
    elif case in ("other_keys", "different_other_keys"):
        rows = [{**row, "attention_mask": [1] * len(row["input_ids"])} for row in rows]
        if case == "different_other_keys":
            rows[2] = {"input_ids": rows[2]["input_ids"], "token_type_ids": rows[2]["attention_mask"]}
    elif case == "short_labels":
        rows = [{**row, "labels": row["input_ids"][: 1 if i == 2 else None]} for i, row in enumerate(rows)]
    elif case == "floats":
        rows[3] = {"input_ids": [1.5, 2.0]}
    else:
        rows[2] = {"labels": rows[2]["input_ids"]}
    features = as_container(rows, container)
    collate = FlatteningCollator(return_flash_attn_kwargs=True, return_seq_idx=True)
    try:
        expected = _flat_general(collate, features, monkeypatch)
    except (TypeError, ValueError) as err:
        with pytest.raises(type(err), match=re.escape(str(err))):
            collate(features)
        return
    _assert_same(collate(features), expected)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_masks_from_the_tables_match_a_comparison_with_arange(side: str) -> None:
    from hfbridge.collators._arrays import padding_mask

    rng = np.random.default_rng(0)
    for width in [0, 1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257, 511, 512, 513, 700]:
        lengths = rng.integers(0, width + 1, size=9).tolist()
        if width:
            lengths[0] = width
        positions = np.arange(width)
        want = (
            positions < np.array(lengths)[:, None]
            if side == "right"
            else positions >= width - np.array(lengths)[:, None]
        )
        got = padding_mask(lengths, width, side)  # type: ignore[arg-type]
        assert got.shape == want.shape
        assert (got == want).all(), (width, side)
        assert (padding_mask(np.array(lengths), np.int64(width), side) == want).all()  # type: ignore[arg-type]


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("longest", [300, 600])  # mask from a table (<= 512) or from a comparison
def test_long_rows_take_the_fast_path_and_match_the_general_path(
    container: str, side: str, longest: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows(pair=True)
    n = longest
    rows[2] = {
        "input_ids": [2, *range(7, 7 + n - 2), 3],
        "token_type_ids": [0] * (n // 2) + [1] * (n - n // 2),
        "attention_mask": [1] * n,
        "label": 1,
    }
    collate = PaddingCollator(pad_token_id=5, padding_side=side)  # type: ignore[arg-type]
    features = as_container(rows, container)
    fast = collate(features)
    assert _took_fast_path(collate)
    assert fast["input_ids"].shape == (4, n)
    _assert_same(fast, _general(collate, features, monkeypatch))


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("fast", [True, False])
def test_every_output_is_its_own_writable_contiguous_array(
    container: str, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Masks gathered from a table are strided views; flag keys go through read-only bytes: neither may leak."""
    if not fast:
        monkeypatch.setattr(padding_module, "fast_collate", lambda *args: None)
    rows = _rows(pair=True)
    rows = [
        {**row, "special_tokens_mask": [1, *[0] * (len(row["input_ids"]) - 2), 1][: len(row["input_ids"])]}
        for row in rows
    ]
    for dtype in ("int64", "bool"):
        for drop in ((), ("attention_mask",)):
            batch = PaddingCollator(pad_token_id=0, attention_mask_dtype=dtype, return_tensors="np")(  # type: ignore[arg-type]
                as_container([{k: v for k, v in r.items() if k not in drop} for r in rows], container)
            )
            assert batch["attention_mask"].dtype == (bool if dtype == "bool" else np.int64)
            for key, value in batch.items():
                assert value.flags.c_contiguous, (key, dtype, drop)
                assert value.flags.writeable, (key, dtype, drop)
            values = list(batch.values())  # and no two outputs share memory
            for i, a in enumerate(values):
                for b in values[i + 1 :]:
                    assert not np.shares_memory(a, b)


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("token_type_ids", [0, 300]),  # over 255: not a byte
        ("token_type_ids", [0, -1]),  # negative: not a byte
        ("special_tokens_mask", [True, False]),  # bools are ints 0 and 1
        ("attention_mask", [1, 0]),  # zeros inside a row (a pre-padded row)
    ],
)
def test_flag_keys_with_any_int_values_match_the_general_path(
    key: str, values: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _rows()
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        row[key] = [values[(i + j) % 2] for j in range(n)]
    collate = PaddingCollator(pad_token_id=0, pad_values={"special_tokens_mask": 1})
    fast = collate(rows)
    assert _took_fast_path(collate)
    _assert_same(fast, _general(collate, rows, monkeypatch))
    got = fast[key][0, : len(rows[0]["input_ids"])].tolist()
    assert got == [int(v) for v in rows[0][key]]
