"""Where cfct reads and writes: the data directory, the read-only mirror, and the network probe.

``CFCT_DATA`` (default ``~/.cache/cfct``) is where cfct writes downloads, pre-trained sources and the results
store. ``CFCT_MIRROR`` names a read-only folder searched first for any external file (``medmnist/``,
``cifar10-jpeg/``, ``published/``); cfct never writes into it.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path


def data_dir() -> Path:
    """The writable data directory (``$CFCT_DATA`` or ``~/.cache/cfct``), created on demand."""
    root = Path(os.environ.get("CFCT_DATA") or Path.home() / ".cache" / "cfct").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def mirror_dir() -> Path | None:
    """The read-only mirror (``$CFCT_MIRROR``), or None when unset."""
    value = os.environ.get("CFCT_MIRROR")
    return Path(value).expanduser().resolve() if value else None


def cache_dir(name: str) -> Path:
    """A named sub-folder of the data directory, created on demand."""
    path = data_dir() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def search_dirs(relative_dir: str = "") -> list[Path]:
    """Folders searched for an external file, in order: the mirror, then the data directory."""
    roots = [r for r in (mirror_dir(), data_dir()) if r is not None]
    return [r / relative_dir if relative_dir else r for r in roots]


def find_file(relpath: str) -> Path | None:
    """The first existing ``relpath`` under the mirror, then the data directory; None if absent."""
    for root in search_dirs():
        candidate = root / relpath
        if candidate.exists():
            return candidate
    return None


@functools.cache
def is_offline() -> bool:
    """True when ``$CFCT_OFFLINE=1`` or the network cannot be reached within one second.

    Probing once per process lets download paths fail fast with a clear message instead of hanging in a
    library's retry loop.
    """
    if os.environ.get("CFCT_OFFLINE", "") not in ("", "0"):
        return True
    try:
        with socket.create_connection(("zenodo.org", 443), timeout=1.0):
            return False
    except OSError:
        return True
