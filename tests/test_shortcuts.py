"""Chapter 4 (cfct.shortcuts): confounders' defining properties, the set sampler, MICCAT, figures."""

from __future__ import annotations

from math import comb

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
import torch

from cfct import data, results, shortcuts
from cfct.errors import ConfigError
from cfct.experiments import ch4, robustness

RNG = np.random.default_rng(0)


def _images(n: int = 4, size: int = 28, channels: int = 1, dtype=np.uint8) -> np.ndarray:
    x = RNG.uniform(40, 215, size=(n, size, size, channels))
    return x.astype(dtype) if dtype != np.uint8 else np.rint(x).astype(np.uint8)


@pytest.fixture(scope="module")
def pneumonia() -> data.ImageSet:
    return data.load_target("pneumoniamnist", "test", 28)


@pytest.fixture(scope="module")
def nih() -> data.ImageSet:
    return data.load_target("csv:nih-cxr14-sample", "all", 28)


# ----------------------------------------------------------------------------------------------- MICCAT
def test_miccat_has_two_levels_and_four_categories() -> None:
    table = shortcuts.miccat_table()
    assert set(table["level"]) == {"patient", "environment"}
    assert list(table["category"]) == [
        "demographic attributes",
        "anatomical confounders",
        "external confounders",
        "imaging confounders",
    ]


def test_every_confounder_maps_to_a_miccat_category() -> None:
    categories = {c.name: c for c in shortcuts.MICCAT}
    table = shortcuts.confounder_table()
    assert set(table["confounder"]) == set(shortcuts.CONFOUNDERS)
    for conf in shortcuts.CONFOUNDERS.values():
        assert conf.category in categories
        assert conf.name in categories[conf.category].studied
    # Thesis 4.2.1: tag = external, denoising & noise = imaging, gender = patient level.
    level = dict(zip(table["confounder"], table["MICCAT level"]))
    assert level["tag"] == "environment" and level["sex"] == "patient"
    assert dict(zip(table["confounder"], table["MICCAT category"]))["denoising"] == "imaging confounders"


def test_unknown_confounder_lists_choices() -> None:
    with pytest.raises(ConfigError, match="valid choices: tag, denoising"):
        shortcuts.get_confounder("blur")
    assert shortcuts.get_confounder("denoising", cutoff=0.3).params["cutoff"] == 0.3
    with pytest.raises(ConfigError, match="takes no parameters"):
        shortcuts.get_confounder("sex", value="M")


# ----------------------------------------------------------------------------------------------- tag
@pytest.mark.parametrize("size,channels", [(28, 1), (28, 3), (64, 1), (224, 3), (100, 4)])
def test_tag_changes_pixels_only_inside_its_box(size: int, channels: int) -> None:
    x = _images(3, size, channels)
    y = shortcuts.inject_tag(x)
    r0, c0, r1, c1 = shortcuts.tag_box(x.shape)
    changed = np.argwhere((y != x).any(axis=(0, 3)))
    assert len(changed) > 10, "the tag is visible"
    assert changed[:, 0].min() >= r0 and changed[:, 0].max() < r1
    assert changed[:, 1].min() >= c0 and changed[:, 1].max() < c1
    outside = np.ones((size, size), bool)
    outside[r0:r1, c0:c1] = False
    np.testing.assert_array_equal(y[:, outside], x[:, outside])
    assert y.dtype == x.dtype and y.shape == x.shape
    # White 'R': the brightest pixels of the box are 255 in every image and channel.
    assert (y[:, r0:r1, c0:c1].max(axis=(1, 2)) == 255).all()


def test_tag_position_and_size_scale_with_resolution() -> None:
    # Thesis: top-left corner at 200 px of 1024 px, font 64 px -> at 1024 px exactly that corner.
    r0, c0, r1, c1 = shortcuts.tag_box((1024, 1024))
    assert (r0, c0) == (200, 200) and 30 < r1 - r0 <= 64
    assert shortcuts.tag_box((28, 28))[:2] == (5, 5)
    assert shortcuts.tag_box((64, 64))[:2] == (12, 12)


