"""The experiment store: hashing, caching, atomic completion, resume and concurrency (cfct.results)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import numpy as np
import pytest

from cfct.results import Store, config_hash, save_arrays


def test_hash_ignores_key_order_and_sees_values() -> None:
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert config_hash({"a": (1, 2)}) == config_hash({"a": [1, 2]})


def test_cached_computes_once(tmp_path: Path) -> None:
    store = Store(tmp_path)
    calls = []

    def compute(workdir: Path) -> dict:
        calls.append(workdir)
        save_arrays(workdir, probs=np.arange(4.0))
        return {"auc": 0.75}

    store.cached("finetune", {"lr": 1e-3}, compute)
    second = store.cached("finetune", {"lr": 1e-3}, compute)
    assert len(calls) == 1
    assert second.metrics == {"auc": 0.75}
    np.testing.assert_array_equal(second.array("probs"), np.arange(4.0))
    assert store.table("finetune")["metric.auc"].tolist() == [0.75]


def test_killed_run_is_not_complete_and_resumes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    cfg = {"epochs": 3}

    def crashing(workdir: Path) -> dict:
        (workdir / "epoch.txt").write_text("1")  # a checkpoint of epoch 1
        raise KeyboardInterrupt  # the run is killed

    with pytest.raises(KeyboardInterrupt):
        store.cached("finetune", cfg, crashing)
    assert store.get("finetune", cfg) is None  # never read back as complete

    def resuming(workdir: Path) -> dict:
        start = int((workdir / "epoch.txt").read_text()) + 1
        return {"resumed_from": start}

    assert store.cached("finetune", cfg, resuming).metrics == {"resumed_from": 2}


def _worker(root: str, out: mp.Queue[float]) -> None:
    import time

    def slow(workdir: Path) -> dict:
        (workdir / "counter").open("a").write("x")
        time.sleep(0.5)
        return {"value": 1.0}

    out.put(Store(root).cached("race", {"k": 1}, slow).metrics["value"])


def test_two_processes_on_one_key_compute_once(tmp_path: Path) -> None:
    queue: mp.Queue[float] = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_worker, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [queue.get(timeout=5), queue.get(timeout=5)] == [1.0, 1.0]
    run = Store(tmp_path).get("race", {"k": 1})
    assert run is not None
    assert run.file("counter").read_text() == "x"  # computed exactly once


def test_missing_array_names_saved_ones(tmp_path: Path) -> None:
    run = Store(tmp_path).cached("k", {}, lambda w: (save_arrays(w, a=np.zeros(1)), {})[1])
    with pytest.raises(KeyError, match=r"saved arrays: \['a'\]"):
        run.array("b")
