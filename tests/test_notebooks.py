"""The chapters' .ipynb twins (Colab, Binder) and how the book renders: launch URLs, offline MathJax, citations.

The .md chapters are the source of truth; ``make notebooks`` writes the committed .ipynb twins from them
(jupytext pairing ``ipynb,md:myst``). A twin that differs from what jupytext writes today has drifted.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((REPO / "_config.yml").read_text())
TOC = yaml.safe_load((REPO / "_toc.yml").read_text())
CHAPTER_PAGES = [e["file"] for e in TOC["chapters"] if e["file"].startswith("chapters/")]


def colab_url(page: str) -> str:
    """The Colab URL sphinx-book-theme 1.x builds for ``page`` (``header_buttons/launch.py``): the .ipynb
    beside the .md when one exists, under ``path_to_book`` on the configured branch."""
    repo = CONFIG["repository"]
    org, name = repo["url"].removeprefix("https://github.com/").strip("/").split("/")
    extension = ".ipynb" if (REPO / f"{page}.ipynb").exists() else ".md"
    prefix = repo.get("path_to_book", "").strip("/")
    rel = f"{prefix}/{page}{extension}" if prefix else f"{page}{extension}"
    base = CONFIG["launch_buttons"]["colab_url"].strip("/")
    return f"{base}/github/{org}/{name}/blob/{repo['branch']}/{rel}"


def content(nb: nbformat.NotebookNode) -> tuple:
    """What a reader sees of a notebook: its metadata and each cell's type, tags/metadata and source (not the
    random cell ids, which ``jupytext --update`` keeps stable anyway)."""
    cells = tuple((c.cell_type, dict(c.metadata), c.source) for c in nb.cells)
    return dict(nb.metadata), cells


def tracked(path: str) -> bool:
    proc = subprocess.run(["git", "ls-files", "--error-unmatch", path], cwd=REPO, capture_output=True)
    return proc.returncode == 0


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_twin_matches_its_markdown(page: str) -> None:
    twin = REPO / f"{page}.ipynb"
    assert twin.exists(), f"{twin.name} is missing: run `make notebooks`"
    expected = nbformat.reads(jupytext.writes(jupytext.read(REPO / f"{page}.md"), fmt="ipynb"), as_version=4)
    actual = nbformat.read(twin, as_version=4)
    assert content(actual) == content(expected), f"{twin.name} has drifted from {page}.md: run `make notebooks`"


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_twin_is_a_valid_notebook_that_sets_itself_up(page: str) -> None:
    nb = nbformat.read(REPO / f"{page}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["jupytext"]["formats"] == "ipynb,md:myst"
    assert nb.metadata.get("accelerator") == "GPU", "Colab opens the twin on a GPU runtime when one is free"
    first = nb.cells[0]
    assert first.cell_type == "code"
    assert 'find_spec("cfct") is None' in first.source and "pip" in first.source
    assert "torch.cuda.is_available()" in first.source
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "twins are committed without outputs"


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_colab_button_points_at_a_committed_notebook(page: str) -> None:
    url = colab_url(page)
    assert url.startswith("https://colab.research.google.com/github/")
    rel = url.split(f"/blob/{CONFIG['repository']['branch']}/", 1)[1]
    assert rel.endswith(".ipynb"), url
    assert (REPO / rel).is_file(), url
    if (REPO / ".git").exists():
        assert tracked(rel), f"{rel} exists but is not committed, so Colab cannot open {url}"


def test_book_reads_only_the_markdown_twin() -> None:
    assert "chapters/*.ipynb" in CONFIG["exclude_patterns"]
    assert CONFIG["only_build_toc_files"] is True


@pytest.mark.parametrize("page", CHAPTER_PAGES)
def test_function_listings_are_collapsed(page: str) -> None:
    nb = jupytext.read(REPO / f"{page}.md")
    listings = [c for c in nb.cells if c.cell_type == "code" and re.search(r"getsource|show_source\(", c.source)
                and "def show_source" not in c.source]
    assert listings, "each chapter shows the code of its equations"
    for cell in listings:
        assert "hide-cell" in cell.metadata.get("tags", []), cell.source[:80]


RENDER_PAGE = nbformat.v4.new_notebook(
    metadata={"kernelspec": {"name": "python3", "display_name": "Python 3"}},
    cells=[
        nbformat.v4.new_markdown_cell("# Render check\n\nInline $\\alpha^2$ and\n\n$$\\sum_i \\rho_i$$"),
        nbformat.v4.new_code_cell(
            "display(Markdown(text_with_a_cite_role))",
            outputs=[nbformat.v4.new_output(
                "display_data", data={"text/markdown": "q from {cite}`demsar2006statistical`"})],
        ),
        nbformat.v4.new_markdown_cell(
            "```{exercise} Try it\n:label: ex-render\n\nDo it.\n```\n\n"
            "````{solution} ex-render\n:class: dropdown\n\n```python\nassert True\n```\n````"),
    ],
)


@pytest.fixture(scope="module")
def built_book(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The book with the project's configuration, the chapters unexecuted, plus one page with stored outputs."""
    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb is None:
        pytest.skip("jupyter-book is not installed (pip install 'cfct[book]')")
    root = tmp_path_factory.mktemp("book")
    shutil.copytree(REPO / "book", root / "book")
    shutil.copytree(REPO / "chapters", root / "chapters", ignore=shutil.ignore_patterns("*.ipynb_checkpoints"))
    nbformat.write(RENDER_PAGE, root / "book" / "render_check.ipynb")
    config = dict(CONFIG, execute=dict(CONFIG["execute"], execute_notebooks="off"))
    (root / "_config.yml").write_text(yaml.safe_dump(config))
    toc = dict(TOC, chapters=[*TOC["chapters"], {"file": "book/render_check"}])
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    proc = subprocess.run([jb, "build", str(root)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "_build" / "html"


def test_built_pages_load_mathjax_from_the_book(built_book: Path) -> None:
    for page in [*CHAPTER_PAGES, "book/render_check"]:
        html = (built_book / f"{page}.html").read_text()
        scripts = re.findall(r'<script[^>]*src="([^"]*)"', html)
        mathjax = [s for s in scripts if "mathjax" in s.lower() or "tex-mml" in s]
        assert mathjax and all("://" not in s for s in mathjax), (page, mathjax)
    assert (built_book / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()


def test_built_chapters_link_colab_to_their_twin(built_book: Path) -> None:
    for page in CHAPTER_PAGES:
        html = (built_book / f"{page}.html").read_text()
        assert colab_url(page) in html, page


def test_markdown_printed_by_code_renders_citations_and_exercises(built_book: Path) -> None:
    html = (built_book / "book" / "render_check.html").read_text()
    assert "{cite}" not in html
    assert re.search(r'class="bibtex-citation"[^>]*>\[<a[^>]*>Dem', html), "the citation links to the bibliography"
    assert re.search(r'class="[^"]*solution[^"]*dropdown', html), "solutions are hidden behind a toggle"


def test_chapter_exercises_render_with_hidden_solutions(built_book: Path) -> None:
    for page in CHAPTER_PAGES:
        html = (built_book / f"{page}.html").read_text()
        exercises = re.findall(r'<div class="exercise admonition" id="(ex[^"]+)"', html)
        solutions = re.findall(r'<div class="solution dropdown admonition" id="([^"]*solution[^"]*)"', html)
        assert len(exercises) >= 4 and len(solutions) == len(exercises), (page, exercises, solutions)
