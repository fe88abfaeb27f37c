"""Where cfct reads and writes: the data directory, the read-only mirror, the network probe, and the one layer
that hashes (:func:`file_hash`) and fetches (:func:`fetch_file`) external files.

``CFCT_DATA`` (default ``~/.cache/cfct``) is where cfct writes downloads, pre-trained sources and the results
store. ``CFCT_MIRROR`` names a read-only folder searched first for any external file (``medmnist/``,
``cifar10-jpeg/``, ``published/``); cfct never writes into it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
from pathlib import Path

import pooch

from cfct.errors import DataMissingError, HashMismatchError


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


_NAMES = {"sha256": "SHA-256", "md5": "MD5"}


def file_hash(path: Path, algo: str = "sha256") -> str:
    """Hex digest of a file, remembered in ``$CFCT_DATA/cache/hashes.json`` by (path, size, mtime).

    Large files (224 px MedMNIST: gigabytes) would otherwise be re-hashed by every process.
    """
    path = Path(path)
    st = path.stat()
    key = f"{algo}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    record = cache_dir("cache") / "hashes.json"
    try:
        known = json.loads(record.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    known[key] = digest
    tmp = record.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(known))
    os.replace(tmp, record)
    return digest


def verify(path: Path, expected: str, algo: str = "sha256") -> None:
    """Raise :class:`HashMismatchError` unless ``path``'s digest is ``expected``."""
    actual = file_hash(path, algo)
    if actual.lower() != expected.lower():
        raise HashMismatchError(
            f"{_NAMES.get(algo, algo)} mismatch for {path}: expected {expected}, got {actual}. "
            "The file is corrupt, truncated or edited; delete it and download it again."
        )


def fetch_file(relpath: str, digest: str, url: str | None = None, *, algo: str = "sha256") -> Path:
    """An external file by relative path: the mirror, then ``$CFCT_DATA``, else downloaded with pooch.

    Parameters
    ----------
    relpath : str
        Path below ``$CFCT_MIRROR`` / ``$CFCT_DATA``, e.g. ``'medmnist/breastmnist.npz'``.
    digest : str
        Pinned hex digest; a file that does not match raises :class:`HashMismatchError`.
    url : str, optional
        Where to download it from when it is on no local disk and the network is reachable.
    algo : {'sha256', 'md5'}
        Hash of ``digest`` (MedMNIST publishes MD5s).

    Raises
    ------
    DataMissingError
        Not on disk and offline (or no URL, or the download failed): names the file, the folders searched and
        the URL.
    HashMismatchError
        The file on disk, or the download, does not match ``digest``.
    """
    searched = [r / relpath for r in search_dirs()]
    for candidate in searched:
        if candidate.is_file():
            verify(candidate, digest, algo)
            return candidate
    where = ", ".join(str(c.parent) for c in searched)
    if url is None or is_offline():
        how = f"download {url} into one of them" if url else "copy it there"
        raise DataMissingError(
            f"file {Path(relpath).name!r} not found; searched: {where}; {how} (offline: {is_offline()}, "
            "or set CFCT_MIRROR to a folder holding it)"
        )
    target = data_dir() / relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        pooch.retrieve(url, known_hash=f"{algo}:{digest}", fname=target.name, path=target.parent, progressbar=True)
    except ValueError as err:  # pooch signals a hash mismatch with ValueError
        raise HashMismatchError(f"downloaded {url} does not match {_NAMES.get(algo, algo)} {digest}: {err}") from err
    except Exception as err:  # network errors: name what was tried
        raise DataMissingError(f"could not download {url} into {target} (searched {where}): {err}") from err
    return target
