"""cfct.similarity: CCA (Eq. 3.1), SVCCA, linear CKA, prediction similarity (Eq. 3.2), the 3.3.1 protocol."""

from __future__ import annotations

import gc
import importlib.util
import itertools
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cfct import similarity as sim
from cfct import sources
from cfct.errors import ConfigError, IncompatibleError
from cfct.experiments import ch3

_spec = importlib.util.spec_from_file_location("_svcca_reference", Path(__file__).with_name("_svcca_reference.py"))
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)


def _correlated(n: int, p: int, q: int, shared: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, shared))
    X = z @ rng.normal(size=(shared, p)) + noise * rng.normal(size=(n, p))
    Y = z @ rng.normal(size=(shared, q)) + noise * rng.normal(size=(n, q))
    return X, Y


# ---------------------------------------------------------------------------------------------- CCA
def test_cca_is_one_under_invertible_linear_map():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 16))
    A = rng.normal(size=(16, 16)) + 4 * np.eye(16)  # well conditioned, invertible
    assert abs(np.linalg.det(A)) > 1
    assert sim.cca_similarity(X, X @ A) == pytest.approx(1.0, abs=1e-6)
    assert sim.cca_similarity(X, 1e3 * X @ A + 5.0) == pytest.approx(1.0, abs=1e-6)


def test_cca_near_zero_for_independent_data_with_many_rows():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(50_000, 8)), rng.normal(size=(50_000, 8))
    assert sim.cca_similarity(X, Y) < 0.02
    # With few rows per column the same independent data look similar: the bias 3.3.1 controls by
    # fixing n*h*w ~ 20,000 and p = 64.
    assert sim.cca_similarity(X[:40], Y[:40]) > 0.2


def test_cca_symmetric_and_in_unit_interval():
    X, Y = _correlated(3000, 12, 9, shared=4, noise=1.0, seed=2)
    a, b = sim.cca_similarity(X, Y), sim.cca_similarity(Y, X)
    assert a == pytest.approx(b, abs=1e-10)
    assert 0.1 < a < 0.9


def test_cca_equals_brute_force_canonical_correlations():
    # Björck-Golub: canonical correlations are the singular values of Qx^T Qy, Q orthonormal bases of the
    # centred columns; an algorithm independent of the covariance whitening used by cfct.
    X, Y = _correlated(500, 6, 4, shared=3, noise=0.7, seed=3)
    qx, _ = np.linalg.qr(X - X.mean(0))
    qy, _ = np.linalg.qr(Y - Y.mean(0))
    brute = np.linalg.svd(qx.T @ qy, compute_uv=False)
    np.testing.assert_allclose(sim.canonical_correlations(X, Y), brute, atol=1e-8)
    assert sim.cca_similarity(X, Y) == pytest.approx(brute.mean(), abs=1e-8)


