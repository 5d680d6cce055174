"""``EarlyStopping``: stop when a metric stops improving, with state that survives a resume."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from hfbridge._checks import check_choice, check_non_negative_int, check_real, check_type

__all__ = ["EarlyStopping", "clean_metrics"]


def clean_metrics(metrics: Mapping[str, Any] | None, monitor: str | None) -> dict[str, float]:
    """Numeric metrics as floats (0-d tensors and NumPy scalars unwrapped; strings and lists dropped).

    Raises:
        TypeError: when ``metrics`` is not a mapping.
        ValueError: when ``monitor`` is set and missing from the numeric metrics, or a value is a meta tensor.
    """
    if metrics is not None and not isinstance(metrics, Mapping):
        raise TypeError(f"`metrics` must be a mapping of name -> number; got {type(metrics).__name__}")
    clean: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if getattr(value, "is_meta", False):
            raise ValueError(
                f"`metrics[{key!r}]` is a tensor on the meta device, which holds no value; pass a real "
                "tensor or a number"
            )
        if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
            value = value.item()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[str(key)] = float(value)
    if monitor is not None and monitor not in clean:
        raise ValueError(
            f"`metrics` must contain the monitored key {monitor!r} as a number (monitor={monitor!r}); "
            f"got numeric keys {sorted(clean)}"
        )
    return clean


class EarlyStopping:
    """Decide when to stop training from a monitored metric; works in plain loops and under HF Trainer.

    Args:
        monitor: the metric key to watch, e.g. ``"eval_loss"``.
        mode: ``"min"`` (lower is better) or ``"max"``.
        patience: stop after this many consecutive evaluations without improvement (0: at the first one).
        min_delta: the least change that counts as an improvement (absolute, or a fraction of the best value
            when ``relative``).
        relative: read ``min_delta`` as a fraction of ``|best|``.
        check_finite: stop at once when the metric is NaN or infinite.
        stopping_threshold: stop at once when the metric reaches this value (``<=`` for min, ``>=`` for max).
        divergence_threshold: stop at once when the metric is worse than this value.

    Raises:
        ValueError, TypeError: on a bad argument.

    Example:
        >>> es = EarlyStopping("eval_loss", patience=2)
        >>> [es.update({"eval_loss": v}) for v in (1.0, 0.8, 0.9, 0.85)]
        [False, False, False, True]
        >>> es.reason
        'eval_loss did not improve over 0.8 for 2 evaluations (patience=2)'
    """

    def __init__(
        self,
        monitor: str,
        *,
        mode: Literal["min", "max"] = "min",
        patience: int = 3,
        min_delta: float = 0.0,
        relative: bool = False,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
    ) -> None:
        check_type("monitor", monitor, str)
        if not monitor:
            raise ValueError("`monitor` must be a non-empty metric name, e.g. 'eval_loss'; got ''")
        check_choice("mode", mode, ("min", "max"))
        check_non_negative_int("patience", patience)
        check_real("min_delta", min_delta, low=0)  # a distance: `mode` sets the direction
        check_type("relative", relative, bool)
        check_type("check_finite", check_finite, bool)
        check_real("stopping_threshold", stopping_threshold, allow_none=True)
        check_real("divergence_threshold", divergence_threshold, allow_none=True)
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.relative, self.check_finite = float(min_delta), relative, check_finite
        self.stopping_threshold, self.divergence_threshold = stopping_threshold, divergence_threshold
        self.best: float | None = None
        self.wait = 0
        self.num_updates = 0
        self.should_stop = False
        self.reason: str | None = None

    def update(self, metrics: Mapping[str, Any]) -> bool:
        """Take one evaluation's metrics; return ``True`` when training should stop (``reason`` says why).

        Raises:
            ValueError: when ``metrics`` lacks ``monitor``.
        """
        value = clean_metrics(metrics, self.monitor)[self.monitor]
        self.num_updates += 1
        worse_than = (lambda a, b: a > b) if self.mode == "min" else (lambda a, b: a < b)
        reason = None
        if self.check_finite and not math.isfinite(value):
            reason = f"{self.monitor} is {value}, not finite (check_finite=True)"
        elif self.stopping_threshold is not None and not worse_than(value, self.stopping_threshold):
            self._improve(value)
            reason = f"{self.monitor}={value:g} reached stopping_threshold={self.stopping_threshold:g}"
        elif self.divergence_threshold is not None and worse_than(value, self.divergence_threshold):
            reason = (
                f"{self.monitor}={value:g} is worse than divergence_threshold={self.divergence_threshold:g}"
            )
        elif not self._improve(value):
            self.wait += 1
            if self.wait >= self.patience:
                reason = (
                    f"{self.monitor} did not improve over {self.best:g} for {self.wait} evaluations "
                    f"(patience={self.patience})"
                )
        if reason is not None:
            self.should_stop, self.reason = True, reason
        return self.should_stop

    def _improve(self, value: float) -> bool:
        """Make ``value`` the best (resetting ``wait``) when it improves on it; return whether it did."""
        if self.best is None or math.isnan(self.best):
            better = not math.isnan(value)
        else:
            delta = self.min_delta * abs(self.best) if self.relative else self.min_delta
            better = value < self.best - delta if self.mode == "min" else value > self.best + delta
        if better:
            self.best, self.wait = value, 0
        return better

    def state_dict(self) -> dict[str, Any]:
        """Plain-value state (loads with ``torch.load(weights_only=True)`` and JSON)."""
        keys = ("monitor", "mode", "best", "wait", "num_updates", "should_stop", "reason")
        return {k: getattr(self, k) for k in keys}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (e.g. on resume, so patience carries over).

        Raises:
            ValueError: when the state was saved for another ``monitor`` / ``mode`` or lacks keys.
        """
        missing = {"monitor", "mode", "best", "wait"} - set(state)
        if missing:
            raise ValueError(f"EarlyStopping state lacks keys {sorted(missing)}; got keys {sorted(state)}")
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            raise ValueError(
                f"EarlyStopping state was saved for monitor={state['monitor']!r}, mode={state['mode']!r}, "
                f"not monitor={self.monitor!r}, mode={self.mode!r}"
            )
        self.best = None if state["best"] is None else float(state["best"])
        self.wait = int(state["wait"])
        self.num_updates = int(state.get("num_updates", 0))
        self.should_stop = bool(state.get("should_stop", False))
        self.reason = state.get("reason")

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, patience={self.patience}, "
            f"best={self.best}, wait={self.wait})"
        )
