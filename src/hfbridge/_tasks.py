"""The task names shared by adapters, collators and model loading."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["CHAT_TASK", "LM_TASKS", "TASKS", "Task", "check_task"]

Task = Literal["sequence-classification", "token-classification", "seq2seq", "causal-lm", "masked-lm"]
TASKS: tuple[str, ...] = get_args(Task)
# the tasks whose labels come from the text itself (no label column; `block_size` packing applies)
LM_TASKS: tuple[str, ...] = ("causal-lm", "masked-lm")
# adapt(task="chat"): conversations or prompt/completion pairs for SFT; a causal LM downstream
CHAT_TASK = "chat"


def check_task(task: object) -> Task:
    """Return ``task`` if it is a known task name, else raise ``ValueError`` listing the valid ones."""
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {', '.join(map(repr, TASKS))}; got {task!r}")
    return task  # type: ignore[return-value]
