"""Views of a model's parameters: the ``summary`` table and layer-wise learning-rate groups (LLRD)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from hfbridge._checks import check_positive_int, check_real, check_type
from hfbridge._distributed import unwrap_model
from hfbridge.models._layout import norm_param_names, param_aliases, peft_view, require, resolve_layout

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DEFAULT_NO_DECAY", "ModelSummary", "SummaryRow", "layerwise_param_groups", "summary"]


@dataclass(frozen=True)
class SummaryRow:
    """One module: ``params`` counts each parameter under it once; ``share`` is its fraction of the model
    total."""

    name: str
    type: str
    depth: int
    params: int
    trainable: int
    frozen: int
    share: float


@dataclass(frozen=True)
class ModelSummary:
    """The result of :func:`summary`: ``str(s)`` is the table, ``s.to_dict()`` the plain-data form.

    Attributes:
        model_type: class name of the model.
        rows: one per module down to ``max_depth``, in model order.
        total, trainable, frozen: parameter counts of the whole model, each tied parameter counted once.
        ties: canonical name -> its other names.
    """

    model_type: str
    rows: tuple[SummaryRow, ...]
    total: int
    trainable: int
    frozen: int
    ties: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready): ``model_type``, ``rows`` (list of dicts), ``total``, ``trainable``,
        ``frozen``, ``ties``."""
        return {
            "model_type": self.model_type,
            "rows": [dict(r.__dict__) for r in self.rows],
            "total": self.total,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "ties": {k: list(v) for k, v in self.ties.items()},
        }

    def __str__(self) -> str:
        header = ("module", "type", "params", "trainable", "frozen", "share")
        body = [
            (
                "  " * (r.depth - 1) + r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name,
                r.type,
                f"{r.params:,}",
                f"{r.trainable:,}",
                f"{r.frozen:,}",
                f"{100 * r.share:.1f}%",
            )
            for r in self.rows
        ]
        total_row = (
            "total",
            self.model_type,
            f"{self.total:,}",
            f"{self.trainable:,}",
            f"{self.frozen:,}",
            "100.0%",
        )
        table = [header, *body, total_row]
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]

        def fmt(row: tuple[str, ...]) -> str:
            left = [row[i].ljust(widths[i]) for i in range(2)]
            right = [row[i].rjust(widths[i]) for i in range(2, len(row))]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(fmt(header))
        lines = [fmt(header), rule, *(fmt(r) for r in body), rule, fmt(total_row)]
        for name, others in self.ties.items():
            lines.append(f"tied: {name} = {', '.join(others)} (counted once)")
        return "\n".join(lines)


def summary(model: nn.Module, max_depth: int = 2) -> ModelSummary:
    """Count the parameters of ``model`` per module -- the torchsummary table, for transformers models.

    Needs no input and runs no forward pass. A tied parameter (GPT-2's ``lm_head.weight`` is its input
    embedding) is counted once in the totals and under every module that holds it.

    A LoRA-style ``peft.PeftModel`` is listed as the task model it wraps (rows ``bert.encoder``, not
    ``base_model.model.bert.encoder``; ``model_type`` names both classes): each module's counts include its
    adapter weights and ``modules_to_save`` copies, and the totals equal PEFT's
    ``get_nb_trainable_parameters()``.

    Args:
        model: any ``nn.Module`` (a DDP wrapper and a ``PeftModel`` are looked through).
        max_depth: deepest module level to list; 1 lists the model's direct children.

    Returns:
        A :class:`ModelSummary`; ``print(summary(model))`` shows the table, ``.to_dict()`` gives plain data.

    Raises:
        TypeError: when ``model`` is not an ``nn.Module`` or ``max_depth`` is not an int.
        ValueError: when ``max_depth`` < 1.

    Example:
        >>> print(summary(model, max_depth=1))  # doctest: +SKIP
        module      type                params  trainable  frozen  share
        ...
    """
    from torch import nn

    check_type("model", model, nn.Module)
    check_positive_int("max_depth", max_depth)
    model = unwrap_model(model)
    try:
        view = peft_view(model)
    except TypeError:  # a prompt-learning PeftModel: list it as it is
        view = None
    listed = view.inner if view is not None else model
    aliases = param_aliases(listed)
    uniq = list(model.parameters())
    total = sum(p.numel() for p in uniq)
    trainable = sum(p.numel() for p in uniq if p.requires_grad)
    rows = []
    for name, module in listed.named_modules():
        depth = name.count(".") + 1 if name else 0
        if not 1 <= depth <= max_depth:
            continue
        ps = list(module.parameters())  # unique within the module
        n = sum(p.numel() for p in ps)
        t = sum(p.numel() for p in ps if p.requires_grad)
        rows.append(SummaryRow(name, type(module).__name__, depth, n, t, n - t, n / total if total else 0.0))
    wrapper = f"{type(model).__name__}({type(listed).__name__})" if view is not None else ""
    return ModelSummary(
        model_type=wrapper or type(model).__name__,
        rows=tuple(rows),
        total=total,
        trainable=trainable,
        frozen=total - trainable,
        ties={k: tuple(v[1:]) for k, v in aliases.items() if len(v) > 1},
    )


