"""cfct.transferability: every metric on hand-checkable inputs, invariances, variants and degenerate input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import optimize
from torch import nn

from cfct import config, sources
from cfct import transferability as tr
from cfct.chapters import get_chapter
from cfct.experiments import ch6


def _clusters(n_per_class=20, n_classes=3, dim=8, sep=6.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(0, sep, (n_classes, dim))
    return centres[y] + rng.normal(0, 1, (y.size, dim)), y


# ------------------------------------------------------------------------------------------------- LEEP
def test_leep_hand_values():
    y = np.array([0, 0, 0, 1])
    # a source that predicts the target label exactly: P(y|z) is the identity and every EEP is 1
    assert tr.leep(np.eye(2)[y], y) == pytest.approx(0.0)
    # an uninformative source (same softmax everywhere): the empirical predictor is the class prior
    uniform = np.full((4, 5), 0.2)
    assert tr.leep(uniform, y) == pytest.approx((3 * np.log(0.75) + np.log(0.25)) / 4)


def test_leep_is_log_likelihood_of_the_empirical_predictor():
    rng = np.random.default_rng(1)
    theta = rng.dirichlet(np.ones(4), 30)
    y = rng.integers(0, 3, 30)
    joint = np.zeros((3, 4))
    for t, yi in zip(theta, y):
        joint[yi] += t / 30
    cond = joint / joint.sum(0)
    expected = np.mean([np.log(sum(cond[yi, z] * t[z] for z in range(4))) for t, yi in zip(theta, y)])
    assert tr.leep(theta, y) == pytest.approx(expected)


def test_leep_rejects_logits():
    with pytest.raises(ValueError, match="softmax"):
        tr.leep(np.array([[2.0, -1.0], [0.5, 0.1], [1.0, 1.0]]), [0, 1, 0])


# ------------------------------------------------------------------------------------------------ LogME
def _evidence(f, y, alpha, beta):
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    return (
        n / 2 * np.log(beta)
        + d / 2 * np.log(alpha)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((f @ m - y) ** 2)
        - alpha / 2 * m @ m
        - 0.5 * np.linalg.slogdet(a)[1]
    ) / n


@pytest.mark.parametrize("n,d", [(40, 5), (12, 20)])  # n > D and the low-data case n < D
def test_logme_is_the_maximum_evidence_of_the_paper(n, d):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n)
    f = rng.normal(size=(n, d)) + y[:, None]
    best = []
    for k in range(2):
        yk = (y == k).astype(float)
        res = optimize.minimize(
            lambda p, yk=yk: -_evidence(f, yk, np.exp(p[0]), np.exp(p[1])),
            x0=[0.0, 0.0],
            method="Nelder-Mead",
            options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 4000},
        )
        best.append(-res.fun)
    assert tr.logme(f, y, tol=1e-8, max_iter=200) == pytest.approx(np.mean(best), abs=1e-4)


def test_logme_variants_agree_when_full_rank_and_differ_when_n_below_d():
    f, y = _clusters(n_per_class=30, dim=8)
    assert tr.logme(f, y) == pytest.approx(tr.logme(f, y, variant="thesis"))
    f2, y2 = _clusters(n_per_class=5, dim=40)
    assert tr.logme(f2, y2, variant="thesis") > tr.logme(f2, y2)


def test_logme_and_parc_invariant_to_sample_permutation():
    f, y = _clusters()
    perm = np.random.default_rng(3).permutation(y.size)
    assert tr.logme(f[perm], y[perm]) == pytest.approx(tr.logme(f, y))
    assert tr.parc(f[perm], y[perm]) == pytest.approx(tr.parc(f, y))


# ------------------------------------------------------------------------------------- PARC, N-LEEP, SFDA
def test_parc_of_label_features_is_perfect():
    # binary one-hot features: the feature RDM equals the label RDM, so Spearman's rho is 1 -> PARC = 100
    y = np.repeat([0, 1], 5)
    assert tr.parc(np.eye(2)[y], y) == pytest.approx(100)
    # features that agree with the labels on one pair pattern only score lower
    assert tr.parc(np.eye(2)[np.array([0, 1] * 5)], y) < 10


def test_scores_prefer_separable_features():
    good, y = _clusters(sep=6.0)
    bad = np.random.default_rng(5).normal(size=good.shape)
    for fn in (tr.logme, tr.parc, tr.sfda, tr.nleep, tr.label_prediction_score):
        assert fn(good, y) > fn(bad, y), fn.__name__


def test_nleep_thesis_variant_is_a_probability_and_paper_a_log():
    f, y = _clusters()
    p = tr.nleep(f, y, variant="thesis")
    assert 0.9 < p <= 1.0
    assert tr.nleep(f, y) == pytest.approx(0.0, abs=0.1)  # log of ~1
    assert tr.nleep(f, y, random_state=1, variant="thesis") == pytest.approx(p, abs=0.05)


def test_sfda_saturates_in_the_low_data_binary_case():
    # the thesis's observation (6.5.2): n = 200 < D = 512, two classes -> SFDA gives every source ~1.0
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    f = rng.normal(size=(200, 512))
    assert tr.sfda(f, y) > 0.99


# -------------------------------------------------------------------------------------------------- NCTI
def test_ncti_ranks_the_collapsed_source_first_and_sums_three_terms():
    good, y = _clusters(sep=8.0, dim=16)
    rng = np.random.default_rng(1)
    feats = {
        "good": good,
        "noisy": good + rng.normal(0, 4, good.shape),
        "random": rng.normal(size=good.shape),
    }
    paper = tr.ncti(feats, y)
    assert isinstance(paper, pd.Series) and paper.idxmax() == "good"
    assert (paper >= 0).all() and (paper <= 3).all()
    thesis = tr.ncti(feats, y, variant="thesis")
    assert (thesis <= 3).all()
    with pytest.raises(ValueError, match="at least two"):
        tr.ncti({"one": good}, y)


# ------------------------------------------------------------------------------------------- NCA, S_LP
def test_nca_improves_nearest_neighbour_accuracy():
    f, y = _clusters(n_per_class=40, n_classes=4, dim=30, sep=1.5, seed=2)
    f = np.hstack([f, np.random.default_rng(0).normal(0, 3, (f.shape[0], 30))])  # half the dims are noise
    a = tr.nca_fit(f, y, n_components=10)
    assert a.shape == (10, 60)
    assert tr.nca_loo_accuracy(f @ a.T, y) > tr.nca_loo_accuracy(f, y) + 0.05


def test_label_prediction_score_hand_values():
    f, y = _clusters(sep=20.0)
    assert tr.label_prediction_score(f, y) == pytest.approx(y.size)  # Eq. 6.2: a sum of probabilities = n
    assert tr.label_prediction_score(f, y, reduce="mean") == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    noise, labels = rng.normal(size=(200, 20)), np.repeat([0, 1], 100)
    loo = tr.label_prediction_score(noise, labels, reduce="mean", exclude_self=True)
    assert 0.3 < loo < 0.7  # chance level when each point is not its own neighbour
    assert tr.label_prediction_score(noise, labels, reduce="mean") > loo  # self counted: the thesis's variant


# ---------------------------------------------------------------------------------------- S_FU and Eq. 6.6
class _TinyNet(nn.Module):
    normalization = "half"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.conv2 = nn.Conv2d(4, 6, 3)

    def features(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3))

    def conv_layers(self):
        return self.conv1, self.conv2


def test_feature_update_score_is_the_gradient_norm_ratio_of_eq_6_4():
    from pytorch_metric_learning import losses

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 10, 10, 1), dtype=np.uint8)
    labels = np.repeat([0, 1, 2], 4)
    net = _TinyNet()
    before = [p.detach().clone() for p in net.parameters()]
    score = tr.feature_update_score(net, images, labels)
    x = (
        torch.as_tensor(images, dtype=torch.float32).permute(0, 3, 1, 2).repeat(1, 3, 1, 1) / 255 - 0.5
    ) / 0.5
    net.zero_grad()
    losses.TripletMarginLoss(margin=0.05)(net.features(x), torch.as_tensor(labels)).backward()
    expected = float(net.conv2.weight.grad.norm() / net.conv1.weight.grad.norm())
    assert score == pytest.approx(expected, rel=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))  # weights untouched
    assert tr.feature_update_score(net, images, labels, n_batches=2) > 0


def test_feature_update_score_on_a_zoo_source(mirror):
    from cfct import data

    train = data.load_target("breastmnist", "train", 28)
    sub = data.subsample_per_class(train, 10, seed=0)
    model = sources.create("random:resnet18", num_classes=2, input_size=28)
    s = tr.feature_update_score(model, sub, sub.labels)
    assert np.isfinite(s) and s > 0
    assert s == pytest.approx(tr.feature_update_score(model, sub, sub.labels))  # deterministic
    f, p = tr.source_outputs(model, sub)
    assert f.shape == (len(sub), model.feature_dim) and np.allclose(p.sum(1), 1)


def test_transferability_score_eq_6_6_and_6_8_by_hand():
    lp, fu = {"a": 1.0, "b": 2.0, "c": 3.0}, {"a": 3.0, "b": 2.0, "c": 2.5}
    # Eq. 6.5: lp' = [0, .5, 1], fu' = [1, 0, .5]
    assert tr.transferability_score(lp, fu).tolist() == pytest.approx([0.0, 0.0, 0.5])
    assert tr.transferability_score(lp, fu, scenario="model").tolist() == pytest.approx([0.0, 0.5, 0.0])
    assert tr.transferability_score(lp, fu, combine="sum").tolist() == pytest.approx([1.0, 0.5, 1.5])
    assert tr.transferability_score(lp, fu, terms="fu").tolist() == pytest.approx([1.0, 0.0, 0.5])
    # a candidate without S_LP (the target itself) still shapes the S_FU normalisation, and only it is NaN
    out = tr.transferability_score({**lp, "self": np.nan}, {**fu, "self": 0.0})
    assert np.isnan(out["self"]) and out[["a", "b", "c"]].notna().all()
    with pytest.raises(ValueError, match="same score"):
        tr.transferability_score({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0})


# ------------------------------------------------------------------------------------------ degenerate input
@pytest.mark.parametrize("fn", [tr.logme, tr.parc, tr.sfda, tr.nleep, tr.label_prediction_score])
def test_degenerate_input_is_refused_with_a_reason(fn):
    f, y = _clusters()
    with pytest.raises(ValueError, match="two classes"):
        fn(f, np.zeros_like(y))
    bad = f.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(bad, y)
    with pytest.raises(ValueError, match="constant"):
        fn(np.ones_like(f), y)
    with pytest.raises(ValueError, match="samples"):
        fn(f, y[:-1])


def test_low_data_n_below_d_gives_finite_scores():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    f = rng.normal(size=(40, 512)) + y[:, None] * 0.3
    for fn in (tr.logme, tr.parc, tr.sfda, tr.nleep, tr.label_prediction_score):
        assert np.isfinite(fn(f, y)), fn.__name__
    assert np.isfinite(tr.ncti({"a": f, "b": rng.normal(size=f.shape)}, y)).all()


def test_single_class_feature_update_is_refused():
    images = np.random.default_rng(0).integers(0, 256, (6, 10, 10, 1), dtype=np.uint8)
    with pytest.raises(ValueError, match="two classes"):
        tr.feature_update_score(_TinyNet(), images, np.zeros(6, int))


def test_sfda_solve_equals_the_generalised_eigen_route():
    rng = np.random.default_rng(0)
    for n, d, c in ((60, 20, 3), (200, 512, 2)):
        y = rng.integers(0, c, n)
        x = np.maximum(rng.normal(size=(n, d)) + 0.3 * y[:, None], 0)
        p, lam = tr._fda_probs(x, y, c, None)
        assert np.allclose(p, tr._fda_probs_eigen(x, y, c, lam), atol=1e-10)


def test_hyperparameter_grid_and_table_6_1():
    grid = ch6.hyperparameter_grid("breastmnist", [0.1, 0.01], [0.0], [0.9, 0.0], [0])
    assert len(grid) == 2 * 1 * 2 * 2
    assert {g["batch_size"] for g in grid} == {32, 64}  # Table 6.1
    paper = config.get_profile("paper")
    grid = {p.name: p.validate(None, paper) for p in get_chapter("6").params if p.name.startswith("grid_")}
    full = ch6.hyperparameter_grid("pathmnist", grid["grid_lr"], grid["grid_weight_decay"], grid["grid_momentum"], [0])
    assert len(full) == 120  # 6 learning rates x 5 weight decays x 2 momenta x 2 batch sizes (6.4.2)
    with pytest.raises(ValueError, match="Table 6.1"):
        ch6.hyperparameter_grid("csv:nih-cxr14-sample", [0.1], [0.0], [0.9], [0])


def test_expand_sources_and_labels():
    specs = ch6.expand_sources(
        [
            "random:{arch}",
            "pretrained:{arch}:medmnist-lto:{target}",
            "pretrained:{arch}:medmnist:{other}@300",
        ],
        "breastmnist",
        ["breastmnist", "pneumoniamnist"],
    )
    assert specs == [
        "random:resnet18",
        "pretrained:resnet18:medmnist-lto:breastmnist",
        "pretrained:resnet18:medmnist:pneumoniamnist@300",
    ]
    assert ch6.expand_sources(
        ["pretrained:{arch}:medmnist:{other}"], "pneumoniamnist", ["pneumoniamnist"]
    ) == ["pretrained:resnet18:medmnist:breastmnist"]
    assert ch6.source_label(specs[1]) == "MedMNIST without breastmnist (LTO)"
    assert ch6.source_label(specs[0]) == "random init"
    from cfct.errors import ConfigError

    with pytest.raises(ConfigError):
        ch6.expand_sources(["nonsense:{arch}"], "breastmnist", ["breastmnist"])


def test_select_ground_truth_uses_lowest_validation_loss():
    runs = pd.DataFrame(
        {
            "source": ["a", "a", "b", "b"],
            "val_loss": [0.5, 0.4, np.nan, 0.7],
            "test_auc": [0.9, 0.8, 0.99, 0.6],
        }
    )
    assert ch6.select_ground_truth(runs).to_dict() == {"a": 0.8, "b": 0.6}


# ------------------------------------------------------------------ agreement with the thesis's public code
def _reference_input(n, d, c, seed):
    """Fixed float32 features (ReLU of a decaying low-rank part + class means + noise) and labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(c), n // c)
    latent = (rng.normal(size=(n, 8)) * 2.0 * 0.7 ** np.arange(8)) @ rng.normal(size=(8, d)) / 3
    f = np.maximum(latent + rng.normal(0, 0.4, (c, d))[y] + rng.normal(0, 0.5, (n, d)), 0)
    rng = np.random.default_rng(seed + 100)
    logits = f.astype(np.float32) @ rng.normal(0, 0.3, (d, 12)).astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return f.astype(np.float32), y, (p / p.sum(1, keepdims=True)).astype(np.float32)


