"""The package's structure rules (issue 14), checked by reading the source with ``ast``, importing nothing.

1. No module reads another module's underscore names: ``from hfbridge.x._y import _name``, ``_y._name`` on an
   imported hfbridge module, or ``obj._attr`` where ``_attr`` is a private attribute that only *another* hfbridge
   module defines. Importing a private *module* (``from hfbridge.collators import _padding``) is fine.
2. No import circle between hfbridge modules at import time. Imports inside functions and under
   ``if TYPE_CHECKING:`` do not count; ``from package import submodule`` counts as an import of the submodule only.
3. No class inherits from another hfbridge class (composition over implementation inheritance), except from a
   ``Protocol`` or an exception class.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import SRC_DIR

PACKAGE_DIR = Path(SRC_DIR) / "hfbridge"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    is_package: bool
    # local name -> (hfbridge module, original name or None when the local name is the module itself)
    bindings: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    imports: set[str] = field(default_factory=set)  # hfbridge modules imported at import time
    private_names: list[tuple[int, str]] = field(default_factory=list)  # `from m import _x` (line, text)
    defined_attrs: set[str] = field(default_factory=set)  # private attributes/methods this module defines


def _modules() -> dict[str, Module]:
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        found[name] = Module(name, path, ast.parse(path.read_text(), str(path)), is_package)
    return found


MODULES = _modules()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__")) and name != "_"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Statements that run when the module is imported: not function bodies, not TYPE_CHECKING blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, ast.If):
            if not _is_type_checking(stmt.test):
                yield from _import_time_statements(stmt.body)
            yield from _import_time_statements(stmt.orelse)
        elif isinstance(stmt, ast.Try):
            for block in (stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)):
                yield from _import_time_statements(block)
        elif isinstance(stmt, ast.ClassDef | ast.With):
            yield from _import_time_statements(stmt.body)


def _resolve_from(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _analyse(module: Module) -> None:
    top_level = {id(stmt) for stmt in _import_time_statements(module.tree.body)}
    for node in ast.walk(module.tree):
        at_import = id(node) in top_level
        if isinstance(node, ast.ImportFrom):
            source = _resolve_from(module, node)
            if source != "hfbridge" and not source.startswith("hfbridge."):
                continue
            for alias in node.names:
                local = alias.asname or alias.name
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    module.bindings[local] = (submodule, None)
                    if at_import:
                        module.imports.add(submodule)
                    continue
                module.bindings[local] = (source, alias.name)
                if at_import:
                    module.imports.add(source)
                if _is_private(alias.name):
                    module.private_names.append((node.lineno, f"from {source} import {alias.name}"))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "hfbridge" or alias.name.startswith("hfbridge."):
                    if at_import:
                        module.imports.add(alias.name)
                    if alias.asname:
                        module.bindings[alias.asname] = (alias.name, None)
                    else:
                        module.bindings["hfbridge"] = ("hfbridge", None)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and _is_private(
            node.name
        ):
            module.defined_attrs.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _is_private(node.attr):
            module.defined_attrs.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _is_private(node.id):
            module.defined_attrs.add(
                node.id
            )  # class-level fields (dataclass `_x: int = 0`), module constants
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and _is_private(node.target.id)
        ):
            module.defined_attrs.add(node.target.id)


for _module in MODULES.values():
    _analyse(_module)


def _module_of(module: Module, expr: ast.expr) -> str | None:
    """The hfbridge module an expression names (``_padding``, ``hfbridge.collators._padding``), else None."""
    if isinstance(expr, ast.Name):
        bound = module.bindings.get(expr.id)
        return bound[0] if bound is not None and bound[1] is None else None
    if isinstance(expr, ast.Attribute):
        parent = _module_of(module, expr.value)
        if parent is not None and f"{parent}.{expr.attr}" in MODULES:
            return f"{parent}.{expr.attr}"
    return None


def private_reads() -> list[str]:
    """Every place a module reads an underscore name that belongs to another hfbridge module."""
    owners: dict[str, set[str]] = {}
    for module in MODULES.values():
        for attr in module.defined_attrs:
            owners.setdefault(attr, set()).add(module.name)
    problems = []
    for module in MODULES.values():
        rel = module.path.relative_to(PACKAGE_DIR.parent)
        problems += [f"{rel}:{line}: {text}" for line, text in module.private_names]
        for node in ast.walk(module.tree):
            if not (isinstance(node, ast.Attribute) and _is_private(node.attr)):
                continue
            target = _module_of(module, node.value)
            if target is not None:
                if f"{target}.{node.attr}" not in MODULES:
                    problems.append(f"{rel}:{node.lineno}: {ast.unparse(node)} (private name of {target})")
                continue
            others = owners.get(node.attr, set()) - {module.name}
            if others and node.attr not in module.defined_attrs:
                problems.append(
                    f"{rel}:{node.lineno}: {ast.unparse(node)} (private attribute defined in {sorted(others)})"
                )
    return sorted(set(problems))


def import_cycles() -> list[list[str]]:
    """Strongly connected components of the import-time graph with more than one module (Tarjan)."""
    graph = {name: sorted(m.imports & MODULES.keys() - {name}) for name, m in MODULES.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in graph:
        if name not in index:
            visit(name)
    return sorted(cycles)


def _classes() -> dict[tuple[str, str], tuple[ast.ClassDef, Module]]:
    return {
        (m.name, node.name): (node, m)
        for m in MODULES.values()
        for node in m.tree.body
        if isinstance(node, ast.ClassDef)
    }


CLASSES = _classes()


def _resolve_class(module: Module, expr: ast.expr, depth: int = 0) -> tuple[str, str] | None:
    """The hfbridge (module, class) a base-class expression names, following re-exports; None if foreign."""
    if isinstance(expr, ast.Subscript):
        expr = expr.value
    if depth > 10:
        return None
    if isinstance(expr, ast.Name):
        if (module.name, expr.id) in CLASSES:
            return module.name, expr.id
        bound = module.bindings.get(expr.id)
        if bound is None or bound[1] is None:
            return None
        source, original = bound
        return _resolve_class(MODULES[source], ast.Name(original), depth + 1) if source in MODULES else None
    if isinstance(expr, ast.Attribute):
        target = _module_of(module, expr.value)
        if target is not None:
            return _resolve_class(MODULES[target], ast.Name(expr.attr), depth + 1)
    return None


def _allowed_base(module: Module, expr: ast.expr, depth: int = 0) -> bool:
    """A Protocol, or an exception class (ours or a builtin), may be inherited from."""
    resolved = _resolve_class(module, expr)
    if resolved is None:
        name = ast.unparse(expr.value if isinstance(expr, ast.Subscript) else expr).split(".")[-1]
        builtin = getattr(builtins, name, None)
        return name == "Protocol" or (isinstance(builtin, type) and issubclass(builtin, BaseException))
    node, owner = CLASSES[resolved]
    return depth < 10 and any(_allowed_base(owner, base, depth + 1) for base in node.bases)


def inheritance() -> list[str]:
    """Every hfbridge class that inherits from another hfbridge class that is neither a Protocol nor an exception."""
    problems = []
    for (_owner, cls), (node, module) in CLASSES.items():
        for base in node.bases:
            resolved = _resolve_class(module, base)
            if resolved is not None and not _allowed_base(module, base):
                rel = module.path.relative_to(PACKAGE_DIR.parent)
                problems.append(f"{rel}:{node.lineno}: {cls}({ast.unparse(base)}) from {'.'.join(resolved)}")
    return sorted(problems)


def test_the_checks_see_the_package() -> None:
    assert "hfbridge.collators._padding" in MODULES
    assert MODULES["hfbridge.collators"].imports, "the collators package imports its private modules"
    assert len(CLASSES) > 20


def test_no_module_reads_another_modules_underscore_names() -> None:
    problems = private_reads()
    assert not problems, "private names read across modules:\n" + "\n".join(problems)


def test_no_import_circle_between_modules() -> None:
    cycles = import_cycles()
    assert not cycles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_implementation_inheritance_between_hfbridge_classes() -> None:
    problems = inheritance()
    assert not problems, "implementation inheritance:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("from hfbridge.collators._padding import _layout\n", private_reads),
        ("from hfbridge.collators import _padding\nx = _padding._layout\n", private_reads),
        # an attribute that only another module defines, read off an object (like `cfg._frozen_label2id` was)
        (
            f"def f(obj):\n    return obj.{min(MODULES['hfbridge.collators._padding'].defined_attrs)}\n",
            private_reads,
        ),
    ],
)
def test_the_checks_catch_a_planted_violation(source: str, rule: object) -> None:
    planted = Module("hfbridge._planted", PACKAGE_DIR / "_planted.py", ast.parse(source), False)
    _analyse(planted)
    MODULES[planted.name] = planted
    try:
        assert rule(), "the planted violation was not reported"  # type: ignore[operator]
    finally:
        del MODULES[planted.name]


def test_the_checks_catch_a_planted_circle_and_inheritance() -> None:
    a = Module(
        "hfbridge._planted_a", PACKAGE_DIR / "_planted_a.py", ast.parse("import hfbridge._planted_b\n"), False
    )
    b_source = "from hfbridge._planted_a import Base\nclass Base2:\n    pass\nclass Child(Base2):\n    pass\n"
    b = Module("hfbridge._planted_b", PACKAGE_DIR / "_planted_b.py", ast.parse(b_source), False)
    b.tree.body.insert(0, ast.parse("import hfbridge._planted_a").body[0])
    for planted in (a, b):
        _analyse(planted)
        MODULES[planted.name] = planted
    CLASSES.update({(b.name, "Base2"): (b.tree.body[2], b), (b.name, "Child"): (b.tree.body[3], b)})  # type: ignore[dict-item]
    try:
        assert ["hfbridge._planted_a", "hfbridge._planted_b"] in import_cycles()
        assert any("Child(Base2)" in p for p in inheritance())
    finally:
        del MODULES[a.name], MODULES[b.name], CLASSES[(b.name, "Base2")], CLASSES[(b.name, "Child")]
