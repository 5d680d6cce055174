"""The docs harness itself: it fails on a broken snippet or a wrong shown output, lists every block it does not
run, and lets no fenced block of the pages escape it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.harness import (
    KNOWN_FAILING,
    NOT_RUN,
    PAGES,
    SYBIL,
    Page,
    capped_argv,
    is_skip,
    not_run_blocks,
    output_comments,
    relative,
    run_python,
)

FENCE = re.compile(r"^```(\S*)", re.MULTILINE)


def page(tmp_path: Path, text: str) -> Page:
    path = tmp_path / "page.md"
    path.write_text(text)
    result = Page(path)
    result.workdir = tmp_path
    return result


def test_every_block_not_run_is_marked_with_a_reason_and_listed() -> None:
    assert not_run_blocks() == NOT_RUN


def test_every_fenced_block_is_run_or_marked() -> None:
    """Python and bash fences are all examples; any other fence is plain text (a layout tree, a table)."""
    for path in PAGES:
        text = path.read_text()
        languages = FENCE.findall(text)[::2]  # opening fences only
        assert set(languages) <= {"python", "bash", "text", ""}, (path, languages)
        code = [lang for lang in languages if lang in ("python", "bash")]
        examples = [e for e in SYBIL.parse(path) if not is_skip(e)]
        assert len(examples) == len(code), relative(path)


def test_known_failures_name_existing_blocks() -> None:
    blocks = {(relative(p), str(e.parsed)) for p in PAGES for e in SYBIL.parse(p) if not is_skip(e)}
    for (where, line), reason in KNOWN_FAILING.items():
        assert any(w == where and line in text for w, text in blocks), (where, line, reason)


def test_a_misspelled_argument_fails_the_suite(tmp_path: Path) -> None:
    doc = page(
        tmp_path,
        "Setup:\n\n```python\nimport hfbridge\nrows = ['a b', 'c']\n```\n\n"
        "A broken snippet:\n\n```python\nhfbridge.adapt(rows, None, task='causal-lm', max_lenght=8)\n```\n",
    )
    doc.run_to(0)
    with pytest.raises(TypeError, match="max_lenght"):
        doc.run_to(1)


def test_a_wrong_shown_output_fails_and_a_right_one_passes(tmp_path: Path) -> None:
    doc = page(
        tmp_path,
        "```python\nx = {'b': 1, 'a': 0}\nx                     # -> {'b': 1, 'a': 0}\n"
        "print('one', 'two')   # -> one two\nsorted(x)             # -> ['a', ...]\n```\n\n"
        "```python\nx['b']                # -> 2\n```\n\n"
        "```python\nint('z')              # -> raises ValueError: invalid literal for int() ...\n```\n",
    )
    doc.run_to(0)
    with pytest.raises(AssertionError, match=r"shown output differs\n  docs: 2\n  real: 1"):
        doc.run_to(1)
    doc.run_to(2)


def test_an_output_comment_must_sit_on_an_expression() -> None:
    with pytest.raises(AssertionError, match="one expression statement"):
        run_python("y = 1   # -> 1\n", {}, filename="page.md", first_line=1)
    assert output_comments("s = '# -> not a comment'\ns  # -> '# -> not a comment'\n") == {
        2: "'# -> not a comment'"
    }


def test_shell_commands_get_the_step_cap_and_others_are_refused() -> None:
    assert capped_argv(["python", "examples/finetune.py", "--epochs", "2", "--lr", "3e-4"])[:5] == [
        "examples/finetune.py",
        "--lr",
        "3e-4",
        "--max-steps",
        "2",
    ]
    with pytest.raises(AssertionError, match=r"only `python examples/NAME\.py"):
        capped_argv(["pip", "install", "hfbridge"])


@pytest.mark.slow
def test_a_failing_shell_command_fails_the_block(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(Path(__file__).resolve().parents[2] / "examples")
    doc = page(tmp_path, "```bash\npython examples/finetune.py --batching fastest\n```\n")
    with pytest.raises(AssertionError, match=r"exited 2, not 0[\s\S]*invalid choice: 'fastest'"):
        doc.run_to(0)


@pytest.mark.parametrize("marker", ["<!-- demo-command -->", "<!-- test-command -->"])
def test_the_readme_commands_follow_their_markers(marker: str) -> None:
    """.ci/run reads the line after the test-command marker: the fence and the command must come right after it."""
    lines = (PAGES[0]).read_text().splitlines()
    at = lines.index(marker)
    assert lines[at + 1] == "```bash"
    assert lines[at + 2].startswith("python3 -m venv .venv && ")
    assert lines[at - 1].startswith("<!-- skip: next ")
