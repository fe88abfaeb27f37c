"""Cold CIFAR-10 loading for pre-training: the whole split decoded then cut vs only the kept images decoded.

Usage: python bench/bench_cifar_decode.py [--caps 600 6000] [--full]

Each measurement uses a new empty CFCT_DATA (nothing cached) and reads the JPEG copy under
$CFCT_MIRROR/cifar10-jpeg. ``--full`` also times the old path (all 50,000 train images decoded, then the
stratified cut), which is what ``train.pretrain`` did before ``load_dataset(max_images=)``; both give the same
images (checked).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time

import numpy as np

from cfct import data


def _fresh_cache() -> None:
    os.environ["CFCT_DATA"] = tempfile.mkdtemp(prefix="cfct-bench-cifar-")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn):  # noqa: ANN001, ANN201 - a bench helper
    w, c = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - w, _cpu() - c


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--caps", type=int, nargs="+", default=[600, 6000])
    parser.add_argument("--full", action="store_true", help="also time the old path (decode all 50,000)")
    args = parser.parse_args()
    os.environ.setdefault("CFCT_OFFLINE", "1")
    full = None
    if args.full:
        _fresh_cache()
        full, w, c = timed(lambda: data.load_dataset("cifar10", 32, seed=0))
        print(f"old: decode the whole train split ({len(full)} images): wall {w:.1f} s, CPU {c:.1f} s")
    for cap in args.caps:
        _fresh_cache()
        ds, w, c = timed(lambda cap=cap: data.load_dataset("cifar10", 32, seed=0, max_images=cap))
        same = ""
        if full is not None:
            want = full.subset(data.stratified_subsample(full.labels, cap, 0))
            same = f"; same images as the old path: {np.array_equal(ds.images, want.images)}"
        print(f"new: max_images={cap}: {len(ds)} images decoded: wall {w:.1f} s, CPU {c:.1f} s{same}")
    print(f"cores={os.cpu_count()}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
