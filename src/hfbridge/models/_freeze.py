"""``freeze(model, spec)``: one freezing spec that works the same on every architecture.

``FreezeSpec(eval_frozen=True)`` keeps fully frozen modules in eval mode across ``model.train()``:
``nn.Module.train(mode)`` calls ``child.train(mode)`` on every child, so replacing ``train`` on the frozen
module *instance* is enough, whoever calls it (the model, a DDP wrapper, the Trainer). The replacement is a
small picklable object, so ``copy.deepcopy``, ``pickle`` and ``torch.save`` of the whole model keep working.
"""

from __future__ import annotations

import fnmatch
import logging
import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hfbridge._checks import check_type
from hfbridge._distributed import unwrap_model
from hfbridge.models._layout import (
    ModelLayout,
    PeftView,
    is_under,
    norm_param_names,
    param_aliases,
    peft_view,
    require,
    resolve_layout,
    select_stacks,
)
from hfbridge.models._spec import FreezeSpec

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FreezeReport", "KeepEval", "freeze", "set_eval_frozen"]

logger = logging.getLogger("hfbridge.models")


@dataclass(frozen=True)
class FreezeReport:
    """What :func:`freeze` froze (or, with ``dry_run=True``, would freeze).

    Parameter names are canonical: a tied parameter appears once, under its first name; ``ties`` lists the
    others.

    Attributes:
        spec: the spec that was applied.
        frozen: names of the frozen parameters, in model order.
        trainable: names of the trainable parameters, in model order.
        frozen_params: number of frozen elements.
        trainable_params: number of trainable elements.
        frozen_modules: the frozen parameters collapsed to the top-most fully frozen modules (readable form).
        eval_modules: modules kept in eval mode (``spec.eval_frozen``).
        ties: canonical name -> other names of each tied parameter.
        layout: the resolved layout, or ``None`` when the spec uses patterns only.
        dry_run: ``True`` when nothing was changed.
    """

    spec: FreezeSpec
    frozen: tuple[str, ...]
    trainable: tuple[str, ...]
    frozen_params: int
    trainable_params: int
    frozen_modules: tuple[str, ...]
    eval_modules: tuple[str, ...]
    ties: dict[str, tuple[str, ...]] = field(repr=False)
    layout: ModelLayout | None = field(repr=False)
    dry_run: bool = False

    @property
    def total_params(self) -> int:
        return self.frozen_params + self.trainable_params

    def __str__(self) -> str:
        total = self.total_params or 1
        verb = "would freeze" if self.dry_run else "froze"
        lines = [
            f"{verb} {self.frozen_params:,} of {self.total_params:,} parameters "
            f"({100 * self.frozen_params / total:.2f}%) in {len(self.frozen)} tensors; "
            f"{self.trainable_params:,} trainable in {len(self.trainable)} tensors  [spec: {self.spec}]"
        ]
        if self.frozen_modules:
            lines.append("  frozen: " + ", ".join(m or "<whole model>" for m in self.frozen_modules))
        for name, others in self.ties.items():
            state = "frozen" if name in set(self.frozen) else "trainable"
            lines.append(f"  tied: {name} = {', '.join(others)} (one parameter, {state})")
        return "\n".join(lines)


def _match(patterns: tuple[str, ...], syntax: str, aliases: dict[str, tuple[str, ...]], arg: str) -> set[str]:
    hits: set[str] = set()
    for pattern in patterns:
        # a regex matches anywhere in a name; a glob the whole name (fnmatchcase's own regex, anchored)
        test = re.compile(pattern if syntax == "regex" else r"\A" + fnmatch.translate(pattern)).search
        found = {canon for canon, names in aliases.items() if any(test(n) for n in names)}
        if not found:
            sample = ", ".join(list(aliases)[:6])
            raise ValueError(
                f"`{arg}` item {pattern!r} ({syntax}) matches no parameter name; names look like: {sample}, "
                "... (see hfbridge.summary(model) or model.named_parameters())"
            )
        hits |= found
    return hits