def test_tag_accepts_single_images_in_every_layout() -> None:
    x = _images(1, 28, 1)
    np.testing.assert_array_equal(shortcuts.inject_tag(x[0, :, :, 0]), shortcuts.inject_tag(x)[0, :, :, 0])
    np.testing.assert_array_equal(shortcuts.inject_tag(x[0]), shortcuts.inject_tag(x)[0])
    with pytest.raises(ConfigError, match="shape"):
        shortcuts.inject_tag(np.zeros((1, 1, 28, 28, 1), np.uint8))
    with pytest.raises(ConfigError, match="does not fit"):
        shortcuts.inject_tag(np.zeros((6, 6), np.uint8))


def test_tag_survives_the_chapter_augmentations() -> None:
    """4.2.2: the tag sits away from the edges so rotation, shifts, shear and zoom of 0.1 keep it whole."""
    x = _images(64, 28, 1)
    tagged = shortcuts.inject_tag(x)
    aug = data.BatchAugment("ch3", hflip=False)
    a = aug(data.to_tensor(x), torch.Generator().manual_seed(3))
    b = aug(data.to_tensor(tagged), torch.Generator().manual_seed(3))
    before = (data.to_tensor(tagged) - data.to_tensor(x)).abs().sum(dim=(1, 2, 3))
    after = (b - a).abs().sum(dim=(1, 2, 3))
    # Bilinear resampling spreads the glyph a little but keeps its mass; nothing is pushed out of the image.
    assert torch.all(after > 0.8 * before)
    # ... and in every image the tag still sits in the upper-left quarter.
    diff = (b - a).abs().sum(dim=1)
    for d in diff:
        rows, cols = torch.nonzero(d > 0.05, as_tuple=True)
        assert rows.max() < 16 and cols.max() < 16


# ----------------------------------------------------------------------------------------------- low-pass
def _radius(h: int, w: int) -> np.ndarray:
    fu, fv = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    return np.sqrt(fu**2 + fv**2)


@pytest.mark.parametrize("shape,cutoff", [((5, 32, 32, 1), 0.25), ((3, 28, 36, 3), 0.1), ((2, 64, 64, 1), 0.488)])
def test_lowpass_has_no_power_above_cutoff_and_keeps_the_mean(shape, cutoff: float) -> None:
    x = RNG.uniform(0, 255, size=shape)
    y = shortcuts.lowpass_denoise(x, cutoff)
    spectrum = np.abs(np.fft.fft2(y, axes=(1, 2)))
    above = _radius(shape[1], shape[2]) > cutoff
    assert spectrum[:, above].max() < 1e-9 * spectrum.max()
    np.testing.assert_allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), rtol=1e-12)
    # Below the cutoff nothing changes (an ideal filter), so filtering twice equals filtering once.
    below = ~above
    np.testing.assert_allclose(spectrum[:, below], np.abs(np.fft.fft2(x, axes=(1, 2)))[:, below], rtol=1e-9)
    np.testing.assert_allclose(shortcuts.lowpass_denoise(y, cutoff), y, atol=1e-9)


def test_lowpass_keeps_a_slow_wave_and_removes_a_fast_one() -> None:
    n = np.arange(32)
    slow = 100 + 50 * np.cos(2 * np.pi * 4 / 32 * n)[None, :].repeat(32, 0)  # 0.125 cycles / px
    fast = 100 + 50 * np.cos(2 * np.pi * 12 / 32 * n)[None, :].repeat(32, 0)  # 0.375 cycles / px
    np.testing.assert_allclose(shortcuts.lowpass_denoise(slow, 0.2), slow, atol=1e-9)
    np.testing.assert_allclose(shortcuts.lowpass_denoise(fast, 0.2), np.full((32, 32), 100.0), atol=1e-9)


def test_lowpass_uint8_and_batching() -> None:
    x = _images(7, 28, 3)
    y = shortcuts.lowpass_denoise(x)
    assert y.dtype == np.uint8 and y.shape == x.shape
    np.testing.assert_array_equal(y, shortcuts.lowpass_denoise(x, chunk=2))
    np.testing.assert_array_equal(y[3], shortcuts.lowpass_denoise(x[3]))
    assert abs(y.astype(float).mean() - x.astype(float).mean()) < 0.5
    with pytest.raises(ConfigError, match="cutoff"):
        shortcuts.lowpass_denoise(x, 0.0)


