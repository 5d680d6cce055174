"""Label maps: infer the label kind from the features, build a deterministic ``label2id``, convert batches."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

    from hfbridge.adapters._config import AdapterConfig

__all__ = ["LabelInfo", "resolve_labels"]

Raw = Literal["id", "name", "float"]
_FITS = {
    "sequence-classification": (
        "int, str, ClassLabel, float (regression) or a list of class ids/names (multi-label)"
    ),
    "token-classification": "a list of word labels (int, str or ClassLabel) per row",
}


@dataclass(frozen=True)
class LabelKind:
    """What a label column holds: scalars or lists of ``raw`` values, and ClassLabel ``names`` if any."""

    raw: Raw
    is_list: bool
    names: tuple[str, ...] | None = None


def label_kind(features: Mapping[str, Any] | None, sample: Any, *, column: str, task: str) -> LabelKind:
    """The kind of label column ``column``, from its ``datasets`` feature (or, without features, one sample
    value).

    Raises:
        TypeError: the values do not fit ``task``.
    """
    feature = features.get(column) if features is not None else None
    kind = _kind_of_feature(feature) if feature is not None else _kind_of_value(sample)
    if kind is None or (task == "token-classification" and (not kind.is_list or kind.raw == "float")):
        shown = repr(feature) if feature is not None else f"{type(sample).__name__} {sample!r:.60}"
        raise TypeError(
            f"`label_column` {column!r} holds {shown}, which does not fit task {task!r}; expected "
            f"{_FITS[task]}"
        )
    return kind


def _kind_of_feature(feature: Any) -> LabelKind | None:
    from datasets import ClassLabel, LargeList, List, Sequence, Value

    if isinstance(feature, ClassLabel):
        return LabelKind("id", False, tuple(feature.names))
    if isinstance(feature, (List, LargeList, Sequence)):
        inner = _kind_of_feature(feature.feature)
        return None if inner is None or inner.is_list else LabelKind(inner.raw, True, inner.names)
    dtype = feature.dtype if isinstance(feature, Value) else ""
    if dtype.startswith(("int", "uint")) or dtype == "bool":
        return LabelKind("id", False)
    if dtype in ("string", "large_string"):
        return LabelKind("name", False)
    if dtype.startswith(("float", "double")):
        return LabelKind("float", False)
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

    ``lookup[raw_id]`` is the ``label2id`` id of a raw int label, ``-1`` for an int that is no class. A
    ClassLabel column stores ids in its own name order, which a given ``label2id`` (or another split's
    ClassLabel) may not share; plain ints that are not ``0..K-1`` (ratings 1-5, sparse ids) map to contiguous
    ids in value order.
    """

    problem_type: str
    kind: LabelKind
    label2id: dict[str, int] | None
    column: str
    lookup: tuple[int, ...] | None = None

    @property
    def _id_count(self) -> int | None:
        """How many raw class ids the source may hold (its ClassLabel's, else the label map's)."""
        return len(self.lookup) if self.lookup is not None else self.num_labels

    def remap(self, ids: np.ndarray) -> np.ndarray:
        """Raw ids (already range-checked) -> ``label2id`` ids, through the ClassLabel lookup when there is
        one."""
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

    def inside_ids(self) -> dict[int, int]:
        """``B-X`` id -> ``I-X`` id when the label names follow BIO/IOB2 (each is ``O``, ``B-...`` or
        ``I-...``), else ``{}``: the label of a word's continuation sub-words under ``label_all_tokens``."""
        names = self.label2id or {}
        if not names or not all(n == "O" or n[:2] in ("B-", "I-") for n in names):
            return {}
        return {i: names[f"I-{n[2:]}"] for n, i in names.items() if n[:2] == "B-" and f"I-{n[2:]}" in names}

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
        if self.lookup is None:
            return ids
        mapped = self.remap(np.asarray(ids, dtype=np.int64))
        if (mapped < 0).any():
            raise self._unknown([i for i, m in zip(ids, mapped.tolist()) if m < 0][:5], None)
        return mapped.tolist()

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
        hot = [[0.0] * n for _ in values]
        for vector, row in zip(hot, values):
            for i in self.to_ids(row):
                vector[i] = 1.0
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
            if self.lookup is not None and min(self.lookup) < 0:  # sparse ints: values between the classes
                unique = np.asarray(pc.unique(values).to_pylist(), dtype=np.int64)
                holes = unique[self.remap(unique) < 0]
                if holes.size:
                    raise self._unknown(holes.tolist(), split)

    def _non_finite(self, row: int, value: float, split: str | None) -> ValueError:
        return ValueError(
            f"`label_column` {self.column!r}{_in(split)} must hold finite numbers for regression; row {row} "
            f"holds {value!r}. Drop or fill such rows first, e.g. `dataset.filter(lambda row: "
            f"math.isfinite(row[{self.column!r}]))`"
        )

    def _bad_multi_hot(self, row: int, vector: list[float], split: str | None) -> ValueError:
        return ValueError(
            f"`label_column` {self.column!r}{_in(split)} multi-hot rows must hold numbers in [0, 1] (1 = the "
            f"label applies; soft labels in between), none missing; row {row} holds {vector!r:.80}"
        )

    def _unknown(self, labels: list[Any], split: str | None) -> ValueError:
        shown = ", ".join(map(repr, labels[:5])) + (", ..." if len(labels) > 5 else "")
        plain_ids = self.kind.raw != "name" and (self.lookup is None or self.kind.names is not None)
        valid = f"ids 0..{(self._id_count or 1) - 1}" if plain_ids else self.label2id
        hint = ""
        if any(isinstance(v, int) and v < 0 for v in labels):
            hint = (
                " (-1 marks a missing label, as in GLUE test splits: adapt such a split with "
                "`label_column=None`; in a DatasetDict, a later split labelled -1 throughout is adapted "
                "without labels)"
            )
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
            f"`label_column` {info.column!r}{_in(split)} has ClassLabel names {shown} that are not in "
            "`label2id` (given, or built from the train split), so their ids cannot be mapped; valid names: "
            f"{sorted(mapping)}. Pass a `label2id` that covers every ClassLabel name"
        )
    return LabelInfo(
        info.problem_type, info.kind, mapping, info.column, tuple(mapping[name] for name in names)
    )