# Values obtained by running, on exactly these inputs, a step-by-step reconstruction (kept outside the repository)
# of the thesis authors' public metrics.py (transferability-in-medical-imaging): thuml LogME's fixed-point
# _fit_fixed_point, LEEP, NLEEP (PCA 0.8 energy random_state 42; GaussianMixture 5 C components, seeded 0 here,
# on float64 scores), PARC_Score (randomised PCA 32, random_state 1919, iterated_power 1; StandardScaler;
# spearmanr of 1 - np.corrcoef RDMs), SFDA_Score (iterative_A with 3 power iterations), NCTI_Score (PCA 64
# random_state 42, shrinkage LDA, +log of the nuclear norms; terms min-max normalised over the three sources
# a = f, b = sqrt(f), c = f reversed) and the thesis's S_LP (NeighborhoodComponentsAnalysis n_components 50,
# max_iter 50, init "pca", random_state 42; KNeighborsClassifier 5 fitted and queried on the same points).
# scikit-learn 1.9.1, NumPy 2.4.6, one BLAS thread.
_THESIS_REFERENCE = {
    (100, 96, 2, 7): {
        "logme": -0.073961906098, "leep": -0.642818202391, "nleep": 0.837264005602, "parc": 13.255550096328,
        "sfda": 1.0, "ncti": [0.999958268653, 0.0, 1.0], "lp": 0.986,
    },
    (300, 64, 3, 8): {
        "logme": -0.011645790643, "leep": -1.016733251813, "nleep": 0.470021956412, "parc": 19.525412805929,
        "sfda": 0.955518366357, "ncti": [1.0, 2.0, 1.000002592521], "lp": 0.995333333333,
    },
    (210, 80, 7, 9): {
        "logme": 0.089028503789, "leep": -1.828192010257, "nleep": 0.506949082663, "parc": 20.76490089814,
        "sfda": 0.976510158253, "ncti": [1.00005361067, 2.0, 1.0], "lp": 0.949523809524,
    },
}


