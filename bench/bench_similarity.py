"""Benchmarks of cfct.similarity (issue: Chapter 3).

1. CCA similarity (Eq. 3.1) of a 20,000 x 64 pair: cfct vs the reference algorithm (google/svcca's steps,
   re-implemented in tests/_svcca_reference.py), same input, one timed run each after a warm-up; also their
   absolute difference.
2. Peak memory of similarity extraction for ResNet50 on 200 stimulus images at 224 px, all stages
   (relu/conv1, layer1-4) hooked at once with the 3.3.1 sampling (20,000 rows, 64 channels, 5 repeats):
   peak process RSS (psutil, polled every 2 ms) above the level before extraction, and the peak of Python-side
   allocations (tracemalloc, which sees the NumPy sample buffers but not torch's own allocator). The full
   activation maps of those 200 images would need the number printed as "full maps".

Run: ``.venv/bin/python bench/bench_similarity.py`` (CFCT_MIRROR set for real BreastMNIST stimuli).
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
import torch
import torch.nn.functional as F
import torchvision

from cfct import similarity as sim

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("_svcca_reference", ROOT / "tests" / "_svcca_reference.py")
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def bench_cca() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(20_000, 24))
    X = np.maximum(z @ rng.normal(size=(24, 64)) + rng.normal(size=(20_000, 64)), 0).astype(np.float32)
    Y = np.maximum(z @ rng.normal(size=(24, 64)) + rng.normal(size=(20_000, 64)), 0).astype(np.float32)
    sim.cca_similarity(X, Y)
    reference.reference_cca_similarity(X, Y)
    t0 = time.perf_counter()
    ours = sim.cca_similarity(X, Y)
    t1 = time.perf_counter()
    ref = reference.reference_cca_similarity(X, Y)
    t2 = time.perf_counter()
    print(
        f"CCA 20000x64: cfct {1e3 * (t1 - t0):.1f} ms, reference algorithm {1e3 * (t2 - t1):.1f} ms, "
        f"ratio {(t2 - t1) / (t1 - t0):.2f}x; values {ours:.6f} vs {ref:.6f} (|diff| {abs(ours - ref):.1e})"
    )


def _stimuli(n: int) -> np.ndarray:
    mirror = os.environ.get("CFCT_MIRROR")
    file = Path(mirror) / "medmnist" / "breastmnist_64.npz" if mirror else None
    if file is not None and file.exists():
        return np.load(file)["train_images"][:n]
    print("CFCT_MIRROR not set: random stimuli")
    return np.random.default_rng(0).integers(0, 256, size=(n, 64, 64), dtype=np.uint8)


def bench_memory(n_images: int = 200, size: int = 224) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    layers = {
        "conv1": model.relu,
        "layer1": model.layer1,
        "layer2": model.layer2,
        "layer3": model.layer3,
        "layer4": model.layer4,
    }
    images = _stimuli(n_images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def preprocess(batch: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(batch, dtype=torch.float32).div(255).unsqueeze(1).expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return (x - mean) / std

    shapes = sim.layer_output_shapes(model, preprocess(images[:1]), layers)
    plan = sim.sampling_plan(shapes, len(images), seed=0)
    full = sum(int(np.prod(s)) for s in shapes.values()) * n_images * 4
    sampled = sum(s.rows * s.n_channels * s.repeats * 4 for s in plan.values())

    proc = psutil.Process()
    peak = {"rss": 0}
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], proc.memory_info().rss)
            time.sleep(0.002)

    before = proc.memory_info().rss
    thread = threading.Thread(target=poll, daemon=True)
    tracemalloc.start()
    thread.start()
    t0 = time.perf_counter()
    acts = sim.capture_activations(model, images, plan, layers=layers, preprocess=preprocess, batch_size=16)
    seconds = time.perf_counter() - t0
    stop.set()
    thread.join()
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    got = sum(a.nbytes for per in acts.values() for a in per)
    gib = 2**30
    print(f"ResNet50, {n_images} images at {size} px, layers {list(shapes)}:")
    for name, s in plan.items():
        print(
            f"  {name:7s} out {shapes[name]}: {len(s.images[0])} images x {s.shape[1] * s.shape[2]} positions"
            f" = {s.rows} rows x {s.n_channels} channels x {s.repeats} repeats"
        )
    print(
        f"  full activation maps would be {full / gib:.2f} GiB; "
        f"the 3.3.1 samples are {sampled / 2**20:.0f} MiB "
        f"(captured {got / 2**20:.0f} MiB)"
    )
    print(
        f"  extraction {seconds:.1f} s; RSS before {before / gib:.2f} GiB, peak {peak['rss'] / gib:.2f} GiB, "
        f"increase {(peak['rss'] - before) / gib:.2f} GiB; tracemalloc peak {py_peak / 2**20:.0f} MiB"
    )
    assert peak["rss"] - before < 2 * gib, "extraction exceeded 2 GiB"


if __name__ == "__main__":
    bench_cca()
    bench_memory()
