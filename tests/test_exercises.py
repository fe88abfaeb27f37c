"""Every chapter's exercises: enough of them, each with a hidden solution, and every solution's code runs.

Exercises are sphinx-exercise ``exercise`` / ``solution`` directives at the end of each chapter page. The
``python`` code blocks of a chapter's solutions are run in page order in one namespace, as a student working
through the exercises in one notebook would (a later solution may reuse a helper an earlier one defined); each
solution checks its own result with ``assert``. Solutions that re-run a whole chapter (``run_chapter``) are
self-contained, use the smoke profile and run in a separate test marked ``chapter``, like the chapter
executions.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = [
    entry["file"].split("/")[-1]
    for entry in yaml.safe_load((REPO / "_toc.yml").read_text())["chapters"]
    if entry["file"].startswith("chapters/")
]
MIN_EXERCISES = 4
# An opening fence of three or more backticks with a directive, and the same fence closing it.
DIRECTIVE = re.compile(
    r"^(?P<fence>`{3,})\{(?P<name>exercise|solution)\}[ \t]*(?P<arg>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
PYTHON_BLOCK = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
OPTION = re.compile(r"^:(?P<key>[\w-]+):[ \t]*(?P<value>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    kind: str  # "exercise" or "solution"
    arg: str  # the exercise's title, or the label a solution answers
    options: dict[str, str]
    body: str

    @property
    def code(self) -> list[str]:
        return [m["code"] for m in PYTHON_BLOCK.finditer(self.body)]


def blocks(chapter: str) -> list[Block]:
    """The exercise and solution directives of a chapter page, in page order."""
    text = (REPO / "chapters" / f"{chapter}.md").read_text()
    found = []
    for m in DIRECTIVE.finditer(text):
        body = m["body"]
        options = {o["key"]: o["value"].strip() for o in OPTION.finditer(body.split("\n\n", 1)[0])}
        found.append(Block(m["name"], m["arg"].strip(), options, body))
    return found


def solution_code(chapter: str, *, reruns: bool) -> str:
    """The chapter's solution code in page order: the solutions that re-run a chapter (``reruns``) or the rest.

    A solution that re-runs a chapter is self-contained, so it can run apart from the others.
    """
    codes = [code for b in blocks(chapter) if b.kind == "solution" for code in b.code]
    return "\n\n".join(code for code in codes if ("run_chapter" in code) == reruns)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_exercise_has_a_hidden_solution(chapter: str) -> None:
    found = blocks(chapter)
    exercises = [b for b in found if b.kind == "exercise"]
    solutions = [b for b in found if b.kind == "solution"]
    assert len(exercises) >= MIN_EXERCISES, f"{chapter}: {len(exercises)} exercises"
    labels = [b.options.get("label") for b in exercises]
    assert all(labels) and len(set(labels)) == len(labels), f"{chapter}: exercise labels {labels}"
    assert sorted(b.arg for b in solutions) == sorted(labels), "one solution per exercise, by label"
    for b in solutions:
        assert b.options.get("class") == "dropdown", f"solution of {b.arg} is not behind a toggle"
    assert any(b.code for b in solutions), "solutions run code"
    for b in solutions:
        for code in b.code:
            assert "assert " in code, f"solution of {b.arg}: its code checks nothing"


def test_the_parser_finds_nested_code() -> None:
    page = "````{solution} ex-a\n:class: dropdown\n\nText.\n\n```python\nx = 1\n```\n````\n"
    m = DIRECTIVE.search(page)
    assert m and m["name"] == "solution" and m["arg"] == "ex-a"
    assert [c["code"] for c in PYTHON_BLOCK.finditer(m["body"])] == ["x = 1\n"]


def _run(code: str, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # runs/ folders and figures land in the test's folder
    monkeypatch.setenv("CFCT_PROFILE", "smoke")
    assert os.environ["CFCT_OFFLINE"]  # set by conftest: solutions must run from the local data
    exec(compile(code, f"<solutions of {name}>", "exec"), {"__name__": f"solutions_{name}"})  # noqa: S102


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_solutions_run_and_check_their_results(chapter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = solution_code(chapter, reruns=False)
    assert code.strip(), f"{chapter} has no solution that runs code on its own"
    _run(code, chapter, tmp_path, monkeypatch)


@pytest.mark.chapter
@pytest.mark.parametrize("chapter", [c for c in CHAPTERS if solution_code(c, reruns=True)])
def test_solutions_that_rerun_a_chapter(chapter: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(solution_code(chapter, reruns=True), f"{chapter} (re-runs)", tmp_path, monkeypatch)