def _label_map(
    kind: LabelKind, given: Mapping[str, int] | None, data: pa.ChunkedArray | None
) -> tuple[dict[str, int] | None, tuple[int, ...] | None]:
    """The label map and the raw-id lookup (see ``LabelInfo``): ``label2id`` wins; then ClassLabel names; then
    sorted unique string labels; then ``max id + 1`` for int ids ``0..K-1``, a value-order map for other
    non-negative ints. ``None`` when nothing says (no ``data``: a stream)."""
    import pyarrow.compute as pc

    if given is not None:
        return dict(given), None
    if kind.names is not None:
        return {name: i for i, name in enumerate(kind.names)}, None
    if data is None:
        return None, None
    if kind.raw == "float":  # multi-hot vectors: their width is the number of labels
        width = int(pc.max(pc.list_value_length(data)).as_py() or 0)
        return {f"LABEL_{i}": i for i in range(width)}, None
    values = pc.list_flatten(data) if kind.is_list else data
    unique = sorted(pc.unique(values.filter(pc.is_valid(values))).to_pylist())
    if kind.raw == "name":
        return {name: i for i, name in enumerate(unique)}, None
    if unique and unique[0] >= 0 and unique != list(range(len(unique))):  # e.g. ratings 1-5
        lookup = [-1] * (unique[-1] + 1)
        for i, value in enumerate(unique):
            lookup[value] = i
        return {str(value): i for i, value in enumerate(unique)}, tuple(lookup)
    top = max(unique[-1], 0) + 1 if unique else 0  # 0..K-1, or negatives that check_column rejects
    return {f"LABEL_{i}": i for i in range(top)}, None


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


