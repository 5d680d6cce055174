"""Small validators shared by every subpackage, and the task names.

Every error names the argument, the rule, the bad value and, where there is a closed set, the valid options,
e.g. ``ValueError: `max_tokens` must be a positive integer, got -3``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Integral
from typing import Any, Literal, TypeVar, get_args

__all__ = [
    "CHAT_TASK",
    "LABEL_TASKS",
    "LM_TASKS",
    "TASKS",
    "Task",
    "check_choice",
    "check_label2id",
    "check_non_negative_int",
    "check_positive_int",
    "check_probability",
    "check_real",
    "check_task",
    "check_type",
]

T = TypeVar("T")

# Adding a task: name it in `Task`, then give it an encoder (`ENCODERS` in adapters/_encode.py), a collator
# (collators) and an auto class (`AUTO_CLASSES` in models/_load.py).
Task = Literal["sequence-classification", "token-classification", "seq2seq", "causal-lm", "masked-lm"]
TASKS: tuple[str, ...] = get_args(Task)
# the tasks that read a label column (classes, label maps)
LABEL_TASKS: tuple[str, ...] = ("sequence-classification", "token-classification")
# the tasks whose labels come from the text itself (no label column; `block_size` packing applies)
LM_TASKS: tuple[str, ...] = ("causal-lm", "masked-lm")
# adapt(task="chat"): conversations or prompt/completion pairs for SFT; a causal LM downstream
CHAT_TASK = "chat"


def _check_int(name: str, value: Any, allow_none: bool, low: int, what: str) -> Any:
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be a {what}{' or None' if allow_none else ''}; got {value!r}")
    if value < low:
        raise ValueError(f"`{name}` must be a {what}; got {value!r}")
    return value


def check_choice(name: str, value: T, options: Iterable[Any]) -> T:
    """Raise ``ValueError`` unless ``value`` is one of ``options``; return ``value``."""
    options = tuple(options)
    if value not in options:
        valid = ", ".join(repr(o) for o in options)
        raise ValueError(f"`{name}` must be one of {valid}; got {value!r}")
    return value


def check_task(task: object) -> Task:
    """Return ``task`` if it is a known task name, else raise ``ValueError`` listing the valid ones."""
    check_choice("task", task, TASKS)
    return task  # type: ignore[return-value]


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Raise unless ``value`` is an ``int`` > 0 (or ``None`` when ``allow_none``); return ``value``."""
    return _check_int(name, value, allow_none, 1, "positive integer")


def check_non_negative_int(name: str, value: Any, *, allow_none: bool = False) -> Any:
    """Raise unless ``value`` is an ``int`` >= 0 (or ``None`` when ``allow_none``); return ``value``."""
    return _check_int(name, value, allow_none, 0, "non-negative integer")


def check_probability(name: str, value: Any, *, inclusive: bool = True) -> float:
    """Raise unless ``value`` is a real number in [0, 1] (or (0, 1) when not ``inclusive``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a float in [0, 1]; got {value!r}")
    ok = 0.0 <= value <= 1.0 if inclusive else 0.0 < value < 1.0
    if not ok:
        bounds = "[0, 1]" if inclusive else "(0, 1)"
        raise ValueError(f"`{name}` must be in {bounds}; got {value!r}")
    return float(value)


def check_real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    allow_none: bool = False,
) -> Any:
    """Raise unless ``value`` is a finite real number (not a bool) in ``[low, high]`` (``(low, high]`` when
    ``low_open``), or ``None`` when ``allow_none``; return ``float(value)`` (or ``None``).

    Example: ``check_real("lr", 0, low=0, low_open=True)`` raises
    ``ValueError: `lr` must be a finite real number in (0, inf); got 0``.
    """
    if value is None and allow_none:
        return None
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf)" if high is None else f"{high:g}]"  # a finite number never reaches an infinite bound
    bounds = (
        "" if low is None and high is None else f" in {'(' if low_open or low is None else '['}{lo}, {hi}"
    )
    rule = f"`{name}` must be a finite real number{bounds}{' or None' if allow_none else ''}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{rule}; got {type(value).__name__} {value!r:.80}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    if not math.isfinite(value) or bad_low or (high is not None and value > high):
        raise ValueError(f"{rule}; got {value!r}")
    return float(value)


def check_type(name: str, value: Any, types: type | tuple[type, ...], *, what: str | None = None) -> Any:
    """Raise ``TypeError`` unless ``isinstance(value, types)``; return ``value``."""
    if not isinstance(value, types):
        if what is None:
            names = types if isinstance(types, tuple) else (types,)
            what = " or ".join(t.__name__ for t in names)
        raise TypeError(f"`{name}` must be {what}; got {type(value).__name__} {value!r:.80}")
    return value


def check_label2id(label2id: Any, name: str = "label2id") -> dict[str, int]:
    """Validate a label map (the one rule for adapters and ``load_pretrained``); return a ``dict[str, int]``.

    Names are str, or int (made str, as a JSON round trip of a model config makes them), unique as strings;
    ids are the integers ``0..n-1``, each once.

    Raises:
        TypeError: not a mapping, a name that is not str or int, an id that is not an int.
        ValueError: an empty map, a repeated name, ids that are not ``0..n-1``.
    """
    check_type(name, label2id, Mapping, what="a mapping of label name to class id")
    if not label2id:
        raise ValueError(f"`{name}` must map at least one label to an id; got an empty mapping")
    for label, i in label2id.items():  # types first: sorting mixed types fails with "'<' not supported"
        if isinstance(label, bool) or not isinstance(label, (str, Integral)):
            raise TypeError(f"`{name}` names must be str or int; got {label!r} ({type(label).__name__})")
        if isinstance(i, bool) or not isinstance(i, Integral):
            raise TypeError(f"`{name}` ids must be int class ids; got {label!r}: {i!r} ({type(i).__name__})")
    names = [str(label) for label in label2id]
    repeated = sorted({label for label in names if names.count(label) > 1})
    if repeated:
        raise ValueError(
            f"`{name}` names must be unique as strings (int names become str); {repeated[0]!r} appears "
            f"more than once in {dict(label2id)!r}"
        )
    n = len(label2id)
    if sorted(int(i) for i in label2id.values()) != list(range(n)):
        raise ValueError(f"`{name}` ids must be the integers 0..{n - 1}, each once; got {dict(label2id)!r}")
    return {str(label): int(i) for label, i in label2id.items()}
