"""The task names shared by adapters, collators and model loading.

Adding a task: name it in ``Task``, then give it an encoder (``ENCODERS`` in ``adapters/_encode.py``), a
collator (``collators``) and an auto class (``AUTO_CLASSES`` in ``models/_load.py``).
"""

from __future__ import annotations

from typing import Literal, get_args

from hfbridge._checks import check_choice

__all__ = ["CHAT_TASK", "LABEL_TASKS", "LM_TASKS", "TASKS", "Task", "check_task"]

Task = Literal["sequence-classification", "token-classification", "seq2seq", "causal-lm", "masked-lm"]
TASKS: tuple[str, ...] = get_args(Task)
# the tasks that read a label column (classes, label maps)
LABEL_TASKS: tuple[str, ...] = ("sequence-classification", "token-classification")
# the tasks whose labels come from the text itself (no label column; `block_size` packing applies)
LM_TASKS: tuple[str, ...] = ("causal-lm", "masked-lm")
# adapt(task="chat"): conversations or prompt/completion pairs for SFT; a causal LM downstream
CHAT_TASK = "chat"


def check_task(task: object) -> Task:
    """Return ``task`` if it is a known task name, else raise ``ValueError`` listing the valid ones."""
    check_choice("task", task, TASKS)
    return task  # type: ignore[return-value]
