"""Property tests over random conversations: labels sit exactly on the assistant turns, with or without
truncation, for templates with and without generation markers."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hfbridge

# user, system and tool text is lower case, assistant text upper case: a labelled token that decodes to a lower
# case letter came from a turn the model must not learn to say
LOWER = st.text(alphabet="abcdefgh ,.", min_size=1, max_size=30)
UPPER = st.text(alphabet="ABCDEFGH ,.", min_size=1, max_size=30)


@st.composite
def conversations(draw: Any) -> list[dict[str, str]]:
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(LOWER)})
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(LOWER)})
        if draw(st.booleans()):
            messages.append({"role": "assistant", "content": draw(UPPER)})
            messages.append({"role": "tool", "content": draw(LOWER)})
        messages.append({"role": "assistant", "content": draw(UPPER)})
    return messages


END = {"chatml": "<|im_end|>\n", "llama3": "<|eot_id|>"}


def _expected(conv: list[dict[str, str]], family: str, last_only: bool) -> str:
    turns = [m["content"] for m in conv if m["role"] == "assistant"]
    turns = turns[-1:] if last_only else turns
    strip = family == "llama3"  # that template trims content
    return "".join((t.strip() if strip else t) + END[family] for t in turns)


@pytest.mark.parametrize("template", ["chatml", "chatml-marked", "llama3", "llama3-marked"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    convs=st.lists(conversations(), min_size=1, max_size=4), last_only=st.booleans(), cut=st.integers(8, 120)
)
def test_labels_cover_exactly_the_assistant_turns(
    template: str, convs: list[Any], last_only: bool, cut: int, templated: Any
) -> None:
    tok = templated(template)
    family = template.split("-")[0]
    train_on = "last_assistant" if last_only else "assistant"
    full = hfbridge.adapt_chat(convs, tok, train_on=train_on)
    for conv, row in zip(convs, full):
        labelled = [t for t in row["labels"] if t != -100]
        # every assistant token, its end of turn, and nothing else
        assert tok.decode(labelled) == _expected(conv, family, last_only)
        assert all(t == i for t, i in zip(row["labels"], row["input_ids"]) if t != -100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rows left without labels are dropped with a warning
        everything_cut = all(all(t == -100 for t in row["labels"][:cut]) for row in full)
        if everything_cut:
            with pytest.raises(ValueError, match="every one of the"):
                hfbridge.adapt_chat(convs, tok, train_on=train_on, max_length=cut)
            return
        cut_rows = hfbridge.adapt_chat(convs, tok, train_on=train_on, max_length=cut)
    full_rows = list(full)
    for k, row in zip(cut_rows.rows.tolist(), cut_rows):
        # truncation keeps the start: the surviving assistant tokens are all labelled, the rest as before
        assert row["input_ids"] == full_rows[k]["input_ids"][:cut]
        assert row["labels"] == full_rows[k]["labels"][:cut]
        assert any(t != -100 for t in row["labels"])
    for k in cut_rows.dropped.get("no_labels", []):
        assert all(t == -100 for t in full_rows[k]["labels"][:cut])
    assert len(cut_rows) + cut_rows.num_dropped == len(convs)
    assert cut_rows.lengths.tolist() == [len(r["input_ids"]) for r in cut_rows]
