"""Throughput of batched tensor augmentation (cfct.data.BatchAugment) vs per-sample torchvision transforms.

Both paths deliver the same thing to a training loop: shuffled, augmented float batches (B, 3, H, W) in [0, 1]
from PneumoniaMNIST's official training split (4,708 real images, 28 px default). The per-sample path is the
usual PIL pipeline in a ``DataLoader`` (``cfct.data.reference_transform``); the batched path slices the uint8
array, converts the whole batch once and augments it with one ``grid_sample`` (+ batched colour ops for ch6).

Run:  CFCT_MIRROR=../shared/data .venv/bin/python bench/bench_augment.py [--size 28] [--workers 0 2]
      [--threads 1]
On a machine loaded by other processes, torch's 2 OpenMP threads stall on each other (spin-waits) and small
tensor ops slow down many-fold; compare ``--threads 1`` there. The printed load average says how busy it was.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from cfct import data


class PerSample(Dataset):
    """uint8 images -> PIL -> torchvision transforms, one image at a time (the baseline)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        im = self.images[i]
        pil = Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).convert("RGB")
        return self.transform(pil), int(self.labels[i])


def _rates(n: int, wall0: float, cpu0: float) -> tuple[float, float]:
    """(images per wall-clock second, images per CPU-second of this process)."""
    return n / (time.perf_counter() - wall0), n / max(time.process_time() - cpu0, 1e-9)


def per_sample_epoch(ds: data.ImageSet, policy: str, batch: int, workers: int) -> tuple[float, float]:
    tf = data.reference_transform(policy, hflip=True, size=ds.images.shape[1])
    loader = DataLoader(
        PerSample(ds.images, ds.labels, tf),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=False,
    )
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for x, _ in loader:
        n += len(x)
    return _rates(n, t0, c0)


def batched_epoch(ds: data.ImageSet, policy: str, batch: int, seed: int = 0) -> tuple[float, float]:
    aug = data.BatchAugment(policy, hflip=True)
    g = torch.Generator().manual_seed(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    order = torch.randperm(len(ds), generator=g).numpy()
    n = 0
    for i in range(0, len(order), batch):
        idx = np.sort(order[i : i + batch])
        x = aug(data.to_tensor(ds.images[idx]), g)
        torch.as_tensor(ds.labels[idx])
        n += len(x)
    return _rates(n, t0, c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28, choices=data.SIZES)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = data.load_target("pneumoniamnist", "train", args.size)
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(
        f"PneumoniaMNIST train: {len(ds)} images at {args.size} px, batch {args.batch}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print("images/s = wall clock; per CPU-s = images per CPU-second of the main process (robust to load from")
    print("other processes; not meaningful for workers > 0, whose CPU time is in child processes)")
    print(f"{'policy':6} {'path':28} {'images/s':>10} {'per CPU-s':>10} {'speed-up (wall)':>16}")
    for policy in ("ch3", "ch6"):
        # Rounds interleave the paths so that load from other processes hits both alike; best round reported.
        base = {w: (0.0, 0.0) for w in args.workers}
        fast = (0.0, 0.0)
        for r in range(args.repeats):
            for w in args.workers:
                base[w] = tuple(map(max, base[w], per_sample_epoch(ds, policy, args.batch, w)))
            fast = tuple(map(max, fast, batched_epoch(ds, policy, args.batch, r)))
        best = max(v[0] for v in base.values())
        for w, (wall, cpu) in base.items():
            cpu_s = f"{cpu:10.0f}" if w == 0 else f"{'-':>10}"
            print(f"{policy:6} {'per-sample DataLoader w=' + str(w):28} {wall:10.0f} {cpu_s}")
        name = "BatchAugment (batched)"
        print(f"{policy:6} {name:28} {fast[0]:10.0f} {fast[1]:10.0f} {fast[0] / best:15.1f}x")
        if 0 in base:
            print(f"{policy:6} {'speed-up per CPU-s vs w=0':28} {fast[1] / base[0][1]:21.1f}x")


if __name__ == "__main__":
    main()
