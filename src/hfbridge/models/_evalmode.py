"""Keep fully frozen modules in eval mode across ``model.train()`` (``FreezeSpec(eval_frozen=True)``).

``nn.Module.train(mode)`` sets ``training`` and calls ``child.train(mode)`` on every child, so replacing ``train``
on the frozen module *instance* is enough: whoever calls it (the model, a DDP wrapper, the Trainer) gets eval mode
for that subtree. The replacement is a small picklable object, so ``copy.deepcopy``, ``pickle`` and ``torch.save``
of the whole model keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

__all__ = ["KeepEval", "set_eval_frozen"]


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
            module.train(_parent_mode(model, name))


def _parent_mode(model: nn.Module, name: str) -> bool:
    parent = name.rpartition(".")[0] if "." in name else ""
    return model.get_submodule(parent).training if name else model.training
