"""Overhead of cfct.cluster: per job on a local single-node Slurm, and a smoke sweep locally vs through Slurm.

Run by hand as root with Debian's slurm-wlm and munge installed (`make slurm-deps`):

    python bench/bench_cluster.py [--jobs 8] [--epochs 3]

Measures, side by side in one run, from empty stores:

1. the smoke sweep of tests/test_cluster.py (Chapter 3: 1 pre-training, then 3 fine-tunes) end to end through the
   local executor (one job at a time, and two at a time) and through Slurm (one job array per stage, two at a
   time);
2. per job on Slurm: submission to start (``sbatch`` until the job's Python code runs), and the wall time of a
   job that has nothing to compute (a run already complete when the job starts: Python start, unpickling,
   the store lookup);
3. the store's own write per run: lock, configuration, metrics and the atomic rename (compute excluded).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("CFCT_MIRROR", str(REPO.parent / "shared" / "data"))
os.environ.setdefault("CFCT_OFFLINE", "1")

from _slurm import local_slurm  # noqa: E402

from cfct import cluster, results  # noqa: E402
from cfct.experiments.jobs import chapter_jobs, pretrain_job, run_job  # noqa: E402

SWEEP = dict(profile="smoke", targets="breastmnist", folds=1, patience=3, max_train_images=96,
             natural_source="pretrained:resnet18:medmnist:pneumoniamnist@200",
             medical_source="pretrained:resnet18:medmnist:pneumoniamnist@200")


def sweep_seconds(jobs, settings: cluster.ExecutorSettings, root: Path) -> tuple[float, cluster.SweepReport]:
    store = results.Store(root / "results")
    t0 = time.perf_counter()
    report = cluster.run_sweep(jobs, settings, store=store, folder=root / "sweeps", progress=False)
    assert not report.failed, report.summary()
    return time.perf_counter() - t0, report


def store_write_seconds(n: int, root: Path) -> list[float]:
    """Store.cached around a compute that returns at once: the bookkeeping a run pays to be stored."""
    store = results.Store(root)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        store.cached("bench", {"i": i}, lambda w: results.save_arrays(w, x=np.zeros(1000)) or {"ok": 1})
        out.append(time.perf_counter() - t0)
    return out


def noop_overhead(job, n: int, slurm, store, folder: Path) -> tuple[list[float], list[float], float]:
    """Submission-to-start and in-job seconds of ``n`` copies of a complete job on Slurm, and the array's wall."""
    t0 = time.perf_counter()
    submitted = cluster.submit([job] * n, slurm, store, folder)
    outcomes = cluster.wait(submitted, settings=slurm, store=store, folder=folder, progress=False)
    wall = time.perf_counter() - t0
    infos = [o.info for o in outcomes if o.info]
    return ([i["started"] - i["submitted"] for i in infos], [i["finished"] - i["started"] for i in infos], wall)


def report_overhead(to_start: list[float], run: list[float], wall: float, writes: list[float]) -> None:
    print(f"no-op jobs on Slurm ({len(to_start)} in one array, 2 at a time; load {os.getloadavg()[0]:.1f}): "
          f"submission to start median {statistics.median(to_start):.2f} s (min {min(to_start):.2f}, max "
          f"{max(to_start):.2f}); in-job time (unpickle + store lookup) median {statistics.median(run) * 1000:.0f} "
          f"ms; array wall {wall:.1f} s = {wall / len(to_start):.2f} s per job")
    print(f"store write per run (lock, config, metrics, rename; 50 runs): median "
          f"{statistics.median(writes) * 1000:.1f} ms")


def overhead_only(n: int) -> None:
    """Per-job overhead on Slurm with a cheap real job computed in-process first (no sweep timings)."""
    job = pretrain_job("pretrained:resnet18:medmnist:breastmnist@40", "smoke")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        tmp = Path(tmp)
        store = results.Store(tmp / "results")
        run_job(job, store)
        with local_slurm(tmp / "slurm") as env:
            os.environ.update(env)
            slurm = cluster.ExecutorSettings(executor="slurm", array_parallelism=2)
            to_start, run, wall = noop_overhead(job, n, slurm, store, tmp / "noop")
        writes = store_write_seconds(50, tmp / "store")
    report_overhead(to_start, run, wall, writes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8, help="no-op jobs for the per-job overhead")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--overhead-only", action="store_true", help="only the per-job overhead on Slurm")
    args = parser.parse_args()
    if args.overhead_only:
        overhead_only(args.jobs)
        return
    jobs = chapter_jobs("3", {**SWEEP, "epochs": args.epochs})
    print(f"smoke sweep: {len(jobs)} jobs ({sum(j.stage == 0 for j in jobs)} pre-training, "
          f"{sum(j.stage == 1 for j in jobs)} fine-tunes); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        tmp = Path(tmp)
        rows = []
        for name, settings in (("local x1", cluster.ExecutorSettings()),
                               ("local x2", cluster.ExecutorSettings(array_parallelism=2))):
            seconds, _ = sweep_seconds(jobs, settings, tmp / name.replace(" ", ""))
            rows.append((name, seconds))
            print(f"  {name:<10} {seconds:7.1f} s", flush=True)
        with local_slurm(tmp / "slurm") as env:
            os.environ.update(env)
            slurm = cluster.ExecutorSettings(executor="slurm", array_parallelism=2)
            seconds, report = sweep_seconds(jobs, slurm, tmp / "slurm-sweep")
            rows.append(("slurm x2", seconds))
            print(f"  {'slurm x2':<10} {seconds:7.1f} s", flush=True)
            queue = report.table()["queue_s"].dropna()
            # Per-job overhead: jobs whose run is complete by the time they start (submitted directly, so the
            # sweep's skip of complete runs does not drop them): what a job costs besides its computation.
            store = results.Store(tmp / "slurm-sweep" / "results")
            to_start, run, wall = noop_overhead(jobs[0], args.jobs, slurm, store, tmp / "noop")
        writes = store_write_seconds(50, tmp / "store")
    local1 = rows[0][1]
    print("\nend-to-end smoke sweep (empty store):")
    for name, seconds in rows:
        print(f"  {name:<10} {seconds:7.1f} s   ratio to local x1: {seconds / local1:.2f}")
    print(f"\nsweep jobs on Slurm, submission to start: median {statistics.median(queue):.2f} s "
          f"(max {queue.max():.2f} s, {len(queue)} jobs; includes waiting for a free slot of the array)")
    report_overhead(to_start, run, wall, writes)


if __name__ == "__main__":
    main()
