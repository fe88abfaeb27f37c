"""Seconds per transferability metric at n = 1000, D = 512, 10 classes (Chapter 6 issue, section 5).

Also: scikit-learn's NCA alone (time and leave-one-out 1-NN accuracy), and S_FU's forward + backward pass for a
ResNet18 on 1000 28-px images. The comparison with the thesis authors' code is ``bench/bench_metrics.py``.

    .venv/bin/python bench/bench_transferability.py [--repeats 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from cfct import sources
from cfct import transferability as tr


def _timed(fn, repeats: int):
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, d, c = args.n, args.dim, args.classes
    y = np.repeat(np.arange(c), n // c)
    # Hard, overlapping classes (class signal 2 in one of 512 dimensions, rectified like ResNet features):
    # NCA then runs its full 50 iterations instead of stopping early on trivially separable data.
    feats = rng.normal(0, 1, (y.size, d))
    feats[np.arange(y.size), y] += 2.0
    feats = np.maximum(feats, 0)
    logits = feats @ rng.normal(0, 0.05, (d, 100))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    print(f"features n={y.size}, D={d}, classes={c}; torch threads={torch.get_num_threads()}")
    rows = [
        ("LogME (paper)", lambda: tr.logme(feats, y)),
        ("LogME (thesis variant)", lambda: tr.logme(feats, y, variant="thesis")),
        ("LEEP", lambda: tr.leep(probs, y)),
        ("N-LEEP", lambda: tr.nleep(feats, y)),
        ("PARC", lambda: tr.parc(feats, y)),
        ("SFDA", lambda: tr.sfda(feats, y)),
        (
            "NCTI (3 sources, per source)",
            lambda: tr.ncti({"a": feats, "b": feats[:, ::-1], "c": feats**0.5}, y),
        ),
        ("S_LP (scikit-learn NCA)", lambda: tr.label_prediction_score(feats, y)),
    ]
    for name, fn in rows:
        sec, _ = _timed(fn, args.repeats)
        if name.startswith("NCTI"):
            sec /= 3
        print(f"{name:32s} {sec:8.2f} s")

    sec, a = _timed(lambda: tr.nca_fit(feats, y), args.repeats)
    print(f"NCA (scikit-learn)   {sec:8.2f} s   LOO 1-NN accuracy {tr.nca_loo_accuracy(feats @ a.T, y):.3f}")


    model = sources.create("random:resnet18", num_classes=10, input_size=28)
    images = rng.integers(0, 256, (y.size, 28, 28, 1), dtype=np.uint8)
    for nb in (1, 6):
        sec, s = _timed(lambda nb=nb: tr.feature_update_score(model, images, y, n_batches=nb), args.repeats)
        print(f"S_FU resnet18 28px, {nb} batch(es)   {sec:8.2f} s   (score {s:.3f})")
    sec, _ = _timed(lambda: tr.source_outputs(model, images), args.repeats)
    print(f"forward pass (features + softmax)   {sec:8.2f} s")


if __name__ == "__main__":
    main()
