"""Length-sorted evaluation: a sampler that visits rows longest first, and the way back to dataset order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from torch.utils.data import Sampler

__all__ = ["MetricsInDatasetOrder", "SortedOrder", "find_sorted_order", "in_dataset_order"]


class SortedOrder(Sampler[int]):
    """Row indices by decreasing length (ties in dataset order), so each evaluation batch pads little.

    Args:
        lengths: token count of every row.
    """

    def __init__(self, lengths: np.ndarray) -> None:
        self.order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
        self.inverse = np.empty_like(self.order)
        self.inverse[self.order] = np.arange(len(self.order))

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())

    def __len__(self) -> int:
        return len(self.order)


def find_sorted_order(loader: Any) -> SortedOrder | None:
    """The :class:`SortedOrder` inside a (possibly accelerate-prepared) loader, or ``None``."""
    seen: list[Any] = [loader]
    while seen:
        obj = seen.pop()
        if isinstance(obj, SortedOrder):
            return obj
        for name in ("sampler", "batch_sampler", "base_dataloader"):
            inner = getattr(obj, name, None)
            if inner is not None and inner is not obj:
                seen.append(inner)
    return None


def in_dataset_order(value: Any, inverse: np.ndarray) -> Any:
    """``value`` (an array, or a tuple/list/dict of them, rows in sorted order) with rows in dataset order.

    Arrays whose first axis is not the number of rows (e.g. a scalar) are returned unchanged.
    """
    if isinstance(value, np.ndarray) and value.ndim > 0 and len(value) == len(inverse):
        return value[inverse]
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple
        return type(value)(*(in_dataset_order(v, inverse) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(in_dataset_order(v, inverse) for v in value)
    if isinstance(value, dict):
        return {k: in_dataset_order(v, inverse) for k, v in value.items()}
    return value


class MetricsInDatasetOrder:
    """``compute_metrics`` that sees predictions, labels, inputs and losses in dataset order."""

    def __init__(self, compute_metrics: Callable[..., Any], inverse: np.ndarray) -> None:
        self.compute_metrics, self.inverse = compute_metrics, inverse

    def __call__(self, eval_pred: Any, **kwargs: Any) -> Any:
        from transformers import EvalPrediction

        fields = {
            name: in_dataset_order(getattr(eval_pred, name, None), self.inverse)
            for name in ("predictions", "label_ids", "inputs", "losses")
        }
        return self.compute_metrics(EvalPrediction(**fields), **kwargs)
