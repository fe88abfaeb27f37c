"""Benchmark: confound a whole dataset of 5,000 real images at 64 px with each Chapter 4 confounder.

Images: PneumoniaMNIST train + val (28 px, real chest X-rays) resized to 64 px, 5,000 in all. Every confounder
is applied to the whole array at once (the vectorised path the chapter uses); CT photon noise projects and
reconstructs every slice with scikit-image and is timed separately.

    CFCT_MIRROR=../shared/data .venv/bin/python bench/bench_confounders.py [--n 5000] [--ct-n 5000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from cfct import data, shortcuts


def images(n: int, size: int) -> np.ndarray:
    parts = [data.load_target("pneumoniamnist", split, 28).images for split in ("train", "val", "test")]
    x = np.concatenate(parts)[:n]
    if len(x) < n:
        raise SystemExit(f"only {len(x)} PneumoniaMNIST images available")
    return data.resize(x, size)


def timed(name: str, fn, x: np.ndarray) -> float:
    t0 = time.perf_counter()
    y = fn(x)
    dt = time.perf_counter() - t0
    changed = float((y != x).mean())
    print(
        f"{name:<34s} {len(x):>6d} x {x.shape[1]} px  {dt:8.2f} s  {len(x) / dt:9.0f} img/s  "
        f"pixels changed {changed:.1%}"
    )
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--ct-n", type=int, default=5000, help="images for the (slow) CT projection noise")
    args = ap.parse_args()
    x = images(args.n, args.size)
    print(f"{len(x)} real PneumoniaMNIST images at {args.size} px, uint8 {x.shape}")
    timed("tag (inject_tag)", shortcuts.inject_tag, x)
    timed("denoising (lowpass_denoise, Eq 4.1)", shortcuts.lowpass_denoise, x)
    timed("noise (poisson_noise N0=2e7)", lambda a: shortcuts.poisson_noise(a, 2e7, seed=0), x)
    conf = shortcuts.get_confounder("noise-levels")
    labels = np.r_[np.ones(len(x) // 2, int), np.zeros(len(x) - len(x) // 2, int)]
    mask = shortcuts.artifact_mask(labels, 0.5)
    timed("noise-levels (both levels)", lambda a: conf.apply(a, mask, seed=0), x)
    ct = x[: args.ct_n]
    timed("ct-noise (radon/iradon, N0=4096)", lambda a: shortcuts.ct_photon_noise(a, seed=0, progress=True), ct)


if __name__ == "__main__":
    main()
