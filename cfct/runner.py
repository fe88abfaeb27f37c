"""Execute a chapter with other parameters: jupytext reads the MyST notebook, papermill runs it.

The executed notebook and the chapter's tidy result tables (written by :func:`save_table`) land in one run
folder. Parameters are validated against the chapter's schema before a kernel starts, so a typo costs
milliseconds, not a failed run.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from cfct.chapters import get_chapter, resolve
from cfct.errors import CfctError

KERNEL_NAME = "python3"
RUN_DIR_ENV = "CFCT_RUN_DIR"


class ChapterFailed(CfctError, RuntimeError):
    """A chapter raised in one of its cells; the message names the cell and its error."""


@dataclass(frozen=True)
class ChapterRun:
    """Where a chapter run wrote its outputs."""

    out_dir: Path
    notebook: Path
    tables: tuple[Path, ...]


def parse_assignments(assignments: list[str] | tuple[str, ...], chapter: str) -> dict[str, Any]:
    """Turn ``["key=value", ...]`` from the command line into typed parameters of ``chapter``."""
    spec = get_chapter(chapter)
    schema = {p.name: p for p in spec.params}
    params: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep:
            raise CfctError(f"parameter {item!r} must look like key=value")
        if key not in schema:
            raise CfctError(
                f"unknown parameter {key!r} for chapter {spec.id!r}; valid parameters: {', '.join(schema)}"
            )
        params[key] = schema[key].parse_text(text)
    return params


def save_table(table: pd.DataFrame, name: str) -> Path | None:
    """Write a chapter's tidy result table as CSV into the current run folder (``cfct run``).

    Outside ``cfct run`` (e.g. while Jupyter Book executes the page) this does nothing and returns None.
    """
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        return None
    path = Path(run_dir) / "tables" / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    table.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def _failure_message(error: Exception) -> str:
    ename = getattr(error, "ename", type(error).__name__)
    evalue = getattr(error, "evalue", str(error))
    cell = getattr(error, "exec_count", None)
    source = getattr(error, "source", "") or ""
    head = "\n".join(source.strip().splitlines()[:6])
    where = f"cell [{cell}]" if cell is not None else "a cell"
    return f"{where} failed with {ename}: {evalue}\n--- cell source ---\n{head}"


def run_chapter(
    chapter: str,
    params: Mapping[str, Any] | None = None,
    *,
    profile: str | None = None,
    out_dir: Path | str | None = None,
    kernel_name: str = KERNEL_NAME,
    progress: bool = True,
) -> ChapterRun:
    """Execute one chapter through papermill.

    Parameters
    ----------
    chapter : str
        Chapter id or alias (``"3"``, ``"06_transferability"``).
    params : mapping, optional
        Typed parameter values (see :func:`parse_assignments` for command-line strings).
    profile : str, optional
        ``smoke``, ``quick`` or ``paper``.
    out_dir : path, optional
        Run folder (default ``runs/<chapter>-<UTC timestamp>``).
    kernel_name : str
        Jupyter kernel, named explicitly so papermill does not guess from the notebook metadata.

    Raises
    ------
    ConfigError
        Bad parameters, before anything executes.
    ChapterFailed
        A cell raised; the message shows the cell's error and source.
    """
    import jupytext
    import nbformat
    import papermill

    spec = get_chapter(chapter)
    values = dict(params or {})
    if profile is not None:
        values["profile"] = profile
    resolve(spec.id, **values)  # validate early; the notebook resolves again inside the kernel
    if not spec.notebook.exists():
        raise CfctError(f"chapter {spec.id!r} has no notebook at {spec.notebook}")
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out = Path(out_dir) if out_dir is not None else Path("runs") / f"{spec.id}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    source_nb = out / f"{spec.id}.source.ipynb"
    nbformat.write(jupytext.read(spec.notebook), source_nb)
    executed = out / f"{spec.id}.ipynb"
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(out.resolve())
    try:
        papermill.execute_notebook(
            str(source_nb),
            str(executed),
            parameters=values,
            kernel_name=kernel_name,
            language="python",
            cwd=str(spec.notebook.parent),
            progress_bar=progress,
        )
    except papermill.PapermillExecutionError as error:
        raise ChapterFailed(f"chapter {spec.id!r}: {_failure_message(error)}\nexecuted notebook: {executed}") from None
    finally:
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous
    source_nb.unlink(missing_ok=True)
    tables = tuple(sorted((out / "tables").glob("*.csv"))) if (out / "tables").exists() else ()
    return ChapterRun(out_dir=out, notebook=executed, tables=tables)


def check_book_build(html_dir: Path | str) -> list[str]:
    """Problems of a rendered book: pages whose execution failed (myst-nb error reports) or that are missing.

    Jupyter Book 1 with ``--keep-going`` renders a page even when one of its cells raised, and leaves the
    traceback in ``reports/<page>.err.log``; ``make book`` calls this to fail in that case.
    """
    import yaml

    html = Path(html_dir)
    problems = [f"execution failed: {log.relative_to(html)}" for log in sorted(html.glob("reports/**/*.err.log"))]
    toc = yaml.safe_load((html.parent.parent / "_toc.yml").read_text())
    pages = [toc["root"]] + [entry["file"] for entry in toc.get("chapters", [])]
    problems += [f"page not rendered: {page}" for page in pages if not (html / f"{page}.html").exists()]
    return problems


if __name__ == "__main__":  # python -m cfct.runner check-book _build/html
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "check-book":
        found = check_book_build(sys.argv[2])
        for line in found:
            print(line, file=sys.stderr)
        raise SystemExit(1 if found else 0)
    raise SystemExit("usage: python -m cfct.runner check-book <html dir>")
