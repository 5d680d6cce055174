"""IterableAdapter: sharding over ranks and workers without duplicates or drops, epochs, exact resume."""

from __future__ import annotations

import io
import json
from collections import Counter
from typing import Any

import pytest
import torch

from hfbridge.adapters import IterableAdapter, adapt

N_ROWS = 90


def _identity(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


@pytest.fixture(scope="module")
def unique_rows() -> Any:
    from datasets import Dataset

    words = ["alpha", "beta", "gamma", "delta", "omega", "market", "comet", "storm", "river"]
    texts = [
        f"{words[i % 9]} {words[(i // 9) % 9]} {words[i // 81]}" for i in range(N_ROWS)
    ]  # unique token ids
    return Dataset.from_dict({"text": texts, "label": [i % 3 for i in range(N_ROWS)]})


def _key(row: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(t) for t in row["input_ids"])


def _expected(unique_rows: Any, tokenizer: Any) -> Counter[tuple[int, ...]]:
    return Counter(tuple(ids) for ids in tokenizer(list(unique_rows["text"]), truncation=True)["input_ids"])


@pytest.mark.parametrize("num_shards", [4, 3], ids=["shards-divide", "round-robin-rows"])
def test_two_ranks_two_workers_no_duplicates_no_drops(
    num_shards: int, unique_rows: Any, wordpiece_tokenizer: Any
) -> None:
    stream = unique_rows.to_iterable_dataset(num_shards=num_shards)
    per_rank = []
    for rank in range(2):
        adapter = adapt(
            stream, wordpiece_tokenizer, task="sequence-classification", num_replicas=2, rank=rank
        )
        loader = torch.utils.data.DataLoader(adapter, batch_size=4, num_workers=2, collate_fn=_identity)
        per_rank.append([_key(row) for batch in loader for row in batch])
    seen = Counter(per_rank[0] + per_rank[1])
    assert seen == _expected(unique_rows, wordpiece_tokenizer)  # every row exactly once
    assert max(seen.values()) == 1
    assert abs(len(per_rank[0]) - len(per_rank[1])) <= 2  # balanced between ranks


def test_single_process_sees_everything_in_order(unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        unique_rows.to_iterable_dataset(num_shards=4), wordpiece_tokenizer, task="sequence-classification"
    )
    rows = list(adapter)
    assert [r["input_ids"] for r in rows] == wordpiece_tokenizer(list(unique_rows["text"]))["input_ids"]
    assert [r["labels"] for r in rows] == list(unique_rows["label"])


def test_rank_comes_from_torch_distributed_when_not_given(unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(
        unique_rows.to_iterable_dataset(num_shards=4), wordpiece_tokenizer, task="sequence-classification"
    )
    assert len(list(adapter)) == N_ROWS  # not initialised: world size 1


def test_set_epoch_reshuffles_deterministically(unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    stream = unique_rows.to_iterable_dataset(num_shards=4).shuffle(seed=0, buffer_size=16)
    adapter = adapt(stream, wordpiece_tokenizer, task="sequence-classification")
    first = [_key(r) for r in adapter]
    again = [_key(r) for r in adapter]
    adapter.set_epoch(1)
    second = [_key(r) for r in adapter]
    assert first == again
    assert second != first
    assert Counter(second) == Counter(first) == _expected(unique_rows, wordpiece_tokenizer)
    with pytest.raises(ValueError, match=r"`epoch` must be a non-negative integer; got -1"):
        adapter.set_epoch(-1)


def _resume_case(
    stream: Any, tokenizer: Any, stop: int, **options: Any
) -> tuple[list[Any], list[Any], list[Any]]:
    full = list(adapt(stream, tokenizer, **options))
    first = adapt(stream, tokenizer, **options)
    iterator = iter(first)
    head = [next(iterator) for _ in range(stop)]
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON types only
    second = adapt(stream, tokenizer, **options)
    second.load_state_dict(state)
    return full, head, list(second)


@pytest.mark.parametrize("stop", [0, 1, 6, 7, 8, 44, 89])
def test_resume_is_exact(stop: int, unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    stream = unique_rows.to_iterable_dataset(num_shards=4)
    full, head, rest = _resume_case(
        stream, wordpiece_tokenizer, stop, task="sequence-classification", tokenize_batch_size=7
    )
    assert head == full[:stop]
    assert rest == full[stop:]


@pytest.mark.parametrize("stop", [0, 3, 11])
def test_resume_is_exact_with_packing_carry_and_a_rank(
    stop: int, lm_dataset: Any, bpe_tokenizer: Any
) -> None:
    stream = lm_dataset.to_iterable_dataset(num_shards=3)
    options = {"task": "causal-lm", "block_size": 24, "tokenize_batch_size": 5, "num_replicas": 2, "rank": 1}
    full, head, rest = _resume_case(stream, bpe_tokenizer, stop, **options)
    assert all(len(r["input_ids"]) == 24 and r["labels"] == r["input_ids"] for r in full)
    assert head + rest == full


def test_packing_keeps_every_token_across_batches(lm_dataset: Any, bpe_tokenizer: Any) -> None:
    from itertools import chain

    adapter = adapt(
        lm_dataset.to_iterable_dataset(),
        bpe_tokenizer,
        task="causal-lm",
        block_size=16,
        tokenize_batch_size=5,
    )
    stream = list(chain(*bpe_tokenizer(list(lm_dataset["text"]))["input_ids"]))
    rows = list(adapter)
    assert list(chain(*(r["input_ids"] for r in rows))) == stream[: len(rows) * 16]
    assert len(rows) == len(stream) // 16


def test_state_after_a_finished_epoch_resumes_to_nothing_then_the_next_epoch(
    unique_rows: Any, wordpiece_tokenizer: Any
) -> None:
    stream = unique_rows.to_iterable_dataset(num_shards=2)
    adapter = adapt(stream, wordpiece_tokenizer, task="sequence-classification")
    assert adapter.state_dict()["partition"] is None  # nothing read yet
    list(adapter)
    buffer = io.BytesIO()
    torch.save(adapter.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = adapt(stream, wordpiece_tokenizer, task="sequence-classification")
    resumed.load_state_dict(state)
    assert list(resumed) == []
    resumed.set_epoch(1)
    assert len(list(resumed)) == N_ROWS


def test_stateful_dataloader_resumes_two_workers_exactly(unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    stream = unique_rows.to_iterable_dataset(num_shards=4)

    def loader(adapter: IterableAdapter) -> Any:
        return stateful.StatefulDataLoader(adapter, batch_size=5, num_workers=2, collate_fn=_identity)

    full = [
        [_key(r) for r in b]
        for b in loader(adapt(stream, wordpiece_tokenizer, task="sequence-classification"))
    ]
    first = loader(adapt(stream, wordpiece_tokenizer, task="sequence-classification"))
    head = []
    for batch in first:
        head.append([_key(r) for r in batch])
        if len(head) == 5:
            break
    state = first.state_dict()
    second = loader(adapt(stream, wordpiece_tokenizer, task="sequence-classification"))
    second.load_state_dict(state)
    rest = [[_key(r) for r in b] for b in second]
    assert head + rest == full


def test_resume_with_another_partition_is_an_error(unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    stream = unique_rows.to_iterable_dataset(num_shards=4)
    a = adapt(stream, wordpiece_tokenizer, task="sequence-classification", num_replicas=2, rank=0)
    next(iter(a))
    b = adapt(stream, wordpiece_tokenizer, task="sequence-classification")
    b.load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match=r"`state` was saved by partition 0 of 2.*this is partition 0 of 1"):
        list(b)


def test_load_state_dict_bad_input(unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(unique_rows.to_iterable_dataset(), wordpiece_tokenizer, task="sequence-classification")
    with pytest.raises(
        TypeError, match=r"`state` must be a mapping from IterableAdapter.state_dict\(\); got list"
    ):
        adapter.load_state_dict([1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`state` must come from IterableAdapter.state_dict\(\); it lacks"):
        adapter.load_state_dict({"epoch": 0})


def test_bad_rank_is_rejected_early(unique_rows: Any, wordpiece_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match=r"`rank` must be an integer in \[0, 1\]"):
        adapt(
            unique_rows.to_iterable_dataset(),
            wordpiece_tokenizer,
            task="sequence-classification",
            num_replicas=2,
            rank=2,
        )


def test_stream_without_features_is_peeked_for_columns_and_labels(wordpiece_tokenizer: Any) -> None:
    from datasets import Dataset

    stream = Dataset.from_dict({"raw": ["a b", "c d"], "y": [0, 1]}).to_iterable_dataset()
    stream = stream.map(lambda row: {"text": row["raw"].upper()})  # features become unknown
    assert stream.features is None
    adapter = adapt(stream, wordpiece_tokenizer, task="sequence-classification", label_column="y")
    assert [r["labels"] for r in adapter] == [0, 1]
    with pytest.raises(ValueError, match=r"`label_column` names column 'label'.*'raw', 'y', 'text'"):
        adapt(stream, wordpiece_tokenizer, task="sequence-classification")


def test_rank_is_resolved_in_the_main_process_for_spawned_workers(
    unique_rows: Any, wordpiece_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spawned DataLoader workers have no torch.distributed: the rank must travel with the pickled adapter."""
    import hfbridge._distributed as distributed

    stream = unique_rows.to_iterable_dataset(num_shards=4)
    monkeypatch.setattr(distributed, "get_world_size", lambda: 2)
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(distributed, "get_rank", lambda rank=rank: rank)
        adapter = adapt(stream, wordpiece_tokenizer, task="sequence-classification")  # rank from "dist"
        loader = torch.utils.data.DataLoader(
            adapter, batch_size=8, num_workers=1, multiprocessing_context="spawn", collate_fn=_identity
        )
        per_rank.append([_key(row) for batch in loader for row in batch])
    seen = Counter(per_rank[0] + per_rank[1])
    assert max(seen.values()) == 1  # no row read by both ranks
    assert seen == _expected(unique_rows, wordpiece_tokenizer)
