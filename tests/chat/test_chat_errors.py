"""Bad chat input: each a clear error naming the row and the rule."""

from __future__ import annotations

import re
from typing import Any

import pytest

import hfbridge
from tests.chat import kit

GOOD = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        (
            [GOOD, "hello"],
            "row 1: `messages` must be a non-empty list of {'role', 'content'} messages; got str",
        ),
        ([GOOD, []], "row 1: `messages` must be a non-empty list"),
        ([GOOD, None], "row 1: `messages` must be a non-empty list"),
        ([[{"role": "user"}, *GOOD]], "row 0: `messages` message 0 must be a dict with 'role' and 'content'"),
        (
            [GOOD, GOOD, [{"role": "human", "content": "x"}, *GOOD]],
            "row 2: `messages` message 0 has unknown role "
            "'human'; valid roles: 'system', 'user', 'assistant', 'tool'",
        ),
        (
            [[{"role": "user", "content": 3}, GOOD[1]]],
            "row 0: `messages` message 0 \\('user'\\) content must be a str",
        ),
        (
            [GOOD, [{"role": "user", "content": "x"}]],
            "row 1: a conversation needs at least one 'assistant' message",
        ),
    ],
)
def test_malformed_messages(rows: list[Any], match: str, chat_tok: Any) -> None:
    with pytest.raises(ValueError, match=match if "\\" in match else re.escape(match)):
        hfbridge.adapt({"messages": rows}, chat_tok, task="chat")


def test_missing_column(chat_tok: Any) -> None:
    with pytest.raises(
        ValueError, match=r"must have a 'messages' column, or 'prompt' and\s+'completion'.*\['text'\]"
    ):
        hfbridge.adapt({"text": ["a"]}, chat_tok, task="chat")


def test_no_chat_template_says_how_to_set_one(templated: Any) -> None:
    tok = kit.with_template(templated("chatml"), None)
    with pytest.raises(ValueError, match=r"no chat template.*tokenizer.chat_template = "):
        hfbridge.adapt([GOOD], tok, task="chat")


def test_template_not_prefix_stable_names_the_turn(chat_tok: Any) -> None:
    tok = kit.with_template(chat_tok, kit.UNSTABLE)
    convs = [GOOD, [*GOOD, {"role": "user", "content": "more"}, {"role": "assistant", "content": "Yes."}]]
    with pytest.raises(
        ValueError,
        match=r"row 0: the chat template is not prefix-stable.*first disagree at turn 1 \('assistant'\)",
    ):
        hfbridge.adapt(convs, tok, task="chat")


def test_template_not_token_stable(chat_tok: Any) -> None:
    tok = kit.with_template(chat_tok, kit.TOKEN_UNSTABLE)
    with pytest.raises(
        ValueError, match=r"row 0: the chat template is not prefix-stable in tokens: token \d+"
    ):
        hfbridge.adapt(
            [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Officials said"}]],
            tok,
            task="chat",
        )


def test_completion_empty_after_truncation_raises_by_choice(chat_tok: Any) -> None:
    long_prompt = " ".join(kit.corpus_lines()[:10])
    data = {"prompt": ["Short question?", long_prompt], "completion": [" Yes.", " No."]}
    with pytest.raises(
        ValueError, match=r"row 1: no completion token is left to train on after truncation to max_length=32"
    ):
        hfbridge.adapt_chat(data, chat_tok, max_length=32, on_empty="raise")
    with pytest.warns(UserWarning, match=r"dropped 1 of 2 rows: 1 no_labels \(rows \[1\]\)"):
        adapter = hfbridge.adapt_chat(data, chat_tok, max_length=32)
    assert len(adapter) == 1
    assert adapter.dropped == {"no_labels": [1]}


def test_empty_completion_is_refused(chat_tok: Any) -> None:
    with pytest.raises(ValueError, match="row 1: `completion` must not be empty"):
        hfbridge.adapt_chat({"prompt": ["a", "b"], "completion": ["x", ""]}, chat_tok)
    with pytest.raises(ValueError, match="row 0: `completion` must hold a non-empty 'assistant' message"):
        hfbridge.adapt_chat(
            {"prompt": [GOOD[:1]], "completion": [[{"role": "assistant", "content": ""}]]}, chat_tok
        )


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"train_on": "everything"}, ValueError, "train_on"),
        ({"truncation": "middle"}, ValueError, "truncation"),
        ({"on_empty": "ignore"}, ValueError, "on_empty"),
        ({"max_length": 0}, ValueError, "max_length"),
        ({"train_on": "completion"}, ValueError, "needs prompt/completion columns"),
        (
            {"use_generation_markers": True},
            ValueError,
            "needs a chat template with \\{% generation %\\} markers",
        ),
    ],
)
def test_bad_options(options: dict[str, Any], error: type, match: str, chat_tok: Any) -> None:
    with pytest.raises(error, match=match):
        hfbridge.adapt_chat([GOOD], chat_tok, **options)


def test_chat_takes_its_own_options_through_adapt(chat_tok: Any) -> None:
    with pytest.raises(TypeError, match="train_on"):
        hfbridge.adapt({"text": ["a"]}, chat_tok, task="causal-lm", train_on="assistant")


def test_slow_tokenizer_and_streams_are_refused(chat_tok: Any) -> None:
    from datasets import Dataset

    class Slow:
        is_fast = False
        chat_template = kit.CHATML

    with pytest.raises(TypeError, match="must be a fast tokenizer"):
        hfbridge.adapt_chat([GOOD], Slow())
    stream = Dataset.from_dict({"messages": [GOOD]}).to_iterable_dataset()
    with pytest.raises(TypeError, match="must be sized for task 'chat'"):
        hfbridge.adapt_chat(stream, chat_tok)