# -------------------------------------------------------------------------------------------- Poisson noise
@pytest.mark.parametrize("grey,n0", [(128.0, 2e7), (128.0, 1e5), (40.0, 1e6), (220.0, 2e7)])
def test_poisson_noise_variance_follows_eq_4_2(grey: float, n0: float) -> None:
    x = np.full((100, 64, 64, 1), grey)
    y = shortcuts.poisson_noise(x, n0, seed=1)
    expected = float(shortcuts.poisson_noise_std(grey, n0))
    assert y.std() == pytest.approx(expected, rel=0.02)
    assert y.mean() == pytest.approx(grey, abs=0.05 * expected + 1e-3)


def test_poisson_noise_at_the_thesis_n0_is_about_two_grey_levels() -> None:
    # 4.2.2: N0 = 2e7 was chosen to be imperceptible.
    assert 1.0 < float(shortcuts.poisson_noise_std(128, shortcuts.THESIS_N0)) < 2.5


def test_poisson_noise_uint8_is_unbiased_seeded_and_grey_stays_grey() -> None:
    x = np.full((50, 32, 32, 3), 100, np.uint8)
    y = shortcuts.poisson_noise(x, 2e6, seed=5)
    assert y.dtype == np.uint8
    assert abs(y.astype(float).mean() - 100) < 0.05
    np.testing.assert_array_equal(y, shortcuts.poisson_noise(x, 2e6, seed=5))
    assert not np.array_equal(y, shortcuts.poisson_noise(x, 2e6, seed=6))
    np.testing.assert_array_equal(y[..., 0], y[..., 2])  # identical channels share one draw
    more = shortcuts.poisson_noise(x, 2e5, seed=5)
    assert more.astype(float).std() > 2.5 * y.astype(float).std()
    with pytest.raises(ConfigError, match="n0"):
        shortcuts.poisson_noise(x, 0)


