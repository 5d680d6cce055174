"""``summary(model)``: a parameter table that understands transformers (tied weights, frozen parts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hfbridge._checks import check_positive_int, check_type
from hfbridge.models._layout import unwrap_model

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ModelSummary", "SummaryRow", "summary"]


@dataclass(frozen=True)
class SummaryRow:
    """One module: ``params`` counts each parameter under it once; ``share`` is its fraction of the model total."""

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
        """Plain data (JSON-ready): ``model_type``, ``rows`` (list of dicts), ``total``, ``trainable``, ``frozen``,
        ``ties``."""
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

    Needs no input and runs no forward pass. A tied parameter (GPT-2's ``lm_head.weight`` is its input embedding) is
    counted once in the totals and under every module that holds it.

    Args:
        model: any ``nn.Module`` (a DDP wrapper is looked through).
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
    first: dict[int, str] = {}
    aliases: dict[str, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        aliases.setdefault(first.setdefault(id(p), name), []).append(name)
    uniq = list(model.parameters())
    total = sum(p.numel() for p in uniq)
    trainable = sum(p.numel() for p in uniq if p.requires_grad)
    rows = []
    for name, module in model.named_modules():
        depth = name.count(".") + 1 if name else 0
        if not 1 <= depth <= max_depth:
            continue
        ps = list(module.parameters())  # unique within the module
        n = sum(p.numel() for p in ps)
        t = sum(p.numel() for p in ps if p.requires_grad)
        rows.append(SummaryRow(name, type(module).__name__, depth, n, t, n - t, n / total if total else 0.0))
    return ModelSummary(
        model_type=type(model).__name__,
        rows=tuple(rows),
        total=total,
        trainable=trainable,
        frozen=total - trainable,
        ties={k: tuple(v[1:]) for k, v in aliases.items() if len(v) > 1},
    )