@pytest.mark.parametrize("case", list(_THESIS_REFERENCE))
def test_thesis_settings_reproduce_the_published_code(case):
    f, y, p = _reference_input(*case)
    ref, st = _THESIS_REFERENCE[case], tr.THESIS_SETTINGS
    assert tr.logme(f, y, **st["logme"]) == pytest.approx(ref["logme"], rel=1e-9, abs=1e-11)
    assert tr.leep(p, y) == pytest.approx(ref["leep"], rel=1e-6)
    assert tr.nleep(f.astype(np.float64), y, **st["nleep"]) == pytest.approx(ref["nleep"], rel=1e-6)
    assert tr.parc(f, y, **st["parc"]) == pytest.approx(ref["parc"], rel=1e-5)  # float32 PCA rounding
    assert tr.sfda(f, y, **st["sfda"]) == pytest.approx(ref["sfda"], rel=1e-6)
    others = {"a": f, "b": np.sqrt(f), "c": f[:, ::-1].copy()}
    # NCTI min-max normalises terms that differ between these sources by ~1e-5: float32 rounding (which depends on
    # the BLAS thread count) moves a normalised term by that much
    assert tr.ncti(others, y, **st["ncti"]).tolist() == pytest.approx(ref["ncti"], abs=1e-4)
    assert tr.label_prediction_score(f, y, **st["label_prediction_score"]) == pytest.approx(ref["lp"], rel=0.01)


