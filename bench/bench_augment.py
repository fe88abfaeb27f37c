"""Throughput of batched tensor augmentation (cfct.data.BatchAugment) vs per-sample torchvision transforms.

Both paths deliver the same thing to a training loop: shuffled, augmented float batches (B, 3, H, W) in [0, 1]
from PneumoniaMNIST's official training split (4,708 real images, 28 px default). The per-sample path is the
usual PIL pipeline in a ``DataLoader`` (``cfct.data.reference_transform``); the batched path slices the uint8
array, converts the whole batch once and augments it with one ``grid_sample`` (+ batched colour ops for ch6).

Run:  CFCT_MIRROR=../shared/data .venv/bin/python bench/bench_augment.py [--size 28] [--workers 0 2]
"""

from __future__ import annotations

import argparse
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


def per_sample_epoch(ds: data.ImageSet, policy: str, batch: int, workers: int) -> float:
    tf = data.reference_transform(policy, hflip=True, size=ds.images.shape[1])
    loader = DataLoader(
        PerSample(ds.images, ds.labels, tf),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        persistent_workers=False,
    )
    t0 = time.perf_counter()
    n = 0
    for x, _ in loader:
        n += len(x)
    return n / (time.perf_counter() - t0)


def batched_epoch(ds: data.ImageSet, policy: str, batch: int, seed: int = 0) -> float:
    aug = data.BatchAugment(policy, hflip=True)
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    order = torch.randperm(len(ds), generator=g).numpy()
    n = 0
    for i in range(0, len(order), batch):
        idx = np.sort(order[i : i + batch])
        x = aug(data.to_tensor(ds.images[idx]), g)
        torch.as_tensor(ds.labels[idx])
        n += len(x)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=28, choices=data.SIZES)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ds = data.load_target("pneumoniamnist", "train", args.size)
    print(
        f"PneumoniaMNIST train: {len(ds)} images at {args.size} px, batch {args.batch}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'policy':6} {'path':28} {'images/s':>10} {'speed-up':>9}")
    for policy in ("ch3", "ch6"):
        base = {
            w: max(per_sample_epoch(ds, policy, args.batch, w) for _ in range(args.repeats))
            for w in args.workers
        }
        fast = max(batched_epoch(ds, policy, args.batch, s) for s in range(args.repeats))
        best = max(base.values())
        for w, v in base.items():
            print(f"{policy:6} {'per-sample DataLoader w=' + str(w):28} {v:10.0f}")
        print(f"{policy:6} {'BatchAugment (batched)':28} {fast:10.0f} {fast / best:8.1f}x")


if __name__ == "__main__":
    main()
