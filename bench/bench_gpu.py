"""GPU fine-tuning throughput at 224 px: cfct's real loop against the model-only bound (issue 12, part 3).

For ResNet50 (``sources.create('random:resnet50')``) and EfficientNet-Lite0 (timm ``tf_efficientnet_lite0``, random
initialisation: throughput does not depend on the weights), with mixed precision (AMP) and channels-last each on
and off, it reports

* ``cfct``: images/s of one epoch of :func:`cfct.train._fit`, the loop ``finetune`` runs, with the real data path:
  uint8 BreastMNIST rows (64 px, tiled to ``--steps`` batches) kept on the GPU, converted, resized to 224 px,
  augmented (``BatchAugment('ch3')``) and normalised per batch on the device;
* ``model-only``: the same model, optimiser (fused Adam), batch, autocast and memory format on batches already
  on the GPU at 224 px: the model's own bound;
* their ratio (target >= 0.7: the data path is never the bottleneck) and the peak GPU memory of the cfct run.

Run on a CUDA machine: ``.venv/bin/python bench/bench_gpu.py [--steps 50 --rounds 3]``. Without CUDA it exits with
a message; ``--device cpu --steps 2 --size 32`` dry-runs the same code on the CPU (numbers meaningless).
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
import torch

from cfct import data, sources, train

BATCH = 64
LR = 1e-3


class TimmClassifier(torch.nn.Module):
    """A timm model with the two methods cfct's loop calls on a ``zoo.Classifier`` (full fine-tuning only)."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def freeze_backbone(self, frozen: bool) -> None:
        if frozen:
            raise ValueError("bench_gpu times full fine-tuning only")

    def head_parameters(self):
        return self.net.get_classifier().parameters()


def make_model(arch: str, size: int) -> torch.nn.Module:
    if arch == "tf_efficientnet_lite0":
        import timm  # only this architecture needs timm; cfct's zoo has no EfficientNet-Lite

        return TimmClassifier(timm.create_model(arch, pretrained=False, num_classes=2))
    return sources.create(f"random:{arch}", 2, input_size=size, seed=0)


def run_cfct(model, ds, device, size, amp, channels_last, seed) -> float:
    """Images/s of one epoch of cfct's training loop (train._fit) on ``ds``."""
    batches = train._Batches(ds, device=device, input_size=size, normalization="half", channels_last=channels_last)
    autocast = train._autocast(device, amp)
    plan = train._Plan(optimizer="adam", lr=LR, momentum=0.0, weight_decay=0.0, batch_size=BATCH, max_epochs=1,
                       patience=None, monitor="val_loss", select="val_loss", phases=("full",), seed=seed,
                       amp=autocast, fp16_scaler=autocast[0] and autocast[1] == torch.float16, desc="cfct",
                       progress=False)
    augment = data.BatchAugment("ch3", hflip=False).to(device)
    with tempfile.TemporaryDirectory() as tmp, train._forked_rng(device):
        record = train._fit(model, batches, None, "single", augment, plan, Path(tmp), None)
    return record["train_images"] / record["train_seconds"]


def run_model_only(model, batches, device, amp) -> float:
    """Images/s of forward + backward + step on batches already on the device."""
    autocast = train._autocast(device, amp)
    opt = train._make_optimizer(list(model.parameters()), "adam", LR, 0.0, 0.0, device)
    scaler = torch.amp.GradScaler("cuda") if autocast[0] and autocast[1] == torch.float16 else None
    model.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for x, y in batches:
        train.train_step(model, opt, x, y, "single", autocast, scaler)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return sum(len(y) for _, y in batches) / (time.perf_counter() - t0)


def measure(arch: str, ds: data.ImageSet, device: torch.device, size: int, amp: bool, channels_last: bool,
            rounds: int) -> dict[str, float]:
    model = make_model(arch, size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    prepared = train._Batches(ds, device=device, input_size=size, normalization="half", channels_last=channels_last)
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(ds), generator=g)
    in_memory = [prepared.get(perm[i:i + BATCH]) for i in range(0, len(ds), BATCH)]
    warm = ds.subset(np.arange(min(2 * BATCH, len(ds))))
    run_cfct(model, warm, device, size, amp, channels_last, 0)  # warm-up: cudnn autotuning, kernel builds
    run_model_only(model, in_memory[:2], device, amp)
    cfct, bound, peak = [], [], []
    for r in range(rounds):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        cfct.append(run_cfct(model, ds, device, size, amp, channels_last, r))
        if device.type == "cuda":
            peak.append(torch.cuda.max_memory_allocated(device) / 2**30)
        bound.append(run_model_only(model, in_memory, device, amp))
    del model, in_memory, prepared
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"cfct": statistics.median(cfct), "bound": statistics.median(bound),
            "peak_gib": max(peak) if peak else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=50, help="batches of 64 per measured epoch")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--archs", default="resnet50,tf_efficientnet_lite0")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_gpu: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine, "
                 "or dry-run the code path with --device cpu --steps 2 --size 32")
    os.environ.setdefault("CFCT_OFFLINE", "1")
    full = data.load_target("breastmnist", "train", 64)
    ds = full.subset(np.arange(args.steps * BATCH) % len(full))  # tile the small target to --steps batches
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"{name}; {args.size} px from BreastMNIST 64 px, batch {BATCH}, {args.steps} steps per epoch, fused "
          f"Adam, 'ch3' augmentation; median of {args.rounds}\n"
          "| arch | AMP | channels-last | cfct images/s | model-only images/s | ratio | peak GiB |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for arch in args.archs.split(","):
        for amp in (False, True):
            for channels_last in (False, True):
                m = measure(arch, ds, device, args.size, amp, channels_last, args.rounds)
                print(f"| {arch} | {amp} | {channels_last} | {m['cfct']:.1f} | {m['bound']:.1f} | "
                      f"{m['cfct'] / m['bound']:.2f} | {m['peak_gib']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
