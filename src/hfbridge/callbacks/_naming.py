"""Metric cleaning and checkpoint folder names from a template, sanitized against path tricks."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["clean_metrics", "format_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def clean_metrics(metrics: Mapping[str, Any] | None, monitor: str | None) -> dict[str, float]:
    """Numeric metrics as floats (0-d tensors and NumPy scalars unwrapped; strings and lists dropped).

    Raises:
        TypeError: when ``metrics`` is not a mapping.
        ValueError: when ``monitor`` is set and missing from the numeric metrics.
    """
    if metrics is not None and not isinstance(metrics, Mapping):
        raise TypeError(f"`metrics` must be a mapping of name -> number; got {type(metrics).__name__}")
    clean: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # not a rankable number
        clean[str(key)] = float(value)
    if monitor is not None and monitor not in clean:
        raise ValueError(
            f"`metrics` must contain the monitored key {monitor!r} as a number (monitor={monitor!r}); "
            f"got numeric keys {sorted(clean)}"
        )
    return clean


def format_name(template: str, step: int, epoch: int | float | None, metrics: Mapping[str, float]) -> str:
    """Fill ``template`` with ``step``, ``epoch`` and metric values, then sanitize it into one safe folder name.

    Every character outside ``[A-Za-z0-9._+=-]`` becomes ``_``, so no value can add a path separator; a result
    that is empty, hidden (leading ``.``), contains ``..`` or is longer than 200 characters is refused.

    Raises:
        ValueError: when the template names an unavailable field or the result is not a safe name.

    Example:
        >>> format_name("step{step}-loss{eval_loss:.2f}", 7, None, {"eval_loss": 0.4321})
        'step7-loss0.43'
    """
    fields: dict[str, Any] = {k: v for k, v in metrics.items() if k.isidentifier()}
    fields.update(step=step, epoch=epoch if epoch is not None else 0)
    try:
        name = template.format(**fields)
    except (KeyError, IndexError) as exc:
        raise ValueError(
            f"`filename` template {template!r} names field {exc}, which is not available; fields: {sorted(fields)}"
        ) from None
    name = _UNSAFE.sub("_", name)
    if not name or name.startswith(".") or ".." in name or len(name) > 200:
        raise ValueError(f"`filename` {template!r} gives an unsafe folder name {name!r}")
    return name
