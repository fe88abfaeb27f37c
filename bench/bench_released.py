"""Throughput of the released pre-trained sources (cfct.released) on this machine: feature extraction and fine-tuning.

For each source (EfficientNet-Lite0/1/2 from ImageNet, Astra's CT ResNet-152 as a 2D network) and, for scale,
the ResNet18 that cfct pre-trains itself (torchvision layout, random weights: speed does not depend on them), at
64 px and 224 px:

* feature extraction: eval mode, ``torch.no_grad``, pooled features of a batch (the input of LogME, CKA, ...);
* fine-tuning: train mode, a new 2-class linear head on the pooled features, cross-entropy, backward and one
  SGD step (momentum 0.9) over all parameters: one step of the full fine-tuning the chapters run.

Inputs are real pictures (scikit-image's ``chelsea``, ``coffee``, ``astronaut``, ``rocket``; resized, normalised
with each source's mean/std). After one warm-up batch per cell, each cell is timed for ``--batches`` batches; the
rounds visit the sources in turn so background load on the shared machine spreads over all of them. Reported:
median images/s per cell, with the load average and thread count as conditions.

On a machine shared by many processes, ``--threads 1`` avoids OpenMP's thread hand-off stalls (measured here at
load average ~20 on 2 CPUs: Lite0 at 64 px extracted 54 img/s with 1 thread, 10 img/s with 2).

Run: ``.venv/bin/python bench/bench_released.py [--sizes 64,224 --batches 2 --rounds 2 --threads 1]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from skimage import data
from torch import nn
from tqdm import tqdm

from cfct import released

SOURCES = [*released.RELEASED, "cfct:resnet18"]
BATCH = {64: 32, 224: 8}


def build(spec: str) -> tuple[nn.Module, nn.Module, tuple, tuple]:
    """(feature extractor, fine-tuning model with a 2-class head, mean, std) of one source."""
    if spec == "cfct:resnet18":
        model = torchvision.models.resnet18(weights=None)
        model.fc = nn.Identity()
        mean, std, dim = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 512
    else:
        source = released.RELEASED[spec]
        model = released.load_released(spec)
        if hasattr(model, "reset_classifier"):  # timm: drop the ImageNet classifier, keep pooled features
            model.reset_classifier(0)
        mean, std, dim = source.mean, source.std, source.feature_dim
    finetune = nn.Sequential(model, nn.Linear(dim, 2))
    return model, finetune, mean, std


def pictures(size: int, n: int, mean: tuple, std: tuple) -> torch.Tensor:
    """``n`` real RGB pictures at ``size`` px (cycled), normalised."""
    names = ["chelsea", "coffee", "astronaut", "rocket"]
    images = []
    for i in range(n):
        x = torch.from_numpy(getattr(data, names[i % len(names)])()).permute(2, 0, 1).float() / 255.0
        images.append(TF.normalize(TF.center_crop(TF.resize(x, size, antialias=True), size), mean, std))
    return torch.stack(images)


def extract_rate(model: nn.Module, x: torch.Tensor, batches: int) -> float:
    model.eval()
    with torch.no_grad():
        model(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            model(x)
    return batches * len(x) / (time.perf_counter() - t0)


def finetune_rate(model: nn.Module, x: torch.Tensor, batches: int) -> float:
    model.train()
    y = torch.arange(len(x)) % 2
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    t0 = time.perf_counter()
    for _ in range(batches):
        step()
    return batches * len(x) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,224", help="image sizes, comma-separated")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per cell and round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all sources")
    parser.add_argument("--sources", default=",".join(SOURCES), help="comma-separated subset of " + ", ".join(SOURCES))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    sources = args.sources.split(",")
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average before: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    t_build = {}
    models = {}
    for spec in sources:
        t0 = time.perf_counter()
        models[spec] = build(spec)
        t_build[spec] = time.perf_counter() - t0
    rates: dict[tuple[str, int, str], list[float]] = {}
    cells = [(r, s, size) for r in range(args.rounds) for size in sizes for s in sources]
    for _, spec, size in tqdm(cells, desc="cells"):
        extractor, finetune, mean, std = models[spec]
        x = pictures(size, BATCH[size] if size in BATCH else 16, mean, std)
        rates.setdefault((spec, size, "extract"), []).append(extract_rate(extractor, x, args.batches))
        rates.setdefault((spec, size, "finetune"), []).append(finetune_rate(finetune, x, args.batches))
    print(f"load average after: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print()
    header = "| source | params (M) | build (s) | " + " | ".join(
        f"{what} {size} px (img/s)" for size in sizes for what in ("extract", "fine-tune")
    ) + " |"
    print(header)
    print("|" + "---|" * (3 + 2 * len(sizes)))
    for spec in sources:
        n_params = sum(p.numel() for p in models[spec][0].parameters()) / 1e6
        cols = [f"{statistics.median(rates[(spec, size, w)]):.1f}" for size in sizes for w in ("extract", "finetune")]
        print(f"| {spec} | {n_params:.1f} | {t_build[spec]:.1f} | " + " | ".join(cols) + " |")
    print()
    print("batch sizes: " + ", ".join(f"{s} px: {BATCH.get(s, 16)}" for s in sizes)
          + f"; {args.batches} timed batches x {args.rounds} rounds per cell, median of rounds")


if __name__ == "__main__":
    main()
