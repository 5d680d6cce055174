"""Find the embeddings, the block stack(s) and the task head of any transformers model.

The rules, in order:

* **base model** -- ``getattr(model, model.base_model_prefix)`` when that attribute is a module (``bert``,
  ``transformer``, ``model``, ...); otherwise the model is its own base (``T5ForConditionalGeneration``).
* **block stacks** -- the ``nn.ModuleList`` of repeated, identical blocks holding the most parameters
  (``encoder.layer`` in BERT, ``h`` in GPT-2, ``layers`` in Llama, ``transformer.layer`` in DistilBERT). When
  the model has a stack under an ``encoder`` path and one under a ``decoder`` path (T5, BART), both are kept.
* **embeddings** -- the module of ``get_input_embeddings()``: when its parent holds no block stack (BERT's
  ``embeddings``), the whole parent (position/type embeddings, embedding norm); plus every child of the base
  model or of a stack's parent that is an ``nn.Embedding`` or has ``embed`` in its name (GPT-2 ``wpe``, BART
  ``embed_positions``/``layernorm_embedding``, ELECTRA ``embeddings_project``).
* **head** -- every parameter outside the base model (``classifier``, ``lm_head``, ``score``); for a model
  that is its own base, its direct children that hold neither embeddings nor a stack.
* **other** -- what is left inside the base model: final norms, a pooler.

A tied parameter (GPT-2's ``lm_head.weight`` is ``transformer.wte.weight``) is one parameter under several
names. It belongs to the lowest group any of its names falls in -- embeddings, then blocks, then other, then
head -- and the layout lists its names in ``ties``.

A LoRA-style ``peft.PeftModel`` holds the task model at ``base_model.model``; its parameters are named
``base_model.model.<task model name>``, with the adapter weights inside the wrapped layers
(``...query.lora_A.default.weight``) and copies of the ``modules_to_save``
(``classifier.modules_to_save.default.weight``). :func:`peft_view` sees through it without importing ``peft``
(a model is recognised by the class names in its MRO), so ``peft`` stays optional.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from hfbridge._distributed import unwrap_model

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "BlockStack",
    "ModelLayout",
    "PeftView",
    "ResolutionError",
    "is_under",
    "norm_param_names",
    "param_aliases",
    "peft_view",
    "require",
    "resolve_layout",
    "select_stacks",
]


@dataclass(frozen=True)
class PeftView:
    """A LoRA-style ``PeftModel`` seen as the task model it wraps.

    Attributes:
        inner: the transformers task model (``peft_model.base_model.model``).
        prefix: ``"base_model.model."``, what the wrapper puts before every name of ``inner``.
        adapters: the adapter names (keys of ``peft_model.peft_config``).
        tuner_prefix: what every adapter weight's module name starts with (``"lora_"`` for LoRA).
    """

    inner: nn.Module
    prefix: str
    adapters: tuple[str, ...]
    tuner_prefix: str

    def is_adapter_param(self, name: str) -> bool:
        """Whether the parameter ``name`` (full or inner name) is adapter-owned: a tuner weight such as
        ``lora_A.default.weight`` or a ``modules_to_save`` copy -- what peft trains and saves."""
        parts = name.split(".")
        for i in range(1, len(parts)):
            if parts[i] in self.adapters:
                owner = parts[i - 1]
                if owner == "modules_to_save" or (self.tuner_prefix and owner.startswith(self.tuner_prefix)):
                    return True
        return False


def peft_view(model: nn.Module) -> PeftView | None:
    """The :class:`PeftView` of a LoRA-style ``PeftModel``; ``None`` for any other model.

    Raises:
        TypeError: for a prompt-learning ``PeftModel`` (prompt tuning, prefix tuning, P-tuning), whose trained
            part is a prompt encoder outside the task model's layers, so layer-based freezing has no meaning.
    """
    from torch import nn

    if not any(c.__name__ == "PeftModel" and c.__module__.startswith("peft") for c in type(model).__mro__):
        return None  # not a PeftModel of any task
    tuner = getattr(model, "base_model", None)
    inner = getattr(tuner, "model", None)
    is_tuner = any(c.__name__ == "BaseTuner" for c in type(tuner).__mro__)
    if not is_tuner or not isinstance(inner, nn.Module):
        raise TypeError(
            f"`model` is a prompt-learning {type(model).__name__} (its adapter is a prompt encoder, not "
            "layers of the task model); freeze and layer discovery support adapter-style PEFT models "
            "(LoRA, IA3, ...) whose task model is at base_model.model"
        )
    config = getattr(model, "peft_config", {}) or {}
    return PeftView(
        inner=inner,
        prefix="base_model.model.",  # the attribute path to the task model, as a name prefix
        adapters=tuple(config) or ("default",),
        tuner_prefix=str(getattr(tuner, "prefix", "") or ""),
    )


Group = Literal["embeddings", "block", "other", "head"]
_GROUPS: tuple[Group, ...] = ("embeddings", "block", "other", "head")  # lowest first


class ResolutionError(ValueError):
    """The model's embeddings, blocks or head could not be found; use ``FreezeSpec(patterns=...)`` instead."""


