"""Benchmark of cfct.spectral (numbers quoted in the Chapter 5 note).

1. Radial PSD (Eq. 5.1) of 10,000 images at 64 px: uint8 NHWC grey and RGB arrays (the ImageSet layout) and a
   float32 torch batch; one FFT per batch of 4,096 images, radial binning by a precomputed index.
2. Learning priority (PSD of the input gradient of the loss) of a ResNet18 over 1,000 images at 28 and 64 px,
   one forward/backward pass per batch of 128; next to it, the same forward/backward with gradients for the
   parameters instead (a training step without the optimiser), the floor for any gradient-based method.

The machine's load average is printed: on a shared 2-core machine other jobs slow every number down.
Run: ``.venv/bin/python bench/bench_spectral.py`` (CPU threads: torch's default).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from cfct import sources, spectral


def _time(fn: Callable[[], object], repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _parameter_backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 128) -> None:
    model.eval()
    for start in range(0, len(x), batch_size):
        batch = slice(start, start + batch_size)
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
    model.zero_grad(set_to_none=True)


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    grey = rng.integers(0, 256, size=(10_000, 64, 64, 1), dtype=np.uint8)
    rgb = rng.integers(0, 256, size=(10_000, 64, 64, 3), dtype=np.uint8)
    floats = torch.rand(10_000, 1, 64, 64)
    for label, batch in (("uint8 grey NHWC numpy", grey), ("uint8 RGB NHWC numpy ", rgb),
                         ("float32 NCHW torch   ", floats)):
        seconds = _time(lambda b=batch: spectral.radial_psd(b))
        print(f"radial PSD, 10,000 images at 64 px, {label}: {seconds:.2f} s")

    for size in (28, 64):
        model = sources.create("random:resnet18", num_classes=2, input_size=size, seed=0)
        x = torch.rand(1_000, 3, size, size)
        y = torch.randint(0, 2, (1_000,))
        lp = _time(lambda m=model, a=x, b=y: spectral.learning_priority(m, (a, b), device="cpu"), repeat=1)
        floor = _time(lambda m=model, a=x, b=y: _parameter_backward(m, a, b), repeat=1)
        print(f"learning priority, ResNet18, 1,000 images at {size} px: {lp:.2f} s "
              f"({1_000 / lp:.0f} images/s); plain forward/backward: {floor:.2f} s")


if __name__ == "__main__":
    main()