def test_parc_label_ranks_paper_is_spearman_of_the_exact_rdm_and_thesis_keeps_numpy_rounding():
    from scipy.stats import spearmanr

    f, y, _ = _reference_input(210, 80, 7, 9)
    z = tr._pca_exact(f.astype(np.float64), 32)[0]
    z = (z - z.mean(0)) / z.std(0)
    iu = np.triu_indices(y.size, 1)
    exact = np.where(y[iu[0]] == y[iu[1]], 0.0, 1 + 1 / 6)
    expected = spearmanr((1 - np.corrcoef(z))[iu], exact).statistic * 100
    assert tr.parc(f, y, pca="full") == pytest.approx(expected, rel=1e-9)
    numpy_rdm = (1 - np.corrcoef(np.eye(7)[y]))[iu]
    expected_thesis = spearmanr((1 - np.corrcoef(z))[iu], numpy_rdm).statistic * 100
    assert tr.parc(f, y, pca="full", variant="thesis") == pytest.approx(expected_thesis, rel=1e-9)
    assert abs(expected_thesis - expected) > 1  # C = 7: the rounding splits ties and moves the score
    with pytest.raises(ValueError, match="pca"):
        tr.parc(f, y, pca="lanczos")


def test_gram_eigendecomposition_equals_the_svd():
    rng = np.random.default_rng(0)
    for shape in ((30, 50), (50, 30)):
        x = rng.normal(size=shape)
        sigma, u, v = tr._gram_eigh(x)
        s = np.linalg.svd(x, compute_uv=False)
        assert np.allclose(np.sqrt(sigma[: s.size]), s)
        r = min(shape)
        assert np.allclose((u[:, :r] * np.sqrt(sigma[:r])) @ v[:, :r].T, x)
    scores, var = tr._pca_exact(x, 0.5)
    from sklearn.decomposition import PCA

    ref = PCA(0.5).fit(x)
    assert scores.shape[1] == ref.n_components_
    assert np.allclose(np.abs(scores), np.abs(ref.transform(x))) and np.allclose(var, ref.explained_variance_)


