"""Test-session set-up: real data from the mirror, a fresh data directory shared by the whole session.

The session-wide ``CFCT_DATA`` means sources pre-trained for one chapter's smoke run are reused by the others,
as in the book, while the developer's own cache is never touched.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _mirror() -> Path:
    value = os.environ.get("CFCT_MIRROR")
    return Path(value) if value else (REPO.parent / "shared" / "data").resolve()


MIRROR = _mirror()


@pytest.fixture(scope="session", autouse=True)
def cfct_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session data directory; CFCT_MIRROR points at the real read-only data; no network probing."""
    root = tmp_path_factory.mktemp("cfct-data")
    saved = {k: os.environ.get(k) for k in ("CFCT_DATA", "CFCT_MIRROR", "CFCT_OFFLINE")}
    os.environ["CFCT_DATA"] = str(root)
    os.environ["CFCT_MIRROR"] = str(MIRROR)
    os.environ.setdefault("CFCT_OFFLINE", "1")
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture()
def mirror() -> Path:
    """The real read-only data folder (../shared/data in CI)."""
    if not MIRROR.exists():
        pytest.fail(f"CFCT_MIRROR {MIRROR} does not exist; the tests run on real data")
    return MIRROR
