"""``GradualUnfreezer``: ULMFiT-style gradual unfreezing as a pure function of the epoch (or step)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from hfbridge._checks import check_choice, check_non_negative_int, check_positive_int, check_type
from hfbridge.models._freeze import FreezeReport, freeze
from hfbridge.models._layout import resolve_layout, select_stacks
from hfbridge.models._spec import FreezeSpec

if TYPE_CHECKING:
    from torch import nn

__all__ = ["GradualUnfreezer"]

_SCHEDULE_FIELDS = ("embeddings", "layers", "trainable_layers", "base_model")


class GradualUnfreezer:
    """Thaw a model block by block, from the top, as a pure function of the epoch or step.

    Stage ``s = t // every`` (``t`` the epoch or the optimizer step) keeps the head, whatever sits above the
    blocks (final norm, pooler) and the top ``s * layers_per_stage`` blocks trainable; one stage after every
    block is trainable, the embeddings follow. The state depends on ``t`` alone, so a resumed run calls
    ``apply(t)`` and gets exactly the state an uninterrupted run had -- nothing to checkpoint. Build the
    optimizer once over *all* parameters (torch optimizers skip parameters whose ``grad`` is ``None``), so
    schedulers and optimizer state stay valid as blocks thaw. Under DDP, wrap the model while every parameter
    still requires grad (DDP only synchronises those) and pass ``find_unused_parameters=True``
    (``TrainingArguments(ddp_find_unused_parameters=True)``), since frozen parameters take no part in
    backward; :meth:`apply` checks a DDP-wrapped model.

    Args:
        model: the model to unfreeze (may be DDP-wrapped).
        unit: whether ``t`` counts epochs or optimizer steps.
        every: ``t`` units per stage.
        layers_per_stage: blocks thawed per stage.
        stack: encoder-decoder models: thaw the ``"encoder"``, the ``"decoder"`` or ``"both"`` stacks (the
            other stays as the base spec leaves it).
        unfreeze_embeddings: thaw the embeddings one stage after the last block; if ``False`` they stay
            frozen.
        spec: options kept at every stage -- patterns, ``except_patterns``, ``head``, ``train_biases``,
            ``train_norms``, ``eval_frozen``. It must not set ``embeddings``, ``layers``, ``trainable_layers``
            or ``base_model``: the schedule owns those.

    Raises:
        ValueError: for a bad ``unit``/``stack``/count, a ``spec`` that sets a scheduled field, or a model
            whose blocks cannot be found.

    Example:
        >>> unfreezer = GradualUnfreezer(model, every=1)  # doctest: +SKIP
        >>> optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)  # all, once  # doctest: +SKIP
        >>> for epoch in range(start_epoch, epochs):  # doctest: +SKIP
        ...     unfreezer.apply(epoch)
        ...     train_one_epoch(model, optimizer)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        unit: Literal["epoch", "step"] = "epoch",
        every: int = 1,
        layers_per_stage: int = 1,
        stack: Literal["both", "encoder", "decoder"] = "both",
        unfreeze_embeddings: bool = True,
        spec: FreezeSpec | str | dict[str, Any] | None = None,
    ) -> None:
        from torch import nn

        check_type("model", model, nn.Module)
        self.unit = check_choice("unit", unit, ("epoch", "step"))
        self.every = check_positive_int("every", every)
        self.layers_per_stage = check_positive_int("layers_per_stage", layers_per_stage)
        self.unfreeze_embeddings = check_type("unfreeze_embeddings", unfreeze_embeddings, bool)
        base = FreezeSpec.coerce(spec)
        scheduled = [f for f in _SCHEDULE_FIELDS if getattr(base, f) not in (False, None)]
        if scheduled:
            raise ValueError(
                f"`spec` must not set {', '.join(scheduled)}: the unfreezing schedule owns "
                f"{', '.join(_SCHEDULE_FIELDS)}; got {base}"
            )
        self.base_spec = replace(base, stack=stack)  # FreezeSpec checks `stack`
        self.model = model
        layout = resolve_layout(model)
        self.num_blocks = max(len(layout.stacks[i]) for i in select_stacks(model, layout, stack))
        self._applied: int | None = None

    @property
    def num_stages(self) -> int:
        """Stages until fully unfrozen: head only, then one per ``layers_per_stage`` blocks, then
        embeddings."""
        return self._block_stages + (2 if self.unfreeze_embeddings else 1)

    @property
    def _block_stages(self) -> int:
        return -(-self.num_blocks // self.layers_per_stage)

    def stage_at(self, t: int) -> int:
        """Stage at epoch/step ``t`` (0 = head only), capped at ``num_stages - 1``."""
        check_non_negative_int(self.unit, t)
        return min(t // self.every, self.num_stages - 1)

    def spec_at(self, t: int) -> FreezeSpec:
        """The :class:`FreezeSpec` in force at epoch/step ``t`` -- a pure function of ``t``."""
        stage = self.stage_at(t)
        if stage <= self._block_stages:
            return replace(
                self.base_spec, trainable_layers=min(stage * self.layers_per_stage, self.num_blocks)
            )
        return self.base_spec  # every block and the embeddings thawed

    def apply(self, t: int, *, force: bool = False) -> FreezeReport | None:
        """Put the model in the state of epoch/step ``t``.

        Args:
            t: the current epoch (``unit="epoch"``) or optimizer step (``unit="step"``), counted from 0.
            force: re-apply even when the stage equals the one applied last (e.g. after loading a checkpoint
                into a model someone froze by hand).

        Returns:
            The :class:`FreezeReport` when the state changed, else ``None``.

        Raises:
            ValueError: when the model is DDP-wrapped without ``find_unused_parameters=True``.
        """
        check_distributed(self.model)
        stage = self.stage_at(t)
        if stage == self._applied and not force:
            return None
        import warnings

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="freeze spec .* freezes nothing")
            report = freeze(self.model, self.spec_at(t))
        self._applied = stage
        return report

    def as_callback(self) -> Any:
        """This schedule as an HF ``TrainerCallback`` (applied on train begin, every epoch and, for steps,
        each step).

        Pass ``TrainingArguments(ddp_find_unused_parameters=True)`` when training on several processes, and do
        not freeze the model before ``Trainer.train()``: the Trainer builds its optimizer over trainable
        parameters only, before the callback applies stage 0.
        """
        from hfbridge.trainer import GradualUnfreezingCallback

        return GradualUnfreezingCallback(self)

    def __repr__(self) -> str:
        return (
            f"GradualUnfreezer(unit={self.unit!r}, every={self.every}, "
            f"layers_per_stage={self.layers_per_stage}, "
            f"num_blocks={self.num_blocks}, num_stages={self.num_stages}, spec={str(self.base_spec)!r})"
        )


def check_distributed(model: nn.Module) -> None:
    """Raise when ``model`` is DDP-wrapped without ``find_unused_parameters=True`` (frozen params break
    DDP)."""
    from torch import nn

    if isinstance(model, nn.parallel.DistributedDataParallel) and not model.find_unused_parameters:
        raise ValueError(
            "gradual unfreezing under DistributedDataParallel needs `find_unused_parameters=True` (frozen "
            "parameters get no gradient, and DDP otherwise waits for them); got find_unused_parameters=False."
            " Build DDP(model, find_unused_parameters=True) -- or TrainingArguments("
            "ddp_find_unused_parameters=True) -- while every parameter still requires grad."
        )
