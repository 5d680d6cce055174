"""The executable-docs harness: Sybil reads the fenced blocks of README.md and docs/*.md, we evaluate them.

* ``python`` blocks run in order, one namespace per page (a page's first block is its visible setup: offline
  stand-ins for hub models and datasets). A line ending in ``# -> EXPECTED`` is checked like a REPL line: the
  ``repr`` of its value, or what it prints when the value is ``None``, or ``raises Type: message`` when it raises,
  must match ``EXPECTED`` (``...`` matches anything, whitespace runs are equal), as in doctest.
* ``bash`` blocks run command by command; ``python examples/NAME.py ...`` runs with a step cap and a tiny model
  in place of the default MiniLM (see ``capped_argv``); any other command is an error, so every shell block
  either runs or is marked not to.
* ``<!-- skip: next "reason" -->`` marks a block that must not run (Sybil's own directive). ``NOT_RUN`` lists every
  such block; ``test_harness.py`` asserts that list, so a newly skipped block shows up in review.
* ``KNOWN_FAILING`` names snippets that fail today because of a code trap another branch fixes; they are
  strict ``xfail``s, so the suite says when a fix has landed and the mark can go.
"""

from __future__ import annotations

import ast
import contextlib
import doctest
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sybil import Document, Example, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# (page, reason) of every block marked `<!-- skip: next "reason" -->`, in page order
NOT_RUN: list[tuple[str, str]] = [
    ("README.md", "installs into a new venv from the package index: the lead runs it on a fresh clone"),
    ("README.md", "installs into a new venv from the package index: CI (.ci/run) runs exactly this line"),
    ("docs/adapters.md", "downloads IMDB from the hub; the setup block above builds an IMDB-shaped stand-in"),
    ("docs/examples.md", "installs packages into the current environment"),
    ("docs/examples.md", "needs the hub (network or a local cache) for the IMDB dataset"),
    (
        "docs/examples.md",
        "multi-process launchers; tests/examples/test_train_loop.py runs both with a tiny model",
    ),
    (
        "docs/sharded.md",
        "needs torchrun --nproc_per_node=2 (a process group); tests/callbacks/test_sharded.py runs this pattern",
    ),
]

# (page, a line of the block) -> why it fails today and whose fix it waits for
KNOWN_FAILING: dict[tuple[str, str], str] = {}

OUTPUT_COMMENT = re.compile(r"#\s*->\s?(?P<expected>.*)$")
CHECKER = doctest.OutputChecker()
CHECK_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def output_comments(source: str) -> dict[int, str]:
    """``{line (1-based in source): expected}`` for every ``# -> expected`` comment (tokenized: not in strings)."""
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT and (m := OUTPUT_COMMENT.match(tok.string)):
            found[tok.start[0]] = m.group("expected").strip()
    return found


def _shown(stmt: ast.Expr, namespace: dict[str, Any], filename: str) -> str:
    """What a REPL shows for one expression statement: its repr, what it printed, or the exception."""
    code = compile(ast.Expression(stmt.value), filename, "eval")
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            value = eval(code, namespace)
    except Exception as err:
        return f"raises {type(err).__name__}: {err}"
    return repr(value) if value is not None else buffer.getvalue().rstrip("\n")


def run_python(source: str, namespace: dict[str, Any], *, filename: str, first_line: int) -> None:
    """Run a block statement by statement, checking each ``# -> expected`` line; raise on any mismatch."""
    tree = ast.parse(source, filename)
    expected = output_comments(source)
    claimed = set()
    for stmt in tree.body:
        lines = set(range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1))
        want = [expected[n] for n in sorted(lines & expected.keys())]
        ast.increment_lineno(stmt, first_line - 1)
        if not want:
            exec(compile(ast.Module([stmt], []), filename, "exec"), namespace)
            continue
        claimed |= lines & expected.keys()
        line = stmt.lineno
        if not isinstance(stmt, ast.Expr) or len(want) != 1:
            raise AssertionError(f"{filename}:{line}: a `# ->` check needs one expression statement")
        got = _shown(stmt, namespace, filename)
        if not CHECKER.check_output(want[0] + "\n", got + "\n", CHECK_FLAGS):
            raise AssertionError(f"{filename}:{line}: shown output differs\n  docs: {want[0]}\n  real: {got}")
    stray = sorted(set(expected) - claimed)
    if stray:
        raise AssertionError(f"{filename}: `# ->` comments outside any statement at block lines {stray}")


def evaluate_python(example: Example) -> None:
    source = str(example.parsed)
    first = example.line + 1 + getattr(example.parsed, "line_offset", 0)
    run_python(source, example.namespace, filename=example.path, first_line=first)
    example.namespace.pop("__builtins__", None)


# --- shell blocks -------------------------------------------------------------------------------------------