def test_first_canonical_correlation_by_exhaustive_search():
    # Two 2-D sets: search every pair of directions on a fine angle grid for the largest correlation.
    X, Y = _correlated(400, 2, 2, shared=1, noise=0.8, seed=4)
    angles = np.linspace(0, np.pi, 721)
    dirs = np.stack([np.cos(angles), np.sin(angles)])
    u, v = X @ dirs, Y @ dirs
    u = (u - u.mean(0)) / u.std(0)
    v = (v - v.mean(0)) / v.std(0)
    best = np.abs(u.T @ v / len(X)).max()
    assert sim.canonical_correlations(X, Y)[0] == pytest.approx(best, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cca_agrees_with_reference_algorithm(seed):
    X, Y = _correlated(20_000, 64, 64, shared=20, noise=2.0, seed=seed)
    X[:, :3] = np.maximum(X[:, :3], 0)  # ReLU-like, skewed channels
    ours = sim.cca_similarity(X, Y)
    ref = reference.reference_cca_similarity(X, Y)
    assert abs(ours - ref) < 1e-3
    assert abs(ours - ref) < 1e-9  # in practice they agree to rounding


def test_cca_near_singular_and_dead_channels_match_reference():
    rng = np.random.default_rng(5)
    X, Y = _correlated(5000, 32, 32, shared=8, noise=0.5, seed=5)
    X[:, 5] = 0.0  # a dead ReLU channel
    X[:, 6] = X[:, 7] + 1e-9 * rng.normal(size=5000)  # nearly duplicate channels
    Y[:, 0] = 2 * Y[:, 1] - Y[:, 2]  # exactly collinear
    ours = sim.cca_similarity(X, Y)
    assert np.isfinite(ours)
    assert abs(ours - reference.reference_cca_similarity(X, Y)) < 1e-3


def test_cca_all_dead_is_zero_and_bad_shapes_raise():
    X = np.zeros((100, 4))
    assert sim.cca_similarity(X, np.random.default_rng(0).normal(size=(100, 4))) == 0.0
    with pytest.raises(IncompatibleError, match="same samples"):
        sim.cca_similarity(np.ones((10, 2)), np.ones((11, 2)))
    with pytest.raises(IncompatibleError, match="more samples than neurons"):
        sim.cca_similarity(np.ones((10, 20)), np.ones((10, 2)))
    with pytest.raises(IncompatibleError, match="2-D"):
        sim.cca_similarity(np.ones(10), np.ones(10))
    with pytest.raises(IncompatibleError, match="NaN"):
        sim.cca_similarity(np.full((10, 2), np.nan), np.ones((10, 2)))


def test_svcca_drops_noise_directions():
    rng = np.random.default_rng(6)
    z = rng.normal(size=(4000, 3))
    X = np.hstack([10 * z, 0.01 * rng.normal(size=(4000, 20))])  # 3 signal + 20 tiny noise directions
    Y = np.hstack([10 * z @ rng.normal(size=(3, 3)), 0.01 * rng.normal(size=(4000, 20))])
    assert sim.cca_similarity(X, Y) < 0.3  # plain CCA averages in 20 uncorrelated directions
    assert sim.svcca_similarity(X, Y) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ConfigError, match="variance"):
        sim.svcca_similarity(X, Y, variance=0)


# ---------------------------------------------------------------------------------------------- CKA
def test_linear_cka_invariances():
    X, Y = _correlated(1000, 10, 12, shared=4, noise=1.0, seed=7)
    base = sim.linear_cka(X, Y)
    q, _ = np.linalg.qr(np.random.default_rng(8).normal(size=(12, 12)))
    assert sim.linear_cka(X, Y @ q) == pytest.approx(base, rel=1e-10)  # orthogonal transform
    assert sim.linear_cka(7.5 * X, Y) == pytest.approx(base, rel=1e-10)  # isotropic scaling
    assert sim.linear_cka(X + 3.0, Y) == pytest.approx(base, rel=1e-10)  # centring
    assert sim.linear_cka(X, Y) == pytest.approx(sim.linear_cka(Y, X), rel=1e-12)
    assert sim.linear_cka(X, X) == pytest.approx(1.0)
    # Not invariant to a non-isotropic scaling (unlike CCA).
    scale = np.diag(np.r_[100.0, np.ones(11)])
    assert abs(sim.linear_cka(X, Y @ scale) - base) > 1e-3


def test_linear_cka_matches_gram_form():
    X, Y = _correlated(200, 5, 7, shared=2, noise=1.0, seed=9)
    h = np.eye(200) - 1 / 200
    k, l_ = h @ X @ X.T @ h, h @ Y @ Y.T @ h
    hsic = lambda a, b: np.trace(a @ b)  # noqa: E731
    assert sim.linear_cka(X, Y) == pytest.approx(hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_)), rel=1e-10)


