"""Tests of cfct.spectral: Eq. 5.1 (radial PSD), Eq. 5.2 (spectrum normalisation and whitening), learning
priority, source edits and the NLM artifact. Each asserts a property a wrong implementation would break."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data as skdata
from torch import nn

from cfct import sources, spectral
from cfct.errors import ConfigError, IncompatibleError
from cfct.experiments import ch5, robustness


def _wave(size: int, u: int, v: int, phase: float = 0.3) -> np.ndarray:
    n = np.arange(size)
    return np.cos(2 * np.pi * (u * n[:, None] + v * n[None, :]) / size + phase)


def _camera(size: int = 64) -> np.ndarray:
    """A real photograph (scikit-image's 'camera'), block-averaged to ``size`` px, float in [0, 255]."""
    img = skdata.camera().astype(np.float64)
    f = img.shape[0] // size
    return img[: size * f, : size * f].reshape(size, f, size, f).mean(axis=(1, 3))


# ------------------------------------------------------------------------------------------------ Eq. 5.1
@pytest.mark.parametrize(("size", "u", "v"), [(32, 3, 4), (32, 0, 7), (28, 5, 12), (64, 20, 21), (31, 6, 8)])
def test_sinusoid_peaks_at_its_frequency(size: int, u: int, v: int) -> None:
    wave = _wave(size, u, v)
    k = int(round(np.hypot(u, v)))
    for options in ({}, {"exponent": 2, "reduce": "sum"}):
        psd = spectral.radial_psd(wave, **options)
        assert psd.shape == (size // 2,)
        assert int(np.argmax(psd)) == k
        assert np.delete(psd, [0, k]).max() < 1e-10 * psd[k]
    # ring-summed power: a pure cosine has all its energy (the DC term of a zero-mean wave aside) in bin k
    np.testing.assert_allclose(psd[k], (wave**2).sum() - psd[0], rtol=1e-10)


def test_sinusoid_torch_matches_numpy() -> None:
    wave = _wave(32, 3, 4)
    out = spectral.radial_psd(torch.from_numpy(wave)[None, None])
    assert isinstance(out, torch.Tensor) and out.shape == (1, 16)
    np.testing.assert_allclose(out[0].numpy(), spectral.radial_psd(wave), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", [8, 28, 32])
def test_eq_5_1_flat_spectrum_gives_flat_psd(size: int) -> None:
    """A single bright pixel has |F| = 1/M at every frequency: the angular integral is 2 pi / M at every radius,
    while the ring sum grows with the ring's circumference."""
    delta = np.zeros((size, size))
    delta[3, 5] = 1.0
    np.testing.assert_allclose(spectral.radial_psd(delta), 2 * np.pi / size, rtol=1e-12)
    np.testing.assert_allclose(spectral.radial_psd(delta, exponent=2), 2 * np.pi / size**2, rtol=1e-12)
    index, n_bins = spectral.radial_index(size, size)
    ring = np.bincount(index, minlength=n_bins + 1)[:n_bins]
    np.testing.assert_allclose(spectral.radial_psd(delta, reduce="sum"), ring / size, rtol=1e-12)
    assert ring[-1] >= 2 * ring[1]  # the ring sum grows with the circumference
    # white noise averaged over many images: the power form is flat in expectation (within sampling error)
    noise = np.random.default_rng(0).normal(size=(400, size, size))
    mean_psd = spectral.radial_psd(noise, exponent=2).mean(0)
    np.testing.assert_allclose(mean_psd[1:], 2 * np.pi, rtol=0.1)


def test_eq_5_1_known_values_on_a_hand_made_image() -> None:
    """4x4 image, unitary DFT, bins k = 0, 1 (M/2 = 2): bin 0 = {(0, 0)}, bin 1 = {(0, +-1), (+-1, 0),
    (+-1, +-1)} (radius 1 and sqrt 2 both round to 1); |F| is computed with NumPy's FFT independently."""
    img = np.array([[1.0, 2, 0, 0], [0, 1, 0, 3], [4, 0, 0, 1], [0, 0, 2, 0]])
    mag = np.abs(np.fft.fft2(img, norm="ortho"))
    ring1 = [(0, 1), (0, 3), (1, 0), (3, 0), (1, 1), (1, 3), (3, 1), (3, 3)]
    expected = np.array([2 * np.pi * mag[0, 0], 2 * np.pi * np.mean([mag[i, j] for i, j in ring1])])
    np.testing.assert_allclose(spectral.radial_psd(img), expected, rtol=1e-12)
    np.testing.assert_allclose(mag[0, 0], img.sum() / 4)  # the DC term is the sum over the side length
    summed = np.array([mag[0, 0] ** 2, sum(mag[i, j] ** 2 for i, j in ring1)])
    np.testing.assert_allclose(spectral.radial_psd(img, exponent=2, reduce="sum"), summed, rtol=1e-12)
    with pytest.raises(ConfigError, match="PSD reduction"):
        spectral.radial_psd(img, reduce="mean")


@pytest.mark.parametrize("shape", [(32, 32), (5, 28, 28), (4, 33, 31), (3, 16, 16, 3)])
def test_parseval_total_power_is_image_energy(shape: tuple[int, ...]) -> None:
    """Unitary DFT: with the corner frequencies kept, sum(PSD) = sum(x**2) (mean over channels)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape)
    power_sum = {"exponent": 2, "reduce": "sum"}  # the ring-summed power spectrum option
    psd = spectral.radial_psd(x, include_corners=True, **power_sum)
    energy = (x**2).sum(axis=(-3, -2)).mean(-1) if len(shape) == 4 else (x**2).sum(axis=(-2, -1))
    np.testing.assert_allclose(psd.sum(-1), energy, rtol=1e-10)
    # the Eq. 5.1 range (k < M/2) drops only the corners, so it holds less than all of the energy
    assert np.all(spectral.radial_psd(x, **power_sum).sum(-1) < energy)


def test_parseval_on_uint8_image_batch_float32_path() -> None:
    images = (np.random.default_rng(1).random((6, 28, 28, 1)) * 255).astype(np.uint8)
    psd = spectral.radial_psd(images, include_corners=True, exponent=2, reduce="sum")
    energy = (images.astype(np.float64) ** 2).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(psd.sum(1), energy, rtol=1e-5)


def test_batch_equals_single_images_and_chunking() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(7, 24, 24))
    batch = spectral.radial_psd(x)
    single = np.stack([spectral.radial_psd(img) for img in x])
    chunked = spectral.radial_psd(x, batch_size=3)
    np.testing.assert_allclose(batch, single, rtol=1e-12)
    np.testing.assert_allclose(chunked, batch, rtol=1e-12)


def test_grey_repeated_to_three_channels_keeps_psd() -> None:
    grey = _camera(32)[None, :, :, None]
    np.testing.assert_allclose(
        spectral.radial_psd(np.repeat(grey, 3, axis=-1)), spectral.radial_psd(grey), rtol=1e-12
    )


def test_rotation_by_right_angles_and_flips_is_exact() -> None:
    img = _camera(32)
    psd = spectral.radial_psd(img)
    for variant in (np.rot90(img), np.rot90(img, 2), img.T, img[::-1], img[:, ::-1]):
        np.testing.assert_allclose(spectral.radial_psd(np.ascontiguousarray(variant)), psd, rtol=1e-9)


@pytest.mark.parametrize("angle", [30.0, 45.0, 71.0])
def test_rotation_invariance_at_any_angle(angle: float) -> None:
    """A windowed photograph rotated by an arbitrary angle keeps its radial PSD (up to interpolation)."""
    size = 64
    n = np.arange(size) - (size - 1) / 2
    window = np.exp(-(n[:, None] ** 2 + n[None, :] ** 2) / (2 * (size / 8) ** 2))  # fades out before edges
    img = (_camera(size) - _camera(size).mean()) * window
    rotated = ndimage.rotate(img, angle, reshape=False, order=3, mode="constant")
    a, b = spectral.radial_psd(img), spectral.radial_psd(rotated)
    # rotating the sampled spectrum moves some coefficients across a ring boundary (radius k +- 1/2), so
    # compare the cumulative PSD (the power below each radius), which that jitter barely changes; cubic
    # interpolation damps the highest frequencies, so compare the lower half of the band
    band = slice(0, size // 4)
    np.testing.assert_allclose(np.cumsum(b)[band], np.cumsum(a)[band], rtol=0.03)
    np.testing.assert_allclose(b[band], a[band], rtol=0.25, atol=1e-3 * a.max())
    # a spectrum that is *not* rotation invariant as a 2D map still is after the angular integral
    spec_a = np.abs(np.fft.fft2(img))
    spec_b = np.abs(np.fft.fft2(rotated))
    assert np.abs(spec_a - spec_b).max() > 0.2 * spec_a.max()


def test_normalized_frequencies_axis() -> None:
    w = spectral.normalized_frequencies(14)
    assert w[0] == 0 and w[-1] == 1 and len(w) == 14
    with pytest.raises(ConfigError):
        spectral.normalized_frequencies(1)


def test_bad_input_errors() -> None:
    with pytest.raises(IncompatibleError, match="layout 'NCHW' needs 4"):
        spectral.radial_psd(np.zeros((8, 8)), layout="NCHW")
    with pytest.raises(ConfigError, match="valid choices: HW, NHW, NHWC, NCHW"):
        spectral.radial_psd(np.zeros((2, 8, 8)), layout="CHW")
    with pytest.raises(IncompatibleError, match="got shape"):
        spectral.radial_psd(np.zeros(8))
    with pytest.raises(IncompatibleError, match="at least 2x2"):
        spectral.radial_psd(np.zeros((3, 1, 1)))
    with pytest.raises(ConfigError, match="exponent"):
        spectral.radial_psd(np.zeros((8, 8)), exponent=0)
    with pytest.raises(ConfigError, match="numpy array or torch tensor"):
        spectral.radial_psd([[0.0, 1.0], [1.0, 0.0]])


def test_artifact_psd_is_psd_of_residual() -> None:
    rng = np.random.default_rng(3)
    clean = rng.integers(20, 200, size=(5, 28, 28, 1)).astype(np.uint8)
    pattern = np.round(10 * _wave(28, 2, 9))[None, :, :, None]
    modified = (clean + pattern).astype(np.uint8)  # values stay inside 0..255: the residual is the pattern
    expected = spectral.radial_psd(np.broadcast_to(pattern, clean.shape).astype(np.float64)).mean(0)
    np.testing.assert_allclose(spectral.artifact_psd(clean, modified), expected, rtol=1e-6)
    assert int(np.argmax(spectral.artifact_psd(clean, modified))) == int(round(np.hypot(2, 9)))
    with pytest.raises(IncompatibleError, match="differ in shape"):
        spectral.artifact_psd(clean, modified[:2])


def test_normalize_psd() -> None:
    psd = np.array([[1.0, 3.0], [2.0, 2.0]])
    np.testing.assert_allclose(spectral.normalize_psd(psd).sum(1), 1)
    np.testing.assert_allclose(spectral.normalize_psd(psd, "max").max(1), 1)
    with pytest.raises(ConfigError, match="valid choices: sum, max"):
        spectral.normalize_psd(psd, "area")


# ------------------------------------------------------------------------------------------------ Eq. 5.2
def test_spectrum_normalisation_is_flat_and_whitening_restores_moments() -> None:
    images = np.stack([_camera(32), _camera(32)[::-1] * 0.5 + 20])[..., None]
    normalized = spectral.normalize_spectrum(images)
    magnitude = np.abs(np.fft.fft2(normalized, axes=(1, 2), norm="ortho"))
    np.testing.assert_allclose(magnitude, 1.0, atol=1e-9)
    assert np.abs(np.imag(np.fft.ifft2(np.fft.fft2(images, axes=(1, 2)), axes=(1, 2)))).max() < 1e-9
    whitened = spectral.whiten(normalized, images)
    np.testing.assert_allclose(whitened.mean(axis=(1, 2)), images.mean(axis=(1, 2)), rtol=1e-10)
    np.testing.assert_allclose(whitened.std(axis=(1, 2)), images.std(axis=(1, 2)), rtol=1e-10)
    # whitening is affine, so the spectrum magnitude (DC aside) stays flat: so does Eq. 5.1's PSD, while the
    # ring-summed power of the same images is proportional to each ring's coefficient count
    psd = spectral.radial_psd(whitened[..., 0])
    np.testing.assert_allclose(psd[:, 1:], np.broadcast_to(psd[:, 1:2], psd[:, 1:].shape), rtol=1e-8)
    summed = spectral.radial_psd(whitened[..., 0], exponent=2, reduce="sum")
    index, n_bins = spectral.radial_index(32, 32)
    ring = np.bincount(index, minlength=n_bins + 1)[1:n_bins].astype(float)
    np.testing.assert_allclose(summed[:, 1:] / summed[:, 1:].sum(1, keepdims=True),
                               np.broadcast_to(ring / ring.sum(), summed[:, 1:].shape), rtol=1e-8)
    np.testing.assert_allclose(spectral.spectrum_whiten(images), whitened)


def test_whiten_shape_mismatch() -> None:
    with pytest.raises(IncompatibleError):
        spectral.whiten(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)))


# ------------------------------------------------------------------------------------------------ low-pass
@pytest.mark.parametrize("cutoff", [0.25, 0.5, 0.8])
def test_lowpass_has_no_power_above_cutoff_and_keeps_mean(cutoff: float) -> None:
    images = np.stack([_camera(32), _camera(32).T])[..., None]
    filtered = spectral.lowpass(images, cutoff)
    psd = spectral.radial_psd(filtered)
    freqs = spectral.normalized_frequencies(16)
    # bin k holds radii in [k - 1/2, k + 1/2): bins whose lower edge is above the cutoff radius are empty
    above = (np.arange(16) - 0.5) > cutoff * 15
    assert above.any()
    assert psd[:, above].max() < 1e-12 * psd.max()  # magnitude: round-off of the zeroed power, square-rooted
    assert psd[:, freqs <= cutoff].min() > 0
    np.testing.assert_allclose(filtered.mean(axis=(1, 2)), images.mean(axis=(1, 2)), rtol=1e-12)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        spectral.lowpass(images, 1.5)


# ------------------------------------------------------------------------------------- learning priority
def test_learning_priority_of_linear_model_is_psd_of_weight_image() -> None:
    """Hand derivation: logits z = W x + b, cross-entropy; dL/dx = (p1 - y) (W1 - W0) for two classes,
    so the mean gradient PSD is mean((p1 - y)**2) * PSD(W1 - W0)."""
    torch.manual_seed(0)
    size = 16
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, 2)).double()
    x = torch.rand(20, 3, size, size, dtype=torch.float64)
    y = torch.randint(0, 2, (20,))
    lp = spectral.learning_priority(model, (x, y), normalization=None, batch_size=7, device="cpu")
    weight = model[1].weight.detach()
    weight_image = (weight[1] - weight[0]).reshape(1, 3, size, size)
    p1 = torch.softmax(model(x), 1)[:, 1].detach()
    # Eq. 5.1 (magnitude) scales with |p1 - y|; the power option with (p1 - y)**2
    expected = (p1 - y).abs().mean().item() * spectral.radial_psd(weight_image)[0].numpy()
    np.testing.assert_allclose(lp, expected, rtol=1e-5)
    power = spectral.learning_priority(model, (x, y), normalization=None, batch_size=7, device="cpu",
                                       exponent=2, reduce="sum")
    expected = ((p1 - y) ** 2).mean().item() * spectral.radial_psd(weight_image, exponent=2, reduce="sum")[0]
    np.testing.assert_allclose(power, expected.numpy(), rtol=1e-5)
    # normalised, it is the PSD of the weight image itself (as Fig. 5.3 plots it)
    np.testing.assert_allclose(
        spectral.normalize_psd(lp), spectral.normalize_psd(spectral.radial_psd(weight_image)[0].numpy()),
        rtol=1e-5,
    )


def test_learning_priority_batched_equals_one_by_one_with_batchnorm() -> None:
    """Batch-norm in eval mode keeps images independent, so batched gradients are per-image gradients."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.train()
    model(torch.rand(8, 3, 12, 12))  # give batch-norm non-trivial running statistics
    x = torch.rand(9, 3, 12, 12)
    y = torch.randint(0, 3, (9,))
    one = spectral.learning_priority(model, (x, y), normalization=None, batch_size=1, device="cpu")
    many = spectral.learning_priority(model, (x, y), normalization=None, batch_size=9, device="cpu")
    np.testing.assert_allclose(many, one, rtol=1e-5)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # parameters untouched
    pred = spectral.learning_priority(model, (x, None), labels="predicted", normalization=None, device="cpu")
    assert pred.shape == (6,) and np.all(pred >= 0)
    with pytest.raises(ConfigError, match="labels='predicted'"):
        spectral.learning_priority(model, (x, None), normalization=None, device="cpu")
    with pytest.raises(ConfigError, match="valid choices: true, predicted"):
        spectral.learning_priority(model, (x, y), labels="soft")


# ------------------------------------------------------------------------------------- source edits
def _fake_cifar(n_per_class: int = 2):
    from cfct.data import CIFAR10_CLASSES, ImageSet

    rng = np.random.default_rng(4)
    labels = np.repeat(np.arange(10), n_per_class)
    images = rng.integers(0, 256, size=(len(labels), 32, 32, 3)).astype(np.uint8)
    return ImageSet(images, labels, "multi-class", CIFAR10_CLASSES, "cifar10@32:train")


def test_coarse_merge_living_thing_vs_artifact() -> None:
    ds = _fake_cifar()
    merged = spectral.coarse_merge(ds)
    assert merged.class_names == ("artifact", "living thing")
    assert merged.task == "binary" and merged.name.endswith("|coarse")
    for fine, coarse in zip(ds.labels, merged.labels, strict=True):
        assert merged.class_names[coarse] == spectral.CIFAR10_COARSE[ds.class_names[fine]]
    assert np.bincount(merged.labels).tolist() == [8, 12]  # 4 vehicle and 6 animal classes x 2 images
    with pytest.raises(ConfigError, match="have no coarse class"):
        spectral.coarse_merge(ds, {"cat": "living thing"})


def test_source_edits_change_name_and_content() -> None:
    ds = _fake_cifar()
    low = spectral.edit_source(ds, "lowpass-coarse", cutoff=0.3)
    assert low.images.dtype == np.uint8 and low.images.shape == ds.images.shape
    assert low.n_classes == 2 and low.fingerprint() != ds.fingerprint()
    psd = spectral.radial_psd(low.images, exponent=2, reduce="sum").mean(0)  # energy per band
    assert psd[-4:].sum() < 1e-3 * psd[1:].sum()  # only uint8 rounding noise is left at high frequencies
    white = spectral.edit_source(ds, "spectrum-whiten")
    assert white.name.endswith("|spectrum-whiten") and white.n_classes == 10
    np.testing.assert_allclose(white.images.mean(axis=(1, 2)), ds.images.mean(axis=(1, 2)), atol=3)
    with pytest.raises(ConfigError, match="valid choices: spectrum-whiten, lowpass-coarse"):
        spectral.edit_source(ds, "blur")


# ------------------------------------------------------------------------------------------------ NLM
def test_estimate_noise_sigma_recovers_known_sigma() -> None:
    rng = np.random.default_rng(5)
    smooth = np.tile(np.linspace(50, 200, 64), (64, 1))  # locally linear: the estimator ignores it
    noisy = smooth[None] + rng.normal(0, 7.0, size=(4, 64, 64))
    np.testing.assert_allclose(spectral.estimate_noise_sigma(noisy)[:, 0], 7.0, rtol=0.05)


def test_nlm_denoise_removes_noise_and_keeps_shape() -> None:
    rng = np.random.default_rng(6)
    clean = _camera(64)
    noisy = np.clip(clean[None] + rng.normal(0, 12, size=(3, 64, 64)), 0, 255).astype(np.uint8)
    denoised = spectral.nlm_denoise(noisy)
    assert denoised.shape == noisy.shape and denoised.dtype == np.uint8
    err_noisy = np.mean((noisy.astype(float) - clean) ** 2)
    err_denoised = np.mean((denoised.astype(float) - clean) ** 2)
    assert err_denoised < 0.6 * err_noisy
    # the artifact lives at high frequencies: its residual's power is mostly in the upper half of the band
    res = spectral.artifact_psd(noisy, denoised)
    assert res[8:].sum() > 2 * res[:8].sum()
    with pytest.raises(ConfigError):
        spectral.nlm_denoise(noisy, strength=0)


# ------------------------------------------------------------------------------------- experiment layer
def test_balanced_sizes_cap_at_the_pools_known_counts(mirror) -> None:
    # BreastMNIST: 147 malignant (positive) training images, 42 malignant test images
    assert ch5.balanced_sizes("breastmnist", 28, 500, 1000) == (294, 84)
    assert ch5.balanced_sizes("breastmnist", 28, 100, 60) == (100, 60)
    n_dev, n_test = ch5.balanced_sizes("csv:iqothnccd-lung-ct", 28, 100, 2000)
    # one pool of 405 normal and 650 lesion slices: 0.9 * 810 = 729 balanced images in all
    assert n_dev == 100 and n_test == 629


def test_nlm_artifact_builds_chapter4_sets_with_stated_composition(mirror) -> None:
    artifact = spectral.get_artifact("nlm-denoising")
    sets = robustness.experiment_sets("breastmnist", artifact, 0.5, size=28, n_dev=60, n_test=40,
                                     pos_fraction=0.5, seed=0, cache=False)
    comp = sets.composition().set_index(["set", "class"])
    assert comp.loc[("dev", "positive"), "with confounder"] == 15  # half of the 30 positives
    assert comp.loc[("dev", "negative"), "with confounder"] == 0
    assert comp.loc[("ood", "negative"), "with confounder"] == 20  # every negative
    assert comp.loc[("ood", "positive"), "with confounder"] == 0
    clean = ch5.probe_set("breastmnist", artifact, size=28, n_dev=60, n_test=40)
    changed = np.any(sets.ood.images != clean.images, axis=(1, 2, 3))
    np.testing.assert_array_equal(changed, sets.ood_artifact)  # NLM changed exactly the flagged images
    np.testing.assert_array_equal(sets.ood.images[changed], spectral.nlm_denoise(clean.images[changed]))
    with pytest.raises(ConfigError, match="valid choices: ct-noise, nlm-denoising"):
        spectral.get_artifact("jpeg")


def test_write_image_folder_round_trip(tmp_path) -> None:
    from cfct import data

    ds = spectral.coarse_merge(_fake_cifar(3))
    root = ch5.write_image_folder(ds, tmp_path / "edited")
    back = data.load_dataset(f"imagefolder:{root}", 32)
    order = np.argsort(ds.labels, kind="stable")  # class folders, then file order = original order per class
    np.testing.assert_array_equal(back.labels, ds.labels[order])
    np.testing.assert_array_equal(back.images, ds.images[order])
    assert (root / "DONE").read_text() == ds.fingerprint()


def test_edited_source_pretrains_on_the_edited_images(mirror) -> None:
    from cfct import data, results

    spec = ch5.edited_source("resnet18", "medmnist:breastmnist", "spectrum-whiten", profile="smoke",
                                  progress=False)
    assert spec.startswith("checkpoint:resnet18:") and spec.endswith("model.safetensors")
    # the pre-training run that wrote this checkpoint (the session store may hold other edited sources,
    # e.g. a chapter's smoke run)
    checkpoint = Path(spec.split(":", 2)[2]).resolve()
    run = next(r for r in results.Store().runs("pretrain") if r.path.resolve() == checkpoint.parent)
    folder = run.config["dataset"]
    images = next(r for r in results.Store().runs("ch5-edited-images")
                  if f"imagefolder:{r.path / 'images'}" == folder)
    assert images.config["edit"] == "spectrum-whiten" and images.metrics["n_images"] == 546
    seen = data.load_dataset(folder, 28)
    original = data.load_dataset("medmnist:breastmnist", 28)  # 546 images: under smoke's cap of 600
    order = np.argsort(original.labels, kind="stable")  # the image folder groups images by class
    np.testing.assert_array_equal(seen.images, spectral.spectrum_whiten_source(original).images[order])
    model = sources.create(spec, None, input_size=28)
    assert model.num_classes == 2
    assert ch5.edited_source("resnet18", "medmnist:breastmnist", "spectrum-whiten", profile="smoke",
                                  progress=False) == spec  # cached: the same checkpoint
    with pytest.raises(ConfigError, match="needs a 'pretrained:<arch>:<dataset>' source"):
        ch5.edited_spec("random:resnet18", "spectrum-whiten")


def test_centroid_and_overlap_known_values() -> None:
    assert spectral.spectral_centroid(np.ones(5)) == pytest.approx(0.5)
    assert spectral.spectral_centroid(np.eye(5)[3]) == pytest.approx(0.75)
    assert spectral.spectral_overlap(np.arange(1, 6), 2 * np.arange(1, 6)) == pytest.approx(1.0)
    assert spectral.spectral_overlap(np.eye(4)[0], np.eye(4)[3]) == pytest.approx(0.0)
    assert spectral.spectral_overlap(np.array([1.0, 1.0]), np.array([1.0, 3.0])) == pytest.approx(0.75)
    with pytest.raises(IncompatibleError, match="share their radial bins"):
        spectral.spectral_overlap(np.ones(4), np.ones(5))


def test_summarize_and_robustness_table() -> None:
    import pandas as pd

    table = pd.DataFrame({
        "target": "t", "source": ["a"] * 4 + ["b"] * 4, "p_art": [0, 0, 1, 1] * 2, "fold": [0, 1] * 4,
        "ood_auc": [0.9, 0.8, 0.5, 0.3, 0.8, 0.8, 0.7, 0.7],
        "iid_auc": [0.9, 0.8, 1.0, 1.0, 0.8, 0.8, 0.9, 0.9],
    })
    summary = ch5.summarize(table)
    pick = (summary.source == "a") & (summary.p_art == 1) & (summary.metric == "ood_auc")
    row = summary[pick].iloc[0]
    assert row["mean"] == pytest.approx(0.4) and row["std"] == pytest.approx(np.std([0.5, 0.3], ddof=1))
    robust = ch5.robustness_table(summary).set_index("source")
    assert robust.loc["a", "ood_drop"] == pytest.approx(0.45)
    assert robust.loc["b", "ood_auc_mean_degraded"] == pytest.approx(0.7)
    assert robust.loc["a", "iid_auc_max"] == pytest.approx(1.0)


def test_learning_priority_of_a_zoo_classifier_on_an_imageset(mirror) -> None:
    from cfct import data

    ds = data.load_target("breastmnist", "test", 28).subset(np.arange(12))
    model = sources.create("random:resnet18", 2, input_size=28, seed=0)
    lp = spectral.learning_priority(model, ds, batch_size=5, device="cpu")
    assert lp.shape == (14,) and np.all(lp > 0)
    # 'model' normalisation ('half') scales the input by 2: the gradient w.r.t. the [0, 1] image is the
    # gradient w.r.t. the normalised input times 2, so its Eq. 5.1 PSD (magnitude) is 2 times the
    # un-normalised model's, and its power spectrum 4 times
    x = data.to_tensor(ds.images)
    raw = spectral.learning_priority(model, (data.normalize(x, "half"), ds.labels), normalization=None,
                                     batch_size=5, device="cpu")
    np.testing.assert_allclose(lp, 2 * raw, rtol=1e-4)
    power = spectral.learning_priority(model, ds, batch_size=5, device="cpu", exponent=2)
    raw_power = spectral.learning_priority(model, (data.normalize(x, "half"), ds.labels), normalization=None,
                                           batch_size=5, device="cpu", exponent=2)
    np.testing.assert_allclose(power, 4 * raw_power, rtol=1e-4)


def test_band_fraction_known_values() -> None:
    # 4 bins: omega_bar 0, 1/3, 2/3, 1; "above 1/3" keeps the last two
    assert spectral.band_fraction(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(0.5)
    assert spectral.band_fraction(np.array([3.0, 1.0, 0.0, 0.0])) == pytest.approx(0.0)
    assert spectral.band_fraction(np.array([0.0, 0.0, 1.0, 3.0]), above=0.7) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="above"):
        spectral.band_fraction(np.ones(4), above=1.0)


def test_compare_psd_variants_known_cases() -> None:
    n = np.arange(32)

    def wave(r: int) -> np.ndarray:
        return np.cos(2 * np.pi * r * n[None, :] / 32) * np.ones((32, 1))

    # A flat magnitude spectrum stays flat under any exponent: the normalised curves are identical.
    delta = np.zeros((32, 32))
    delta[0, 0] = 1.0
    same = spectral.compare_psd_variants(delta)
    assert same.max_abs_difference == pytest.approx(0.0, abs=1e-12) and same.changes_little
    # Two waves of amplitude 1 (radius 2) and 0.5 (radius 10); each bin is 2 pi x its ring mean, so a wave's bin
    # is its magnitude (or power) over its ring's size: the power spectrum squares the amplitude ratio.
    image = wave(2) + 0.5 * wave(10)
    c = spectral.compare_psd_variants(image)
    index, n_bins = spectral.radial_index(32, 32)
    size = np.bincount(index, minlength=n_bins + 1)
    mag = np.array([1 / size[2], 0.5 / size[10]])
    power = np.array([1 / size[2], 0.25 / size[10]])
    assert c.max_abs_difference == pytest.approx(power[0] / power.sum() - mag[0] / mag.sum(), rel=1e-6)
    omega = spectral.normalized_frequencies(16)
    assert c.centroid_a == pytest.approx((omega[2] * mag[0] + omega[10] * mag[1]) / mag.sum(), rel=1e-6)
    assert c.centroid_shift < -0.02 and not c.changes_little
    assert spectral.compare_psd_variants(image, tolerance=abs(c.centroid_shift) + 0.01).changes_little
    with pytest.raises(ConfigError, match="tolerance"):
        spectral.compare_psd_variants(image, tolerance=0)