# ----------------------------------------------------------------------------------------------- CT noise
def _phantom(n: int = 6, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    body = (xx**2 / (0.42 * size) ** 2 + yy**2 / (0.32 * size) ** 2) <= 1
    img = np.where(body, 200.0, 60.0)
    return np.repeat(img[None, :, :, None], n, axis=0).astype(np.uint8)


def _neighbour_corr(r: np.ndarray) -> float:
    r = r[..., 0] - r[..., 0].mean(axis=(1, 2), keepdims=True)
    return float((r[:, :, 1:] * r[:, :, :-1]).mean() / (r**2).mean())


def test_ct_photon_noise_is_correlated_unlike_image_domain_noise() -> None:
    """4.3: projection-domain noise is smeared along rays (not pixel-independent), image-domain noise is."""
    x = _phantom().astype(np.float64)
    ct = shortcuts.ct_photon_noise(x, 4096, seed=0) - x
    img = shortcuts.poisson_noise(x, 2e7, seed=0) - x
    assert abs(_neighbour_corr(img)) < 0.05
    assert abs(_neighbour_corr(ct)) > 0.15
    assert 0.3 < ct.std() < 30


def test_ct_photon_noise_level_follows_n0_and_seed() -> None:
    x = _phantom(3, 28)
    low = shortcuts.ct_photon_noise(x, 1e3, seed=1).astype(float) - x
    high = shortcuts.ct_photon_noise(x, 1e5, seed=1).astype(float) - x
    assert low.std() > 4 * high.std()
    np.testing.assert_array_equal(shortcuts.ct_photon_noise(x, 1e3, seed=1), shortcuts.ct_photon_noise(x, 1e3, seed=1))
    # Plenty of photons: the slice comes back unchanged (only reconstructed noise is added).
    assert np.abs(shortcuts.ct_photon_noise(x, 1e12, seed=1).astype(int) - x).max() <= 1
    rect = np.zeros((2, 24, 30, 3), np.uint8)
    rect[:, 6:18, 5:25] = 180
    out = shortcuts.ct_photon_noise(rect, 1e3, seed=0)
    assert out.shape == rect.shape
    np.testing.assert_array_equal(out[..., 0], out[..., 1])


# ------------------------------------------------------------------------------------------- masks & splits
@pytest.mark.parametrize("p_art", shortcuts.P_ART_LEVELS)
def test_artifact_mask_hits_p_art_exactly_in_positives_only(p_art: float) -> None:
    labels = np.r_[np.ones(37, int), np.zeros(63, int)]
    RNG.shuffle(labels)
    mask = shortcuts.artifact_mask(labels, p_art, seed=3)
    assert mask.sum() == round(p_art * 37)
    assert not mask[labels == 0].any()
    ood = shortcuts.ood_mask(labels)
    assert ood[labels == 0].all() and not ood[labels == 1].any()


def test_artifact_masks_are_nested_across_p_art() -> None:
    labels = np.r_[np.ones(50, int), np.zeros(50, int)]
    masks = [shortcuts.artifact_mask(labels, p, seed=1) for p in shortcuts.P_ART_LEVELS]
    for smaller, larger in zip(masks, masks[1:]):
        assert (larger | ~smaller).all()
    with pytest.raises(ConfigError, match="p_art"):
        shortcuts.artifact_mask(labels, 1.5)
    with pytest.raises(ConfigError, match="binary"):
        shortcuts.artifact_mask(np.arange(4), 0.5)


def test_split_dev_test_exact_classes_and_group_disjoint() -> None:
    labels = np.r_[np.ones(120, int), np.zeros(180, int)]
    groups = np.repeat(np.arange(100), 3)
    dev, test = shortcuts.split_dev_test(labels, n_dev=100, n_test=80, pos_fraction=0.3, groups=groups, seed=2)
    assert labels[dev].sum() == 30 and labels[test].sum() == 24
    assert len(dev) == 100 and len(test) == 80
    assert not set(groups[dev]) & set(groups[test])
    with pytest.raises(ConfigError, match="need"):
        shortcuts.split_dev_test(labels, n_dev=280, n_test=80, groups=groups)
    with pytest.raises(ConfigError, match="single class"):
        shortcuts.split_dev_test(labels, n_dev=10, n_test=10, pos_fraction=0.0)


def test_attribute_split_on_real_nih_patient_sex(nih: data.ImageSet) -> None:
    """The atelectasis/gender protocol on real NIH CXR14 metadata: exact p_art, patient-disjoint pools."""
    meta = nih.meta.assign(finding=nih.labels)
    first = None
    for p in shortcuts.P_ART_LEVELS:
        s = shortcuts.attribute_confounded_split(
            meta, "finding", "sex", p, value="F", n_dev=200, n_test=160, group="patient_id", seed=0
        )
        y, sex = meta["finding"].to_numpy(), meta["sex"].to_numpy()
        dev_pos = s["dev"][y[s["dev"]] == 1]
        assert (sex[dev_pos] == "F").sum() == round(p * 100)
        assert (sex[s["dev"][y[s["dev"]] == 0]] == "M").all()
        iid_pos = s["iid"][y[s["iid"]] == 1]
        assert (sex[iid_pos] == "F").sum() == round(p * 80)
        ood = s["ood"]
        assert (sex[ood[y[ood] == 1]] == "M").all() and (sex[ood[y[ood] == 0]] == "F").all()
        assert len(ood) == 160 and y[ood].sum() == 80
        patients = meta["patient_id"].to_numpy()
        test_patients = set(patients[s["iid"]]) | set(patients[s["ood"]])
        assert not set(patients[s["dev"]]) & test_patients
        np.testing.assert_array_equal(s["dev_attr"], sex[s["dev"]] == "F")
        if first is None:
            first = s
        np.testing.assert_array_equal(s["ood"], first["ood"])  # the o.o.d. set does not move with p_art


def test_dev_splits_group_disjoint_with_both_classes() -> None:
    labels = np.r_[np.ones(60, int), np.zeros(60, int)]
    groups = np.repeat(np.arange(40), 3)
    splits = shortcuts.dev_splits(labels, k=5, val_fraction=0.15, groups=groups, seed=0)
    assert len(splits) == 5
    for tr, va in splits:
        assert not set(groups[tr]) & set(groups[va])
        assert set(labels[va]) == {0, 1} and len(tr) + len(va) == 120
    strat = shortcuts.dev_splits(labels, k=3, val_fraction=0.2, seed=0)
    assert all(labels[va].sum() == 12 for _, va in strat)


# ----------------------------------------------------------------------------------------------- sets
def test_confounded_sets_have_the_stated_composition(pneumonia: data.ImageSet) -> None:
    dev_idx, test_idx = shortcuts.split_dev_test(pneumonia.labels, n_dev=100, n_test=60, pos_fraction=0.3, seed=0)
    dev, test = pneumonia.subset(dev_idx), pneumonia.subset(test_idx)
    sets = robustness.confounded_sets(dev, test, "tag", 0.5, seed=0)
    comp = sets.composition().set_index(["set", "class"])["with confounder"]
    assert comp[("dev", "positive")] == 15 and comp[("dev", "negative")] == 0
    assert comp[("iid", "positive")] == 9 and comp[("iid", "negative")] == 0
    assert comp[("ood", "positive")] == 0 and comp[("ood", "negative")] == 42
    box = shortcuts.tag_box(dev.images.shape)
    changed = (sets.dev.images != dev.images).reshape(len(dev), -1).any(axis=1)
    np.testing.assert_array_equal(changed, sets.dev_artifact)
    assert (
        sets.ood.images[:, box[0] : box[2], box[1] : box[3]] != test.images[:, box[0] : box[2], box[1] : box[3]]
    ).reshape(len(test), -1).any(axis=1).sum() == 42
    # p_art = 0 leaves the development set (and its fingerprint) untouched, so runs are shared.
    zero = robustness.confounded_sets(dev, test, "tag", 0.0, seed=0)
    assert zero.dev.fingerprint() == dev.fingerprint()


def test_confounded_sets_are_cached(pneumonia: data.ImageSet, tmp_path) -> None:
    store = results.Store(tmp_path)
    dev, test = pneumonia.subset(np.arange(0, 80)), pneumonia.subset(np.arange(80, 140))
    a = robustness.confounded_sets(dev, test, "noise", 0.8, seed=4, store=store)
    written = {run.key for run in store.runs("ch4-confounded-images")}
    assert len(written) == 3  # dev, iid, ood
    b = robustness.confounded_sets(dev, test, "noise", 0.8, seed=4, store=store)
    assert {run.key for run in store.runs("ch4-confounded-images")} == written
    np.testing.assert_array_equal(a.dev.images, b.dev.images)
    np.testing.assert_array_equal(a.ood.images, b.ood.images)


def test_two_level_noise_gives_the_confounded_positives_the_lower_noise() -> None:
    """Sec. 4.3: "N0 = 2e7 for the positives and N0 = 1e7 for the negatives": the images that carry the
    confounder (positives) get less noise than all others."""
    conf = shortcuts.get_confounder("noise-levels")
    flat = np.full((400, 16, 16, 1), 128, dtype=np.uint8)
    mask = np.arange(400) < 200
    out = conf.apply(flat, mask, seed=0).astype(float) - 128.0
    low, high = out[mask].std(), out[~mask].std()
    assert low < high * 0.85  # variance scales with 1 / N0: std ratio ~ 1 / sqrt(2)
    assert low == pytest.approx(float(shortcuts.poisson_noise_std(128, 2e7)), rel=0.15)
    assert high == pytest.approx(float(shortcuts.poisson_noise_std(128, 1e7)), rel=0.15)


def test_split_dev_test_excludes_earlier_test_groups() -> None:
    labels = np.r_[np.ones(120, int), np.zeros(180, int)]
    groups = np.repeat(np.arange(100), 3)
    _, first = shortcuts.split_dev_test(labels, n_dev=60, n_test=60, pos_fraction=0.3, groups=groups, seed=2)
    dev, second = shortcuts.split_dev_test(labels, n_dev=60, n_test=60, pos_fraction=0.3, groups=groups, seed=3,
                                           test_exclude=first)
    assert not set(groups[first]) & set(groups[second])  # whole patients stay out, not only images
    assert not set(groups[dev]) & set(groups[second]) and labels[second].sum() == 18
    _, official = shortcuts.split_dev_test(labels, n_dev=60, n_test=40, test_labels=labels[:200], seed=0,
                                           test_exclude=np.arange(100))
    assert official.min() >= 100
    with pytest.raises(ConfigError, match="boolean mask of 300"):
        shortcuts.split_dev_test(labels, n_dev=60, n_test=60, groups=groups, test_exclude=np.ones(5, bool))


def test_replicates_have_disjoint_patient_disjoint_test_sets(nih: data.ImageSet) -> None:
    """The folds a Chapter 4 verdict rests on are real replicates: no test image, no test patient shared."""
    patients = nih.groups
    for conf in ("tag", "sex"):  # sex last: its replicates are checked against experiment_sets below
        reps = robustness.replicate_test_indices("csv:nih-cxr14-sample", conf, 3, size=28, n_dev=100, n_test=100,
                                                 pos_fraction=0.5, seed=0)
        assert len(reps) == 3 and all(len(r) >= 100 for r in reps)
        for i in range(3):
            for j in range(i + 1, 3):
                assert not set(patients[reps[i]]) & set(patients[reps[j]]), (conf, i, j)
    sets = robustness.experiment_sets("csv:nih-cxr14-sample", "sex", 1.0, size=28, n_dev=100, n_test=100,
                                      pos_fraction=0.5, seed=0, replicate=2)
    assert set(sets.ood.index) | set(sets.iid.index) <= set(reps[2].tolist())  # replicate 2 tests on its own part
    assert not set(patients[sets.ood.index]) & (set(patients[reps[0]]) | set(patients[reps[1]]))


def test_two_level_noise_treats_every_image(pneumonia: data.ImageSet) -> None:
    dev, test = pneumonia.subset(np.arange(0, 60)), pneumonia.subset(np.arange(60, 100))
    sets = robustness.confounded_sets(dev, test, "noise-levels", 0.0, seed=0, cache=False)
    # p_art = 0: no image has the high noise level, yet every image got the base level.
    assert not sets.dev_artifact.any()
    assert (sets.dev.images != dev.images).reshape(60, -1).any(axis=1).mean() > 0.9
    assert sets.dev.name != dev.name


# ----------------------------------------------------------------------------------------------- statistics
def test_permutation_floor_matches_the_thesis_bound() -> None:
    """4.3 reports 0.008 < p: the smallest two-sided p of a 5-vs-5 permutation test is 2 / C(10, 5)."""
    rows = [
        {"target": "t", "confounder": "c", "p_art": 1.0, "fold": k, "source": s, "ood_auc": v}
        for k in range(5)
        for s, v in (("natural", 0.2 + 0.01 * k), ("medical", 0.6 + 0.01 * k))
    ]
    table = ch4.compare_sources(pd.DataFrame(rows), n_resamples=100000)
    assert table["p_value"].iloc[0] == pytest.approx(2 / comb(10, 5), rel=1e-6)
    assert table["difference"].iloc[0] == pytest.approx(-0.4)


def test_summarize_gives_mean_and_ci() -> None:
    df = pd.DataFrame(
        {
            "target": "t",
            "confounder": "c",
            "source": "natural",
            "p_art": 0.5,
            "ood_auc": [0.4, 0.5, 0.6],
            "iid_auc": [0.9, 0.9, 0.9],
        }
    )
    s = ch4.summarize(df).set_index("metric")
    assert s.loc["ood_auc", "mean"] == pytest.approx(0.5)
    assert s.loc["ood_auc", "ci_low"] < 0.5 < s.loc["ood_auc", "ci_high"]
    assert s.loc["iid_auc", "ci_low"] == pytest.approx(0.9)


# ----------------------------------------------------------------------------------------------- figures
def test_figures_draw() -> None:
    from matplotlib.figure import Figure

    from cfct.plots import shortcuts as plots

    fig = plots.miccat_figure()
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"demographic attributes", "imaging confounders", "tag ('R')"} <= texts
    x = _images(1, 28, 1)[0]
    assert isinstance(plots.confounder_gallery(x, {"tag": shortcuts.inject_tag(x)}), Figure)
    summary = pd.DataFrame(
        {
            "setting": "a",
            "metric": "ood_auc",
            "source": ["natural", "medical"] * 2,
            "p_art": [0, 0, 1, 1],
            "mean": [0.8, 0.8, 0.2, 0.6],
            "ci_low": 0.1,
            "ci_high": 0.9,
        }
    )
    fig = plots.robustness_curves(summary)
    assert len(fig.axes[0].lines) == 2


