"""ChatAdapter: sources, truncation policies, lengths, and the loaders it plugs into."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

import hfbridge
from hfbridge.collators import PackedCollator
from hfbridge.samplers import BinPackingBatchSampler, ResumableDataLoader
from tests.chat import kit


@pytest.fixture(scope="module")
def convs() -> list[list[dict[str, str]]]:
    return kit.conversations(64, seed=11)


def test_sources_give_the_same_rows(convs: list[Any], chat_tok: Any) -> None:
    from datasets import Dataset, DatasetDict

    from_list = hfbridge.adapt(convs, chat_tok, task="chat")
    from_rows = hfbridge.adapt([{"messages": c, "id": i} for i, c in enumerate(convs)], chat_tok, task="chat")
    from_dataset = hfbridge.adapt(
        Dataset.from_dict({"messages": convs}), chat_tok, task="chat", tokenize_batch_size=7
    )
    splits = hfbridge.adapt(
        DatasetDict({"train": Dataset.from_dict({"messages": convs})}), chat_tok, task="chat"
    )
    assert list(from_list) == list(from_rows) == list(from_dataset) == list(splits["train"])
    row = from_list[0]
    assert set(row) == {"input_ids", "attention_mask", "labels"}
    assert row["attention_mask"] == [1] * len(row["input_ids"])
    assert from_list.lengths.tolist() == [len(r["input_ids"]) for r in from_list]
    assert from_list.rows.tolist() == list(range(len(convs)))


def test_truncation_policies(convs: list[Any], chat_tok: Any) -> None:
    full = hfbridge.adapt_chat(convs, chat_tok)
    limit = int(np.median(full.lengths))
    long_rows = np.flatnonzero(full.lengths > limit).tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cut = hfbridge.adapt_chat(convs, chat_tok, max_length=limit)
        dropped = hfbridge.adapt_chat(convs, chat_tok, max_length=limit, truncation="drop")
        last = hfbridge.adapt_chat(convs, chat_tok, max_length=limit, truncation="keep_last_turns")
    for adapter in (cut, dropped, last):
        assert adapter.lengths.max() <= limit
    assert dropped.dropped == {"too_long": long_rows}
    assert sorted(dropped.rows.tolist() + long_rows) == list(range(len(convs)))
    # keep_last_turns keeps the system message and the latest exchanges, with every label of the kept turns
    by_row = dict(zip(last.rows.tolist(), last))
    checked = 0
    for k in long_rows:
        conv = convs[k]
        if k not in by_row or sum(m["role"] == "user" for m in conv) < 2:
            continue
        text = chat_tok.decode(by_row[k]["input_ids"])
        assert text.endswith(conv[-1]["content"] + "<|im_end|>\n") or len(by_row[k]["input_ids"]) == limit
        if conv[0]["role"] == "system":
            assert text.startswith("<|im_start|>system\n" + conv[0]["content"])
        checked += 1
    assert checked > 0


def test_keep_last_turns_drops_oldest_exchange_first(chat_tok: Any) -> None:
    conv = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first question " * 5},
        {"role": "assistant", "content": "First answer " * 5},
        {"role": "user", "content": "second"},
        {"role": "assistant", "content": "Second."},
    ]
    short = [conv[0], *conv[3:]]
    n_short = len(hfbridge.adapt_chat([short], chat_tok)[0]["input_ids"])
    row = hfbridge.adapt_chat([conv], chat_tok, max_length=n_short, truncation="keep_last_turns")[0]
    assert row == hfbridge.adapt_chat([short], chat_tok)[0]


def test_keep_last_turns_keeps_an_assistant_turn_when_the_last_question_is_unanswered(chat_tok: Any) -> None:
    # dropping exchanges stops at the last answered one: [user, assistant, user] is final, it is not cut
    # down to the lone trailing question (which has nothing to train on and used to raise)
    long = "a long question about the markets and the weather " * 4
    conv = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "An answer that is long enough to matter. " * 4},
        {"role": "user", "content": long},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "and then " + long},
    ]
    full = len(hfbridge.adapt_chat([conv], chat_tok)[0]["input_ids"])
    kept = [conv[2], conv[3], conv[4]]
    n_kept = len(hfbridge.adapt_chat([kept], chat_tok)[0]["input_ids"])
    assert n_kept < full
    # still too long once the first exchange is gone: the rest is cut on the right, as documented
    limit = n_kept - 5
    row = hfbridge.adapt_chat([conv], chat_tok, max_length=limit, truncation="keep_last_turns")[0]
    assert row == hfbridge.adapt_chat([kept], chat_tok, max_length=limit, truncation="truncate")[0]
    assert any(label != -100 for label in row["labels"])


def test_collator_and_token_budget_loader(convs: list[Any], chat_tok: Any) -> None:
    adapter = hfbridge.adapt(convs, chat_tok, task="chat")
    loader = hfbridge.build_dataloader(adapter, max_tokens=1024, batching="tokens", seed=1)
    seen = 0
    for batch in loader:
        assert batch["input_ids"].shape == batch["labels"].shape
        real = batch["attention_mask"].bool()
        assert (batch["labels"][~real] == -100).all()
        seen += batch["input_ids"].shape[0]
    assert seen == len(adapter)


def test_bin_packing_loader_with_packed_rows_resumes(convs: list[Any], chat_tok: Any) -> None:
    adapter = hfbridge.adapt(convs, chat_tok, task="chat")
    width = int(adapter.lengths.max())

    def loader() -> ResumableDataLoader:
        sampler = BinPackingBatchSampler(adapter.lengths, width, bins_per_batch=2, seed=3)
        collate = PackedCollator("sdpa", row_length=width, pad_token_id=chat_tok.pad_token_id)
        return ResumableDataLoader(adapter, seed=3, rank=0, batch_sampler=sampler, collate_fn=collate)

    first = loader()
    batches = list(first)
    tokens = sum(int((b["labels"] != -100).sum()) for b in batches)
    assert tokens > 0
    assert all(b["input_ids"].shape[1] == width for b in batches)
    resumed = loader()
    partial = loader()
    iterator = iter(partial)
    for _ in range(3):
        next(iterator)
    resumed.load_state_dict(partial.state_dict())
    rest = list(resumed)
    assert len(rest) == len(batches) - 3
    for a, b in zip(rest, batches[3:]):
        assert torch.equal(a["input_ids"], b["input_ids"])


def test_trainer_runs_on_packed_chat(convs: list[Any], chat_tok: Any, tmp_path: Any) -> None:
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from tests.conftest import tiny_config

    adapter = hfbridge.adapt(convs[:16], chat_tok, task="chat")
    model = AutoModelForCausalLM.from_config(tiny_config("llama", chat_tok), attn_implementation="sdpa")
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=adapter, data_collator=PackedCollator.for_model(model)
    )
    result = trainer.train()
    assert np.isfinite(result.training_loss)


def test_messages_with_extra_keys_render_through_transformers(chat_tok: Any) -> None:
    from hfbridge.adapters._chat import Renderer

    conv = [{"role": "user", "content": "hi", "name": "ann"}, {"role": "assistant", "content": "Hello."}]
    renderer = Renderer(chat_tok, None, kit.CHATML, {})
    assert renderer([conv], False) == [chat_tok.apply_chat_template(conv, tokenize=False)]
    plain = [[{"role": m["role"], "content": m["content"]} for m in conv]]
    assert renderer(plain, True) == [
        chat_tok.apply_chat_template(plain[0], tokenize=False, add_generation_prompt=True)
    ]
    assert renderer.fast  # the fast path was used and matched
    assert hfbridge.adapt_chat([conv], chat_tok)[0] == hfbridge.adapt_chat(plain, chat_tok)[0]


def test_batching_trainer_mixin_with_token_budget_and_packing(
    convs: list[Any], chat_tok: Any, tmp_path: Any
) -> None:
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from hfbridge.samplers import BatchingTrainerMixin
    from tests.conftest import tiny_config

    class BatchingTrainer(BatchingTrainerMixin, Trainer):
        pass

    adapter = hfbridge.adapt(convs[:16], chat_tok, task="chat")
    model = AutoModelForCausalLM.from_config(tiny_config("llama", chat_tok), attn_implementation="eager")
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, report_to=[], use_cpu=True)
    trainer = BatchingTrainer(
        model=model,
        args=args,
        train_dataset=adapter,
        data_collator=PackedCollator.for_model(model),
        batching="tokens",
        max_tokens=1024,
    )
    assert np.isfinite(trainer.train().training_loss)