STEP_CAP = ["--max-steps", "2", "--no-progress"]
# script -> the tiny model folder that stands in for the default MiniLM (set by the test module's fixture; the
# real MiniLM runs each script in tests/examples, marked `pretrained`)
SHELL_MODELS: dict[str, Path] = {}
EVAL_CAP = {"examples/finetune.py": ["--eval-steps", "2"], "examples/train_loop.py": ["--eval-steps", "2"]}


def shell_commands(source: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, split as the shell would."""
    joined = re.sub(r"\\\n", " ", source)
    return [argv for line in joined.splitlines() if (argv := shlex.split(line, comments=True))]


def capped_argv(argv: list[str]) -> list[str]:
    """``python examples/X.py ARGS`` -> ``[examples/X.py, ARGS + step cap]``: the cap replaces a training length,
    and a simulated crash comes after step 1, right after a checkpoint, so that ``--resume`` has one to read."""
    if len(argv) < 2 or argv[0] not in ("python", "python3") or not argv[1].startswith("examples/"):
        raise AssertionError(f"the harness runs only `python examples/NAME.py ...` commands, got {argv}")
    args = list(argv[2:])
    for flag in ("--epochs", "--max-steps", "--simulate-crash-at"):
        if flag in args:
            i = args.index(flag)
            del args[i : i + 2]
    cap = [*STEP_CAP, *EVAL_CAP.get(argv[1], [])]
    if "--model" not in args and argv[1] in SHELL_MODELS:
        cap += ["--model", str(SHELL_MODELS[argv[1]]), "--ignore-mismatched-sizes"]
    if "--simulate-crash-at" in argv:
        cap = [*STEP_CAP, "--eval-steps", "1", "--simulate-crash-at", "1", *cap[len(STEP_CAP) + 2 :]]
    return [argv[1], *args, *cap]


def example_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def run_example_script(script: str, args: list[str]) -> tuple[int, str]:
    """``examples/<script>`` in this process (no second torch import); a simulated crash runs as a subprocess,
    since it ends its process with ``os._exit``. Returns the exit code and the error output."""
    if "--simulate-crash-at" in args:
        proc = subprocess.run(
            [sys.executable, script, *args], env=example_env(), capture_output=True, text=True, timeout=300
        )
        return proc.returncode, proc.stderr
    spec = importlib.util.spec_from_file_location(f"docs_{Path(script).stem}", ROOT / script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved_path, saved_env = list(sys.path), dict(os.environ)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            spec.loader.exec_module(module)
            try:
                code = module.main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_env)
    return code, err.getvalue()


def evaluate_bash(example: Example) -> None:
    """Each command runs with the step cap in the page's scratch folder; a non-zero exit fails the block."""
    for argv in shell_commands(str(example.parsed)):
        script, *args = capped_argv(argv)
        code, err = run_example_script(script, args)
        expected = 17 if "--simulate-crash-at" in args else 0  # the simulated crash exits 17 on purpose
        if code != expected:
            raise AssertionError(
                f"{example.path}:{example.line}: `{shlex.join(argv)}` (run as {shlex.join(args)}) exited "
                f"{code}, not {expected}\n{err[-3000:]}"
            )


SYBIL = Sybil(
    parsers=[
        CodeBlockParser("python", evaluate_python),
        CodeBlockParser("bash", evaluate_bash),
        SkipParser(),
    ],
)


def relative(path: str | Path) -> str:
    return Path(path).resolve().relative_to(ROOT).as_posix()


@dataclass
class Page:
    """One page's examples, evaluated in order in a scratch folder (a block may depend on earlier ones)."""

    path: Path
    workdir: Path | None = None
    document: Document = field(init=False)
    examples: list[Example] = field(init=False)
    done: int = 0

    def __post_init__(self) -> None:
        self.document = SYBIL.parse(self.path)
        self.examples = list(self.document)

    @contextlib.contextmanager
    def _in_workdir(self) -> Iterator[None]:
        assert self.workdir is not None
        before = os.getcwd()
        os.chdir(self.workdir)
        try:
            yield
        finally:
            os.chdir(before)

    def run_to(self, index: int) -> None:
        """Evaluate every earlier example (their failures are their own tests'), then example ``index``."""
        with self._in_workdir():
            while self.done < index:
                self.done += 1
                with contextlib.suppress(Exception):
                    self.examples[self.done - 1].evaluate()
            self.done = index + 1
            self.examples[index].evaluate()


def is_skip(example: Example) -> bool:
    return isinstance(example.parsed, tuple)


def block_text(example: Example) -> str:
    return str(example.parsed)


def known_failure(example: Example) -> str | None:
    page = relative(example.path)
    for (where, line), reason in KNOWN_FAILING.items():
        if where == page and not is_skip(example) and line in block_text(example):
            return reason
    return None


def not_run_blocks() -> list[tuple[str, str]]:
    """``(page, reason)`` of every skip directive in the pages, read from the Markdown itself."""
    found = []
    for path in PAGES:
        for example in SYBIL.parse(path):
            if is_skip(example):
                action, reason = example.parsed
                found.append((relative(path), str(eval(reason, {})) if reason else f"<no reason: {action}>"))
    return found
