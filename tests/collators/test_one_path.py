"""The one padding path: every container and option gives the same batch, unusual batches give the result of a
plain-Python reference or a named error, and nothing is aliased or changed."""

from __future__ import annotations

import pickle
import re
from typing import Any

import numpy as np
import pytest
import torch

from hfbridge.collators import (
    ColumnRows,
    FlatteningCollator,
    PaddingCollator,
    Seq2SeqCollator,
    TokenClassificationCollator,
)
from hfbridge.collators._arrays import padding_mask
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


def _plain(value: Any) -> Any:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(x) for x in value]
    return value.item() if isinstance(value, np.generic) else value


def _reference(features: list[Any], pad: int = 0, width: int | None = None, side: str = "right") -> Any:
    """What padding to the longest row (or ``width``) must give, in plain Python: lists of numbers per key."""
    rows = [{k: _plain(v) for k, v in row.items()} for row in features]
    longest = max(len(row["input_ids"]) for row in rows)
    width = longest if width is None else width

    def padded(values: list[Any], value: Any) -> list[Any]:
        fill = [value] * (width - len(values))
        return values + fill if side == "right" else fill + values

    out: dict[str, Any] = {}
    for key in rows[0]:
        name = "labels" if key == "label" else key
        column = [row[key] for row in rows]
        if isinstance(column[0], str):
            continue
        if isinstance(column[0], list) and key != "label":
            out[name] = [padded([int(x) for x in v], pad if key == "input_ids" else 0) for v in column]
        else:
            out[name] = column
    if "attention_mask" not in out:
        out["attention_mask"] = [padded([1] * len(row["input_ids"]), 0) for row in rows]
    return out


def _listed(batch: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) for key, value in batch.items()}


