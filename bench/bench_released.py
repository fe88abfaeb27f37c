"""Throughput of the released pre-trained sources on this machine: feature extraction and fine-tuning.

Each source is built as the chapters build it, ``cfct.sources.create(spec, 2, input_size=size)``: the zoo
``Classifier`` (backbone -> pooled features -> dropout -> new 2-class linear head) with the released weights,
inputs normalised by ``cfct.sources.normalization(spec)``. Sources: EfficientNet-Lite0/1/2 from ImageNet
(``imagenet:efficientnet_lite*``), Astra's CT ResNet-152 as a 2D network (``ct:astra-resnet152``) and, for
scale, the ResNet18 that cfct pre-trains itself (``random:resnet18``: speed does not depend on the weights), at
64 px and 224 px:

* feature extraction: eval mode, ``torch.no_grad``, ``model.features`` of a batch (the pooled features that
  LogME, CKA, ... read);
* fine-tuning: train mode, ``model(x)``, cross-entropy, backward and one SGD step (momentum 0.9) over all
  parameters: one step of the full fine-tuning the chapters run.

Inputs are real pictures (scikit-image's ``chelsea``, ``coffee``, ``astronaut``, ``rocket``; resized and
normalised for each source). After one warm-up batch per cell, each cell is timed for ``--batches`` batches; the
rounds visit the sources in turn so background load on the shared machine spreads over all of them. Reported:
median images/s per cell, with the load average (``os.getloadavg``, as ``uptime`` prints it) before and after and
the thread count as conditions. ``--out FILE`` also writes the report (markdown) there.

On a machine shared by many processes, ``--threads 1`` avoids OpenMP's thread hand-off stalls (measured here at
load average ~20 on 2 CPUs: Lite0 at 64 px extracted 54 img/s with 1 thread, 10 img/s with 2).

Run: ``.venv/bin/python bench/bench_released.py [--sizes 64,224 --batches 2 --rounds 2 --threads 1
--out bench/results/released_throughput.md]``
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from skimage import data
from torch import nn
from tqdm import tqdm

from cfct import released, sources
from cfct.data import NORMALIZATION

SOURCES = [*released.RELEASED, "random:resnet18"]
BATCH = {64: 32, 224: 8}


def build(spec: str, size: int) -> tuple[nn.Module, tuple, tuple]:
    """(Classifier with a new 2-class head, mean, std) of one source, as the chapters create it."""
    model = sources.create(spec, 2, input_size=size, seed=0)
    mean, std = NORMALIZATION[sources.normalization(spec)]
    return model, mean, std


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
        model.features(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(batches):
            model.features(x)
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
    parser.add_argument("--out", type=Path, default=None, help="also write the report (markdown) to this file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    specs = args.sources.split(",")
    lines: list[str] = []

    def say(line: str = "") -> None:
        print(line)
        lines.append(line)

    load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
    t_build: dict[str, float] = {}
    models: dict[str, tuple[nn.Module, tuple, tuple]] = {}
    for spec in specs:
        t0 = time.perf_counter()
        models[spec] = build(spec, max(sizes))
        t_build[spec] = time.perf_counter() - t0
    rates: dict[tuple[str, int, str], list[float]] = {}
    cells = [(r, s, size) for r in range(args.rounds) for size in sizes for s in specs]
    for _, spec, size in tqdm(cells, desc="cells"):
        model, mean, std = models[spec]
        x = pictures(size, BATCH.get(size, 16), mean, std)
        rates.setdefault((spec, size, "extract"), []).append(extract_rate(model, x, args.batches))
        rates.setdefault((spec, size, "finetune"), []).append(finetune_rate(model, x, args.batches))
    load_after = " ".join(f"{v:.2f}" for v in os.getloadavg())
    say(f"# Released sources: throughput on {platform.node()} ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})")
    say()
    say(f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPUs; "
        f"load average (1/5/15 min) before: {load_before}, after: {load_after}")
    say()
    say("| source | params (M) | build (s) | " + " | ".join(
        f"{what} {size} px (img/s)" for size in sizes for what in ("extract", "fine-tune")) + " |")
    say("|" + "---|" * (3 + 2 * len(sizes)))
    for spec in specs:
        n_params = sum(p.numel() for p in models[spec][0].parameters()) / 1e6
        cols = [f"{statistics.median(rates[(spec, size, w)]):.1f}" for size in sizes for w in ("extract", "finetune")]
        say(f"| {spec} | {n_params:.1f} | {t_build[spec]:.1f} | " + " | ".join(cols) + " |")
    say()
    say("batch sizes: " + ", ".join(f"{s} px: {BATCH.get(s, 16)}" for s in sizes)
        + f"; {args.batches} timed batches x {args.rounds} round(s) per cell, median of rounds; build = "
        "sources.create (hash check, weight loading, Classifier); params include the 2-class head")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