def resolve_labels(
    cfg: AdapterConfig,
    features: Mapping[str, Any] | None,
    *,
    shared: LabelInfo | None = None,
    sample: Any = None,
    data: pa.ChunkedArray | None = None,
    split: str | None = None,
) -> LabelInfo | None:
    """The label scheme of a source: ``shared`` (e.g. the train split's) fitted to its label column, else its
    own; without a label column, ``shared`` as is (``None`` for tasks without labels). ``data`` (the whole
    label column, if sized) fills in what is missing and is validated.

    Raises:
        TypeError: the column's kind does not fit the task or the problem type.
        ValueError: a ClassLabel name is not in ``label2id``; plain ints against a shared map learnt from
            string labels; a label ``data`` holds that the map lacks; strings or multi-label lists of a stream
            without ``label2id``.
    """
    if not cfg.has_labels:
        return shared
    column: str = cfg.label_column if shared is None else shared.column  # type: ignore[assignment]
    kind = label_kind(features, sample, column=column, task=cfg.task)
    if shared is None:
        info = _new_scheme(kind, cfg, column, data, split)
    else:
        info = _rebind(shared, kind, cfg, split)
    if data is not None:
        info.check_column(data, split)
    return info


def _new_scheme(
    kind: LabelKind, cfg: AdapterConfig, column: str, data: pa.ChunkedArray | None, split: str | None
) -> LabelInfo:
    """The problem type and label map of a column of ``kind``; ClassLabel ids are remapped by name when
    ``label2id`` orders the names differently."""
    if cfg.task == "token-classification":
        problem_type = "token_classification"
    elif cfg.problem_type is not None:
        problem_type = cfg.problem_type
    elif kind.is_list:
        problem_type = "multi_label_classification"
    else:
        problem_type = "regression" if kind.raw == "float" else "single_label_classification"
    _check_problem_type(problem_type, kind, column)
    if problem_type == "regression":
        return LabelInfo(problem_type, kind, None, column)
    mapping, lookup = _label_map(kind, cfg.label2id, data)
    if mapping is None and (kind.raw == "name" or problem_type == "multi_label_classification"):
        raise ValueError(
            f"`label2id` is needed: `label_column` {column!r} holds "
            f"{'strings' if kind.raw == 'name' else 'multi-label lists'} "
            "and a streaming source cannot be scanned "
            "for its label set; pass `label2id={...}` or cast the column to a `datasets.ClassLabel`"
        )
    return _bind(LabelInfo(problem_type, kind, mapping, column, lookup), split)


def _rebind(shared: LabelInfo, kind: LabelKind, cfg: AdapterConfig, split: str | None) -> LabelInfo:
    """``shared`` fitted to a column of ``kind``: its own ClassLabel name order is remapped through the shared
    ``label2id``. Plain int labels are read as ids of ``label2id`` when the user gave it; a map learnt from
    another split's string labels has no id order the ints could follow, so they are an error."""
    _check_problem_type(shared.problem_type, kind, shared.column)
    if shared.kind.raw == "name" and kind.raw == "id" and kind.names is None and cfg.label2id is None:
        learnt = list(shared.label2id or {})
        names = ", ".join(map(repr, learnt[:5])) + (", ..." if len(learnt) > 5 else "")
        raise ValueError(
            f"`label_column` {shared.column!r}{_in(split)} holds int labels, but the label map was learnt "
            f"from string labels ({names}): which int is which name is unknown. Give that split the same "
            "string labels, cast its column to a ClassLabel with the names in its id order "
            f"(`split.cast_column({shared.column!r}, ClassLabel(names=[...]))`), or pass `label2id` to say "
            "what the ints mean; if they are -1 placeholders of an unlabelled split, adapt that split "
            "with `label_column=None`"
        )
    plain = kind.names is None and shared.kind.names is None  # plain ints keep the value -> id lookup
    lookup = shared.lookup if plain and kind.raw == shared.kind.raw == "id" else None
    return _bind(replace(shared, kind=kind, lookup=lookup), split)
