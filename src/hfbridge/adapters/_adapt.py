"""``adapt``: the one entry point from whatever the user has to a torch dataset for a named task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hfbridge._tasks import CHAT_TASK
from hfbridge.adapters._common import check_tokenizer, rebind_labels, resolve_labels
from hfbridge.adapters._config import AdapterConfig, ProblemType
from hfbridge.adapters._iterable import IterableAdapter
from hfbridge.adapters._labels import LabelInfo
from hfbridge.adapters._map import MapAdapter
from hfbridge.adapters._sources import check_columns, empty_source_error, from_python

__all__ = ["adapt"]


def adapt(
    source: Any,
    tokenizer: Any,
    *,
    task: str,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str | None = "label",
    target_column: str = "target",
    max_length: int | None = None,
    max_target_length: int | None = None,
    truncation: bool = True,
    label_all_tokens: bool = False,
    block_size: int | None = None,
    problem_type: ProblemType | None = None,
    label2id: Mapping[str, int] | None = None,
    lazy: bool = True,
    estimate_lengths: bool = False,
    tokenize_batch_size: int = 1000,
    num_proc: int | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    collator_kwargs: Mapping[str, Any] | None = None,
    chat_options: Mapping[str, Any] | None = None,
) -> MapAdapter | IterableAdapter | dict[str, MapAdapter | IterableAdapter]:
    """Turn ``source`` into a ``torch.utils.data`` dataset of tokenized feature rows for ``task``.

    Args:
        source: a ``datasets.Dataset``, ``IterableDataset`` (streaming), ``DatasetDict``/``IterableDatasetDict``,
            a dict of lists, a list of dicts, a list of texts, a ``(texts, labels)`` tuple (``(sources, targets)``
            for seq2seq) or a ``pandas.DataFrame``.
        tokenizer: a transformers tokenizer with a pad token (fast for token classification).
        task: ``sequence-classification``, ``token-classification``, ``seq2seq``, ``causal-lm`` or ``masked-lm``.
        text_column: the input text; word lists for token classification; the source text for seq2seq.
        text_pair_column: the second text of a pair (sequence classification).
        label_column: labels of classification tasks (int, str, ClassLabel, float for regression, lists for
            multi-label, word-label lists for token classification); ``None`` for an unlabelled split.
        target_column: the target text of seq2seq (tokenized with ``text_target=``).
        max_length: truncation length; ``None`` uses the tokenizer's ``model_max_length``.
        max_target_length: truncation length of seq2seq targets (default ``max_length``).
        truncation: set ``False`` to keep full sequences.
        label_all_tokens: token classification: give every sub-word its word's label (default: ``-100`` on
            non-first sub-words).
        block_size: causal/masked LM: pack the corpus into blocks of this many tokens (done up front for sized
            sources, with a carry buffer for streams).
        problem_type: override the problem type inferred from the labels (sequence classification).
        label2id: a fixed label map, e.g. ``model.config.label2id``.
        lazy: tokenize rows on access (default) or once up front via ``Dataset.map`` (``False``, cached).
        estimate_lengths: lazy mode: ``.lengths`` estimated from character counts instead of tokenizing.
        tokenize_batch_size: rows per tokenizer call in bulk passes.
        num_proc: processes for the eager ``Dataset.map`` tokenization (``lazy=False`` or ``block_size``).
        num_replicas: streaming: number of ranks (``None``: from ``torch.distributed``).
        rank: streaming: this process's rank (``None``: from ``torch.distributed``).
        collator_kwargs: options for the collator that ``.collator`` builds (e.g. ``pad_to_multiple_of=8``).
        chat_options: task ``"chat"`` only: further options of :func:`hfbridge.adapters.adapt_chat`.

    Returns:
        A ``MapAdapter`` for sized sources, an ``IterableAdapter`` for streams, or a ``dict`` of them for a
        ``DatasetDict``, whose splits share the label map of ``train`` (or of the first split).

    Raises:
        ValueError: unknown task, missing column, empty source, None/NaN text, no pad token, labels outside the
            train split's label map, bad option values.
        TypeError: unsupported source, tokenizer or label types.

    Example:
        >>> train = hfbridge.adapt(  # doctest: +SKIP
        ...     (["Happy", "Sad"], ["Positive", "Negative"]), tokenizer, task="sequence-classification"
        ... )
        >>> train.label2id  # doctest: +SKIP
        {'Negative': 0, 'Positive': 1}
        >>> loader = DataLoader(train, batch_size=2, shuffle=True, collate_fn=train.collator)  # doctest: +SKIP
    """
    if task == CHAT_TASK:  # conversations have their own encoder and options
        from hfbridge.adapters._chat_adapter import adapt_chat

        chat = {"max_length": max_length, "tokenize_batch_size": tokenize_batch_size, **(chat_options or {})}
        adapter = adapt_chat(source, tokenizer, collator_kwargs=collator_kwargs, **chat)
        return adapter  # type: ignore[return-value]
    if chat_options is not None:
        raise ValueError(f"`chat_options` is only used by task 'chat'; got it for task {task!r}")
    cfg = AdapterConfig(
        task=task,  # type: ignore[arg-type]
        text_column=text_column,
        text_pair_column=text_pair_column,
        label_column=label_column,
        target_column=target_column,
        max_length=max_length,
        max_target_length=max_target_length,
        truncation=truncation,
        label_all_tokens=label_all_tokens,
        block_size=block_size,
        problem_type=problem_type,
        label2id=label2id,
        lazy=lazy,
        estimate_lengths=estimate_lengths,
        tokenize_batch_size=tokenize_batch_size,
        num_proc=num_proc,
    )
    check_tokenizer(tokenizer, cfg.task)
    options = {"num_replicas": num_replicas, "rank": rank, "collator_kwargs": collator_kwargs}
    import datasets

    if isinstance(source, (datasets.DatasetDict, datasets.IterableDatasetDict)):
        return _adapt_splits(source, tokenizer, cfg, options)
    return _adapt_one(source, tokenizer, cfg, options, labels=None, split=None)


def _adapt_splits(
    splits: Mapping[str, Any], tokenizer: Any, cfg: AdapterConfig, options: dict[str, Any]
) -> dict[str, MapAdapter | IterableAdapter]:
    if not splits:
        raise ValueError("`source` must have at least one split; got an empty DatasetDict")
    first = "train" if "train" in splits else next(iter(splits))
    adapters: dict[str, MapAdapter | IterableAdapter] = {}
    adapters[first] = _adapt_one(splits[first], tokenizer, cfg, options, labels=None, split=first)
    shared = adapters[first]._encoder.labels
    for name, split in splits.items():
        if name != first:
            adapters[name] = _adapt_one(split, tokenizer, cfg, options, labels=shared, split=name)
    return {name: adapters[name] for name in splits}  # the source's split order


def _adapt_one(
    source: Any,
    tokenizer: Any,
    cfg: AdapterConfig,
    options: dict[str, Any],
    *,
    labels: LabelInfo | None,
    split: str | None,
) -> MapAdapter | IterableAdapter:
    import datasets

    if isinstance(source, datasets.IterableDataset):
        return _adapt_stream(source, tokenizer, cfg, options, labels=labels, split=split)
    if options["num_replicas"] is not None or options["rank"] is not None:
        raise ValueError(
            "`num_replicas`/`rank` shard streaming sources only; a sized source is sharded by its sampler "
            f"(e.g. hfbridge.build_dataloader); got num_replicas={options['num_replicas']!r}, rank={options['rank']!r}"
        )
    dataset = source if isinstance(source, datasets.Dataset) else from_python(source, cfg, split)
    return MapAdapter(
        dataset, tokenizer, cfg, labels=labels, split=split, collator_kwargs=options["collator_kwargs"]
    )


def _adapt_stream(
    source: Any,
    tokenizer: Any,
    cfg: AdapterConfig,
    options: dict[str, Any],
    *,
    labels: LabelInfo | None,
    split: str | None,
) -> IterableAdapter:
    features = source.features
    sample = None
    if features is None:  # e.g. after a streaming .map(): peek one row for the column names and label type
        try:
            sample = next(iter(source.take(1)))
        except StopIteration:
            raise empty_source_error(source, split) from None
    columns = list(features) if features is not None else list(sample or {})
    check_columns(columns, cfg, split)
    if cfg.has_labels:
        label_sample = None if sample is None else sample[cfg.label_column]
        if labels is None:
            labels = resolve_labels(cfg, features, sample=label_sample, split=split)
        else:  # another split's label map: remap this split's own ClassLabel order through it
            labels = rebind_labels(labels, cfg, features, sample=label_sample, split=split)
    return IterableAdapter(
        source,
        tokenizer,
        cfg,
        labels=labels,
        num_replicas=options["num_replicas"],
        rank=options["rank"],
        collator_kwargs=options["collator_kwargs"],
    )
