"""Chat encoding: conversations and prompt/completion pairs -> ``input_ids`` and ``labels`` on what the model
says.

The spans the model must produce come from the chat template itself. A template with ``{% generation %}``
markers gives them through ``return_assistant_tokens_mask``. Any other template is rendered prefix by prefix:
the render up to an assistant turn with the generation prompt, then the render that includes the turn; each
render must extend the previous one character for character, and the whole conversation's tokenization must
have a token boundary at the end of every render (no token straddles it), so the tokens of each prefix are the
leading tokens of the whole. The trained span of a turn is what the second render adds: the reply and its
end-of-turn token (and whatever the template writes after it before the next turn, e.g. a newline). Tokens are
mapped to spans through the fast tokenizer's offsets, as transformers does for generation markers.

The chat template for ``ChatEncoder`` (the last section): fast rendering, offset tokenization and
prefix-stability checks. ``apply_chat_template`` spends most of its time per conversation converting messages
into plain data before Jinja runs. Conversations of plain ``{"role", "content"}`` string dicts need none of
it, so :class:`Renderer` compiles the template once in a sandboxed Jinja environment with the variables and
helpers chat templates use (``messages``, ``add_generation_prompt``, the special tokens, ``raise_exception``,
``strftime_now``, ``tojson``) and renders them directly. The first conversation of every batch is also
rendered by ``apply_chat_template``; on any difference (or for messages with other keys) the renderer hands
over to transformers for good.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from hfbridge._checks import check_choice, check_positive_int, check_type
from hfbridge.adapters._encode import IGNORE_INDEX

__all__ = ["ChatEncoder", "Encoded", "OnEmpty", "Renderer", "TrainOn", "Truncation"]

ROLES = ("system", "user", "assistant", "tool")
TrainOn = Literal["assistant", "last_assistant", "completion"]
Truncation = Literal["truncate", "drop", "keep_last_turns"]
OnEmpty = Literal["drop", "raise"]
_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_SET_TEMPLATE = (
    "set one with `tokenizer.chat_template = '<jinja template>'` (e.g. the template of the model's instruct "
    "version) or pass `chat_template=` to adapt_chat"
)


@dataclass
class Encoded:
    """Encoded rows: the kept rows' ``input_ids`` and ``labels``, their source rows, the dropped rows."""

    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    dropped: dict[str, list[int]] = field(default_factory=dict)

    def add(self, ids: list[int], labels: list[int], row: int) -> None:
        self.input_ids.append(ids)
        self.labels.append(labels)
        self.rows.append(row)

    def drop(self, reason: str, row: int) -> None:
        self.dropped.setdefault(reason, []).append(row)