# ---------------------------------------------------------------------------------------- prediction
def test_prediction_similarity_hand_made():
    labels = np.array([0, 0, 1, 1, 1, 0, 1, 0, 1, 1])
    a = np.array([0, 0, 1, 1, 0, 0, 1, 0, 1, 0])  # wrong on 4, 9       -> acc 0.8
    b = np.array([0, 1, 1, 1, 0, 0, 1, 0, 1, 1])  # wrong on 1, 4       -> acc 0.8
    out = sim.prediction_similarity(a, b, labels)
    # same mistake status on 8 of 10 (both wrong on 4; a alone wrong on 9, b alone wrong on 1)
    assert out.similarity == pytest.approx(0.8)
    assert out.accuracy_a == pytest.approx(0.8) and out.accuracy_b == pytest.approx(0.8)
    assert out.baseline == pytest.approx(0.8 * 0.8 + 0.2 * 0.2)
    assert out.n == 10


def test_prediction_similarity_accepts_scores_and_uses_both_accuracies():
    labels = np.array([0, 1, 2, 2])
    probs_a = np.eye(3)[[0, 1, 2, 2]]  # all right, acc 1
    probs_b = np.eye(3)[[1, 1, 0, 2]]  # wrong on 0 and 2, acc 0.5
    out = sim.prediction_similarity(probs_a, probs_b, labels)
    assert out.similarity == pytest.approx(0.5)
    assert out.baseline == pytest.approx(1.0 * 0.5 + 0.0 * 0.5)  # a1*a2 + (1-a1)(1-a2), not a1^2 + ...
    binary = sim.prediction_similarity(np.array([0.9, 0.2, 0.6]), np.array([1, 0, 0]), np.array([1, 0, 0]))
    assert binary.similarity == pytest.approx(2 / 3)
    with pytest.raises(IncompatibleError, match="3 predictions for 4 labels"):
        sim.prediction_similarity(np.zeros(3, int), np.zeros(4, int), labels)


# ------------------------------------------------------------------------------------ 3.3.1 protocol
def test_sampling_plan_counts():
    shapes = {
        "conv1": (64, 112, 112),
        "layer1": (256, 56, 56),
        "layer3": (1024, 14, 14),
        "layer4": (2048, 7, 7),
        "small": (32, 2, 2),
        "fc": (10,),
    }
    plan = sim.sampling_plan(shapes, n_images=200, seed=3)
    assert len(plan["conv1"].images[0]) == 2  # round(20000 / 12544)
    assert len(plan["layer1"].images[0]) == 6  # round(20000 / 3136)
    assert len(plan["layer3"].images[0]) == 102  # round(20000 / 196)
    assert plan["layer3"].rows == 102 * 196
    assert len(plan["layer4"].images[0]) == 200  # wants 408, only 200 exist: use what exists
    assert plan["small"].n_channels == 32 and plan["layer4"].n_channels == 64
    assert plan["fc"].shape == (10, 1, 1) and plan["fc"].n_channels == 10
    for s in plan.values():
        assert s.repeats == 5
        for imgs, chans in zip(s.images, s.channels):
            assert len(np.unique(imgs)) == len(imgs) and len(np.unique(chans)) == len(chans)
    # repeats draw anew; the same seed draws the same
    assert not np.array_equal(plan["layer3"].images[0], plan["layer3"].images[1])
    again = sim.sampling_plan(shapes, n_images=200, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(plan["layer3"].channels, again["layer3"].channels))
    with pytest.raises(ConfigError, match="n_images"):
        sim.sampling_plan(shapes, n_images=0)


