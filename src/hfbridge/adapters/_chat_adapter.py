"""``adapt_chat`` and ``ChatAdapter``: conversations or prompt/completion pairs as a torch dataset for SFT."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data

from hfbridge._checks import check_positive_int, check_type
from hfbridge.adapters._chat import ChatEncoder, Encoded, OnEmpty, TrainOn, Truncation

__all__ = ["ChatAdapter", "adapt_chat"]


class ChatAdapter(torch.utils.data.Dataset):
    """Encoded chat rows (``input_ids``, ``attention_mask``, ``labels``), held as flat NumPy arrays.

    Built by :func:`adapt_chat` (or ``adapt(..., task="chat")``). Rows dropped while encoding (too long, or
    left without a labelled token) are listed in :attr:`dropped`; :attr:`rows` maps each row to its source
    row. ``lengths`` are the real token counts after truncation.
    """

    def __init__(
        self, encoded: Encoded, tokenizer: Any, *, source_rows: int, collator_kwargs: Mapping[str, Any]
    ):
        lengths = np.fromiter(map(len, encoded.input_ids), dtype=np.int64, count=len(encoded.input_ids))
        self._offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self._offsets[1:])
        self._ids = _flat(encoded.input_ids, int(self._offsets[-1]))
        self._labels = _flat(encoded.labels, int(self._offsets[-1]))
        lengths.setflags(write=False)
        self._lengths = lengths
        self.rows = np.asarray(encoded.rows, dtype=np.int64)
        self.dropped = {reason: list(rows) for reason, rows in encoded.dropped.items()}
        self.source_rows = source_rows
        self.tokenizer = tokenizer
        self.task = "chat"
        self._collator_kwargs = dict(collator_kwargs)

    def __len__(self) -> int:
        return len(self._lengths)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        if isinstance(index, (bool, str, slice)) or not hasattr(index, "__index__"):
            raise TypeError(f"`index` must be an integer; got {index!r:.60}")
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, list[int]]]:
        n = len(self)
        out = []
        for i in indices:
            i = int(i)
            if not -n <= i < n:
                raise IndexError(f"`index` must be in [-{n}, {n}) for this adapter of {n} rows; got {i}")
            start, stop = self._offsets[i % n], self._offsets[i % n + 1]
            ids = self._ids[start:stop].tolist()
            out.append(
                {
                    "input_ids": ids,
                    "attention_mask": [1] * len(ids),
                    "labels": self._labels[start:stop].tolist(),
                }
            )
        return out

    def __iter__(self) -> Iterator[dict[str, list[int]]]:
        for start in range(0, len(self), 1000):
            yield from self.__getitems__(range(start, min(start + 1000, len(self))))

    @property
    def lengths(self) -> np.ndarray:
        """Token count of each row (after truncation), int64, read-only."""
        return self._lengths

    @property
    def num_dropped(self) -> int:
        """How many source rows were dropped (see :attr:`dropped` for which and why)."""
        return sum(map(len, self.dropped.values()))

    @property
    def collator(self) -> Any:
        """A ``CausalLMCollator`` for padded batches (labels kept, padded with -100)."""
        from hfbridge.collators import CausalLMCollator

        return CausalLMCollator(self.tokenizer, **self._collator_kwargs)

    def __repr__(self) -> str:
        return f"ChatAdapter(rows={len(self)}, dropped={self.num_dropped}, tokens={int(self._offsets[-1])})"


def _flat(rows: list[list[int]], total: int) -> np.ndarray:
    from itertools import chain

    return np.fromiter(chain.from_iterable(rows), dtype=np.int32, count=total)


def adapt_chat(
    source: Any,
    tokenizer: Any,
    *,
    messages_column: str = "messages",
    prompt_column: str = "prompt",
    completion_column: str = "completion",
    train_on: TrainOn | None = None,
    max_length: int | None = None,
    truncation: Truncation = "truncate",
    on_empty: OnEmpty = "drop",
    chat_template: str | None = None,
    chat_template_kwargs: Mapping[str, Any] | None = None,
    use_generation_markers: bool | None = None,
    tokenize_batch_size: int = 1000,
    collator_kwargs: Mapping[str, Any] | None = None,
) -> ChatAdapter | dict[str, ChatAdapter]:
    """Encode conversations or prompt/completion pairs for supervised fine-tuning of a causal LM.

    ``labels`` are -100 except on the tokens the model must produce: by default every assistant turn with its
    end-of-turn token (``messages``), or the completion (prompt/completion). See ``docs/chat.md``.

    Args:
        source: a ``datasets.Dataset``, ``DatasetDict``, dict of columns, list of row dicts, or a list of
            conversations (each a list of ``{"role", "content"}`` messages).
        tokenizer: a fast tokenizer; conversational data needs its chat template (or ``chat_template``).
        messages_column: the conversations (roles ``system``, ``user``, ``assistant``, ``tool``).
        prompt_column, completion_column: prompt/completion data, used when there is no ``messages_column``:
            both plain text (the completion gets the EOS token appended) or both lists of messages.
        train_on: ``"assistant"`` (default for messages), ``"last_assistant"`` or ``"completion"`` (default
            for prompt/completion).
        max_length: the longest row kept, in tokens; ``None`` keeps every length.
        truncation: ``"truncate"`` (cut on the right), ``"drop"`` the row, or ``"keep_last_turns"`` (drop the
            oldest exchanges, keeping a leading system message, until the row fits).
        on_empty: a row left with no labelled token after truncation is dropped (``"drop"``, counted in
            ``.dropped`` with a warning) or raises (``"raise"``).
        chat_template: a Jinja template to use instead of the tokenizer's.
        chat_template_kwargs: extra template variables.
        use_generation_markers: ``None`` (default) uses ``{% generation %}`` markers when the template has
            them; ``False`` always derives spans from prefix renders.
        tokenize_batch_size: rows per batched render/tokenizer call.
        collator_kwargs: options for ``.collator`` (``CausalLMCollator``), e.g. ``pad_to_multiple_of``.

    Returns:
        A :class:`ChatAdapter`, or a dict of them for a ``DatasetDict``.

    Raises:
        ValueError: missing/malformed messages, an unknown role, no assistant turn, no chat template, a
            template that is not prefix-stable, an empty completion, a row with nothing left to train on
            (``on_empty="raise"``), bad option values. Each names the row.
        TypeError: a slow tokenizer, an unsupported source.
    """
    check_positive_int("tokenize_batch_size", tokenize_batch_size)
    import datasets

    if isinstance(source, datasets.DatasetDict):
        kwargs = locals().copy()
        del kwargs["source"], kwargs["datasets"], kwargs["tokenizer"]
        splits = source.items()
        return {name: adapt_chat(split, tokenizer, **kwargs) for name, split in splits}  # type: ignore[misc]
    if isinstance(source, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise TypeError(
            "`source` must be sized for task 'chat' (rows are encoded up front, so drops and lengths are "
            "known); got a streaming IterableDataset: materialize it, e.g. "
            "Dataset.from_generator(lambda: iter(stream))"
        )
    columns = _columns(source)
    names = list(columns)
    n = len(columns[names[0]]) if names else 0
    if n == 0:
        raise ValueError("`source` must have at least one row; got an empty source")
    used: tuple[str, ...]
    if messages_column in columns:
        fmt, used = "messages", (messages_column,)
    elif prompt_column in columns and completion_column in columns:
        used = (prompt_column, completion_column)
        first = columns[prompt_column][0]
        fmt = "text_completion" if isinstance(first, str) else "prompt_completion"
    else:
        raise ValueError(
            f"`source` must have a {messages_column!r} column, or {prompt_column!r} and "
            f"{completion_column!r} "
            f"columns (see messages_column/prompt_column/completion_column); got columns {names}"
        )
    if train_on is None:
        train_on = "assistant" if fmt == "messages" else "completion"
    encoder = ChatEncoder(
        tokenizer,
        fmt,  # type: ignore[arg-type]
        train_on,
        max_length=max_length,
        truncation=truncation,
        on_empty=on_empty,
        columns=used,
        chat_template=chat_template,
        chat_template_kwargs=chat_template_kwargs,
        use_generation_markers=use_generation_markers,
    )
    total = Encoded()
    for start in range(0, n, tokenize_batch_size):
        encoder(
            _read(source, columns, used, start, min(start + tokenize_batch_size, n)), total, first_row=start
        )
    adapter = ChatAdapter(total, tokenizer, source_rows=n, collator_kwargs=collator_kwargs or {})
    if adapter.num_dropped:
        detail = ", ".join(
            f"{len(r)} {reason} (rows {r[:5]}{'...' if len(r) > 5 else ''})"
            for reason, r in adapter.dropped.items()
        )
        warnings.warn(f"adapt_chat dropped {adapter.num_dropped} of {n} rows: {detail}", stacklevel=2)
    if len(adapter) == 0:
        raise ValueError(
            f"every one of the {n} rows was dropped ({adapter.dropped}); raise `max_length` or change "
            "`truncation`"
        )
    return adapter


def _read(source: Any, columns: Mapping[str, Any], used: tuple[str, ...], start: int, stop: int) -> dict:
    import datasets

    if isinstance(source, datasets.Dataset):
        return source.select_columns(list(used))[start:stop]
    return {c: list(columns[c][start:stop]) for c in used}


def _columns(source: Any) -> Mapping[str, Sequence[Any]]:
    """Column name -> values, from a Dataset, a dict of columns, a list of row dicts or of conversations."""
    import datasets

    if isinstance(source, datasets.Dataset):
        return {name: source[name] for name in source.column_names}
    if isinstance(source, Mapping):
        return source
    if isinstance(source, Sequence) and not isinstance(source, str) and source:
        first = source[0]
        if isinstance(first, Mapping) and "role" not in first:
            return {key: [row.get(key) for row in source] for key in first}
        if isinstance(first, Sequence) and not isinstance(first, str):
            return {"messages": list(source)}
    check_type("source", source, (datasets.Dataset, Mapping, list), what="a Dataset, dict of columns or list")
    raise ValueError(f"`source` must have at least one row; got {source!r:.60}")
