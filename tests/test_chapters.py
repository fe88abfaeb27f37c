"""Every chapter in the table of contents executes end to end at the smoke profile.

Two ways, as users run them: ``cfct run <chapter> --profile smoke`` (papermill through the runner), and the
committed .ipynb twin (what Colab and Binder open) under ``pytest --nbval-lax``. Both share the session's data
directory, so the second execution reads the first one's cached experiments.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pandas as pd
import pytest
import yaml

from cfct import claims
from cfct.chapters import get_chapter

REPO = Path(__file__).resolve().parent.parent
TOC_CHAPTERS = [
    entry["file"].split("/")[-1]
    for entry in yaml.safe_load((REPO / "_toc.yml").read_text())["chapters"]
    if entry["file"].startswith("chapters/")
]


def test_toc_lists_only_existing_pages() -> None:
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    for page in [toc["root"]] + [e["file"] for e in toc["chapters"]]:
        assert (REPO / f"{page}.md").exists(), page


@pytest.mark.parametrize("chapter_id", TOC_CHAPTERS)
def test_parameters_cell_matches_schema(chapter_id: str) -> None:
    nb = jupytext.read(REPO / "chapters" / f"{chapter_id}.md")
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one parameters cell"
    names = {line.split("=")[0].strip() for line in cells[0].source.splitlines() if "=" in line}
    assert names == {p.name for p in get_chapter(chapter_id).params}


@pytest.mark.chapter
@pytest.mark.parametrize("chapter_id", TOC_CHAPTERS)
def test_chapter_runs_at_smoke_profile(chapter_id: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cfct.cli", "run", chapter_id, "--profile", "smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=2400,  # a slow or shared CI machine
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    executed = nbformat.read(tmp_path / f"{chapter_id}.ipynb", as_version=4)
    errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert list((tmp_path / "tables").glob("*.csv")), "the chapter writes its result tables"
    # its part of the claims ledger: one row per registered finding of the chapter, each with a verdict
    ledger = pd.read_csv(tmp_path / "tables" / "claims_ledger.csv")
    number = get_chapter(chapter_id).number
    assert list(ledger["id"]) == [c.id for c in claims.registry(number)]
    assert set(ledger["verdict"]) <= set(claims.VERDICTS) and (ledger["profile"] == "smoke").any()


@pytest.mark.chapter
def test_chapters_pass_nbval_lax(tmp_path: Path) -> None:
    for chapter_id in TOC_CHAPTERS:  # the committed .ipynb twins (Colab, Binder); test_notebooks checks their sync
        shutil.copy(REPO / "chapters" / f"{chapter_id}.ipynb", tmp_path / f"{chapter_id}.ipynb")
    env = dict(os.environ, CFCT_PROFILE="smoke")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q", str(tmp_path)],
        capture_output=True, text=True, timeout=3600, env=env, cwd=REPO / "chapters",
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