class _Tiny(nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        return self.head(self.block(torch.relu(self.conv1(x))).mean((2, 3)))


def test_capture_activations_matches_full_maps_and_releases_hooks():
    model = _Tiny(0)
    images = torch.randn(30, 3, 12, 12)
    layers = ["conv1", "block"]
    shapes = sim.layer_output_shapes(model, images, layers)
    assert shapes == {"conv1": (8, 12, 12), "block": (16, 6, 6)}
    plan = sim.sampling_plan(shapes, len(images), target_rows=400, n_channels=5, repeats=3, seed=0)
    acts = sim.capture_activations(model, images, plan, batch_size=7, progress=False)
    assert not model.conv1._forward_hooks and not model.block._forward_hooks
    # Reference: full maps of the sampled images, reshaped (n, h, w, c) -> (n*h*w, c) as 3.3.1 does.
    full = {}
    model.conv1.register_forward_hook(lambda m, i, o: full.__setitem__("conv1", o))
    model.block.register_forward_hook(lambda m, i, o: full.__setitem__("block", o))
    with torch.no_grad():
        model(images)
    for name in layers:
        s = plan[name]
        assert len(acts[name]) == 3
        for r in range(3):
            expected = full[name][s.images[r]][:, s.channels[r]].permute(0, 2, 3, 1).reshape(-1, s.n_channels)
            np.testing.assert_allclose(acts[name][r], expected.numpy(), rtol=1e-5, atol=1e-6)
            assert acts[name][r].shape == (s.rows, s.n_channels)
    assert len(plan["conv1"].images[0]) == 3  # round(400 / 144)


def test_capture_removes_hooks_on_failure_and_frees_memory():
    model = _Tiny(0)
    images = torch.randn(8, 3, 12, 12)
    plan = sim.sampling_plan({"conv1": (8, 12, 12)}, 8, target_rows=100, n_channels=4, repeats=1)
    bad = sim.sampling_plan({"conv1": (8, 6, 6)}, 8, target_rows=100, n_channels=4, repeats=1)
    with pytest.raises(IncompatibleError, match="plan was drawn"):
        sim.capture_activations(model, images, bad, progress=False)
    assert not model.conv1._forward_hooks
    # Nothing keeps the full activation maps alive after capture: the output tensors of the last batch
    # are collectable once the call returns.
    seen = []
    model.conv1.register_forward_hook(lambda m, i, o: seen.append(weakref.ref(o)))
    sim.capture_activations(model, images, plan, progress=False)
    gc.collect()
    assert seen and all(ref() is None for ref in seen)
    with pytest.raises(ConfigError, match="unknown layer 'nope'"):
        sim.capture_activations(model, images, {"nope": plan["conv1"]}, progress=False)


def test_layer_similarity_of_network_with_itself_and_with_other():
    images = torch.randn(64, 3, 12, 12)
    a, b = _Tiny(0), _Tiny(1)
    shapes = sim.layer_output_shapes(a, images, ["conv1", "block"])
    plan = sim.sampling_plan(shapes, len(images), target_rows=1000, n_channels=6, repeats=2, seed=1)
    acts_a = sim.capture_activations(a, images, plan, progress=False)
    acts_b = sim.capture_activations(b, images, plan, progress=False)
    for measure in ("cca", "svcca", "cka"):
        same = sim.layer_similarity(acts_a, acts_a, measure)
        assert all(v == pytest.approx(1.0, abs=1e-6) for v in same.values())
        other = sim.layer_similarity(acts_a, acts_b, measure)
        assert all(0 <= v < 1 for v in other.values())
    with pytest.raises(ConfigError, match="valid choices: cca, svcca, cka"):
        sim.layer_similarity(acts_a, acts_b, "pwcca")


def test_pairs_use_identical_rows():
    # Activations of a network and of a copy whose conv1 channels are mixed by an invertible map are
    # perfectly CCA-similar only if both captures pick the same rows: the plan guarantees it.
    images = torch.randn(40, 3, 12, 12)
    a = _Tiny(0)
    b = _Tiny(0)
    mix = torch.linalg.qr(torch.randn(8, 8))[0] * 3
    with torch.no_grad():
        b.conv1.weight.copy_(torch.einsum("oc,cikl->oikl", mix, a.conv1.weight))
        b.conv1.bias.copy_(mix @ a.conv1.bias)
    plan = sim.sampling_plan({"conv1": (8, 12, 12)}, 40, target_rows=2000, n_channels=8, repeats=2, seed=4)
    out = sim.layer_similarity(
        sim.capture_activations(a, images, plan, progress=False),
        sim.capture_activations(b, images, plan, progress=False),
    )
    assert out["conv1"] == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("measure", ["cca", "cka"])
def test_measures_are_deterministic(measure):
    X, Y = _correlated(300, 5, 5, 2, 1.0, 11)
    values = {sim.MEASURES[measure](X, Y) for _ in itertools.repeat(None, 3)}
    assert len(values) == 1


# ------------------------------------------------------------------------------ experiment building blocks
def test_resnet_stages_of_zoo_classifier_and_torchvision():
    import torchvision


    model = sources.create("random:resnet18", 2, input_size=28, seed=0)
    stages = sim.resnet_stages(model)
    assert list(stages) == list(sim.STAGES)
    assert stages["conv1"] is model.body.relu and stages["block4"] is model.body.layer4
    shapes = sim.layer_output_shapes(model, torch.zeros(1, 3, 28, 28), stages)
    assert shapes == {
        "conv1": (64, 14, 14),
        "block1": (64, 7, 7),
        "block2": (128, 4, 4),
        "block3": (256, 2, 2),
        "block4": (512, 1, 1),
    }
    assert sim.resnet_stages(torchvision.models.resnet50())["block4"] is not None
    with pytest.raises(IncompatibleError, match="no ResNet stem"):
        sim.resnet_stages(_Tiny(0))


def test_compare_layers_on_real_images_is_cached(mirror, tmp_path):
    from cfct import data, results

    ds = data.load_target("breastmnist", "test", 28)
    loads = []

    def loader(seed):
        def load():
            loads.append(seed)
            return sources.create("random:resnet18", 2, input_size=28, seed=seed)

        return load

    nets = {"a": ch3.Network("r0", loader(0)), "b": ch3.Network("r1", loader(1)), "c": ch3.Network("r0", loader(0))}
    store = results.Store(tmp_path)
    kwargs = dict(stimuli_id=ds.fingerprint(), target_rows=2000, repeats=2, store=store, progress=False)
    df = ch3.compare_layers(nets, [("a", "b"), ("a", "c")], ds.images, **kwargs)
    assert len(loads) == 3
    assert set(df.layer) == set(sim.STAGES) and set(df.measure) == {"cca", "cka"}
    same = df[(df.b == "c")]
    assert np.allclose(same.value, 1.0, atol=1e-5)  # the same random network (same seed)
    other = df[(df.b == "b") & (df.measure == "cca")].groupby("layer").value.mean()
    assert (other < 0.95).all()
    assert df[df.layer == "block4"].rows.iloc[0] == len(ds)  # 1x1 maps: all 156 images, fewer than 20,000 rows
    again = ch3.compare_layers(nets, [("a", "b"), ("a", "c")], ds.images, **kwargs)
    assert len(loads) == 3  # cached: no network loaded again
    pd_equal = np.allclose(again.value.to_numpy(), df.value.to_numpy())
    assert pd_equal
    with pytest.raises(ConfigError, match="unknown network 'z'"):
        ch3.compare_layers(nets, [("a", "z")], ds.images, **kwargs)


def test_gabor_bank_and_likeness():
    bank = sim.gabor_bank()
    assert bank.shape == (36, 7, 7)
    np.testing.assert_allclose(np.linalg.norm(bank.reshape(36, -1), axis=1), 1.0)
    np.testing.assert_allclose(bank.reshape(36, -1).mean(1), 0.0, atol=1e-12)
    gabor_filters = np.repeat(bank[:, None], 3, axis=1)  # (36, 3, 7, 7)
    assert sim.gabor_likeness(gabor_filters).min() > 0.95
    noise = np.random.default_rng(0).normal(size=(64, 3, 7, 7))
    assert sim.gabor_likeness(noise).mean() < 0.6
    with pytest.raises(IncompatibleError, match="filters must be"):
        sim.gabor_likeness(np.zeros((3, 7, 7)))


def test_relative_gain():
    assert sim.relative_gain(0.9, 0.75) == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="positive"):
        sim.relative_gain(0.9, 0.0)
