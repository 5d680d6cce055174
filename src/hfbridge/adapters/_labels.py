"""Label maps: infer the label kind from the features, build a deterministic ``label2id``, convert batches."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["LabelInfo", "build_label_info", "label_kind"]

Raw = Literal["id", "name", "float"]
_FITS = {
    "sequence-classification": "int, str, ClassLabel, float (regression) or a list of class ids/names (multi-label)",
    "token-classification": "a list of word labels (int, str or ClassLabel) per row",
}


@dataclass(frozen=True)
class LabelKind:
    """What a label column holds: scalars or lists of ``raw`` values, and ClassLabel ``names`` if any."""

    raw: Raw
    is_list: bool
    names: tuple[str, ...] | None = None


def label_kind(feature: Any, sample: Any, *, column: str, task: str) -> LabelKind:
    """The kind of a label column, from its ``datasets`` feature (or, without features, one sample value).

    Raises:
        TypeError: the values do not fit ``task``.
    """
    kind = _kind_of_feature(feature) if feature is not None else _kind_of_value(sample)
    ok = kind is not None and (
        (task == "token-classification" and kind.is_list and kind.raw != "float")
        or (task == "sequence-classification")
    )
    if not ok or kind is None:
        shown = repr(feature) if feature is not None else f"{type(sample).__name__} {sample!r:.60}"
        raise TypeError(
            f"`label_column` {column!r} holds {shown}, which does not fit task {task!r}; expected {_FITS[task]}"
        )
    return kind


def _kind_of_feature(feature: Any) -> LabelKind | None:
    from datasets import ClassLabel, LargeList, List, Sequence, Value

    if isinstance(feature, ClassLabel):
        return LabelKind("id", False, tuple(feature.names))
    if isinstance(feature, Value):
        raw = _raw_of_dtype(feature.dtype)
        return None if raw is None else LabelKind(raw, False)
    if isinstance(feature, (List, LargeList, Sequence)):
        inner = _kind_of_feature(feature.feature)
        return None if inner is None or inner.is_list else LabelKind(inner.raw, True, inner.names)
    return None


def _raw_of_dtype(dtype: str) -> Raw | None:
    if dtype.startswith(("int", "uint")) or dtype == "bool":
        return "id"
    if dtype in ("string", "large_string"):
        return "name"
    if dtype.startswith(("float", "double")):
        return "float"
    return None


def _kind_of_value(value: Any) -> LabelKind | None:
    if isinstance(value, (list, tuple)):
        inner = _kind_of_value(value[0]) if value else LabelKind("id", False)
        return None if inner is None or inner.is_list else LabelKind(inner.raw, True)
    if isinstance(value, (bool, int)):
        return LabelKind("id", False)
    if isinstance(value, str):
        return LabelKind("name", False)
    if isinstance(value, float):
        return LabelKind("float", False)
    return None


@dataclass(frozen=True)
class LabelInfo:
    """A resolved label scheme: the problem type, the label map and how to turn raw values into model labels.

    ``lookup[raw_id]`` is the ``label2id`` id of the source's ClassLabel name ``kind.names[raw_id]``: a ClassLabel
    column stores ids in its own name order, which a given ``label2id`` (or another split's ClassLabel) may not share.
    """

    problem_type: str
    kind: LabelKind
    label2id: dict[str, int] | None
    column: str
    lookup: tuple[int, ...] | None = None

    def rebind(self, kind: LabelKind, split: str | None = None, *, given_map: bool = False) -> LabelInfo:
        """This label map applied to a source whose label column has ``kind`` (e.g. another split's ClassLabel).

        Plain int labels are read as ids of ``label2id`` when the user gave it (``given_map``); a map learnt from
        another split's string labels has no id order the ints could follow, so they are an error.

        Raises:
            TypeError: ``kind`` does not fit the problem type.
            ValueError: a ClassLabel name of ``kind`` is not in ``label2id``; or plain ints against a map learnt
                from string labels.
        """
        _check_problem_type(self.problem_type, kind, self.column)
        if self.kind.raw == "name" and kind.raw == "id" and kind.names is None and not given_map:
            learnt = list(self.label2id or {})
            names = ", ".join(map(repr, learnt[:5])) + (", ..." if len(learnt) > 5 else "")
            raise ValueError(
                f"`label_column` {self.column!r}{_in(split)} holds int labels, but the label map was learnt from "
                f"string labels ({names}): which int is which name is unknown. Give that split the same string "
                f"labels, cast its column to a ClassLabel with the names in its id order (`split.cast_column("
                f"{self.column!r}, ClassLabel(names=[...]))`), or pass `label2id` to say what the ints mean; if "
                "they are -1 placeholders of an unlabelled split, adapt that split with `label_column=None`"
            )
        return _bind(LabelInfo(self.problem_type, kind, self.label2id, self.column), split)

    @property
    def _id_count(self) -> int | None:
        """How many raw class ids the source may hold (its ClassLabel's, else the label map's)."""
        return len(self.lookup) if self.lookup is not None else self.num_labels

    def remap(self, ids: np.ndarray) -> np.ndarray:
        """Raw ids (already range-checked) -> ``label2id`` ids, through the ClassLabel lookup when there is one."""
        if self.lookup is None:
            return ids
        return np.asarray(self.lookup, dtype=np.int64)[ids]

    @property
    def num_labels(self) -> int | None:
        if self.problem_type == "regression":
            return 1
        return None if self.label2id is None else len(self.label2id)

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.label2id is None else {i: name for name, i in self.label2id.items()}

    def to_ids(self, values: Sequence[Any]) -> list[int]:
        """Class ids of scalar raw labels; unknown names and out-of-range ids raise ``ValueError``."""
        if self.kind.raw == "name":
            mapping = self.label2id or {}
            try:
                return [mapping[v] for v in values]
            except KeyError as err:
                raise self._unknown([err.args[0]], None) from None
        n = self._id_count
        ids = [int(v) for v in values]
        if n is not None and ids and (min(ids) < 0 or max(ids) >= n):
            raise self._unknown([i for i in ids if not 0 <= i < n][:5], None)
        if self.lookup is not None:
            return self.remap(np.asarray(ids, dtype=np.int64)).tolist()
        return ids

    def convert(self, values: Sequence[Any]) -> list[Any]:
        """The ``labels`` feature of each row for sequence classification."""
        if any(v is None for v in values):
            raise ValueError(f"`label_column` {self.column!r} has a missing (None) label")
        if self.problem_type == "regression":
            floats = [float(v) for v in values]
            for row, value in enumerate(floats):
                if not math.isfinite(value):
                    raise self._non_finite(row, value, None)
            return floats
        if self.problem_type == "single_label_classification":
            return self.to_ids(values)
        n = self.num_labels or 0
        if self.kind.raw == "float":  # already multi-hot
            bad = [len(v) for v in values if len(v) != n]
            if bad:
                raise ValueError(
                    f"`label_column` {self.column!r} multi-hot rows must have {n} values; got {bad[0]}"
                )
            hot = [[float(x) if x is not None else math.nan for x in v] for v in values]
            for row, vector in enumerate(hot):
                if not _unit_interval(vector):
                    raise self._bad_multi_hot(row, vector, None)
            return hot
        hot = []
        for row in values:
            vector = [0.0] * n
            for i in self.to_ids(row):
                vector[i] = 1.0
            hot.append(vector)
        return hot

    def check_column(self, column: pa.ChunkedArray, split: str | None) -> None:
        """Validate every value of an Arrow label column against the label map, in one vectorised pass."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if column.null_count:
            raise ValueError(
                f"`label_column` {self.column!r}{_in(split)} has {column.null_count} missing labels"
            )
        values = pc.list_flatten(column) if self.kind.is_list else column
        if self.problem_type == "regression" and pa.types.is_floating(values.type) and len(values):
            row = pc.index(pc.invert(pc.is_finite(values)), True).as_py()
            if row is not None and row >= 0:
                raise self._non_finite(row, values[row].as_py(), split)
        if self.kind.raw == "float" and self.kind.is_list and len(values):  # multi-hot (or soft) labels
            outside = pc.invert(pc.and_(pc.greater_equal(values, 0.0), pc.less_equal(values, 1.0)))
            if pc.any(pc.fill_null(outside, True)).as_py():  # NaN compares false: it is outside too
                row = next(i for i, v in enumerate(column.to_pylist()) if not _unit_interval(v))
                raise self._bad_multi_hot(row, column[row].as_py(), split)
        if self.problem_type == "regression" or self.kind.raw == "float" or len(values) == 0:
            return
        if self.kind.raw == "name":
            unknown = sorted(set(pc.unique(values).to_pylist()) - set(self.label2id or {}))
            if unknown:
                raise self._unknown(unknown, split)
        elif self._id_count is not None:
            n = self._id_count
            lo, hi = pc.min_max(values).values()
            if lo.as_py() < 0 or hi.as_py() >= n:
                bad = pc.unique(pc.filter(values, pc.or_(pc.less(values, 0), pc.greater_equal(values, n))))
                raise self._unknown(bad.to_pylist(), split)

    def _non_finite(self, row: int, value: float, split: str | None) -> ValueError:
        return ValueError(
            f"`label_column` {self.column!r}{_in(split)} must hold finite numbers for regression; row {row} holds "
            f"{value!r}. Drop or fill such rows first, e.g. `dataset.filter(lambda row: math.isfinite(row[{self.column!r}]))`"
        )

    def _bad_multi_hot(self, row: int, vector: list[float], split: str | None) -> ValueError:
        return ValueError(
            f"`label_column` {self.column!r}{_in(split)} multi-hot rows must hold numbers in [0, 1] (1 = the label "
            f"applies; soft labels in between), none missing; row {row} holds {vector!r:.80}"
        )

    def _unknown(self, labels: list[Any], split: str | None) -> ValueError:
        shown = ", ".join(map(repr, labels[:5])) + (", ..." if len(labels) > 5 else "")
        valid = self.label2id if self.kind.raw == "name" else f"ids 0..{(self._id_count or 1) - 1}"
        hint = ""
        if any(isinstance(v, int) and v < 0 for v in labels):
            hint = " (-1 marks a missing label, as in GLUE test splits: adapt such a split with `label_column=None`)"
        return ValueError(
            f"`label_column` {self.column!r}{_in(split)} has labels {shown} that are not in the label map "
            f"(built from the train split or given as `label2id`); valid: {valid}{hint}"
        )


def _in(split: str | None) -> str:
    return f" in split {split!r}" if split else ""


def _bind(info: LabelInfo, split: str | None) -> LabelInfo:
    """``info`` with the lookup from its ClassLabel names to its ``label2id`` ids (none without both)."""
    names, mapping = info.kind.names, info.label2id
    if names is None or mapping is None:
        return info
    missing = [name for name in names if name not in mapping]
    if missing:
        shown = ", ".join(map(repr, missing[:5])) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"`label_column` {info.column!r}{_in(split)} has ClassLabel names {shown} that are not in `label2id` "
            f"(given, or built from the train split), so their ids cannot be mapped; valid names: {sorted(mapping)}. "
            "Pass a `label2id` that covers every ClassLabel name"
        )
    return LabelInfo(
        info.problem_type, info.kind, mapping, info.column, tuple(mapping[name] for name in names)
    )


def build_label_info(
    kind: LabelKind,
    *,
    task: str,
    column: str,
    problem_type: str | None,
    label2id: Mapping[str, int] | None,
    data: pa.ChunkedArray | None,
    split: str | None = None,
) -> LabelInfo:
    """Resolve the problem type and label map; ``data`` (the whole label column, if sized) fills in what is missing.

    ``label2id`` wins; then ClassLabel names; then sorted unique string labels; then ``max id + 1`` for int ids.
    ClassLabel ids are remapped by name when ``label2id`` orders the names differently.
    """
    import pyarrow.compute as pc

    if task == "token-classification":
        resolved = "token_classification"
    elif problem_type is not None:
        resolved = problem_type
    elif kind.is_list:
        resolved = "multi_label_classification"
    else:
        resolved = "regression" if kind.raw == "float" else "single_label_classification"
    _check_problem_type(resolved, kind, column)
    if resolved == "regression":
        return LabelInfo(resolved, kind, None, column)
    mapping: dict[str, int] | None = dict(label2id) if label2id is not None else None
    if mapping is None and kind.names is not None:
        mapping = {name: i for i, name in enumerate(kind.names)}
    if mapping is None and data is not None:
        values = pc.list_flatten(data) if kind.is_list else data
        if kind.raw == "name":
            mapping = {
                name: i
                for i, name in enumerate(sorted(pc.unique(values.filter(pc.is_valid(values))).to_pylist()))
            }
        elif kind.raw == "float":  # multi-hot vectors: their width is the number of labels
            widths = pc.list_value_length(data)
            mapping = {f"LABEL_{i}": i for i in range(int(pc.max(widths).as_py() or 0))}
        else:
            top = pc.max(values).as_py()
            mapping = {f"LABEL_{i}": i for i in range(int(top) + 1 if top is not None else 0)}
    if mapping is None and (kind.raw == "name" or resolved == "multi_label_classification"):
        raise ValueError(
            f"`label2id` is needed: `label_column` {column!r} holds {'strings' if kind.raw == 'name' else 'multi-label lists'} "
            "and a streaming source cannot be scanned "
            "for its label set; pass `label2id={...}` or cast the column to a `datasets.ClassLabel`"
        )
    return _bind(LabelInfo(resolved, kind, mapping, column), split)


def _check_problem_type(problem_type: str, kind: LabelKind, column: str) -> None:
    fits = {
        "regression": not kind.is_list and kind.raw != "name",
        "single_label_classification": not kind.is_list and kind.raw != "float",
        "multi_label_classification": kind.is_list,
        "token_classification": kind.is_list and kind.raw != "float",
    }
    if not fits[problem_type]:
        shape = f"lists of {kind.raw} values" if kind.is_list else f"{kind.raw} values"
        raise TypeError(
            f"`problem_type` {problem_type!r} does not fit `label_column` {column!r}, which holds {shape}"
        )


def _unit_interval(vector: Sequence[Any]) -> bool:
    """Every value of a multi-hot (or soft) label vector is a number in [0, 1]: not None, not NaN."""
    return all(x is not None and 0.0 <= x <= 1.0 for x in vector)
