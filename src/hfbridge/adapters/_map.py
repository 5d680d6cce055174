"""``MapAdapter``: a sized ``datasets.Dataset`` as a ``torch.utils.data.Dataset`` of tokenized feature
rows."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch.utils.data

from hfbridge._checks import check_non_negative_int
from hfbridge.adapters._config import AdapterConfig
from hfbridge.adapters._encode import Encoder, to_rows
from hfbridge.adapters._labels import LabelInfo, resolve_labels
from hfbridge.adapters._sources import (
    arrow_column,
    check_columns,
    check_dataset_texts,
    check_dataset_word_labels,
    empty_source_error,
    estimate_lengths,
    table_to_batch,
    token_lengths,
)

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["MapAdapter", "encoder_property"]

#: the metadata both adapters read from the ``Encoder`` they hold, with its docstring
_FROM_ENCODER = {
    "task": "The task name the rows are encoded for.",
    "tokenizer": "The tokenizer that encodes the rows.",
    "config": "The validated options.",
    "label_info": "The resolved label scheme (``None`` without labels); ``adapt`` shares it between splits.",
    "problem_type": (
        "``single_label_classification``, ``multi_label_classification``, ``regression``, "
        "``token_classification`` or ``None`` (no labels), as ``PretrainedConfig.problem_type`` names them."
    ),
    "label2id": "Label name -> id (``None`` without labels, for regression, or for unnamed streaming ids).",
    "id2label": "Id -> label name, ready for ``from_pretrained(..., id2label=adapter.id2label)``.",
    "num_labels": "Number of classes (1 for regression), ``None`` without labels.",
}


def encoder_property(name: str) -> Any:
    """The read-only adapter property ``name`` (a key of ``_FROM_ENCODER``): the attribute of that name of the
    ``Encoder`` the adapter holds as ``_encoder``; ``MapAdapter`` and ``IterableAdapter`` both do."""
    read = attrgetter({"task": "config.task", "label_info": "labels"}.get(name, name))
    return property(lambda adapter: read(adapter._encoder), doc=_FROM_ENCODER[name])


class MapAdapter(torch.utils.data.Dataset):
    """A sized dataset that yields tokenized feature rows for one task; build it with ``hfbridge.adapt``.

    Rows stay in Arrow until asked for. Lazy mode (the default) reads ``__getitems__``'s rows in one batched
    Arrow call and tokenizes them in one fast-tokenizer call, so the raw text lives inside the adapter and
    ``Trainer(remove_unused_columns=True)`` cannot strip it. Eager mode (``lazy=False``) tokenizes once with
    ``Dataset.map(batched=True)`` (cached by ``datasets``) and reads token columns from Arrow. With
    ``block_size`` the corpus is packed into fixed blocks up front. ``select``, ``shuffle`` and ``take`` give
    lazy views that share the tokenizer, the label map and any lengths already known.

    Args:
        dataset: the source rows.
        tokenizer: a transformers tokenizer with a pad token.
        config: the options (see ``AdapterConfig``).
        labels: a label scheme to share (e.g. the train split's); inferred from ``dataset`` when ``None``.
            With ``config.label_column=None`` the rows get no labels, but the adapter keeps the scheme's label
            maps.
        split: the split name, for error messages.
        collator_kwargs: options passed to the task's collator by ``.collator``.

    Example:
        >>> train = hfbridge.adapt(ds["train"], tokenizer, task="sequence-classification")  # doctest: +SKIP
        >>> loader = DataLoader(train, batch_size=32, collate_fn=train.collator)  # doctest: +SKIP
    """

    def __init__(
        self,
        dataset: Dataset,
        tokenizer: Any,
        config: AdapterConfig,
        *,
        labels: LabelInfo | None = None,
        split: str | None = None,
        collator_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        cfg = config
        check_columns(dataset.column_names, cfg, split)
        if len(dataset) == 0:
            raise empty_source_error(dataset, split)
        check_dataset_texts(dataset, cfg, split)
        if cfg.has_labels:
            data = arrow_column(dataset, cfg.label_column)  # type: ignore[arg-type]
            labels = resolve_labels(cfg, dataset.features, shared=labels, data=data, split=split)
            check_dataset_word_labels(dataset, cfg, split)
        self._encoder = Encoder(tokenizer, cfg, labels)  # checks the tokenizer and the length limits
        self._collator_kwargs = dict(collator_kwargs or {})
        self._dataset = dataset
        self._split = split
        self._lengths: np.ndarray | None = None
        self._label_ids: np.ndarray | None = None
        self._blocks: dict[str, np.ndarray] | None = None
        self._encoded: Dataset | None = None
        self._reader: Dataset | None = None
        if cfg.block_size is not None:
            self._blocks = self._pack(dataset)
            return
        if not cfg.lazy:
            self._encoded = self._tokenize_all(dataset)
        self._new_reader()

    # ------------------------------------------------------------------------------------------ construction

    def _tokenize_all(self, dataset: Dataset) -> Dataset:
        cfg = self._encoder.config
        return dataset.map(
            self._encoder,
            batched=True,
            batch_size=cfg.tokenize_batch_size,
            num_proc=cfg.num_proc,
            remove_columns=dataset.column_names,
            desc=f"Tokenizing{f' {self._split}' if self._split else ''} for {cfg.task}",
        )

    def _pack(self, dataset: Dataset) -> dict[str, np.ndarray]:
        """Tokenize the whole corpus (cached ``map``), concatenate each column in Arrow and cut it into
        blocks."""
        import pyarrow.compute as pc

        size = self._encoder.config.block_size
        assert size is not None
        encoded = self._tokenize_all(dataset)
        blocks = {}
        for key in encoded.column_names:
            if key == "labels":  # causal LM labels are the input ids: rebuilt on read, not stored twice
                continue
            flat = pc.list_flatten(arrow_column(encoded, key)).to_numpy()
            n_blocks = len(flat) // size
            blocks[key] = flat[: n_blocks * size].reshape(n_blocks, size)
        if blocks["input_ids"].shape[0] == 0:
            total = len(pc.list_flatten(arrow_column(encoded, "input_ids")))
            raise ValueError(
                f"`block_size` must be at most the corpus size to give one block; got {size} for {total} "
                "tokens"
            )
        return blocks

    # ------------------------------------------------------------------------------------------ rows

    def __len__(self) -> int:
        if self._blocks is not None:
            return int(self._blocks["input_ids"].shape[0])
        return len(self._dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, (bool, str, slice)) or not hasattr(index, "__index__"):
            raise TypeError(f"`index` must be an integer (use __getitems__ for many rows); got {index!r:.60}")
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Any) -> list[dict[str, Any]]:
        """Rows ``indices``: one Arrow read and one tokenizer call for the batch (``DataLoader`` calls this).

        The rows come as a ``ColumnRows``: a list of dicts that also carries the batch's columns, which the
        collators read directly.
        """
        positions = self._positions(indices)
        return self._read(positions) if positions else []

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every row in order, read and tokenized ``tokenize_batch_size`` rows at a time."""
        step = self._encoder.config.tokenize_batch_size
        for start in range(0, len(self), step):
            yield from self._read(slice(start, min(start + step, len(self))))

    def _positions(self, indices: Any) -> list[int]:
        positions = np.asarray(indices)
        if positions.ndim != 1 or (positions.size and not np.issubdtype(positions.dtype, np.integer)):
            raise TypeError(f"`indices` must be a 1-D sequence of integers; got {indices!r:.60}")
        n = len(self)
        positions = positions.astype(np.int64, copy=False)
        bad = positions[(positions < -n) | (positions >= n)]
        if bad.size:
            raise IndexError(
                f"`indices` must be in [-{n}, {n}) for this adapter of {n} rows; got {int(bad[0])}"
            )
        return np.where(positions < 0, positions + n, positions).tolist()

    def _read(self, key: list[int] | slice) -> list[dict[str, Any]]:
        if self._blocks is not None:
            rows = {k: v[key].tolist() for k, v in self._blocks.items()}
            if self.task == "causal-lm":
                rows["labels"] = [list(ids) for ids in rows["input_ids"]]
            return to_rows(rows)
        table = self._reader[key]  # type: ignore[index]
        if self._encoded is not None:  # eager: token columns straight from Arrow, kept as columns
            return to_rows(table.to_pydict())
        return to_rows(self._encoder(table_to_batch(table)))

    # ------------------------------------------------------------------------------------------ views

    def select(self, indices: Iterable[int]) -> MapAdapter:
        """The rows at ``indices`` (in that order) as a new adapter: nothing is re-tokenized or re-validated;
        the label map and any lengths or label ids already known carry over (``datasets.Dataset.select``).

        Raises:
            TypeError: ``indices`` is not a 1-D sequence of integers.
            IndexError: an index is out of range.
        """
        return self._view(np.asarray(self._positions(list(indices)), dtype=np.int64))

    def shuffle(self, seed: int | None = None) -> MapAdapter:
        """All rows in a random order drawn from ``np.random.default_rng(seed)``, as a new adapter (see
        ``select``)."""
        if seed is not None:
            check_non_negative_int("seed", seed)
        return self._view(np.random.default_rng(seed).permutation(len(self)))

    def take(self, n: int) -> MapAdapter:
        """The first ``n`` rows as a new adapter (see ``select``), e.g. for ``--max_train_samples``.

        Raises:
            ValueError: ``n`` is negative or more than the rows there are.
        """
        check_non_negative_int("n", n)
        if n > len(self):
            raise ValueError(f"`n` must be at most the number of rows ({len(self)}); got {n}")
        return self._view(np.arange(n, dtype=np.int64))

    def _view(self, positions: np.ndarray) -> MapAdapter:
        view = copy.copy(self)
        if self._blocks is not None:
            view._blocks = {key: blocks[positions] for key, blocks in self._blocks.items()}
        else:
            view._dataset = self._dataset.select(positions)
            if self._encoded is not None:
                view._encoded = self._encoded.select(positions)
            view._new_reader()
        for name in ("_lengths", "_label_ids"):
            known = getattr(self, name)
            if known is not None:
                known = known[positions]
                known.setflags(write=False)
            setattr(view, name, known)
        return view

    def _new_reader(self) -> None:
        """Read the token columns when there are some, else the source columns, as Arrow."""
        if self._encoded is not None:
            self._reader = self._encoded.with_format("arrow")
        else:
            self._reader = self._dataset.with_format("arrow", columns=self.config.source_columns())

    # ------------------------------------------------------------------------------------------ metadata

    @property
    def dataset(self) -> Dataset:
        """The source ``datasets.Dataset`` (raw rows)."""
        return self._dataset

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each row's ``input_ids`` (special tokens included, after truncation), int64.

        Eager and packed adapters read it from Arrow offsets. A lazy adapter tokenizes every row once
        (``Dataset.map``, cached by ``datasets`` for a dataset in cache files) and from then on reads its
        rows' tokens from that result instead of tokenizing again, so no row is tokenized twice. With
        ``estimate_lengths=True`` it stays lazy and estimates the lengths from character counts in
        milliseconds.
        """
        if self._lengths is None:
            cfg = self._encoder.config
            if self._blocks is not None:
                lengths = np.full(len(self), cfg.block_size, dtype=np.int64)
            elif self._encoded is None and cfg.estimate_lengths:
                lengths = estimate_lengths(self._dataset, self._encoder)
            else:
                if self._encoded is None:
                    self._encoded = self._tokenize_all(self._dataset)
                    self._new_reader()
                lengths = token_lengths(self._encoded, "input_ids")
            lengths.setflags(write=False)
            self._lengths = lengths
        return self._lengths

    @property
    def label_ids(self) -> np.ndarray:
        """The class id of every row (int64), from Arrow, for class-balanced sampling and stratified splits.

        Raises:
            ValueError: the adapter is not single-label classification.
        """
        labels = self._encoder.labelled
        if labels is None or labels.problem_type != "single_label_classification":
            raise ValueError(
                "`label_ids` needs single-label classification (one class id per row); this adapter has task "
                f"{self.task!r} and problem type {self.problem_type!r}"
            )
        if self._label_ids is None:
            import pyarrow as pa
            import pyarrow.compute as pc

            column = arrow_column(self._dataset, labels.column)
            if labels.kind.raw == "name":
                names = [name for name, _ in sorted((labels.label2id or {}).items(), key=lambda kv: kv[1])]
                column = pc.index_in(column, value_set=pa.array(names, type=column.type))
            ids = np.asarray(column.to_numpy(), dtype=np.int64)
            if labels.kind.raw != "name":
                ids = np.ascontiguousarray(labels.remap(ids))  # ClassLabel order -> label2id order
            ids.setflags(write=False)
            self._label_ids = ids
        return self._label_ids

    task: str = encoder_property("task")
    tokenizer: Any = encoder_property("tokenizer")
    config: AdapterConfig = encoder_property("config")
    label_info: LabelInfo | None = encoder_property("label_info")
    problem_type: str | None = encoder_property("problem_type")
    label2id: dict[str, int] | None = encoder_property("label2id")
    id2label: dict[int, str] | None = encoder_property("id2label")
    num_labels: int | None = encoder_property("num_labels")

    @property
    def collator(self) -> Any:
        """The task's collator, ``hfbridge.collators.collator_for_task(task, tokenizer,
        **collator_kwargs)``."""
        return self._encoder.collator(self._collator_kwargs)

    def __repr__(self) -> str:
        cfg = self._encoder.config
        mode = "packed" if self._blocks is not None else ("lazy" if cfg.lazy else "eager")
        return (
            f"MapAdapter(task={cfg.task!r}, rows={len(self)}, mode={mode!r}, num_labels={self.num_labels}, "
            f"tokenizer={type(self.tokenizer).__name__})"
        )
