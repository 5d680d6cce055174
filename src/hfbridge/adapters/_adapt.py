"""``adapt``: the one entry point from whatever the user has to a torch dataset for a named task."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import fields, replace
from functools import partial
from typing import Any

from hfbridge._checks import CHAT_TASK
from hfbridge.adapters._config import AdapterConfig
from hfbridge.adapters._iterable import IterableAdapter
from hfbridge.adapters._labels import LabelInfo, resolve_labels
from hfbridge.adapters._map import MapAdapter
from hfbridge.adapters._sources import arrow_column, check_columns, empty_source_error, from_python

__all__ = ["adapt"]

logger = logging.getLogger("hfbridge.adapters")
_OPTIONS = tuple(f.name for f in fields(AdapterConfig) if f.name != "task")


def adapt(
    source: Any,
    tokenizer: Any,
    *,
    task: str,
    num_replicas: int | None = None,
    rank: int | None = None,
    collator_kwargs: Mapping[str, Any] | None = None,
    **options: Any,
) -> MapAdapter | IterableAdapter | dict[str, MapAdapter | IterableAdapter]:
    """Turn ``source`` into a ``torch.utils.data`` dataset of tokenized feature rows for ``task``.

    Args:
        source: a ``datasets.Dataset``, ``IterableDataset`` (streaming),
            ``DatasetDict``/``IterableDatasetDict``, a dict of lists, a list of dicts, a list of texts, a
            ``(texts, labels)`` tuple (``(sources, targets)`` for seq2seq) or a ``pandas.DataFrame``.
        tokenizer: a transformers tokenizer with a pad token (fast for token classification).
        task: ``sequence-classification``, ``token-classification``, ``seq2seq``, ``causal-lm`` or
            ``masked-lm``.
        num_replicas: streaming: number of ranks (``None``: from ``torch.distributed``).
        rank: streaming: this process's rank (``None``: from ``torch.distributed``).
        collator_kwargs: options for the collator that ``.collator`` builds (e.g. ``pad_to_multiple_of=8``).
        **options: the fields of :class:`AdapterConfig` (``text_column``, ``label_column``, ``max_length``,
            ``lazy``, ...), which documents each one; task ``"chat"`` takes the options of
            :func:`hfbridge.adapters.adapt_chat` instead.

    Returns:
        A ``MapAdapter`` for sized sources, an ``IterableAdapter`` for streams, or a ``dict`` of them for a
        ``DatasetDict``. Its splits share the label map of ``train`` (or of the first split); a later split
        without the label column, or labelled ``-1`` throughout (unlabelled test splits of GLUE, IMDB's
        ``unsupervised``), is adapted without labels but keeps the shared label maps.

    Raises:
        ValueError: unknown task, missing column, empty source, None/NaN text, no pad token, labels outside
            the train split's label map, bad option values.
        TypeError: unsupported source, tokenizer, option or label types; labels of mixed types.

    Example:
        >>> train = hfbridge.adapt(  # doctest: +SKIP
        ...     (["Happy", "Sad"], ["Positive", "Negative"]), tokenizer, task="sequence-classification"
        ... )
        >>> train.label2id  # doctest: +SKIP
        {'Negative': 0, 'Positive': 1}
        >>> loader = DataLoader(train, batch_size=2, collate_fn=train.collator)  # doctest: +SKIP
    """
    if task == CHAT_TASK:  # conversations have their own encoder and options
        from hfbridge.adapters._chat_adapter import adapt_chat

        return adapt_chat(source, tokenizer, collator_kwargs=collator_kwargs, **options)  # type: ignore[return-value]
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise TypeError(f"`{unknown[0]}` is not an option of adapt(); valid options: {', '.join(_OPTIONS)}")
    cfg = AdapterConfig(task=task, **options)  # type: ignore[arg-type]
    import datasets

    one = partial(
        _adapt_one, tokenizer=tokenizer, num_replicas=num_replicas, rank=rank, collator_kwargs=collator_kwargs
    )
    if not isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return one(source, cfg)
    if not source:
        raise ValueError("`source` must have at least one split; got an empty DatasetDict")
    first = "train" if "train" in source else next(iter(source))
    adapters = {first: one(source[first], cfg, split=first)}
    shared = adapters[first].label_info
    later = {name: split for name, split in source.items() if name != first}
    unlabelled = {name for name, split in later.items() if _unlabelled(split, cfg)}
    if cfg.extend_labels and shared is not None:
        extended = _extended_label2id(later, unlabelled, first, shared)
        if extended is not None:
            cfg = replace(cfg, label2id=extended)
            adapters[first] = one(source[first], cfg, split=first)
            shared = adapters[first].label_info
    for name, split in later.items():
        split_cfg = replace(cfg, label_column=None) if name in unlabelled else cfg
        adapters[name] = one(split, split_cfg, labels=shared, split=name)
    return {name: adapters[name] for name in source}  # the source's split order


def _unlabelled(split: Any, cfg: AdapterConfig) -> bool:
    """A later split of a DatasetDict that has no labels: no label column, or ``-1`` (no label) in every
    row."""
    import datasets
    import pyarrow as pa
    import pyarrow.compute as pc

    if not cfg.has_labels:
        return False
    columns = split.column_names
    if columns is not None and cfg.label_column not in columns:
        return True
    if not isinstance(split, datasets.Dataset) or len(split) == 0:
        return False
    data = arrow_column(split, cfg.label_column)  # type: ignore[arg-type]
    if not pa.types.is_integer(data.type):
        return False
    low, high = pc.min_max(data).values()
    return bool(low.as_py() == high.as_py() == -1)


def _extended_label2id(
    later: Mapping[str, Any], unlabelled: set[str], first: str, shared: LabelInfo
) -> dict[str, int] | None:
    """``extend_labels``: the shared map with the string labels only later (sized, labelled) splits hold
    appended."""
    import datasets
    import pyarrow.compute as pc

    if shared.kind.raw != "name" or shared.label2id is None:
        raise ValueError(
            f"`extend_labels` extends maps of string labels; `label_column` {shared.column!r} of split "
            f"{first!r} holds {'ClassLabel ids' if shared.kind.names else shared.kind.raw + ' values'}"
        )
    known = dict(shared.label2id)
    new: set[str] = set()
    for name, split in later.items():
        if name in unlabelled or not isinstance(split, datasets.Dataset):
            continue
        data = arrow_column(split, shared.column)
        values = pc.list_flatten(data) if shared.kind.is_list else data
        new |= {v for v in pc.unique(values).to_pylist() if v is not None and v not in known}
    if not new:
        return None
    logger.info("labels %s of later splits extend the label map of split %r", sorted(new), first)
    return {**known, **{label: len(known) + i for i, label in enumerate(sorted(new))}}


def _adapt_one(
    source: Any,
    cfg: AdapterConfig,
    *,
    labels: LabelInfo | None = None,
    split: str | None = None,
    tokenizer: Any,
    num_replicas: int | None,
    rank: int | None,
    collator_kwargs: Mapping[str, Any] | None,
) -> MapAdapter | IterableAdapter:
    import datasets

    if isinstance(source, datasets.IterableDataset):
        labels = _stream_labels(source, cfg, labels, split)
        return IterableAdapter(
            source,
            tokenizer,
            cfg,
            labels=labels,
            num_replicas=num_replicas,
            rank=rank,
            collator_kwargs=collator_kwargs,
        )
    if num_replicas is not None or rank is not None:
        raise ValueError(
            "`num_replicas`/`rank` shard streaming sources only; a sized source is sharded by its sampler "
            f"(e.g. hfbridge.build_dataloader); got num_replicas={num_replicas!r}, rank={rank!r}"
        )
    dataset = source if isinstance(source, datasets.Dataset) else from_python(source, cfg, split)
    return MapAdapter(dataset, tokenizer, cfg, labels=labels, split=split, collator_kwargs=collator_kwargs)


def _stream_labels(
    source: Any, cfg: AdapterConfig, labels: LabelInfo | None, split: str | None
) -> LabelInfo | None:
    """The label scheme of a stream: from its features, or (after a streaming ``.map()``) from one peeked
    row."""
    features = source.features
    sample = None
    if features is None:
        try:
            sample = next(iter(source.take(1)))
        except StopIteration:
            raise empty_source_error(source, split) from None
    check_columns(list(features) if features is not None else list(sample or {}), cfg, split)
    label_sample = None if sample is None or not cfg.has_labels else sample[cfg.label_column]
    return resolve_labels(cfg, features, shared=labels, sample=label_sample, split=split)