OPTIONS = [
    {},
    {"padding_side": "left"},
    {"pad_to_multiple_of": 4},
    {"padding": "max_length", "max_length": 9},
    {"max_length": 7},
    {"return_tensors": "np"},
    {"pad_token_id": 5},
]


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("pair", [False, True])
def test_every_container_and_option_matches_the_reference(
    container: str, options: dict[str, Any], pair: bool
) -> None:
    collate = PaddingCollator(**{"pad_token_id": 0, **options})
    rows = _rows(pair)
    longest = max(len(r["input_ids"]) for r in rows)
    width = options.get("max_length") if options.get("padding") == "max_length" else longest
    if "pad_to_multiple_of" in options:
        width = -(-width // 4) * 4
    expected = _reference(rows, options.get("pad_token_id", 0), width, options.get("padding_side", "right"))
    batch = collate(as_container(rows, container))
    kind = np.ndarray if options.get("return_tensors") == "np" else torch.Tensor
    assert all(isinstance(v, kind) for v in batch.values())
    assert _listed(batch) == expected


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("drop", ["attention_mask", "token_type_ids"])
@pytest.mark.parametrize("return_attention_mask", [True, False])
def test_the_attention_mask_is_built_or_omitted(
    container: str, drop: str, return_attention_mask: bool
) -> None:
    collate = PaddingCollator(pad_token_id=0, return_attention_mask=return_attention_mask)
    rows = [{k: v for k, v in row.items() if k != drop} for row in _rows()]
    expected = _reference(rows)
    if drop == "attention_mask" and not return_attention_mask:
        del expected["attention_mask"]
    assert _listed(collate(as_container(rows, container))) == expected


@pytest.mark.parametrize("container", CONTAINERS)
def test_task_collators_pad_labels_on_the_one_path(container: str) -> None:
    rows = [{"input_ids": r["input_ids"], "labels": [-100, *r["input_ids"][1:]]} for r in _rows()]
    batch = _listed(TokenClassificationCollator(pad_token_id=0)(as_container(rows, container)))
    assert batch["labels"] == [r["labels"] + [-100] * (7 - len(r["labels"])) for r in rows]
    s2s = [{"input_ids": r["input_ids"], "labels": r["input_ids"][::-1] * 2} for r in _rows()]
    batch = _listed(Seq2SeqCollator(pad_token_id=0)(as_container(s2s, container)))
    assert batch["labels"] == [r["labels"] + [-100] * (14 - len(r["labels"])) for r in s2s]
    assert batch["input_ids"] == _reference(s2s)["input_ids"]


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


# what each unusual batch must give: None for the reference result, else (error type, message fragment)
_OUTCOMES: dict[str, Any] = {
    "int32": None,
    "bool": None,
    "empty": None,
    "empty_np": None,
    "empty_pt": None,
    "tuples": None,
    "floats": (TypeError, "`input_ids` must hold integers; row 3, position 0 is float 1.0"),
    "floats_np": (TypeError, "`input_ids` must hold integers; got dtype float64"),
    "floats_pt": (TypeError, "`input_ids` must hold integers; got dtype float32"),
    "misaligned": (ValueError, "`attention_mask` must be as long as `input_ids` in every row; row 2"),
    "misaligned_pt": (ValueError, "`attention_mask` must be as long as `input_ids` in every row; row 2"),
    "shifted": (ValueError, "`attention_mask` must be as long as `input_ids` in every row; row 0"),
    "shifted_np": (ValueError, "`attention_mask` must be as long as `input_ids` in every row; row 0"),
    "shifted_pt": (ValueError, "`attention_mask` must be as long as `input_ids` in every row; row 0"),
    "float_mask": (TypeError, "`attention_mask` must hold integers; row 0, position 0 is float 1.0"),
    "mixed": None,
    "not_mapping": (TypeError, "every feature row must be a mapping such as a dict; row 1 is _RowLike"),
    "missing": (ValueError, "row 3 lacks ['label']"),
    "renamed": (ValueError, "row 1 lacks ['label'] and has extra keys ['labels']"),
    "multi_hot": None,
    "list_label": (ValueError, "`labels` must be one scalar per row, as row 0 is; row 2 holds [1, 2]"),
    "float_label": None,
    "strings": None,
    "over_max_length": (ValueError, "`input_ids` row 0 has 20 tokens, over `max_length`=16"),
    "nested_np": (ValueError, "`input_ids` has ragged nesting: rows must all be 1-D sequences"),
}


@pytest.mark.parametrize(("name", "features"), _variants(), ids=[name for name, _ in _variants()])
@pytest.mark.parametrize("label_mode", ["auto", "classification"])
def test_unusual_batches_give_the_reference_or_a_named_error(
    name: str, features: list[Any], label_mode: str
) -> None:
    collate = PaddingCollator(pad_token_id=0, max_length=16, label_mode=label_mode)  # type: ignore[arg-type]
    outcome = _OUTCOMES[name]
    if outcome is None:
        assert _listed(collate(features)) == _reference(features)
    else:
        with pytest.raises(outcome[0], match=re.escape(outcome[1])):
            collate(features)


def test_a_used_collator_pickles_and_compares_equal() -> None:
    collate = PaddingCollator(pad_token_id=0)
    for container in CONTAINERS:
        collate(as_container(_rows(), container))
    clone = pickle.loads(pickle.dumps(collate))
    assert clone == collate
    got, want = clone(_rows()), collate(_rows())
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_never_aliases_or_changes_the_features() -> None:
    for container in CONTAINERS:
        features = as_container(_rows(), container)
        before = [{k: _plain(v) for k, v in row.items()} for row in features]
        batch = PaddingCollator(pad_token_id=0, return_tensors="np")(features)
        for value in batch.values():
            value[...] = -7
        assert [{k: _plain(v) for k, v in row.items()} for row in features] == before


def _flat_reference(rows: list[dict[str, Any]], separator: int = -100, start: int = 0) -> dict[str, Any]:
    kept = [{k: _plain(v) for k, v in r.items()} for r in rows if len(r["input_ids"])]
    ids = [x for r in kept for x in r["input_ids"]]
    labels = [x for r in kept for x in r.get("labels", r["input_ids"])]
    starts, total = [], 0
    for r in kept:
        starts.append(total)
        total += len(r["input_ids"])
    for s in starts:
        labels[s] = separator
    positions = [start + j for r in kept for j in range(len(r["input_ids"]))]
    return {"input_ids": [ids], "labels": [labels], "position_ids": [positions]}


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("case", ["plain", "empty_row", "other_keys"])
def test_flattening_matches_the_reference(container: str, with_labels: bool, case: str) -> None:
    rows: list[dict[str, Any]] = [{"input_ids": row["input_ids"]} for row in _rows()]
    if case == "empty_row":
        rows[1] = {"input_ids": []}
    if with_labels:
        rows = [{**row, "labels": [x % 5 for x in row["input_ids"]]} for row in rows]
    if case == "other_keys":
        rows = [{**row, "attention_mask": [1] * len(row["input_ids"])} for row in rows]
    got = FlatteningCollator(position_ids_start=2, separator_id=-1)(as_container(rows, container))
    assert _listed(got) == _flat_reference(rows, -1, 2)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize(
    ("case", "error", "match"),
    [
        ("different_keys", ValueError, "row 2 lacks ['input_ids']"),
        ("short_labels", ValueError, "`labels` must be as long as `input_ids` in every row; non-empty row 2"),
        ("floats", TypeError, "`input_ids` must hold integers"),
    ],
)
def test_flattening_errors_on_every_container(container: str, case: str, error: type, match: str) -> None:
    rows: list[dict[str, Any]] = [{"input_ids": row["input_ids"]} for row in _rows()]
    if case == "different_keys":
        rows[2] = {"labels": rows[2]["input_ids"]}
    elif case == "short_labels":
        rows = [{**row, "labels": row["input_ids"][: 1 if i == 2 else None]} for i, row in enumerate(rows)]
    else:
        rows[3] = {"input_ids": [1.5, 2.0]}
    with pytest.raises(error, match=re.escape(match)):
        FlatteningCollator()(as_container(rows, container))


@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_masks_from_the_tables_match_a_comparison_with_arange(side: str) -> None:
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
def test_long_rows_match_the_reference(container: str, side: str, longest: int) -> None:
    rows = _rows(pair=True)
    n = longest
    rows[2] = {
        "input_ids": [2, *range(7, 7 + n - 2), 3],
        "token_type_ids": [0] * (n // 2) + [1] * (n - n // 2),
        "attention_mask": [1] * n,
        "label": 1,
    }
    batch = PaddingCollator(pad_token_id=5, padding_side=side)(as_container(rows, container))  # type: ignore[arg-type]
    assert batch["input_ids"].shape == (4, n)
    assert _listed(batch) == _reference(rows, 5, side=side)


@pytest.mark.parametrize("container", CONTAINERS)
def test_every_output_is_its_own_writable_contiguous_array(container: str) -> None:
    """Masks gathered from a table are strided views: they must not leak."""
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
        ("token_type_ids", [0, 300]),
        ("token_type_ids", [0, -1]),
        ("special_tokens_mask", [True, False]),  # bools are ints 0 and 1 outside the id keys
        ("attention_mask", [1, 0]),  # zeros inside a row (a pre-padded row)
    ],
)
def test_int_keys_keep_any_int_values(key: str, values: list[Any]) -> None:
    rows = _rows()
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        row[key] = [values[(i + j) % 2] for j in range(n)]
    batch = PaddingCollator(pad_token_id=0, pad_values={key: 0})(rows)
    assert _listed(batch) == _reference(rows)


