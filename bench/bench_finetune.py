"""Throughput of cfct's fine-tuning loop against the model's own bound, and against a per-sample DataLoader loop.

Issue 12's yardstick is the model itself: ``model-only`` trains the same ResNet18 with the same fused Adam and
batch on tensors already in memory (normalised, at the input size: no indexing, conversion, resizing or
augmentation), so ``cfct / model-only`` is the share of the model's own speed that the real data path keeps
(target >= 0.90 at 28 px and 64 px in fp32). It is measured on BreastMNIST at 28 px and at 64 px (its MedMNIST+
64-px release), alternating the two loops round by round.

Both loops train the same ResNet18 (``sources.create('random:resnet18')``, Adam, batch 64, softmax cross-entropy;
forward + backward + step) on the same real images (PneumoniaMNIST train split at 28 px) with the same
augmentation (3.4.1's 'ch3' policy without horizontal flips, as for a chest target) and normalisation:

* baseline: a ``Dataset`` returning ``PIL`` images through torchvision's per-sample transforms
  (``cfct.data.reference_transform('ch3')`` = RandomAffine + ToTensor, then grey -> 3 channels and Normalize),
  collated by a ``DataLoader`` (``num_workers=0`` and, where asked, worker processes);
* cfct: :func:`cfct.train._fit`, the loop ``finetune`` runs: uint8 rows indexed, converted, augmented
  (``BatchAugment``, one batched ``grid_sample``) and normalised as whole batches, and the fused
  (single-kernel) Adam; the baseline keeps torch's default Adam. ``--bf16`` adds cfct with bf16 autocast on
  the CPU (``FinetuneConfig(cpu_bf16=True)``, off by default).

The two are measured in alternating rounds (the machine is shared; alternation spreads background load
evenly) and the median images/s of each is reported with their ratio. With CUDA present it also reports
ResNet50 at 224 px with and without mixed precision + channels-last.

Run: ``.venv/bin/python bench/bench_finetune.py [--images 512 --rounds 5] [--dataloader --workers 0,2]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from cfct import data, sources, train

BATCH = 64
LR = 1e-3


class PerSample(Dataset):
    """The usual MedMNIST-tutorial dataset: one PIL image at a time through a torchvision Compose."""

    def __init__(self, ds: data.ImageSet, transform: T.Compose) -> None:
        self.images, self.labels, self.transform = ds.images, ds.labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        return self.transform(pil), int(self.labels[i])


def baseline_transform() -> T.Compose:
    mean, std = data.NORMALIZATION["half"]
    return T.Compose([data.reference_transform("ch3", hflip=False), T.Lambda(lambda x: x.expand(3, -1, -1)),
                      T.Normalize(mean, std)])


def run_baseline(model: torch.nn.Module, loader: DataLoader, n_images: int) -> float:
    """Images/s of one pass of ``n_images`` through a DataLoader loop."""
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    seen, t0 = 0, time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
        if seen >= n_images:
            break
    return seen / (time.perf_counter() - t0)


def run_cfct(model: torch.nn.Module, ds: data.ImageSet, *, device: torch.device, input_size: int,
             amp: bool, channels_last: bool, seed: int, cpu_bf16: bool = False) -> float:
    """Images/s of one epoch of cfct's own training loop (train._fit) on ``ds``."""
    if channels_last:
        model.to(memory_format=torch.channels_last)
    batches = train._Batches(ds, device=device, input_size=input_size, normalization="half",
                             channels_last=channels_last)
    autocast = train._autocast(device, amp, cpu_bf16)
    plan = train._Plan(optimizer="adam", lr=LR, momentum=0.0, weight_decay=0.0, batch_size=BATCH,
                       max_epochs=1, patience=None, monitor="val_loss", select="val_loss", phases=("full",),
                       seed=seed, amp=autocast, fp16_scaler=autocast[0] and autocast[1] == torch.float16,
                       desc="cfct", progress=False)
    augment = data.BatchAugment("ch3", hflip=False)
    with tempfile.TemporaryDirectory() as tmp, train._forked_rng(device):
        record = train._fit(model, batches, None, "single", augment, plan, Path(tmp), None)
    return record["train_images"] / record["train_seconds"]


