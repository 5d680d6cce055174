"""Zero-copy access to the Arrow columns behind a ``datasets.Dataset``, honouring its indices mapping."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    from datasets import Dataset

__all__ = ["arrow_column", "first_null_row", "indices_of", "missing_column_error", "table_to_batch"]


def indices_of(dataset: Dataset) -> np.ndarray | None:
    """The row positions a ``select``/``shuffle``/``filter``-ed dataset reads, or ``None`` when it reads all."""
    mapping = getattr(dataset, "_indices", None)
    if mapping is None:
        return None
    return np.asarray(mapping.column(0).to_numpy(), dtype=np.int64)


def arrow_column(dataset: Dataset, name: str) -> pa.ChunkedArray:
    """Column ``name`` of ``dataset`` as Arrow: zero-copy, or one ``take`` when the dataset has an indices mapping."""
    column = dataset.data.column(name)
    indices = indices_of(dataset)
    return column if indices is None else column.take(indices)


def table_to_batch(table: pa.Table) -> dict[str, list[Any]]:
    """An Arrow table as the ``{column: python values}`` batch that tokenizers and encoders take."""
    return {name: table.column(name).to_pylist() for name in table.column_names}


def first_null_row(column: pa.ChunkedArray) -> int | None:
    """The first row holding a null, or ``None``; O(1) when the column has none."""
    if column.null_count == 0:
        return None
    import pyarrow.compute as pc

    return int(pc.index(pc.is_null(column), True).as_py())


def missing_column_error(
    argument: str, column: Any, available: list[str] | None, split: str | None
) -> ValueError:
    """The error for a named column the source lacks, listing the ones it has."""
    where = f" of split {split!r}" if split else ""
    options = (
        ", ".join(map(repr, available)) if available else "(unknown: the source does not declare features)"
    )
    return ValueError(
        f"`{argument}` names column {column!r}, which the source{where} does not have; available columns: {options}"
    )