@pytest.mark.parametrize("task", ["padding", "token-classification", "flattening"])
def test_column_rows_are_a_plain_list_and_collate_alike(task: str) -> None:
    """The adapters' ColumnRows: HF and torch collators see a list of dicts; ours read the columns."""
    from torch.utils.data import default_collate
    from transformers import DataCollatorWithFlattening

    rows = [{"input_ids": r["input_ids"], "labels": [x % 3 for x in r["input_ids"]]} for r in _rows()]
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    packed = ColumnRows(columns)
    assert isinstance(packed, list)
    assert packed == rows
    assert all(type(r) is dict for r in packed)
    assert _listed(DataCollatorWithFlattening()(packed)) == _listed(DataCollatorWithFlattening()(rows))
    same = ColumnRows({"input_ids": [[1, 2], [3, 4]]})
    assert default_collate(same)["input_ids"][0].tolist() == [1, 3]
    collate: Any = {
        "padding": PaddingCollator(pad_token_id=0),
        "token-classification": TokenClassificationCollator(pad_token_id=0),
        "flattening": FlatteningCollator(),
    }[task]
    assert _listed(collate(packed)) == _listed(collate(rows))
    assert pickle.loads(pickle.dumps(packed)).columns == columns


def test_column_rows_changed_as_a_whole_are_read_from_the_rows() -> None:
    """A wrapper that edits or drops keys in every row makes the columns stale: the rows are read instead."""
    rows = [{"input_ids": r["input_ids"], "label": r["label"]} for r in _rows()]
    packed = ColumnRows({key: [row[key] for row in rows] for key in rows[0]})
    for row in packed:
        row["label"] = 7
    assert PaddingCollator(pad_token_id=0)(packed)["labels"].tolist() == [7, 7, 7, 7]
    for row in packed:
        del row["label"]
    assert "labels" not in PaddingCollator(pad_token_id=0)(packed)
    packed.append({"input_ids": [9]})
    assert PaddingCollator(pad_token_id=0)(packed)["input_ids"].shape == (5, 7)