@dataclass(frozen=True)
class BlockStack:
    """One ``nn.ModuleList`` of transformer blocks.

    Args:
        path: module path of the list, e.g. ``"bert.encoder.layer"``.
        role: ``"encoder"`` / ``"decoder"`` in an encoder-decoder model, else ``"main"``.
        blocks: the module path of each block, bottom (input side) first.
    """

    path: str
    role: Literal["main", "encoder", "decoder"]
    blocks: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class ModelLayout:
    """Where each parameter of a model lives. Parameter names are canonical (first) names.

    Attributes:
        model_type: class name of the model.
        base_model: path of the base model, ``""`` when the model is its own base.
        embeddings: module paths that make up the embeddings.
        stacks: the block stacks, encoder before decoder.
        head: module paths of the task head.
        group: canonical parameter name -> ``"embeddings"``, ``"block"``, ``"other"`` or ``"head"``.
        block_index: canonical parameter name -> ``(stack index, block index)`` for block parameters.
        aliases: canonical parameter name -> all its names (more than one only for tied parameters).
        numel: canonical parameter name -> number of elements.
    """

    model_type: str
    base_model: str
    embeddings: tuple[str, ...]
    stacks: tuple[BlockStack, ...]
    head: tuple[str, ...]
    group: dict[str, Group] = field(repr=False)
    block_index: dict[str, tuple[int, int]] = field(repr=False)
    aliases: dict[str, tuple[str, ...]] = field(repr=False)
    numel: dict[str, int] = field(repr=False)

    @property
    def ties(self) -> dict[str, tuple[str, ...]]:
        """Canonical name -> its other names, for tied parameters only."""
        return {name: names[1:] for name, names in self.aliases.items() if len(names) > 1}

    def names_in(self, group: Group) -> list[str]:
        """Canonical names of the parameters in ``group``, in model order."""
        return [name for name, g in self.group.items() if g == group]

    def block_names(self, stack: int, blocks: range | list[int]) -> list[str]:
        """Canonical names of the parameters of ``blocks`` (indices) in stack number ``stack``."""
        wanted = {(stack, b) for b in blocks}
        return [name for name, where in self.block_index.items() if where in wanted]


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def is_under(name: str, prefix: str) -> bool:
    """Whether the dotted ``name`` is ``prefix`` or lies inside it (``""`` is the whole model)."""
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def param_aliases(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Canonical (first) parameter name -> all its names, in model order; tied parameters have several."""
    aliases: dict[str, tuple[str, ...]] = {}
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        canon = first.setdefault(id(p), name)
        aliases[canon] = (*aliases.get(canon, ()), name)
    return aliases


def _find_stacks(base: nn.Module, base_path: str) -> tuple[list[BlockStack], list[str]]:
    """Return the main block stacks and the paths of every ``ModuleList`` seen (for error messages)."""
    from torch import nn

    seen: list[str] = []
    candidates: list[tuple[int, str, nn.ModuleList]] = []
    for rel, module in base.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        path = _join(base_path, rel)
        seen.append(f"{path} ({len(module)} x {type(module[0]).__name__})")
        kinds = {type(m) for m in module}
        if len(kinds) != 1 or not any(True for _ in module[0].children()):
            continue  # not a stack of identical composite blocks
        size = sum(p.numel() for p in module.parameters())
        if size:
            candidates.append((size, path, module))
    # drop lists nested inside another candidate (T5's block.N.layer)
    top = [c for c in candidates if not any(o[1] != c[1] and is_under(c[1], o[1]) for o in candidates)]
    if not top:
        return [], seen
    top.sort(key=lambda c: -c[0])

    def role_of(path: str) -> str | None:
        parts = path.lower().split(".")
        if any("decoder" in p for p in parts):
            return "decoder"
        if any("encoder" in p for p in parts):
            return "encoder"
        return None

    enc = next((c for c in top if role_of(c[1]) == "encoder"), None)
    dec = next((c for c in top if role_of(c[1]) == "decoder"), None)
    chosen = [(enc, "encoder"), (dec, "decoder")] if enc and dec else [(top[0], "main")]
    stacks = [
        BlockStack(path=c[1], role=role, blocks=tuple(f"{c[1]}.{i}" for i in range(len(c[2]))))  # type: ignore[arg-type]
        for c, role in chosen
    ]
    return stacks, seen


def norm_param_names(model: nn.Module) -> set[str]:
    """Every name (aliases included) of the parameters held directly by normalization layers."""
    from torch import nn

    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, nn.RMSNorm)
    out: set[str] = set()
    for mname, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, norm_types) or type(module).__name__.lower().endswith("norm"):
            out |= {f"{mname}.{p}" if mname else p for p, _ in module.named_parameters(recurse=False)}
    return out


def _input_embeddings_path(model: nn.Module) -> str | None:
    getter = getattr(model, "get_input_embeddings", None)
    if getter is None:
        return None
    try:
        emb = getter()
    except (NotImplementedError, AttributeError):
        return None
    for name, module in model.named_modules():
        if module is emb:
            return name
    return None


def resolve_layout(model: nn.Module) -> ModelLayout:
    """Resolve the embeddings, block stacks and head of ``model`` (unwrapping DDP and ``peft``).

    Args:
        model: a transformers ``PreTrainedModel`` (or any module with the same shape), or a LoRA-style
            ``peft.PeftModel``: its task model (``base_model.model``) is resolved and every path and name
            is given in the ``PeftModel``'s own naming (``base_model.model.bert.encoder.layer.0``).

    Returns:
        The :class:`ModelLayout`. Groups that cannot be found are empty; :func:`require` checks what a spec
        needs.
    """
    from torch import nn

    model = unwrap_model(model)
    view = peft_view(model)
    if view is not None:
        return _prefixed(resolve_layout(view.inner), view.prefix, type(model).__name__)
    prefix = getattr(model, "base_model_prefix", "") or ""
    candidate = getattr(model, prefix, None) if prefix else None
    base_path = prefix if isinstance(candidate, nn.Module) and candidate is not model else ""
    base = model.get_submodule(base_path)
    stacks, _ = _find_stacks(base, base_path)
    stack_paths = [s.path for s in stacks]
    modules = dict(model.named_modules())

    def holds_stack(path: str) -> bool:
        return any(is_under(sp, path) for sp in stack_paths)

    embeddings: list[str] = []
    emb_path = _input_embeddings_path(model)
    if emb_path is not None:
        parent = emb_path.rpartition(".")[0]
        embeddings.append(parent if parent != base_path and not holds_stack(parent) else emb_path)
    trunks = {base_path} | {sp.rpartition(".")[0] for sp in stack_paths}
    for trunk in sorted(trunks):
        for child_name, child in modules[trunk].named_children():
            path = _join(trunk, child_name)
            if holds_stack(path) or not any(True for _ in child.parameters()):
                continue
            if isinstance(child, nn.Embedding) or "embed" in child_name.lower():
                embeddings.append(path)
    embeddings = sorted(set(embeddings), key=list(modules).index)

    # children with parameters outside the base model; a model that is its own base: those that hold
    # neither embeddings nor a stack
    head = [
        n
        for n, c in model.named_children()
        if n != base_path
        and any(True for _ in c.parameters())
        and (base_path or not (holds_stack(n) or any(is_under(e, n) for e in embeddings)))
    ]

    aliases = param_aliases(model)
    params = dict(model.named_parameters())
    numel = {canon: params[canon].numel() for canon in aliases}

    def group_of(name: str) -> Group:
        if any(is_under(name, e) for e in embeddings):
            return "embeddings"
        if any(is_under(name, sp) for sp in stack_paths):
            return "block"
        if is_under(name, base_path) and not any(is_under(name, h) for h in head):
            return "other"
        return "head"

    group: dict[str, Group] = {}
    block_index: dict[str, tuple[int, int]] = {}
    for canon, names in aliases.items():
        groups = [group_of(name) for name in names]
        group[canon] = min(groups, key=_GROUPS.index)  # the lowest group any of its names falls in
        if group[canon] == "block":
            name = names[groups.index("block")]
            si = next(i for i, sp in enumerate(stack_paths) if is_under(name, sp))
            block_index[canon] = (si, int(name[len(stack_paths[si]) + 1 :].split(".")[0]))
    return ModelLayout(
        model_type=type(model).__name__,
        base_model=base_path,
        embeddings=tuple(embeddings),
        stacks=tuple(stacks),
        head=tuple(head),
        group=group,
        block_index=block_index,
        aliases=aliases,
        numel=numel,
    )


def _prefixed(layout: ModelLayout, prefix: str, wrapper: str) -> ModelLayout:
    """``layout`` of a wrapped model, every path and name put under ``prefix`` (``"base_model.model."``)."""

    def p(name: str) -> str:
        return _join(prefix.rstrip("."), name)

    return ModelLayout(
        model_type=f"{wrapper}({layout.model_type})",
        base_model=p(layout.base_model),
        embeddings=tuple(map(p, layout.embeddings)),
        stacks=tuple(
            BlockStack(path=p(s.path), role=s.role, blocks=tuple(map(p, s.blocks))) for s in layout.stacks
        ),
        head=tuple(map(p, layout.head)),
        group={p(k): v for k, v in layout.group.items()},
        block_index={p(k): v for k, v in layout.block_index.items()},
        aliases={p(k): tuple(map(p, v)) for k, v in layout.aliases.items()},
        numel={p(k): v for k, v in layout.numel.items()},
    )


def require(model: nn.Module, layout: ModelLayout, what: str) -> None:
    """Raise :class:`ResolutionError` when ``what`` (``"embeddings"`` or ``"blocks"``) was not found."""
    missing = (what == "embeddings" and not layout.embeddings) or (what == "blocks" and not layout.stacks)
    if not missing:
        return
    model = unwrap_model(model)
    prefix = getattr(model, "base_model_prefix", None)
    _, lists = _find_stacks(model.get_submodule(layout.base_model), layout.base_model)
    emb = _input_embeddings_path(model)
    base = (
        f"base model {layout.base_model!r}"
        if layout.base_model
        else "no such attribute, using the whole model"
    )
    children = ", ".join(f"{n} ({type(c).__name__})" for n, c in model.named_children())
    found = [
        "input embeddings: " + (repr(emb) if emb is not None else "none (no get_input_embeddings())"),
        f"base_model_prefix: {prefix!r} -> {base}",
        f"ModuleLists: {', '.join(lists) or 'none'}",
        f"top-level children: {children or 'none'}",
    ]
    kind = "the input embeddings" if what == "embeddings" else "a ModuleList of repeated transformer blocks"
    raise ResolutionError(
        f"cannot find {kind} in {type(model).__name__}; found " + "; ".join(found) + ". Name the parameters "
        "to freeze with patterns instead, e.g. FreezeSpec(patterns=['encoder.layers.0.*']) or the string "
        "'pattern:encoder.layers.0.*'."
    )


def select_stacks(model: nn.Module, layout: ModelLayout, stack: str) -> list[int]:
    """The indices of the stacks that ``stack`` (``"both"``, ``"encoder"``, ``"decoder"``) names, or raise."""
    require(model, layout, "blocks")
    if stack == "both":
        return list(range(len(layout.stacks)))
    picked = [i for i, s in enumerate(layout.stacks) if s.role == stack]
    if not picked:
        have = ", ".join(f"{s.path!r} ({s.role})" for s in layout.stacks)
        raise ValueError(
            f"`stack` {stack!r} names no block stack of {layout.model_type}, which has {have}; "
            "use stack='both' for a model with a single stack"
        )
    return picked
