"""Checks of chat input, each a clear error naming the row: messages, roles, texts, prefix-stable renders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ROLES", "check_chain", "check_messages", "check_text", "token_index"]

ROLES = ("system", "user", "assistant", "tool")


def token_index(offsets: Sequence[tuple[int, int]], char: int, strict: bool, row: int, text: str) -> int:
    """Index of the first token that starts at or after ``char`` (a token straddling ``char`` is refused when
    ``strict``, else counted as starting before it)."""
    lo, hi = 0, len(offsets)
    while lo < hi:  # first token whose end is past `char`
        mid = (lo + hi) // 2
        if offsets[mid][1] <= char:
            lo = mid + 1
        else:
            hi = mid
    if strict and lo < len(offsets) and offsets[lo][0] < char:
        start, end = offsets[lo]
        raise ValueError(
            f"row {row}: the chat template is not prefix-stable in tokens: token {lo} "
            f"({text[start:end]!r}, characters {start}-{end}) straddles the end of a prefix render at "
            f"character {char}, so the prefix's own tokens differ from the conversation's; end the "
            "generation prompt and each turn on a token boundary (e.g. a special token or a newline)"
        )
    return lo


def check_chain(chain: list[str], cuts: list[tuple[int, bool]], conv: list[dict[str, Any]], row: int) -> None:
    for k in range(1, len(chain)):
        prev, cur = chain[k - 1], chain[k]
        if cur.startswith(prev):
            continue
        at = next((i for i, (a, b) in enumerate(zip(prev, cur)) if a != b), min(len(prev), len(cur)))
        (n0, gen0), (n1, _) = cuts[k - 1], cuts[k]
        first = conv[n0]["role"] if n0 < len(conv) else "end"
        where = f"through message {n0 - 1}" + (" plus the generation prompt" if gen0 else "")
        raise ValueError(
            f"row {row}: the chat template is not prefix-stable: the render {where} is not a prefix of the "
            f"render through message {n1 - 1}; they first disagree at turn {n0} ({first!r}), whose addition "
            f"changes the text rendered before it at character {at}: {prev[max(0, at - 20) : at + 20]!r} vs "
            f"{cur[max(0, at - 20) : at + 20]!r}. Use a template with "
            "{% generation %} markers, or one that renders earlier turns the same whatever follows"
        )


def check_text(value: Any, column: str, row: int, *, nonempty: bool = False) -> None:
    if not isinstance(value, str):
        raise TypeError(f"row {row}: `{column}` must be a str; got {type(value).__name__} {value!r:.60}")
    if nonempty and not value:
        raise ValueError(f"row {row}: `{column}` must not be empty (there would be nothing to train on)")


def check_messages(value: Any, column: str, row: int, *, completion: bool = False) -> list[dict[str, Any]]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise ValueError(
            f"row {row}: `{column}` must be a non-empty list of {{'role', 'content'}} messages; got "
            f"{type(value).__name__} {value!r:.80}"
        )
    for j, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise ValueError(
                f"row {row}: `{column}` message {j} must be a dict with 'role' and 'content'; got "
                f"{message!r:.80}"
            )
        if message["role"] not in ROLES:
            raise ValueError(
                f"row {row}: `{column}` message {j} has unknown role {message['role']!r}; valid roles: "
                f"{', '.join(map(repr, ROLES))}"
            )
        if not isinstance(message["content"], str):
            raise ValueError(
                f"row {row}: `{column}` message {j} ('{message['role']}') content must be a str; got "
                f"{type(message['content']).__name__} {message['content']!r:.60}"
            )
    if completion and not any(m["role"] == "assistant" and m["content"] for m in value):
        raise ValueError(f"row {row}: `{column}` must hold a non-empty 'assistant' message to train on")
    return [dict(m) for m in value]