@dataclass
class ChatEncoder:
    """Encode batches of conversations (``messages``) or prompt/completion pairs for supervised fine-tuning.

    The options are ``adapt_chat``'s, which documents them, and: ``fmt``, ``"messages"``,
    ``"prompt_completion"`` (conversational) or ``"text_completion"`` (plain text); ``columns``, the
    ``messages`` column, or the prompt and completion columns.
    """

    tokenizer: Any
    fmt: Literal["messages", "prompt_completion", "text_completion"]
    train_on: TrainOn
    max_length: int | None = None
    truncation: Truncation = "truncate"
    on_empty: OnEmpty = "drop"
    columns: tuple[str, ...] = ("messages",)
    chat_template: str | None = None
    chat_template_kwargs: Mapping[str, Any] | None = None
    use_generation_markers: bool | None = None

    def __post_init__(self) -> None:
        check_choice("train_on", self.train_on, ("assistant", "last_assistant", "completion"))
        check_choice("truncation", self.truncation, ("truncate", "drop", "keep_last_turns"))
        check_choice("on_empty", self.on_empty, ("drop", "raise"))
        check_positive_int("max_length", self.max_length, allow_none=True)
        if self.use_generation_markers is not None:
            check_type("use_generation_markers", self.use_generation_markers, bool, what="a bool or None")
        if not getattr(self.tokenizer, "is_fast", False):
            raise TypeError(
                "`tokenizer` must be a fast tokenizer (offsets map chat spans to tokens); got "
                f"{type(self.tokenizer).__name__}"
            )
        if self.fmt == "messages" and self.train_on == "completion":
            raise ValueError(
                "`train_on='completion'` needs prompt/completion columns; a `messages` column takes "
                "'assistant' or 'last_assistant'"
            )
        if self.truncation == "keep_last_turns" and self.fmt != "messages":
            raise ValueError(
                "`truncation='keep_last_turns'` needs a `messages` column (turns to drop); got "
                f"{self.fmt} data: use 'truncate' or 'drop'"
            )
        self._markers = False
        if self.fmt != "text_completion":
            template = self._template()
            has = bool(_MARKER.search(template))
            if self.use_generation_markers and not has:
                raise ValueError(
                    "`use_generation_markers=True` needs a chat template with {% generation %} markers; this "
                    "template has none (leave it None to derive the spans by rendering prefixes)"
                )
            self._markers = has and self.use_generation_markers is not False and self.fmt == "messages"
            self._renderer = Renderer(
                self.tokenizer, self.chat_template, template, self.chat_template_kwargs or {}
            )

    def _template(self) -> str:
        if self.chat_template is not None:
            return self.chat_template
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(
                f"`tokenizer` has no chat template, which conversational data needs; {_SET_TEMPLATE}"
            )
        return str(self.tokenizer.get_chat_template())

    # ------------------------------------------------------------------------------------------ entry point

    def __call__(self, batch: Mapping[str, Sequence[Any]], out: Encoded, first_row: int = 0) -> None:
        """Encode one column-major batch whose first row is source row ``first_row`` (for error messages) into
        ``out``."""
        rows = list(range(first_row, first_row + len(batch[self.columns[0]])))
        if self.fmt == "text_completion":
            prompts, completions = (list(batch[c]) for c in self.columns)
            for p, c, row in zip(prompts, completions, rows):
                check_text(p, self.columns[0], row)
                check_text(c, self.columns[1], row, nonempty=True)
            eos = self.tokenizer.eos_token or ""
            texts = [p + c + eos for p, c in zip(prompts, completions)]
            spans = [[(len(p), len(t))] for p, t in zip(prompts, texts)]
            self._fit(*self._tokenize_spans(texts, spans, rows, strict=False), rows, out)
            return
        parts = [  # the messages, or the prompts then the completions
            [check_messages(m, column, row, completion=k == 1) for m, row in zip(batch[column], rows)]
            for k, column in enumerate(self.columns)
        ]
        convs = parts[0] if self.fmt == "messages" else [p + c for p, c in zip(*parts)]
        prompt_lens = None if self.fmt == "messages" else [len(p) for p in parts[0]]
        self._fit(*self._encode(convs, rows, prompt_lens), rows, out, convs=convs)

    # ------------------------------------------------------------------------------------------ conversations

    def _cuts(self, conv: list[dict[str, Any]], prompt_len: int | None, row: int) -> tuple[list, list]:
        """The prefix renders to make, as ``(n_messages, add_generation_prompt)``, and the trained pairs."""
        n = len(conv)
        if prompt_len is not None and self.train_on == "completion":
            return [(prompt_len, True), (n, False)], [(0, 1)]
        turns = [i for i, m in enumerate(conv) if m["role"] == "assistant"]
        if not turns:
            raise ValueError(
                f"row {row}: a conversation needs at least one 'assistant' message to train on; got roles "
                f"{[m['role'] for m in conv]}"
            )
        if self.train_on == "last_assistant":
            turns = turns[-1:]
        cuts: list[tuple[int, bool]] = []
        for a in turns:
            cuts += [(a, True), (a + 1, False)]
        pairs = [(2 * k, 2 * k + 1) for k in range(len(turns))]
        if turns[-1] + 1 < n:
            cuts.append((n, False))
        return cuts, pairs

    def _fit(
        self,
        ids_list: list[list[int]],
        labels_list: list[list[int]],
        rows: list[int],
        out: Encoded,
        convs: list[list[dict[str, Any]]] | None = None,
    ) -> None:
        """Keep the encoded rows; one longer than ``max_length`` is dropped, cut on the right, or
        (conversations under ``keep_last_turns``) encoded again without its oldest exchanges."""
        retry: list[int] = []
        for k, (ids, labels, row) in enumerate(zip(ids_list, labels_list, rows)):
            if self.max_length is not None and len(ids) > self.max_length:
                if self.truncation == "drop":
                    out.drop("too_long", row)
                    continue
                if self.truncation == "keep_last_turns" and convs is not None and _exchanges(convs[k]) > 1:
                    retry.append(k)
                    continue
                ids, labels = ids[: self.max_length], labels[: self.max_length]
            self._keep(ids, labels, row, out)
        if retry and convs is not None:
            self._keep_last_turns([convs[k] for k in retry], [rows[k] for k in retry], out)

    def _keep(self, ids: list[int], labels: list[int], row: int, out: Encoded) -> None:
        if labels.count(IGNORE_INDEX) == len(labels):
            if self.on_empty == "raise":
                what = "completion" if self.train_on == "completion" else "assistant turn"
                raise ValueError(
                    f"row {row}: no {what} token is left to train on after truncation to max_length="
                    f"{self.max_length} (every label would be -100); raise `max_length`, use "
                    "truncation='keep_last_turns', or on_empty='drop' to drop such rows"
                )
            out.drop("no_labels", row)
            return
        out.add(ids, labels, row)

    def _keep_last_turns(self, convs: list[list[dict[str, Any]]], rows: list[int], out: Encoded) -> None:
        """Drop the oldest exchange of each over-long conversation, re-encode, repeat until it fits."""
        while convs:
            shorter = [_without_first_exchange(c) for c in convs]
            ids_list, labels_list = self._encode(shorter, rows, None)
            next_convs, next_rows = [], []
            for conv, ids, labels, row in zip(shorter, ids_list, labels_list, rows):
                if len(ids) <= (self.max_length or len(ids)) or _exchanges(conv) <= 1:
                    self._keep(ids[: self.max_length], labels[: self.max_length], row, out)
                else:
                    next_convs.append(conv)
                    next_rows.append(row)
            convs, rows = next_convs, next_rows

    def _encode(
        self, convs: list[list[dict[str, Any]]], rows: list[int], prompt_lens: list[int] | None
    ) -> tuple[list, list]:
        if self._markers:  # only for `messages`, which have no prompt lengths
            return self._encode_marked(convs, rows)
        return self._encode_rendered(convs, rows, prompt_lens)

    def _encode_marked(self, convs: list[list[dict[str, Any]]], rows: list[int]) -> tuple[list, list]:
        """Spans from the template's {% generation %} markers (``return_assistant_tokens_mask``)."""
        for conv, row in zip(convs, rows):
            self._cuts(conv, None, row)  # the same checks (an assistant turn) as the rendered path
        enc = self.tokenizer.apply_chat_template(
            convs,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
            chat_template=self.chat_template,
            **dict(self.chat_template_kwargs or {}),
        )
        ids_list, labels_list = [], []
        for ids, mask in zip(enc["input_ids"], enc["assistant_masks"]):
            ids = list(ids)
            mask = list(mask)
            if self.train_on == "last_assistant" and 1 in mask:
                end = len(mask) - mask[::-1].index(1)
                start = end
                while start > 0 and mask[start - 1]:
                    start -= 1
                mask = [0] * start + mask[start:end] + [0] * (len(mask) - end)
            ids_list.append(ids)
            labels_list.append([t if m else IGNORE_INDEX for t, m in zip(ids, mask)])
        return ids_list, labels_list

    def _encode_rendered(
        self, convs: list[list[dict[str, Any]]], rows: list[int], prompt_lens: list[int] | None
    ) -> tuple[list, list]:
        """Spans from prefix renders, checked to extend each other, mapped to tokens through offsets."""
        plans = [
            self._cuts(c, None if prompt_lens is None else prompt_lens[k], r)
            for k, (c, r) in enumerate(zip(convs, rows))
        ]
        requests: dict[bool, list[list[dict[str, Any]]]] = {True: [], False: []}
        where: list[list[tuple[bool, int]]] = []
        for conv, (cuts, _) in zip(convs, plans):
            slots = []
            for n, gen in cuts:
                slots.append((gen, len(requests[gen])))
                requests[gen].append(conv[:n])
            where.append(slots)
        rendered = {gen: self._renderer(requests[gen], gen) for gen in (True, False)}
        texts, spans = [], []
        for conv, row, (cuts, pairs), slots in zip(convs, rows, plans, where):
            chain = [rendered[gen][i] for gen, i in slots]
            check_chain(chain, cuts, conv, row)
            texts.append(chain[-1])
            spans.append([(len(chain[a]), len(chain[b])) for a, b in pairs])
        return self._tokenize_spans(texts, spans, rows, strict=True)

    def _tokenize_spans(
        self, texts: list[str], spans: list[list[tuple[int, int]]], rows: list[int], *, strict: bool
    ) -> tuple[list, list]:
        """Tokenize ``texts`` once and label the tokens inside each character span.

        ``strict``: a token straddling a span edge is an error (the template is not token-prefix-stable
        there); otherwise the straddling token goes to the span (a plain prompt that does not end on a token
        boundary).
        """
        all_ids, all_offsets = tokenize_with_offsets(self.tokenizer, texts)
        ids_list, labels_list = [], []
        for ids, offsets, text, row_spans, row in zip(all_ids, all_offsets, texts, spans, rows):
            labels = [IGNORE_INDEX] * len(ids)
            for start, stop in row_spans:
                first = token_index(offsets, start, strict, row, text)
                last = token_index(offsets, stop, strict, row, text)
                labels[first:last] = ids[first:last]
            ids_list.append(ids)
            labels_list.append(labels)
        return ids_list, labels_list


# ---------------------------------------------------------------------------------------------- helpers


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


def _exchanges(conv: list[dict[str, Any]]) -> int:
    """The number of exchanges with something to train on: user messages answered by an assistant message
    before the next user message (a trailing unanswered question does not count, so dropping exchanges always
    stops while an assistant turn is left)."""
    count, asked = 0, False
    for m in conv:
        if m["role"] == "user":
            asked = True
        elif m["role"] == "assistant" and asked:
            count, asked = count + 1, False
    return count


def _without_first_exchange(conv: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``conv`` minus its first exchange: the messages from the first user message to the next one; a leading
    system message stays."""
    head = [m for m in conv[:1] if m["role"] == "system"]
    body = conv[len(head) :]
    users = [i for i, m in enumerate(body) if m["role"] == "user"]
    if len(users) < 2:
        return conv
    return head + body[users[1] :]


# ------------------------------------------------------------------------------------------ the chat template


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
    lo = bisect_right(offsets, char, key=lambda offset: offset[1])  # first token whose end is past `char`
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
