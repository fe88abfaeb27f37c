"""Sphinx extension: serve MathJax 3 from the book itself, so equations render offline.

Jupyter Book 1 (Sphinx's ``sphinx.ext.mathjax``) loads MathJax from a CDN; a book built or read without network
then shows raw LaTeX. The PyPI package ``django-static-mathjax`` ships MathJax 3.2.2 as package data (the Django
wrapper is an empty ``__init__``; nothing of Django is imported or required). This extension copies its
``es5`` bundle into ``_static/mathjax`` of the HTML output and points ``mathjax_path`` at it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError

MATHJAX_SCRIPT = "tex-mml-chtml.js"  # the component Sphinx loads by default, from the CDN
STATIC_SUBDIR = "mathjax"


def mathjax_bundle() -> Path:
    """The folder of the packaged MathJax ``es5`` bundle (holds ``tex-mml-chtml.js``)."""
    try:
        import mathjax  # the module django-static-mathjax installs; a data-only package
    except ImportError as error:
        raise ExtensionError(
            "offline_mathjax needs the package django-static-mathjax (pip install 'cfct[book]')"
        ) from error
    bundle = Path(next(iter(mathjax.__path__))) / "static" / "mathjax" / "es5"
    if not (bundle / MATHJAX_SCRIPT).is_file():
        raise ExtensionError(f"no {MATHJAX_SCRIPT} in {bundle}; reinstall django-static-mathjax")
    return bundle


def _use_local_mathjax(app: Sphinx, config: Config) -> None:
    mathjax_bundle()  # fail at configuration time, before any page is read
    config.mathjax_path = f"{STATIC_SUBDIR}/{MATHJAX_SCRIPT}"


def _copy_bundle(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    shutil.copytree(mathjax_bundle(), Path(app.outdir) / "_static" / STATIC_SUBDIR, dirs_exist_ok=True)


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _use_local_mathjax, priority=900)  # after other extensions set a CDN path
    app.connect("build-finished", _copy_bundle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
