"""Chat test kit: a byte-level BPE tokenizer with chat special tokens, trained on the fly, and chat templates
written for these tests (ChatML-like and Llama-3-like, each with and without ``{% generation %}`` markers, plus
templates that are not prefix-stable)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus.txt"
SPECIALS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|im_start|>",
    "<|im_end|>",
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]

# ChatML-like: every turn is <|im_start|>role\ncontent<|im_end|>\n
CHATML = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# the same template, hand-marked: the assistant content and its end of turn are generated
CHATML_MARKED = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- generation -%}{{- m['content'] + '<|im_end|>\\n' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# Llama-3-like: a begin-of-text token, headers, <|eot_id|> ends each turn
LLAMA3 = (
    "{{- '<|begin_of_text|>' -}}"
    "{%- for m in messages -%}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
LLAMA3_MARKED = (
    "{{- '<|begin_of_text|>' -}}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'assistant' -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
    "{%- generation -%}{{- m['content'] | trim + '<|eot_id|>' -}}{%- endgeneration -%}"
    "{%- else -%}"
    "{{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
# not prefix-stable: the last message is closed differently from the others (as some templates treat the final
# assistant turn), so the render through turn k is not a prefix of the render through turn k + 1
UNSTABLE = (
    "{%- for m in messages -%}"
    "{{- '<|im_start|>' + m['role'] + '\\n' + m['content'] -}}"
    "{%- if loop.last -%}{{- '<|im_end|>' -}}{%- else -%}{{- '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
# text-stable but not token-stable: the generation prompt ends in a space that merges with the next word
TOKEN_UNSTABLE = (
    "{%- for m in messages -%}"
    "{{- m['role'] + ': ' + m['content'] + '<|im_end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'assistant: ' -}}{%- endif -%}"
)

TEMPLATES = {
    "chatml": CHATML,
    "chatml-marked": CHATML_MARKED,
    "llama3": LLAMA3,
    "llama3-marked": LLAMA3_MARKED,
}
MARKED = {"chatml": CHATML_MARKED, "llama3": LLAMA3_MARKED}
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}


def corpus_lines() -> list[str]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def chat_tokenizer(template: str | None = CHATML) -> Any:
    """A fast byte-level BPE tokenizer with the chat special tokens and ``template`` as its chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS, initial_alphabet=alphabet)
    tok.train_from_iterator(corpus_lines(), trainer)
    tok.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=SPECIALS[4:],
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=2048,
    )
    tokenizer.chat_template = template
    return tokenizer


def with_template(tokenizer: Any, template: str | None) -> Any:
    """A copy of ``tokenizer`` with another chat template."""
    import copy

    other = copy.deepcopy(tokenizer)
    other.chat_template = template
    return other


def random_conversation(rng: random.Random, lines: list[str], *, tools: bool = True) -> list[dict[str, str]]:
    """A conversation of 1-4 exchanges: optional system, user/assistant turns, sometimes a tool call and result."""
    messages = []
    if rng.random() < 0.5:
        messages.append({"role": "system", "content": rng.choice(lines)})
    for _ in range(rng.randint(1, 4)):
        messages.append({"role": "user", "content": rng.choice(lines)})
        if tools and rng.random() < 0.2:
            messages.append({"role": "assistant", "content": "call: " + rng.choice(lines).split()[0]})
            messages.append({"role": "tool", "content": rng.choice(lines)})
        words = " ".join(rng.choice(lines) for _ in range(rng.randint(1, 3)))
        messages.append({"role": "assistant", "content": words})
    return messages


def conversations(n: int, seed: int = 0, *, tools: bool = True) -> list[list[dict[str, str]]]:
    rng = random.Random(seed)
    lines = corpus_lines()
    return [random_conversation(rng, lines, tools=tools) for _ in range(n)]
