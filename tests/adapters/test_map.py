"""MapAdapter mechanics: batched Arrow reads, one tokenizer call per batch, DataLoader workers, memory."""

from __future__ import annotations

import gc
import pickle
import time
from typing import Any

import pytest
import torch

from hfbridge.adapters import MapAdapter, adapt
from tests.adapters.conftest import CallCounter, rows_of


def _identity(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


def test_getitems_reads_arrow_once_and_tokenizes_once(
    string_label_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    adapter = adapt(string_label_dataset, wordpiece_tokenizer, task="sequence-classification")
    reader = CallCounter(adapter._reader)
    tokenizer = CallCounter(wordpiece_tokenizer)
    adapter._reader = reader
    adapter._encoder.tokenizer = tokenizer
    rows = adapter.__getitems__([7, 3, 50, 3])
    assert len(reader.calls) == 1
    assert reader.calls[0] == [7, 3, 50, 3]
    assert len(tokenizer.calls) == 1
    assert len(tokenizer.calls[0]) == 4  # the four texts, in one call
    assert rows[1] == rows[3]
    assert [r["input_ids"] for r in rows] == [
        wordpiece_tokenizer(string_label_dataset[i]["text"])["input_ids"] for i in (7, 3, 50, 3)
    ]


def test_dataloader_uses_getitems(string_label_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(string_label_dataset, wordpiece_tokenizer, task="sequence-classification")
    tokenizer = CallCounter(wordpiece_tokenizer)
    adapter._encoder.tokenizer = tokenizer
    batches = list(torch.utils.data.DataLoader(adapter, batch_size=32, collate_fn=_identity))
    assert [len(b) for b in batches] == [32, 32, 32]
    assert len(tokenizer.calls) == 3  # one call per batch, not per row


def test_accepts_numpy_and_tensor_indices(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    import numpy as np

    adapter = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification")
    expected = adapter.__getitems__([4, 2])
    assert adapter.__getitems__(np.array([4, 2])) == expected
    assert adapter.__getitems__(torch.tensor([4, 2])) == expected
    assert adapter[np.int64(4)] == expected[0]
    assert adapter.__getitems__([]) == []


@pytest.mark.parametrize(
    "task", ["sequence-classification", "token-classification", "seq2seq", "causal-lm", "masked-lm"]
)
def test_lazy_and_eager_give_the_same_rows(task: str, task_case: Any) -> None:
    case = task_case(task)
    lazy = adapt(case.dataset, case.tokenizer, task=task, **case.options)
    eager = adapt(case.dataset, case.tokenizer, task=task, lazy=False, **case.options)
    assert rows_of(eager) == rows_of(lazy)
    assert eager.lengths.tolist() == lazy.lengths.tolist()


def test_eager_tokenization_in_several_processes(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    one = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification", lazy=False)
    two = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification", lazy=False, num_proc=2)
    assert rows_of(two) == rows_of(one)


def test_iteration_reads_in_chunks_and_matches_indexing(lm_dataset: Any, bpe_tokenizer: Any) -> None:
    adapter = adapt(lm_dataset, bpe_tokenizer, task="causal-lm", tokenize_batch_size=40)
    tokenizer = CallCounter(bpe_tokenizer)
    adapter._encoder.tokenizer = tokenizer
    rows = list(adapter)
    assert len(tokenizer.calls) == 3  # 96 rows in chunks of 40
    assert rows == [adapter[i] for i in range(len(adapter))]


def test_select_and_shuffle_are_honoured(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    ds = seqcls_dataset.shuffle(seed=1).select(range(10))
    adapter = adapt(ds, wordpiece_tokenizer, task="sequence-classification")
    assert len(adapter) == 10
    assert [r["input_ids"] for r in rows_of(adapter)] == wordpiece_tokenizer(list(ds["text"]))["input_ids"]
    assert adapter.label_ids.tolist() == list(ds["label"])


def test_pickles_and_works_in_dataloader_workers(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification")
    clone = pickle.loads(pickle.dumps(adapter))
    assert isinstance(clone, MapAdapter)
    assert clone[3] == adapter[3]
    loader = torch.utils.data.DataLoader(adapter, batch_size=16, num_workers=2, collate_fn=_identity)
    rows = [row for batch in loader for row in batch]
    assert rows == rows_of(adapter)


def test_raw_text_stays_inside_the_adapter(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification")
    assert set(adapter[0]) == {"input_ids", "token_type_ids", "attention_mask", "labels"}
    assert adapter.dataset is seqcls_dataset
    assert "rows=96" in repr(adapter)
    assert "mode='lazy'" in repr(adapter)


def test_importing_adapters_pulls_in_no_heavy_library() -> None:
    import subprocess
    import sys

    from tests.conftest import SRC_DIR

    code = (
        f"import sys; sys.path.insert(0, {str(SRC_DIR)!r}); import hfbridge.adapters; "
        "print(sorted(m for m in ('datasets', 'transformers', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow
def test_iterating_a_million_rows_keeps_memory_flat(bpe_tokenizer: Any) -> None:
    from datasets import Dataset

    texts = ["good", "a bad movie", "the market rallied", "rare comet"]
    n = 1_000_000
    ds = Dataset.from_dict({"text": [texts[i % 4] for i in range(n)]})
    adapter = adapt(ds, bpe_tokenizer, task="sequence-classification", label_column=None)
    rows = iter(adapter)
    for _ in range(20_000):  # warm up: allocator pools, tokenizer caches
        next(rows)
    gc.collect()
    before = _rss_bytes()
    start = time.perf_counter()
    count = 20_000 + sum(1 for _ in rows)
    elapsed = time.perf_counter() - start
    gc.collect()
    grown = _rss_bytes() - before
    assert count == n
    assert grown < 64 * 2**20, (
        f"resident memory grew by {grown / 2**20:.1f} MB over {n} rows ({elapsed:.1f}s)"
    )


@pytest.mark.parametrize("mode", ["lazy", "eager", "packed"])
def test_select_shuffle_take_are_views_that_keep_what_is_known(
    mode: str, string_label_dataset: Any, lm_dataset: Any, wordpiece_tokenizer: Any
) -> None:
    import numpy as np

    if mode == "packed":
        adapter = adapt(lm_dataset, wordpiece_tokenizer, task="causal-lm", block_size=8)
    else:
        adapter = adapt(
            string_label_dataset, wordpiece_tokenizer, task="sequence-classification", lazy=mode == "lazy"
        )
    lengths = adapter.lengths
    picked = adapter.select([5, 0, 5, 2])
    assert len(picked) == 4
    assert picked.__getitems__([0, 1, 2, 3]) == adapter.__getitems__([5, 0, 5, 2])
    assert picked.lengths.tolist() == lengths[[5, 0, 5, 2]].tolist()
    assert picked.label2id == adapter.label2id
    shuffled = adapter.shuffle(seed=3)
    order = np.random.default_rng(3).permutation(len(adapter))
    assert shuffled[0] == adapter[int(order[0])]
    assert shuffled.lengths.tolist() == lengths[order].tolist()
    assert adapter.take(3).__getitems__([0, 1, 2]) == adapter.__getitems__([0, 1, 2])
    assert len(adapter) == len(lengths)  # the original is unchanged


def test_views_do_not_tokenize_or_validate_again(string_label_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(string_label_dataset, wordpiece_tokenizer, task="sequence-classification", lazy=False)
    label_ids = adapter.label_ids
    tokenizer = CallCounter(wordpiece_tokenizer)
    adapter._encoder.tokenizer = tokenizer
    view = adapter.shuffle(seed=0).take(10)
    assert view.label_ids.tolist() == [view[i]["labels"] for i in range(10)]
    assert set(view.label_ids.tolist()) <= set(label_ids.tolist())
    assert view.lengths.tolist() == [len(view[i]["input_ids"]) for i in range(10)]
    assert tokenizer.calls == []  # eager: every view reads the tokens already made


def test_view_arguments_are_checked(seqcls_dataset: Any, wordpiece_tokenizer: Any) -> None:
    adapter = adapt(seqcls_dataset, wordpiece_tokenizer, task="sequence-classification")
    with pytest.raises(IndexError, match=r"`indices` must be in \[-96, 96\)"):
        adapter.select([0, 96])
    with pytest.raises(TypeError, match="`indices` must be a 1-D sequence of integers"):
        adapter.select(["a"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"`n` must be at most the number of rows \(96\); got 97"):
        adapter.take(97)
    with pytest.raises(ValueError, match="`seed` must be a non-negative integer"):
        adapter.shuffle(seed=-1)
    assert len(adapter.select([])) == 0
