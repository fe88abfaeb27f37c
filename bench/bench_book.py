"""Time `make book` from an empty cache (quick profile, every page in _toc.yml), then again with a warm cache.

Usage: python bench/bench_book.py [--data DIR]
A fresh CFCT_DATA folder (default: a new temporary folder) and an empty _build make the first build pay for
everything: decoding CIFAR-10, pre-training the shared sources, every chapter's experiments. The second build
must recompute nothing (jupyter-cache + the results store). Per-chapter cold times and each kernel's peak RSS:
``python bench/bench_chapter_times.py --profile quick --data $(mktemp -d)``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build(env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(["make", "book"], cwd=REPO, env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=None, help="CFCT_DATA for the run (default: a new temporary folder)")
    args = parser.parse_args()
    data = Path(args.data or tempfile.mkdtemp(prefix="cfct-bench-book-"))
    shutil.rmtree(REPO / "_build", ignore_errors=True)
    env = dict(os.environ, CFCT_DATA=str(data))
    env.setdefault("CFCT_MIRROR", str((REPO.parent / "shared" / "data").resolve()))
    cold = build(env)
    warm = build(env)
    # ru_maxrss of waited-for descendants: the largest single process of the builds (a chapter's kernel), KiB
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(f"make book, empty cache: {cold / 60:.1f} min ({cold:.0f} s); unchanged re-build: {warm:.0f} s; "
          f"peak RSS of one process {peak:.2f} GiB")
    print(f"CFCT_DATA={data}; cores={os.cpu_count()}")


if __name__ == "__main__":
    main()
