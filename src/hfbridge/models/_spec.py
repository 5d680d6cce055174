"""``FreezeSpec``: what to freeze, as a dataclass or a short string for a command line."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, Literal

from hfbridge._checks import check_choice, check_non_negative_int, check_type

__all__ = ["FreezeSpec"]

Stack = Literal["both", "encoder", "decoder"]
PatternSyntax = Literal["glob", "regex"]
_STACKS = ("both", "encoder", "decoder")
_SYNTAXES = ("glob", "regex")
_FLAGS = {
    "embeddings": "embeddings",
    "all-but-head": "base_model",
    "head": "head",
    "train-biases": "train_biases",
    "train-norms": "train_norms",
    "eval-frozen": "eval_frozen",
}
_KEYED = ("layers", "trainable-layers", "stack", "pattern", "except", "syntax")
_ITEMS = (*_FLAGS, "all", *(f"{k}:..." for k in _KEYED))


@dataclass(frozen=True)
class FreezeSpec:
    """What :func:`freeze` freezes. Every field defaults to "leave trainable".

    Each field has a string item (in brackets below) for :meth:`parse`: items are comma-separated, whitespace
    ignored, order free, e.g. ``"embeddings,layers:4"``, ``"all-but-head,train-norms"``,
    ``"trainable-layers:2,stack:decoder"``; ``"all"`` is ``"all-but-head,head"``.

    Args:
        embeddings: [``embeddings``] freeze the embeddings (word, position, type embeddings; their norm).
        layers: [``layers:N``] freeze the first ``layers`` blocks of each selected stack.
        trainable_layers: [``trainable-layers:N``] keep only the last ``trainable_layers`` blocks of each
            selected stack trainable; freezes the embeddings and the blocks below. What sits above the blocks
            (final norm, pooler, head) stays trainable. Excludes ``layers``.
        stack: [``stack:S``] for encoder-decoder models (T5, BART), the stack a count applies to:
            ``"encoder"``, ``"decoder"`` or ``"both"`` (the default: each stack). Other models have one stack
            and need ``"both"``.
        base_model: [``all-but-head``] freeze the whole base model -- everything but the task head.
        head: [``head``] freeze the task head too (it stays trainable unless asked).
        patterns: [``pattern:GLOB``, repeatable] names (globs, or regexes with ``pattern_syntax="regex"``) of
            parameters to freeze. Each must match at least one parameter name; a tied parameter matches
            through any of its names.
        except_patterns: [``except:GLOB``, repeatable] parameters to keep trainable whatever the other fields
            say; each must match.
        pattern_syntax: [``syntax:regex``] ``"glob"`` (``fnmatch``, whole name) or ``"regex"``
            (``re.search``).
        train_biases: [``train-biases``] keep every parameter named ``bias`` trainable (BitFit).
        train_norms: [``train-norms``] keep the parameters of every normalization layer trainable.
        eval_frozen: [``eval-frozen``] keep fully frozen modules in eval mode (dropout off) even across
            ``model.train()``.

    Raises:
        ValueError: for a negative count, both ``layers`` and ``trainable_layers``, an unknown ``stack`` or
            ``pattern_syntax``, an empty or (for regexes) invalid pattern.
        TypeError: for a non-bool flag, a non-int count or a pattern that is not a string.

    Example:
        >>> FreezeSpec.parse("embeddings,layers:4") == FreezeSpec(embeddings=True, layers=4)
        True
    """

    embeddings: bool = False
    layers: int | None = None
    trainable_layers: int | None = None
    stack: Stack = "both"
    base_model: bool = False
    head: bool = False
    patterns: tuple[str, ...] = ()
    except_patterns: tuple[str, ...] = ()
    pattern_syntax: PatternSyntax = "glob"
    train_biases: bool = False
    train_norms: bool = False
    eval_frozen: bool = False

    def __post_init__(self) -> None:
        for name in ("embeddings", "base_model", "head", "train_biases", "train_norms", "eval_frozen"):
            check_type(name, getattr(self, name), bool)
        check_non_negative_int("layers", self.layers, allow_none=True)
        check_non_negative_int("trainable_layers", self.trainable_layers, allow_none=True)
        if self.layers is not None and self.trainable_layers is not None:
            raise ValueError(
                "`layers` (freeze the first N blocks) and `trainable_layers` (keep the last N trainable) "
                f"exclude each other; got layers={self.layers}, trainable_layers={self.trainable_layers}"
            )
        check_choice("stack", self.stack, _STACKS)
        check_choice("pattern_syntax", self.pattern_syntax, _SYNTAXES)
        for name in ("patterns", "except_patterns"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            check_type(name, value, (tuple, list), what="a sequence of strings")
            value = tuple(value)
            for pattern in value:
                check_type(f"{name} item", pattern, str)
                if not pattern:
                    raise ValueError(f"`{name}` must hold non-empty strings; got {value!r}")
                if self.pattern_syntax == "regex":
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise ValueError(f"`{name}` item {pattern!r} is not a valid regex: {exc}") from None
            object.__setattr__(self, name, value)

    @property
    def uses_layout(self) -> bool:
        """Whether this spec needs the model's embeddings/blocks/head resolved (patterns alone do not)."""
        return (
            self.embeddings
            or self.layers is not None
            or self.trainable_layers is not None
            or self.base_model
            or self.head
        )

    @classmethod
    def parse(cls, text: str) -> FreezeSpec:
        """Build a spec from its string form (see the class docstring for the items).

        Args:
            text: e.g. ``"embeddings,layers:4"``; ``""`` or ``"none"`` freezes nothing.

        Raises:
            ValueError: for an unknown item, a missing or bad value, or a repeated single-valued item.
            TypeError: when ``text`` is not a string.
        """
        check_type("spec", text, str)
        kwargs: dict[str, Any] = {"patterns": [], "except_patterns": []}  # lists: FreezeSpec makes tuples

        def put(key: str, value: Any, item: str) -> None:
            if key in kwargs:
                raise ValueError(f"freeze spec item {item!r} is given twice in {text!r}")
            kwargs[key] = value

        for raw in text.split(","):
            item = raw.strip()
            if not item or item.lower() == "none":
                continue
            key, sep, value = item.partition(":")
            key, value = key.strip().lower(), value.strip()
            if not sep and key == "all":
                put("base_model", True, item)
                put("head", True, item)
            elif not sep and key in _FLAGS:
                put(_FLAGS[key], True, item)
            elif key not in _KEYED or not sep:
                raise ValueError(
                    f"unknown freeze spec item {item!r} in {text!r}; valid items: {', '.join(_ITEMS)}"
                )
            elif not value:
                raise ValueError(f"freeze spec item {item!r} needs a value after ':' in {text!r}")
            elif key in ("layers", "trainable-layers"):
                if not value.isdigit():
                    raise ValueError(f"freeze spec item {item!r} needs a non-negative integer; got {value!r}")
                put(key.replace("-", "_"), int(value), item)
            elif key == "stack":
                put("stack", check_choice("stack", value, _STACKS), item)
            elif key == "syntax":
                put("pattern_syntax", check_choice("syntax", value, _SYNTAXES), item)
            else:
                kwargs["patterns" if key == "pattern" else "except_patterns"].append(value)
        return cls(**kwargs)

    @classmethod
    def coerce(cls, spec: FreezeSpec | str | dict[str, Any] | None) -> FreezeSpec:
        """Accept a spec, its string form, a dict of fields, or ``None`` (freeze nothing)."""
        if spec is None:
            return cls()
        if isinstance(spec, FreezeSpec):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        if isinstance(spec, dict):
            unknown = set(spec) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(
                    f"`spec` has unknown fields {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}"
                )
            return cls(**spec)
        raise TypeError(
            f"`spec` must be a FreezeSpec, str, dict or None; got {type(spec).__name__} {spec!r:.80}"
        )

    def to_string(self) -> str:
        """The string form; ``FreezeSpec.parse(spec.to_string()) == spec`` for specs whose patterns hold no
        comma."""
        items: list[str] = []
        if self.base_model and self.head:
            items.append("all")
        else:
            items += ["all-but-head"] * self.base_model + ["head"] * self.head
        items += ["embeddings"] * self.embeddings
        if self.layers is not None:
            items.append(f"layers:{self.layers}")
        if self.trainable_layers is not None:
            items.append(f"trainable-layers:{self.trainable_layers}")
        if self.stack != "both":
            items.append(f"stack:{self.stack}")
        items += [f"pattern:{p}" for p in self.patterns] + [f"except:{p}" for p in self.except_patterns]
        if self.pattern_syntax != "glob":
            items.append(f"syntax:{self.pattern_syntax}")
        items += ["train-biases"] * self.train_biases + ["train-norms"] * self.train_norms
        items += ["eval-frozen"] * self.eval_frozen
        return ",".join(items) or "none"

    def __str__(self) -> str:
        return self.to_string()
