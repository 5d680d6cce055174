"""Differential tests: our labels equal TRL's assistant-only preprocessing (templates with generation markers)
and, on templates without markers, the masks of a hand-marked copy of the same template."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest

import hfbridge
from tests.chat import kit


def _rows(adapter: Any) -> list[tuple[list[int], list[int]]]:
    return [(row["input_ids"], row["labels"]) for row in adapter]


@pytest.mark.parametrize("family", ["chatml", "llama3"])
@pytest.mark.parametrize("train_on", ["assistant", "last_assistant"])
def test_prefix_renders_equal_hand_marked_template(family: str, train_on: str, templated: Any) -> None:
    convs = kit.conversations(120, seed=3)
    plain = hfbridge.adapt_chat(convs, templated(family), train_on=train_on)
    marked = hfbridge.adapt_chat(convs, templated(f"{family}-marked"), train_on=train_on)
    assert _rows(plain) == _rows(marked)
    # and the marked run really used the markers, the plain one the prefix renders
    forced = hfbridge.adapt_chat(
        convs, templated(f"{family}-marked"), train_on=train_on, use_generation_markers=False
    )
    assert _rows(forced) == _rows(marked)


def test_last_assistant_labels_only_the_last_turn(templated: Any) -> None:
    convs = [c for c in kit.conversations(60, seed=4) if sum(m["role"] == "assistant" for m in c) > 1]
    tok = templated("chatml")
    every = hfbridge.adapt_chat(convs, tok)
    last = hfbridge.adapt_chat(convs, tok, train_on="last_assistant")
    for conv, a, b in zip(convs, every, last):
        labelled = tok.decode([t for t in b["labels"] if t != -100])
        assert labelled == conv[-1]["content"] + "<|im_end|>\n"
        assert sum(t != -100 for t in b["labels"]) < sum(t != -100 for t in a["labels"])


def _sft_dataset(dataset: Any, tokenizer: Any, **options: Any) -> Any:
    trl = pytest.importorskip("trl", reason="the differential test against TRL needs `pip install trl`")
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_config

    model = AutoModelForCausalLM.from_config(tiny_config("llama", tokenizer))
    args = trl.SFTConfig(
        output_dir=tempfile.mkdtemp(), report_to=[], bf16=False, use_cpu=True, max_length=None, **options
    )
    return trl.SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer
    ).train_dataset


@pytest.mark.parametrize("family", ["chatml", "llama3"])
def test_equal_to_trl_assistant_only_loss(family: str, templated: Any) -> None:
    from datasets import Dataset

    tok = templated(f"{family}-marked")
    dataset = Dataset.from_dict({"messages": kit.conversations(80, seed=5)})
    theirs = _sft_dataset(dataset, tok, assistant_only_loss=True)
    ours = hfbridge.adapt(dataset, tok, task="chat")
    assert len(ours) == len(theirs)
    assert _rows(ours) == [(r["input_ids"], r["labels"]) for r in theirs]
    # the markerless template gives the same through prefix renders
    assert _rows(hfbridge.adapt(dataset, templated(family), task="chat")) == _rows(ours)


def test_equal_to_trl_conversational_prompt_completion(templated: Any) -> None:
    from datasets import Dataset

    convs = kit.conversations(60, seed=6, tools=False)
    prompts = [c[:-1] for c in convs]
    completions = [c[-1:] for c in convs]
    dataset = Dataset.from_dict({"prompt": prompts, "completion": completions})
    tok = templated("chatml")
    theirs = _sft_dataset(dataset, tok, completion_only_loss=True)
    ours = hfbridge.adapt_chat(dataset, tok)
    assert _rows(ours) == [(r["input_ids"], r["labels"]) for r in theirs]


def test_equal_to_trl_plain_prompt_completion(templated: Any) -> None:
    from datasets import Dataset

    lines = kit.corpus_lines()
    dataset = Dataset.from_dict(
        {
            "prompt": [f"Q: {line}\nA:" for line in lines[:50]],
            "completion": [" " + line for line in lines[50:100]],
        }
    )
    tok = templated("chatml")
    theirs = _sft_dataset(dataset, tok, completion_only_loss=True)
    ours = hfbridge.adapt_chat(dataset, tok)
    assert _rows(ours) == [(r["input_ids"], r["labels"]) for r in theirs]
