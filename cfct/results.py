"""The experiment store: every run lives under a hash of its full configuration.

A run is computed once. Its folder is written as ``<kind>/<hash>.partial/`` and renamed to ``<kind>/<hash>/``
only when the computation returned, so a run killed half-way is never read back as complete; the partial
folder is kept so the computation can resume from its own checkpoints (e.g. the last epoch). An inter-process
file lock per key stops two processes from computing (or corrupting) the same run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from cfct import paths
from cfct.errors import ConfigError

_KEY_LENGTH = 16


def _canonical(value: Any) -> Any:
    """A JSON-able, order-independent form of a configuration value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _canonical(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ConfigError(f"cannot hash configuration value of type {type(value).__name__}: {value!r}")


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``config``; key order does not matter.

    Examples
    --------
    >>> config_hash({"a": 1, "b": [2, 3]}) == config_hash({"b": [2, 3], "a": 1})
    True
    """
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:_KEY_LENGTH]


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, path)


def save_arrays(workdir: Path, **arrays: np.ndarray) -> None:
    """Save each array as ``<name>.npy`` in ``workdir`` (written to a temporary name, then renamed)."""
    for name, array in arrays.items():
        tmp = workdir / f"{name}.tmp.npy"
        np.save(tmp, np.asarray(array))
        os.replace(tmp, workdir / f"{name}.npy")


@dataclasses.dataclass(frozen=True)
class Run:
    """A completed run, read-only: its folder, configuration and metrics."""

    path: Path
    kind: str
    key: str
    config: dict[str, Any]
    metrics: dict[str, Any]

    def array(self, name: str) -> np.ndarray:
        """The array saved as ``<name>.npy`` by the computation."""
        file = self.path / f"{name}.npy"
        if not file.exists():
            saved = sorted(p.stem for p in self.path.glob("*.npy"))
            raise KeyError(f"run {self.kind}/{self.key} has no array {name!r}; saved arrays: {saved}")
        return np.load(file, allow_pickle=False)

    def file(self, name: str) -> Path:
        """Any other file the computation wrote."""
        file = self.path / name
        if not file.exists():
            raise KeyError(f"run {self.kind}/{self.key} has no file {name!r}")
        return file


class Store:
    """Results store rooted at ``root`` (default: ``$CFCT_DATA/results``).

    Parameters
    ----------
    root : Path, optional
        Folder holding one sub-folder per run kind.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else paths.data_dir() / "results"

    def _dir(self, kind: str, key: str) -> Path:
        if not kind or "/" in kind or kind.startswith("."):
            raise ConfigError(f"invalid run kind {kind!r}")
        return self.root / kind / key

    def get(self, kind: str, config: Mapping[str, Any]) -> Run | None:
        """The completed run of this configuration, or None."""
        key = config_hash(config)
        final = self._dir(kind, key)
        if not (final / "metrics.json").exists():
            return None
        return Run(
            path=final,
            kind=kind,
            key=key,
            config=json.loads((final / "config.json").read_text()),
            metrics=json.loads((final / "metrics.json").read_text()),
        )

    def cached(
        self,
        kind: str,
        config: Mapping[str, Any],
        compute: Callable[[Path], Mapping[str, Any]],
    ) -> Run:
        """Return the completed run of ``config``, computing it first if needed.

        ``compute(workdir)`` writes arrays and files into ``workdir`` and returns a JSON-able metrics dict.
        ``workdir`` survives a crash, so ``compute`` may resume from checkpoints it wrote there.
        """
        run = self.get(kind, config)
        if run is not None:
            return run
        key = config_hash(config)
        final = self._dir(kind, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            run = self.get(kind, config)  # another process may have finished while we waited
            if run is not None:
                return run
            workdir = final.with_name(key + ".partial")
            workdir.mkdir(exist_ok=True)
            _write_json_atomic(workdir / "config.json", _canonical(config))
            metrics = dict(compute(workdir))
            # metrics.json is the completion marker: it is written last, inside the partial folder,
            # and the folder is then renamed in one step.
            _write_json_atomic(workdir / "metrics.json", _canonical(metrics))
            if final.exists():  # a stale incomplete folder (no metrics.json) from an older layout
                shutil.rmtree(final)
            os.replace(workdir, final)
        run = self.get(kind, config)
        assert run is not None
        return run

    def runs(self, kind: str) -> list[Run]:
        """Every completed run of one kind."""
        folder = self.root / kind
        if not folder.exists():
            return []
        out = []
        for path in sorted(folder.iterdir()):
            if path.is_dir() and (path / "metrics.json").exists():
                out.append(
                    Run(
                        path=path,
                        kind=kind,
                        key=path.name,
                        config=json.loads((path / "config.json").read_text()),
                        metrics=json.loads((path / "metrics.json").read_text()),
                    )
                )
        return out

    def table(self, kind: str) -> pd.DataFrame:
        """A tidy table of every completed run of one kind: flattened config and metrics columns."""
        rows = []
        for run in self.runs(kind):
            row = {"key": run.key}
            row.update(pd.json_normalize(run.config, sep=".").iloc[0].to_dict())
            row.update({f"metric.{k}": v for k, v in run.metrics.items() if not isinstance(v, (list, dict))})
            rows.append(row)
        return pd.DataFrame(rows)


def default_store() -> Store:
    """The store under the current ``$CFCT_DATA``."""
    return Store()