def _plan(
    model: nn.Module, spec: FreezeSpec, view: PeftView | None
) -> tuple[set[str], ModelLayout | None, dict[str, tuple[str, ...]]]:
    """``(frozen canonical names, layout or None, aliases)`` for ``spec`` on the unwrapped ``model``."""
    if view is not None and (spec.train_biases or spec.train_norms):
        flag = "train_biases" if spec.train_biases else "train_norms"
        raise ValueError(
            f"`{flag}` cannot apply to a {type(model).__name__}: freeze never unfreezes the base weights of "
            "a PEFT model (only its adapter trains); got spec "
            f"{str(spec)!r}. Train biases with LoraConfig(bias='lora_only' or 'all') and norm layers with "
            "LoraConfig(modules_to_save=[...])"
        )
    layout = resolve_layout(model) if spec.uses_layout else None
    aliases = layout.aliases if layout is not None else param_aliases(model)
    frozen: set[str] = set()
    if layout is not None:
        if spec.base_model:
            frozen |= {n for n, g in layout.group.items() if g != "head"}
        if spec.embeddings or spec.trainable_layers is not None:
            require(model, layout, "embeddings")
            frozen |= set(layout.names_in("embeddings"))
        if spec.head:
            frozen |= set(layout.names_in("head"))
        count = spec.layers if spec.layers is not None else spec.trainable_layers
        if count is not None:
            picked = select_stacks(model, layout, spec.stack)
            longest = max(len(layout.stacks[i]) for i in picked)
            if count > longest:
                which = ", ".join(f"{layout.stacks[i].path!r} has {len(layout.stacks[i])}" for i in picked)
                arg = "layers" if spec.layers is not None else "trainable_layers"
                raise ValueError(f"`{arg}` must be at most the number of blocks ({which}); got {count}")
            for i in picked:
                n = len(layout.stacks[i])
                idx = range(min(count, n)) if spec.layers is not None else range(max(0, n - count))
                frozen |= set(layout.block_names(i, idx))
    matchable = aliases
    if view is not None:  # patterns may use the task model's names too ("bert.encoder.layer.0.*")
        matchable = {c: (*names, *_inner_names(names, view)) for c, names in aliases.items()}
    frozen |= _match(spec.patterns, spec.pattern_syntax, matchable, "patterns")
    if spec.train_biases:
        frozen -= {c for c, names in aliases.items() if any(n.rsplit(".", 1)[-1] == "bias" for n in names)}
    if spec.train_norms:
        norms = norm_param_names(model)
        frozen -= {c for c, names in aliases.items() if any(n in norms for n in names)}
    frozen -= _match(spec.except_patterns, spec.pattern_syntax, matchable, "except_patterns")
    return frozen, layout, aliases


def _inner_names(names: tuple[str, ...], view: PeftView) -> tuple[str, ...]:
    return tuple(n[len(view.prefix) :] for n in names if n.startswith(view.prefix))


def _collapse(model: nn.Module, frozen: set[str], aliases: dict[str, tuple[str, ...]]) -> list[str]:
    """Top-most module paths all of whose parameters are frozen (``""`` is the whole model), then loose
    names."""
    canonical = {a: c for c, names in aliases.items() for a in names}
    out: list[str] = []
    for mname, module in model.named_modules():
        if any(is_under(mname, c) for c in out):
            continue
        names = [canonical[f"{mname}.{p}" if mname else p] for p, _ in module.named_parameters()]
        if names and all(n in frozen for n in names):
            out.append(mname)
    loose = sorted(n for n in frozen if not any(is_under(a, c) for c in out for a in aliases[n]))
    return out + loose