#: Case-insensitive substrings of parameter names that get no weight decay (norm layers are added by type).
DEFAULT_NO_DECAY: tuple[str, ...] = (
    "bias",
    "LayerNorm.weight",
    "layer_norm.weight",
    "layernorm.weight",
    "norm.weight",
    "layernorm_embedding.weight",
)


def layerwise_param_groups(
    model: nn.Module,
    lr: float,
    *,
    decay: float = 0.9,
    weight_decay: float = 0.0,
    no_decay: Sequence[str] = DEFAULT_NO_DECAY,
) -> list[dict[str, Any]]:
    """Optimizer param groups with the learning rate decaying from the head down to the embeddings.

    With ``L`` blocks (an encoder-decoder's encoder blocks count below its decoder blocks), the head and what
    sits above the blocks (final norm, pooler) get ``lr``; block ``i`` (0 = bottom) gets ``lr * decay ** (L -
    i)``; the embeddings get the lowest rate, ``lr * decay ** (L + 1)``. Every parameter is included once
    (tied ones too), frozen ones as well, so the optimizer can be built once and survive gradual unfreezing.

    Args:
        model: a transformers model (may be DDP-wrapped).
        lr: the head's learning rate.
        decay: factor per level, in (0, 1].
        weight_decay: weight decay for every parameter except the ``no_decay`` ones.
        no_decay: case-insensitive substrings of parameter names that get ``weight_decay=0.0``; parameters of
            normalization layers (found by type) never decay either.

    Returns:
        Param groups for any ``torch.optim`` optimizer, from the embeddings up to the head. Each has
        ``params``, ``lr``, ``weight_decay``, plus ``name`` (``"embeddings"``, ``"encoder.0"``, ``"head"``,
        with a ``"/no_decay"`` suffix) and ``param_names`` for logging.

    Raises:
        ValueError: for a non-positive ``lr``, ``decay`` outside (0, 1], a negative ``weight_decay``, or a
            model whose blocks cannot be found.
        TypeError: for non-numeric rates or a ``no_decay`` that is not a sequence of strings.

    Example:
        >>> groups = layerwise_param_groups(model, 5e-5, decay=0.8, weight_decay=0.01)  # doctest: +SKIP
        >>> optimizer = torch.optim.AdamW(groups)  # doctest: +SKIP
    """
    lr = check_real("lr", lr, low=0, low_open=True)
    decay = check_real("decay", decay, low=0, high=1, low_open=True)
    weight_decay = check_real("weight_decay", weight_decay, low=0)
    if isinstance(no_decay, str) or not isinstance(no_decay, Sequence):
        raise TypeError(
            f"`no_decay` must be a sequence of strings; got {type(no_decay).__name__} {no_decay!r}"
        )
    for item in no_decay:
        check_type("no_decay item", item, str)
    inner = unwrap_model(model)
    layout = resolve_layout(inner)
    require(inner, layout, "blocks")
    offsets = [0, *accumulate(map(len, layout.stacks))]  # blocks below each stack, then all blocks
    total = offsets[-1]
    norms = norm_param_names(inner)
    lowered = [s.lower() for s in no_decay]
    params = dict(inner.named_parameters())

    def level_and_name(canon: str) -> tuple[int, str]:
        group = layout.group[canon]
        if group == "embeddings":
            return 0, "embeddings"
        if group == "block":
            si, bi = layout.block_index[canon]
            stack = layout.stacks[si]
            prefix = stack.role if stack.role != "main" else "layers"
            return 1 + offsets[si] + bi, f"{prefix}.{bi}"
        return total + 1, "head"

    buckets: dict[tuple[int, bool], dict[str, Any]] = {}
    for canon, names in layout.aliases.items():
        level, name = level_and_name(canon)
        skip = any(n in norms for n in names) or any(s in n.lower() for n in names for s in lowered)
        key = (level, skip)
        if key not in buckets:
            buckets[key] = {
                "params": [],
                "lr": lr * decay ** (total + 1 - level),
                "weight_decay": 0.0 if skip else weight_decay,
                "name": name + ("/no_decay" if skip else ""),
                "param_names": [],
            }
        buckets[key]["params"].append(params[canon])
        buckets[key]["param_names"].append(canon)
    return [buckets[k] for k in sorted(buckets)]