# ----------------------------------------------------------------------------------------------- experiment
def test_robustness_experiment_runs_on_real_data(tmp_path) -> None:
    from cfct import results, train

    cfg = train.FinetuneConfig(lr=1e-3, max_epochs=1, patience=1, batch_size=32, hflip=False)
    df = ch4.robustness_experiment(
        "pneumoniamnist",
        "tag",
        {"random": "random:resnet18"},
        p_arts=(0.0, 1.0),
        folds=1,
        size=28,
        n_dev=40,
        n_test=30,
        pos_fraction=0.5,
        finetune=cfg,
        store=results.Store(tmp_path),
        progress=False,
    )
    assert list(df["p_art"]) == [0.0, 1.0]
    assert df[["iid_auc", "ood_auc"]].notna().all().all()
    assert set(df["n_test"]) == {30} and set(df["n_train"]) == {34}


def test_chapter_plan_and_sources() -> None:
    plan = ch4.chapter_settings(
        ["pneumoniamnist"],
        ["tag", "denoising"],
        sex_target="csv:nih-cxr14-sample",
        noise_target="pneumoniamnist",
        ct_target="csv:iqothnccd-lung-ct",
    )
    assert [s.figure for s in plan] == ["4.3"] * 5 + ["4.4"] * 4
    assert plan[2].confounder == "sex" and plan[2].pos_fraction == 0.5 and plan[0].pos_fraction == 0.3
    # the CT panels of Fig. 4.3 (LIDC-IDRI's role): random initialisation with the tag only, balanced
    assert [(s.modality, s.confounder, len(s.roles), s.pos_fraction) for s in plan[3:5]] == [
        ("CT", "tag", 3, 0.5), ("CT", "denoising", 2, 0.5)]
    assert all(s.roles == ("natural", "medical") for s in plan[5:])
    assert {(s.modality, s.contrast) for s in plan[5:]} == {
        (m, c) for m in ("X-ray", "CT") for c in ("noise vs no noise", "high vs low noise")
    }
    quiet = ch4.chapter_settings(["pneumoniamnist"], ["tag"], sex_target=None, noise_target=None,
                                 ct_target="csv:iqothnccd-lung-ct", ct_noise=False)
    assert [s.confounder for s in quiet] == ["tag", "tag", "noise"]
    ct = ch4.setting_confounder(plan[-2] if plan[-2].confounder == "ct-noise" else plan[-1])
    assert ct.params["n0"] == shortcuts.THESIS_N0 == 2e7  # Chapter 4: the thesis's level, not LoDoPaB's
    assert shortcuts.CONFOUNDERS["ct-noise"].params["n0"] == shortcuts.LODOPAB_N0 == 4096  # Chapter 5's default
    src = ch4.sources_for("breastmnist", "resnet18")
    assert src == {
        "natural": "pretrained:resnet18:cifar10",
        "medical": "pretrained:resnet18:medical-lto:breastmnist",
        "random": "random:resnet18",
    }
    # a csv: target gets its own leave-target-out source (every other local medical set)
    assert ch4.sources_for("csv:nih-cxr14-sample", "resnet18")["medical"] == (
        "pretrained:resnet18:medical-lto:csv:nih-cxr14-sample")
    custom = ch4.sources_for("pneumoniamnist", "resnet50", medical="checkpoint:resnet50:/w/{target}.pt")
    assert custom["medical"] == "checkpoint:resnet50:/w/pneumoniamnist.pt"
    assert shortcuts.positive_class("breastmnist") == 0 and shortcuts.positive_class("pneumoniamnist") == 1