def freeze(
    model: nn.Module, spec: FreezeSpec | str | dict[str, Any] | None, *, dry_run: bool = False
) -> FreezeReport:
    """Freeze the parameters ``spec`` names and make every other parameter trainable.

    The spec is applied exactly: the parameters it selects get ``requires_grad=False`` and all the others
    ``requires_grad=True``, so calling ``freeze`` again with another spec (as gradual unfreezing does)
    replaces the previous state rather than adding to it. Works on a model wrapped in
    ``DistributedDataParallel``.

    On a LoRA-style ``peft.PeftModel`` the spec composes with PEFT: the groups are found in the wrapped task
    model (``base_model.model``), the base weights always stay frozen, and the adapter parameters (the
    ``lora_*`` weights and the ``modules_to_save`` copies) stay trainable unless the spec selects them --
    ``"layers:4"`` trains LoRA in the upper blocks only, ``"head"`` freezes the saved head copy, ``"none"``
    restores PEFT's own trainable set. Patterns match the ``PeftModel``'s names and the task model's.

    Args:
        model: a transformers model (or any ``nn.Module`` when the spec uses patterns only).
        spec: a :class:`FreezeSpec`, its string form (``"embeddings,layers:4"``), a dict of its fields, or
            ``None``.
        dry_run: only compute and return the plan; change nothing.

    Returns:
        A :class:`FreezeReport` with counts and names; also logged at INFO on the ``hfbridge.models`` logger
        (every frozen name at DEBUG). A non-empty spec that freezes nothing, or a spec that freezes
        everything, warns.

    Raises:
        ValueError: for ``train_biases``/``train_norms`` on a PEFT model, a pattern that matches nothing,
            a layer count above the number of blocks, a ``stack`` the model lacks, or an architecture
            whose embeddings/blocks cannot be found (the message lists what was found and points to
            ``patterns``).
        TypeError: when ``model`` is not an ``nn.Module`` or ``spec`` has a wrong type.

    Example:
        >>> report = freeze(model, "embeddings,layers:4")  # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP
        froze 8,123,456 of 22,713,216 parameters (35.8%) ...
    """
    from torch import nn

    check_type("model", model, nn.Module)
    check_type("dry_run", dry_run, bool)
    spec = FreezeSpec.coerce(spec)
    inner = unwrap_model(model)
    view = peft_view(inner)
    frozen, layout, aliases = _plan(inner, spec, view)
    named = frozen
    if view is not None:  # the base of a PEFT model stays frozen: the spec freezes more of the adapter
        named = {n for n in frozen if view.is_adapter_param(n)}
        frozen = frozen | {n for n in aliases if not view.is_adapter_param(n)}
    params = dict(inner.named_parameters())
    frozen_names = tuple(n for n in aliases if n in frozen)
    trainable_names = tuple(n for n in aliases if n not in frozen)
    collapsed = _collapse(inner, frozen, aliases)
    modules = dict(inner.named_modules())
    eval_modules = tuple(c for c in collapsed if c in modules) if spec.eval_frozen else ()
    report = FreezeReport(
        spec=spec,
        frozen=frozen_names,
        trainable=trainable_names,
        frozen_params=sum(params[n].numel() for n in frozen_names),
        trainable_params=sum(params[n].numel() for n in trainable_names),
        frozen_modules=tuple(collapsed),
        eval_modules=eval_modules,
        ties={k: v[1:] for k, v in aliases.items() if len(v) > 1},
        layout=layout,
        dry_run=dry_run,
    )
    if not dry_run:
        for name, p in params.items():
            p.requires_grad_(name not in frozen)
        set_eval_frozen(inner, report.eval_modules)
    if not named and spec != FreezeSpec(eval_frozen=spec.eval_frozen):  # "none" freezes nothing on purpose
        what = "every parameter" if view is None else "every adapter parameter (the base stays frozen)"
        warnings.warn(f"freeze spec {str(spec)!r} freezes nothing: {what} stays trainable", stacklevel=2)
    elif not trainable_names:
        warnings.warn(
            f"freeze spec {str(spec)!r} freezes every parameter: training will have no gradient", stacklevel=2
        )
    logger.info("%s", report)
    logger.debug("frozen parameters: %s", ", ".join(frozen_names))
    return report


class KeepEval:
    """Stands in for ``module.train``: always puts the module's subtree in eval mode."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, mode: bool = True) -> nn.Module:
        from torch import nn

        return nn.Module.train(self.module, False)


def set_eval_frozen(model: nn.Module, paths: tuple[str, ...]) -> None:
    """Pin the modules at ``paths`` to eval mode; release every module pinned before and not in ``paths``."""
    wanted = set(paths)
    for name, module in model.named_modules():
        pinned = isinstance(module.__dict__.get("train"), KeepEval)
        if name in wanted:
            if not pinned:
                module.__dict__["train"] = KeepEval(module)
            module.train()  # -> eval
        elif pinned:
            del module.__dict__["train"]
            module.train(model.get_submodule(name.rpartition(".")[0]).training)  # the parent's mode
