"""``IterableAdapter``: a streaming ``datasets.IterableDataset`` as a sharded, resumable torch
``IterableDataset``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.utils.data

from hfbridge._checks import check_non_negative_int, check_type
from hfbridge._distributed import resolve_replicas
from hfbridge.adapters._config import AdapterConfig
from hfbridge.adapters._encode import Batch, Encoder, pack_blocks, to_rows
from hfbridge.adapters._labels import LabelInfo
from hfbridge.adapters._map import encoder_property
from hfbridge.adapters._sources import check_batch_texts

if TYPE_CHECKING:
    from datasets import IterableDataset

__all__ = ["IterableAdapter"]

_STATE_KEYS = {"epoch", "partition", "source", "carry", "skip"}


class IterableAdapter(torch.utils.data.IterableDataset):
    """A stream of tokenized feature rows for one task; build it with ``hfbridge.adapt`` on a streaming
    dataset.

    The stream is split over ``num_replicas × num_workers`` partitions, one per (rank, DataLoader worker):
    whole shards when the shard count divides evenly (``datasets.distributed.split_dataset_by_node``), else
    every ``n``-th row, so no row is duplicated or dropped. Rows are read and tokenized
    ``tokenize_batch_size`` at a time; ``block_size`` packs them into fixed blocks with a carry buffer.

    ``state_dict()`` records the exact position (the source's own state at the current batch, the packing
    carry and the rows already yielded from that batch); ``load_state_dict()`` resumes there without
    re-tokenizing. With ``num_workers > 0`` use ``torchdata.stateful_dataloader.StatefulDataLoader``, which
    snapshots each worker's copy.

    Args:
        dataset: the streaming source.
        tokenizer: a transformers tokenizer with a pad token.
        config: the options (see ``AdapterConfig``).
        labels: the label scheme (from ClassLabel features or ``label2id``).
        num_replicas: number of distributed ranks; ``None`` reads ``torch.distributed`` in the main process
            (when iterating, or when DataLoader workers receive the adapter).
        rank: this process's rank; ``None`` reads ``torch.distributed`` likewise.
        collator_kwargs: options passed to the task's collator by ``.collator``.
    """

    def __init__(
        self,
        dataset: IterableDataset,
        tokenizer: Any,
        config: AdapterConfig,
        *,
        labels: LabelInfo | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
        collator_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if num_replicas is not None or rank is not None:
            resolve_replicas(num_replicas, rank)  # validate early
        self._dataset = dataset
        self._encoder = Encoder(tokenizer, config, labels)  # checks the tokenizer and the length limits
        self._collator_kwargs = dict(collator_kwargs or {})
        self._num_replicas = num_replicas
        self._rank = rank
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # persistent workers see set_epoch
        self._resume: dict[str, Any] | None = None
        self._position: tuple[Any, ...] | None = None

    @property
    def dataset(self) -> IterableDataset:
        """The streaming source."""
        return self._dataset

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the source's shuffling (``shuffle(seed=..., buffer_size=...)``) from the next
        pass."""
        check_non_negative_int("epoch", epoch)
        self._epoch.fill_(epoch)

    # ------------------------------------------------------------------------------------------ sharding

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for DataLoader workers: fix the rank and world size here, in the parent process.

        Workers started with ``spawn``/``forkserver`` do not have ``torch.distributed`` initialised, so
        reading it there would give every rank ``rank=0, world_size=1`` and the same rows.
        """
        state = self.__dict__.copy()
        if torch.utils.data.get_worker_info() is None:
            state["_num_replicas"], state["_rank"] = resolve_replicas(self._num_replicas, self._rank)
        return state

    def _partition(self) -> tuple[int, int]:
        """(index, count) of this (rank, worker) pair among all of them."""
        world, rank = resolve_replicas(self._num_replicas, self._rank)  # given, from the parent, or read here
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return rank * workers + worker, world * workers

    # ------------------------------------------------------------------------------------------ iteration

    def __iter__(self) -> Iterator[dict[str, Any]]:
        from datasets.distributed import split_dataset_by_node

        cfg = self._encoder.config
        epoch = int(self._epoch)
        index, count = self._partition()
        # a fresh copy even for one partition: a loaded state or epoch must not stick to the user's dataset
        # object, which would start every later pass of the epoch from that state
        part = split_dataset_by_node(self._dataset, rank=index, world_size=count)
        part.set_epoch(epoch)
        carry: Batch | None = None
        skip = 0
        source_state = None
        resume, self._resume = self._resume, None
        if resume is not None and resume["epoch"] == epoch:
            if resume["partition"] != [index, count]:
                raise ValueError(
                    f"`state` was saved by partition {resume['partition'][0]} of {resume['partition'][1]} "
                    f"(ranks × DataLoader workers); this is partition {index} of {count}: resume with the "
                    "same world size and num_workers"
                )
            source_state, carry, skip = resume["source"], resume["carry"], resume["skip"]
            if source_state is not None:
                part.load_state_dict(source_state)
        for batch in part.iter(batch_size=cfg.tokenize_batch_size):
            check_batch_texts(batch, cfg)
            features = self._encoder(batch)
            new_carry: Batch | None = None
            if cfg.block_size is not None:
                features, new_carry = pack_blocks(features, cfg.block_size, carry)
            for i, row in enumerate(to_rows(features)[skip:], start=skip + 1):
                self._position = (epoch, index, count, source_state, carry, i)
                yield row
            source_state, carry, skip = part.state_dict(), new_carry, 0
        self._position = (epoch, index, count, part.state_dict(), carry, 0)

    # ------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """The exact position of the last row yielded: plain dicts/lists/ints (JSON and ``torch.save``
        safe)."""
        if self._position is None:
            if self._resume is not None:
                return dict(self._resume)
            return {"epoch": int(self._epoch), "partition": None, "source": None, "carry": None, "skip": 0}
        epoch, index, count, source, carry, skip = self._position
        return {"epoch": epoch, "partition": [index, count], "source": source, "carry": carry, "skip": skip}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from ``state`` on the next ``iter()``: the epoch is restored and already-yielded rows are
        skipped.

        Raises:
            TypeError: ``state`` is not a mapping.
            ValueError: ``state`` lacks keys of ``state_dict()``'s output.
        """
        check_type("state", state, Mapping, what="a mapping from IterableAdapter.state_dict()")
        missing = _STATE_KEYS - set(state)
        if missing:
            raise ValueError(
                f"`state` must come from IterableAdapter.state_dict(); it lacks {sorted(missing)}, got keys "
                f"{sorted(state)}"
            )
        self._epoch.fill_(int(state["epoch"]))
        self._position = None
        if state["partition"] is None:
            self._resume = None
        else:
            self._resume = {**state, "partition": list(state["partition"])}

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
        tokenizer = type(self.tokenizer).__name__
        return f"IterableAdapter(task={self.task!r}, num_labels={self.num_labels}, tokenizer={tokenizer})"
