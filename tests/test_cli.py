"""Command line and runner: listing, early validation, failing cells (cfct.cli, cfct.runner)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cfct.cli import main
from cfct.runner import check_book_build, parse_assignments

REPO = Path(__file__).resolve().parent.parent


def test_list_shows_chapters_parameters_targets_and_sources(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "03_hidden_representations" in out and "06_transferability" in out
    assert "natural_source" in out and "pretrained:resnet18:cifar10" in out  # profile default shown
    assert "breastmnist" in out and "pathmnist" in out  # local and downloadable targets
    assert "checkpoint" in out and "convnext_tiny" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "9"], "unknown chapter '9'; valid choices: 3 (03_hidden_representations)"),
        (["run", "3", "-p", "fold=2"], "unknown parameter 'fold' for chapter '03_hidden_representations'"),
        (["run", "3", "-p", "folds=two"], "parameter 'folds' expects int, got 'two'"),
        (["run", "3", "-p", "targets=kneemnist"], "unknown"),
        (["run", "3", "-p", "natural_source=imagenet:resnet51"], "valid choices"),
        (["run", "3", "--profile", "fast"], "unknown profile 'fast'; valid choices: smoke, quick, paper"),
    ],
)
def test_bad_input_fails_early_with_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([*argv, "--out", str(tmp_path)] if argv[0] == "run" else argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "03_hidden_representations.ipynb").exists()  # nothing executed


def test_typed_assignments() -> None:
    params = parse_assignments(["folds=4", "targets=breastmnist", "lr=0.01"], "3")
    assert params == {"folds": 4, "targets": "breastmnist", "lr": 0.01}


def test_failing_cell_gives_exit_1_and_the_cell_error(tmp_path: Path) -> None:
    # dermamnist is a valid target, but its file is not on disk and we are offline: the page's data cell
    # fails, and the runner must say which cell and why (the missing file and where it was looked for).
    proc = subprocess.run(
        [sys.executable, "-m", "cfct.cli", "run", "3", "--profile", "smoke", "-p", "targets=dermamnist",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    assert "DataMissingError" in proc.stderr
    assert "dermamnist.npz" in proc.stderr
    assert (tmp_path / "03_hidden_representations.ipynb").exists()  # the executed notebook is kept


def test_book_check_reports_failed_pages(tmp_path: Path) -> None:
    html = tmp_path / "_build" / "html"
    (html / "reports").mkdir(parents=True)
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: chapters/x\n")
    (html / "book").mkdir()
    (html / "book" / "intro.html").write_text("ok")
    (html / "reports" / "x.err.log").write_text("Traceback")
    problems = check_book_build(html)
    assert problems == ["execution failed: reports/x.err.log", "page not rendered: chapters/x"]