def run_model_only(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Images/s of forward + backward + optimiser step on batches already in memory: the model's own bound."""
    opt = train._make_optimizer(list(model.parameters()), "adam", LR, 0.0, 0.0, torch.device("cpu"))
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return sum(len(y) for _, y in batches) / (time.perf_counter() - t0)


def bound_comparison(size: int, n_images: int, rounds: int) -> dict[str, float]:
    """cfct's loop vs the model-only bound on BreastMNIST at ``size`` px (fp32, CPU); prints and returns medians."""
    full = data.load_target("breastmnist", "train", size)
    ds = full.subset(np.arange(min(n_images, len(full))))
    n = (len(ds) // BATCH) * BATCH
    ds = ds.subset(np.arange(n))  # whole batches only: both loops see the same n images per round
    model = sources.create("random:resnet18", 2, input_size=size, seed=0)
    g = torch.Generator().manual_seed(0)
    prepared = train._Batches(ds, device=torch.device("cpu"), input_size=size, normalization="half")
    in_memory = [prepared.get(torch.randperm(n, generator=g)[i:i + BATCH]) for i in range(0, n, BATCH)]
    run_cfct(model, ds.subset(np.arange(2 * BATCH)), device=torch.device("cpu"), input_size=size, amp=False,
             channels_last=False, seed=0)  # warm-up: oneDNN builds its kernels per shape
    run_model_only(model, in_memory[:2])
    speeds: dict[str, list[float]] = {"cfct": [], "model-only": []}
    for r in range(rounds):
        speeds["cfct"].append(run_cfct(model, ds, device=torch.device("cpu"), input_size=size, amp=False,
                                       channels_last=False, seed=r))
        speeds["model-only"].append(run_model_only(model, in_memory))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    print(f"| {size} | {n} | {med['cfct']:.1f} | {med['model-only']:.1f} | {med['cfct'] / med['model-only']:.3f} | "
          + ", ".join(f"{a:.0f}/{b:.0f}" for a, b in zip(speeds["cfct"], speeds["model-only"])) + " |", flush=True)
    return med


def cpu_comparison(ds: data.ImageSet, rounds: int, workers: list[int], bf16: bool) -> None:
    print(f"CPU, resnet18, {len(ds)} PneumoniaMNIST images at {ds.images.shape[1]} px, batch {BATCH}, "
          f"torch threads {torch.get_num_threads()}, 'ch3' augmentation (no flips)")
    model = sources.create("random:resnet18", 2, input_size=28, seed=0)
    loaders = {w: DataLoader(PerSample(ds, baseline_transform()), batch_size=BATCH, shuffle=True,
                             num_workers=w, persistent_workers=w > 0, drop_last=True) for w in workers}
    # warm-up: oneDNN builds its kernels for each new shape on first use
    run_cfct(model, ds.subset(np.arange(2 * BATCH)), device=torch.device("cpu"), input_size=28, amp=False,
             channels_last=False, seed=0)
    run_baseline(model, loaders[workers[0]], 2 * BATCH)
    speeds: dict[str, list[float]] = {"cfct": [], **{f"dataloader(workers={w})": [] for w in workers}}
    if bf16:
        speeds["cfct+cpu_bf16"] = []
    for r in range(rounds):
        speeds["cfct"].append(run_cfct(model, ds, device=torch.device("cpu"), input_size=28, amp=False,
                                       channels_last=False, seed=r))
        if bf16:
            speeds["cfct+cpu_bf16"].append(run_cfct(model, ds, device=torch.device("cpu"), input_size=28,
                                                    amp=False, channels_last=False, seed=r, cpu_bf16=True))
        for w in workers:
            speeds[f"dataloader(workers={w})"].append(run_baseline(model, loaders[w], len(ds)))
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in speeds.items()) + " images/s")
    med = {k: statistics.median(v) for k, v in speeds.items()}
    for k, v in med.items():
        print(f"{k:>24}: {v:7.1f} images/s (median of {rounds})")
    for w in workers:
        for k in [k for k in med if k.startswith("cfct")]:
            print(f"ratio {k} / dataloader(workers={w}): {med[k] / med[f'dataloader(workers={w})']:.2f}x")


def gpu_comparison(ds: data.ImageSet, rounds: int) -> None:
    device = torch.device("cuda")
    print(f"\nCUDA ({torch.cuda.get_device_name(device)}), resnet50 at 224 px (PneumoniaMNIST resized on the "
          f"GPU), batch {BATCH}")
    for amp, cl in ((False, False), (True, True)):
        model = sources.create("random:resnet50", 2, input_size=224, seed=0).to(device)
        run_cfct(model, ds.subset(np.arange(4 * BATCH)), device=device, input_size=224, amp=amp,
                 channels_last=cl, seed=0)  # warm-up (cudnn autotuning)
        v = [run_cfct(model, ds, device=device, input_size=224, amp=amp, channels_last=cl, seed=r)
             for r in range(rounds)]
        print(f"  amp={amp!s:5} channels_last={cl!s:5}: {statistics.median(v):7.1f} images/s "
              f"(median of {rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images per round and loop")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sizes", default="28,64", help="image sizes for the model-only comparison")
    parser.add_argument("--dataloader", action="store_true", help="also compare with a per-sample DataLoader")
    parser.add_argument("--workers", default="0", help="DataLoader worker counts to compare, comma-separated")
    parser.add_argument("--gpu-images", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--bf16", action="store_true", help="also time cfct with bf16 autocast on the CPU")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("CFCT_OFFLINE", "1")
    print(f"CPU fp32, resnet18, fused Adam, batch {BATCH}, 'ch3' augmentation, torch threads "
          f"{torch.get_num_threads()}; median of {args.rounds} alternating rounds\n"
          "| px | images/round | cfct images/s | model-only images/s | ratio | rounds (cfct/model-only) |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for size in (int(s) for s in args.sizes.split(",")):
        bound_comparison(size, args.images, args.rounds)
    full = data.load_target("pneumoniamnist", "train", 28)
    ds = full.subset(np.arange(min(args.images, len(full))))
    if args.dataloader or args.bf16:
        cpu_comparison(ds, args.rounds, [int(w) for w in args.workers.split(",")], args.bf16)
    if torch.cuda.is_available():
        gpu_comparison(full.subset(np.arange(min(args.gpu_images, len(full)))), args.rounds)
    else:
        print("\nno CUDA device: resnet50 / 224 px AMP + channels-last comparison skipped")


if __name__ == "__main__":
    main()
