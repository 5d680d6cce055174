"""The chat template for ``ChatEncoder``: fast rendering, offset tokenization and prefix-stability checks.

``apply_chat_template`` spends most of its time per conversation converting messages into plain data before
Jinja runs. Conversations of plain ``{"role", "content"}`` string dicts need none of it, so :class:`Renderer`
compiles the template once in a sandboxed Jinja environment with the variables and helpers chat templates use
(``messages``, ``add_generation_prompt``, the special tokens, ``raise_exception``, ``strftime_now``,
``tojson``) and renders them directly. The first conversation of every batch is also rendered by
``apply_chat_template``; on any difference (or for messages with other keys) the renderer hands over to
transformers for good.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = ["Renderer", "check_chain", "token_index", "tokenize_with_offsets"]


def _raise(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class Renderer:
    """Render batches of conversations with ``tokenizer``'s (or ``chat_template``'s) template, as text."""

    def __init__(self, tokenizer: Any, chat_template: str | None, template: str, kwargs: Mapping[str, Any]):
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.kwargs = dict(kwargs)
        self.fast = True
        try:
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols]
            )
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(template)
        except Exception:  # any template the sandbox rejects is transformers' to render
            self.fast = False
        self._variables = {**getattr(tokenizer, "special_tokens_map", {}), **self.kwargs}

    def __call__(self, convs: list[list[dict[str, Any]]], generation_prompt: bool) -> list[str]:
        if not convs:
            return []
        if self.fast and all(_plain(conv) for conv in convs):
            try:
                out = [self._fast(conv, generation_prompt) for conv in convs]
            except Exception:  # e.g. raise_exception(): transformers raises its own error
                out = None
            if out is not None and out[0] == self._slow(convs[:1], generation_prompt)[0]:
                return out
            self.fast = False
        return self._slow(convs, generation_prompt)

    def _fast(self, conv: list[dict[str, Any]], generation_prompt: bool) -> str:
        return self._template.render(
            messages=conv,
            tools=None,
            documents=None,
            add_generation_prompt=generation_prompt,
            **self._variables,
        )

    def _slow(self, convs: list[list[dict[str, Any]]], generation_prompt: bool) -> list[str]:
        return list(
            self.tokenizer.apply_chat_template(
                convs,
                tokenize=False,
                add_generation_prompt=generation_prompt,
                chat_template=self.chat_template,
                **self.kwargs,
            )
        )


def _plain(conv: list[dict[str, Any]]) -> bool:
    return all(len(m) == 2 and type(m.get("content")) is str for m in conv)


def tokenize_with_offsets(
    tokenizer: Any, texts: list[str]
) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids and character offsets of ``texts`` (no special tokens added), from the Rust tokenizer
    directly when it has no truncation or padding set, else through the tokenizer's ``__call__``."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.truncation is None and backend.padding is None:
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        return [e.ids for e in encodings], [e.offsets for e in encodings]
    enc = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return [list(ids) for ids in enc["input_ids"]], list(enc["offset_mapping"])


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
