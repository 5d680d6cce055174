"""Token counts per row: exact from Arrow, counted by batched tokenization (cached), or estimated cheaply."""

from __future__ import annotations

import contextlib
import os
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from hfbridge.adapters._arrow import arrow_column, indices_of, missing_column_error, table_to_batch

if TYPE_CHECKING:
    from datasets import Dataset

    from hfbridge.adapters._encode import Encoder

__all__ = ["count_lengths", "estimate_lengths", "token_lengths"]

_MEMORY_CACHE: OrderedDict[str, np.ndarray] = OrderedDict()
_MEMORY_CACHE_SIZE = 16
_SAMPLE_ROWS = 512
_TOKENIZER_HASHES: dict[int, tuple[weakref.ref[Any], int, str]] = {}


def token_lengths(dataset: Dataset, column: str = "input_ids") -> np.ndarray:
    """Lengths of a tokenized list column, read from Arrow offsets without touching a single row in Python.

    Args:
        dataset: a ``datasets.Dataset`` holding a list column (already tokenized).
        column: the list column to measure.

    Returns:
        ``np.ndarray`` of int64, one length per row (honours ``select``/``shuffle``/``filter``).

    Raises:
        ValueError: ``column`` is missing, is not a list column, or holds nulls.

    Example:
        >>> lengths = token_lengths(tokenized["train"])  # doctest: +SKIP
        >>> lengths[:3]  # doctest: +SKIP
        array([12, 48,  7])
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if column not in dataset.column_names:
        raise missing_column_error("column", column, dataset.column_names, None)
    data = dataset.data.column(column)
    if not (
        pa.types.is_list(data.type)
        or pa.types.is_large_list(data.type)
        or pa.types.is_fixed_size_list(data.type)
    ):
        raise ValueError(f"`column` {column!r} must be a list column (token ids); got Arrow type {data.type}")
    if data.null_count:
        raise ValueError(
            f"`column` {column!r} has {data.null_count} null rows; lengths need every row tokenized"
        )
    lengths = pc.list_value_length(data).to_numpy().astype(np.int64, copy=False)
    indices = indices_of(dataset)
    return lengths if indices is None else lengths[indices]


def count_lengths(dataset: Dataset, encoder: Encoder, *, desc: str = "Counting tokens") -> np.ndarray:
    """Exact lengths by tokenizing every row in batches (progress bar); cached in memory and, when the dataset
    lives in cache files, on disk next to them, keyed by (dataset fingerprint, tokenizer, options)."""
    key = _cache_key(dataset, encoder)
    if key in _MEMORY_CACHE:
        _MEMORY_CACHE.move_to_end(key)
        return _MEMORY_CACHE[key]
    path = _disk_path(dataset, key)
    if path is not None and os.path.exists(path):
        lengths = np.load(path)
    else:
        lengths = _tokenize_lengths(dataset, encoder, desc)
        if path is not None:
            _save_atomic(path, lengths)
    _MEMORY_CACHE[key] = lengths
    while len(_MEMORY_CACHE) > _MEMORY_CACHE_SIZE:
        _MEMORY_CACHE.popitem(last=False)
    return lengths


def _tokenize_lengths(dataset: Dataset, encoder: Encoder, desc: str) -> np.ndarray:
    from datasets.utils.logging import is_progress_bar_enabled
    from tqdm.auto import tqdm

    from hfbridge._distributed import is_main_process

    columns = [c for c in encoder.config.source_columns() if c != encoder.config.label_column]
    reader = dataset.with_format("arrow", columns=columns)
    n, step = len(dataset), encoder.config.tokenize_batch_size
    out = np.empty(n, dtype=np.int64)
    disable = not (is_progress_bar_enabled() and is_main_process())
    with tqdm(total=n, desc=desc, unit=" rows", disable=disable) as bar:
        for start in range(0, n, step):
            table = reader[start : start + step]
            stop = start + table.num_rows
            out[start:stop] = encoder.input_lengths(table_to_batch(table))
            bar.update(table.num_rows)
    return out


def estimate_lengths(dataset: Dataset, encoder: Encoder, *, seed: int = 0) -> np.ndarray:
    """Approximate lengths in O(rows) Arrow work plus one sample: tokens ≈ a·characters + b·words, with ``a, b``
    fitted (least squares) on ``_SAMPLE_ROWS`` rows tokenized without truncation, plus the special tokens,
    clipped to the truncation length."""
    import pyarrow.compute as pc

    cfg, tokenizer = encoder.config, encoder.tokenizer
    columns = [cfg.text_column] + ([cfg.text_pair_column] if cfg.text_pair_column else [])
    counts = np.zeros((len(dataset), 2), dtype=np.float64)  # characters, words
    for name in columns:
        column = arrow_column(dataset, name)
        if cfg.task == "token-classification":
            counts[:, 1] += pc.list_value_length(column).to_numpy(zero_copy_only=False)
            column = pc.binary_join(column, "")
        else:
            spaces = pc.count_substring(column, " ").to_numpy(zero_copy_only=False)
            counts[:, 1] += spaces + 1  # ≈ words; 7x faster than splitting
        counts[:, 0] += pc.utf8_length(column).to_numpy(zero_copy_only=False)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(dataset), size=min(_SAMPLE_ROWS, len(dataset)), replace=False))
    table = dataset.with_format("arrow", columns=columns)[sample.tolist()]
    batch = table_to_batch(table)
    specials = _special_count(encoder, columns)
    content = np.asarray(encoder.input_lengths(batch, truncate=False), dtype=np.float64) - specials
    coef, *_ = np.linalg.lstsq(counts[sample], content, rcond=None)
    estimate = np.rint(specials + counts @ np.maximum(coef, 0.0)).astype(np.int64)
    limit = cfg.effective_max_length(tokenizer)
    return np.clip(estimate, int(specials), limit if limit is not None else None)


def _special_count(encoder: Encoder, columns: list[str]) -> float:
    cfg = encoder.config
    empty: dict[str, list[Any]] = {
        name: ["" if cfg.task != "token-classification" else []] for name in columns
    }
    try:
        return float(encoder.input_lengths(empty)[0])
    except Exception:  # a tokenizer that rejects empty input: fall back to none
        return 0.0


def _cache_key(dataset: Dataset, encoder: Encoder) -> str:
    from datasets.fingerprint import Hasher

    cfg = encoder.config
    options = (cfg.task, cfg.source_columns(), cfg.max_length, cfg.truncation, cfg.block_size)
    return Hasher.hash((dataset._fingerprint, _tokenizer_hash(encoder.tokenizer), options))


def _tokenizer_hash(tokenizer: Any) -> str:
    """``Hasher.hash(tokenizer)`` (a few hundred ms for a 30k vocabulary), memoised per live tokenizer object
    and vocabulary size (adding tokens changes the size, so the hash is recomputed)."""
    from datasets.fingerprint import Hasher

    size = len(tokenizer)
    entry = _TOKENIZER_HASHES.get(id(tokenizer))
    if entry is not None and entry[0]() is tokenizer and entry[1] == size:
        return entry[2]
    value: str = Hasher.hash(tokenizer)
    with contextlib.suppress(TypeError):  # not weak-referenceable: no memo
        _TOKENIZER_HASHES[id(tokenizer)] = (weakref.ref(tokenizer), size, value)
    return value


def _disk_path(dataset: Dataset, key: str) -> str | None:
    files = dataset.cache_files
    if not files:
        return None  # in-memory dataset: its fingerprint is random, a disk cache would never hit again
    return os.path.join(os.path.dirname(files[0]["filename"]), f"hfbridge-lengths-{key}.npy")


def _save_atomic(path: str, lengths: np.ndarray) -> None:
    tmp = f"{path}.{os.getpid()}.tmp.npy"
    try:
        np.save(tmp, lengths)
        os.replace(tmp, path)
    except OSError:  # read-only cache folder: the in-memory cache still works
        if os.path.exists(tmp):
            os.remove(tmp)