def test_sfda_thesis_lambda_from_three_power_iterations():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 12)) * np.linspace(1, 1.05, 12)  # close top eigenvalues: power steps under-shoot
    centred = x - x.mean(0)
    top = np.linalg.eigvalsh(centred.T @ centred / 80)[-1]
    power = tr._top_eigenvalue_power(centred, iterations=3)
    assert power <= top + 1e-12
    assert tr._top_eigenvalue_power(centred, iterations=200) == pytest.approx(top, rel=1e-6)


def test_fast_ranks_equal_scipy_rankdata_with_ties():
    from scipy.stats import rankdata

    rng = np.random.default_rng(0)
    x = np.round(rng.normal(size=5000), 1)  # many ties
    assert np.array_equal(tr._average_ranks(x), rankdata(x))
    assert np.array_equal(tr._few_value_ranks(x), rankdata(x))
    assert np.array_equal(tr._few_value_ranks(np.array([0.0, -0.0, 2.0, 1.0])), [1.5, 1.5, 4.0, 3.0])


@pytest.mark.parametrize("shape", [(150, 400), (400, 150), (520, 600)])  # (520, 600): N-LEEP's 80% by Lanczos
def test_exact_pca_top_components_equal_scikit_learn_with_its_signs(shape):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(2)
    x = (rng.normal(size=(shape[0], 40)) * 0.9 ** np.arange(40)) @ rng.normal(size=(40, shape[1]))
    x += rng.normal(0, 0.1, shape)
    for k in (32, 0.8):  # 32 << min(n, D): the Lanczos route; 0.8: dense below min(n, D) = 500, else Lanczos
        scores, var = tr._pca_exact(x, k)
        ref = PCA(k, svd_solver="full").fit(x)
        # signs matter (PARC correlates samples across components): scikit-learn's convention, not |scores|
        assert np.allclose(scores, ref.transform(x), atol=1e-9 * np.abs(scores).max())
        assert np.allclose(var, ref.explained_variance_)


def test_nca_fit_follows_scikit_learn_iterate_for_iterate():
    from sklearn.neighbors import NeighborhoodComponentsAnalysis

    f, y, _ = _reference_input(120, 600, 3, 4)  # float32, n < D, PCA init randomised as in the study (> 500 x 500)
    for x in (f, f[:, :60].astype(np.float64)):
        ours = tr.nca_fit(x, y, n_components=20, max_iter=15, random_state=42)
        sk = NeighborhoodComponentsAnalysis(n_components=20, init="pca", max_iter=15, random_state=42).fit(x, y)
        assert np.allclose(ours, sk.components_, rtol=1e-6, atol=1e-7 * np.abs(sk.components_).max())


def test_feature_check_catches_infinity():
    f, y = _clusters()
    f[3, 2] = -np.inf
    with pytest.raises(ValueError, match="infinite"):
        tr.logme(f, y)
