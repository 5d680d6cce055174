"""``layerwise_param_groups``: layer-wise learning-rate decay (LLRD) for any architecture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hfbridge._checks import check_real, check_type
from hfbridge.models._layout import norm_param_names, require, resolve_layout, unwrap_model

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DEFAULT_NO_DECAY", "layerwise_param_groups"]

#: Case-insensitive substrings of parameter names that get no weight decay (normalization layers are added by type).
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

    With ``L`` blocks (an encoder-decoder's encoder blocks count below its decoder blocks), the head and what sits
    above the blocks (final norm, pooler) get ``lr``; block ``i`` (0 = bottom) gets ``lr * decay ** (L - i)``; the
    embeddings get the lowest rate, ``lr * decay ** (L + 1)``. Every parameter is included once (tied ones too), frozen
    ones as well, so the optimizer can be built once and survive gradual unfreezing.

    Args:
        model: a transformers model (may be DDP-wrapped).
        lr: the head's learning rate.
        decay: factor per level, in (0, 1].
        weight_decay: weight decay for every parameter except the ``no_decay`` ones.
        no_decay: case-insensitive substrings of parameter names that get ``weight_decay=0.0``; parameters of
            normalization layers (found by type) never decay either.

    Returns:
        Param groups for any ``torch.optim`` optimizer, from the embeddings up to the head. Each has ``params``,
        ``lr``, ``weight_decay``, plus ``name`` (``"embeddings"``, ``"encoder.0"``, ``"head"``, with a
        ``"/no_decay"`` suffix) and ``param_names`` for logging.

    Raises:
        ValueError: for a non-positive ``lr``, ``decay`` outside (0, 1], a negative ``weight_decay``, or a model whose
            blocks cannot be found.
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
    offsets, total = [], 0
    for stack in layout.stacks:
        offsets.append(total)
        total += len(stack)
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
