"""Independent expectations: the known module paths of every tiny architecture, written out by hand.

The freezing tests compute what a spec must freeze from these paths and ``named_parameters()`` alone -- never from
hfbridge's resolver -- so a resolver bug shows up as a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_BART_EMB = (
    "shared",
    *(
        f"{s}.{m}"
        for s in ("encoder", "decoder")
        for m in ("embed_tokens", "embed_positions", "layernorm_embedding")
    ),
)


@dataclass(frozen=True)
class Paths:
    base: str  # "" = the model is its own base
    embeddings: tuple[str, ...]
    stacks: tuple[tuple[str, str], ...]  # (path, role)
    head: tuple[str, ...] = ()  # only needed when base == ""


def known_paths(arch: str, task: str) -> Paths:
    if arch in ("bert", "roberta", "deberta-v2"):
        base = {"bert": "bert", "roberta": "roberta", "deberta-v2": "deberta"}[arch]
        return Paths(base, (f"{base}.embeddings",), ((f"{base}.encoder.layer", "main"),))
    if arch == "electra":
        return Paths(
            "electra",
            ("electra.embeddings", "electra.embeddings_project"),
            (("electra.encoder.layer", "main"),),
        )
    if arch == "distilbert":
        return Paths("distilbert", ("distilbert.embeddings",), (("distilbert.transformer.layer", "main"),))
    if arch == "gpt2":
        return Paths("transformer", ("transformer.wte", "transformer.wpe"), (("transformer.h", "main"),))
    if arch == "llama":
        return Paths("model", ("model.embed_tokens",), (("model.layers", "main"),))
    if arch == "t5":
        if task == "seq2seq":
            return Paths(
                "",
                ("shared", "encoder.embed_tokens", "decoder.embed_tokens"),
                (("encoder.block", "encoder"), ("decoder.block", "decoder")),
                head=("lm_head",),
            )
        if task == "token-classification":  # T5EncoderModel
            return Paths(
                "transformer",
                ("transformer.shared", "transformer.encoder.embed_tokens"),
                (("transformer.encoder.block", "main"),),
            )
        return Paths(
            "transformer",
            ("transformer.shared", "transformer.encoder.embed_tokens", "transformer.decoder.embed_tokens"),
            (("transformer.encoder.block", "encoder"), ("transformer.decoder.block", "decoder")),
        )
    if arch == "bart":
        if task == "causal-lm":
            return Paths(
                "model",
                tuple(
                    f"model.decoder.{m}" for m in ("embed_tokens", "embed_positions", "layernorm_embedding")
                ),
                (("model.decoder.layers", "main"),),
            )
        return Paths(
            "model",
            tuple(f"model.{e}" for e in _BART_EMB),
            (("model.encoder.layers", "encoder"), ("model.decoder.layers", "decoder")),
        )
    raise KeyError(arch)


def under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


@dataclass
class Params:
    """Unique parameters of a model: canonical name -> (all names, numel), and where each one lives."""

    names: dict[str, list[str]]
    numel: dict[str, int]
    group: dict[str, str]  # embeddings / block / other / head
    block: dict[str, tuple[int, int]]  # canonical -> (stack index, block index)
    stack_len: list[int]
    roles: list[str]


def expected_params(model: Any, paths: Paths) -> Params:
    names: dict[str, list[str]] = {}
    numel: dict[str, int] = {}
    first: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        c = first.setdefault(id(p), n)
        names.setdefault(c, []).append(n)
        numel[c] = p.numel()
    rank = {"embeddings": 0, "block": 1, "other": 2, "head": 3}
    group: dict[str, str] = {}
    block: dict[str, tuple[int, int]] = {}
    for c, ns in names.items():
        best = "head"
        for n in ns:
            if any(under(n, e) for e in paths.embeddings):
                g = "embeddings"
            elif any(under(n, s) for s, _ in paths.stacks):
                g = "block"
                si = next(i for i, (s, _) in enumerate(paths.stacks) if under(n, s))
                block.setdefault(c, (si, int(n[len(paths.stacks[si][0]) + 1 :].split(".")[0])))
            elif under(n, paths.base) if paths.base else not any(under(n, h) for h in paths.head):
                g = "other"
            else:
                g = "head"
            best = g if rank[g] < rank[best] else best
        group[c] = best
        if best != "block":
            block.pop(c, None)
    stack_len = [len(model.get_submodule(s)) for s, _ in paths.stacks]
    return Params(names, numel, group, block, stack_len, [r for _, r in paths.stacks])


def norm_names(model: Any) -> set[str]:
    out = set()
    for mname, m in model.named_modules(remove_duplicate=False):
        if "norm" in type(m).__name__.lower():
            out |= {f"{mname}.{p}" for p, _ in m.named_parameters(recurse=False)}
    return out
