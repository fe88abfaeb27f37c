"""cfct.stats: confidence intervals, permutation tests, weighted tau, ranks, Friedman, Nemenyi."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from cfct import stats
from cfct.errors import IncompatibleError


def test_mean_ci_matches_student_t():
    values = [0.80, 0.82, 0.85, 0.79, 0.84]
    m, lo, hi = stats.mean_ci(values)
    half = sps.t.ppf(0.975, 4) * np.std(values, ddof=1) / np.sqrt(5)
    assert m == pytest.approx(np.mean(values))
    assert (lo, hi) == pytest.approx((m - half, m + half))
    assert stats.mean_ci([0.7]) == (0.7, 0.7, 0.7)


def test_mean_ci_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        stats.mean_ci([1.0, np.nan])
    with pytest.raises(ValueError, match="confidence"):
        stats.mean_ci([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="empty"):
        stats.mean_ci([])


def test_paired_permutation_exact_value():
    # four positive paired differences: of the 2^4 sign patterns only all-plus and all-minus are as extreme
    p = stats.permutation_test([2, 3, 4, 5], [1, 2, 3, 4], paired=True)
    assert p == pytest.approx(2 / 16)
    assert stats.permutation_test([1, 2, 3], [1, 2, 3]) == 1.0


def test_independent_permutation_detects_shift_and_is_seeded():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 30), rng.normal(1.5, 1, 30)
    p1 = stats.permutation_test(a, b, paired=False, n_resamples=2000, seed=1)
    assert p1 < 0.01
    assert p1 == stats.permutation_test(a, b, paired=False, n_resamples=2000, seed=1)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.permutation_test([1, 2, 3], [1, 2])


def test_weighted_tau_is_scipy_default_and_handles_ties_and_nan():
    s, t = np.array([0.1, 0.4, 0.3, 0.9]), np.array([0.5, 0.7, 0.6, 0.8])
    assert stats.weighted_tau(s, t) == pytest.approx(sps.weightedtau(s, t).statistic)
    assert stats.weighted_tau(t, t) == pytest.approx(1.0)
    assert stats.weighted_tau(-t, t) == pytest.approx(-1.0)
    assert np.isnan(stats.weighted_tau([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]))  # SFDA's "-" in Table 6.2
    assert stats.weighted_tau([np.nan, 1, 2, 3], [5, 1, 2, 3]) == pytest.approx(1.0)  # self-source dropped


def test_weighted_tau_weighs_the_top_more():
    truth = np.arange(10.0)
    swap_top = truth.copy()
    swap_top[[8, 9]] = swap_top[[9, 8]]
    swap_bottom = truth.copy()
    swap_bottom[[0, 1]] = swap_bottom[[1, 0]]
    assert stats.weighted_tau(swap_top, truth) < stats.weighted_tau(swap_bottom, truth)


def test_rank_methods_nan_is_worst_and_ties_average():
    taus = pd.DataFrame({"a": [0.5, 0.2], "b": [np.nan, 0.2], "c": [0.1, 0.9]}, index=["t1", "t2"])
    r = stats.rank_methods(taus)
    assert r.loc["t1"].tolist() == [1.0, 3.0, 2.0]
    assert r.loc["t2"].tolist() == [2.5, 2.5, 1.0]
    assert stats.average_ranks(r).tolist() == [1.75, 2.75, 1.5]


def test_friedman_and_nemenyi():
    ranks = pd.DataFrame([[1, 2, 3], [1, 3, 2], [1, 2, 3], [1, 2, 3]], columns=list("abc"), dtype=float)
    chi2, p = stats.friedman_test(ranks)
    assert chi2 == pytest.approx(sps.friedmanchisquare(*ranks.to_numpy().T).statistic)
    assert 0 < p < 0.05
    # Demsar (2006) Table 5: q_0.05 = 2.343 for k = 3 -> CD = 2.343 sqrt(3*4/(6*4))
    assert stats.nemenyi_cd(3, 4) == pytest.approx(2.343 * np.sqrt(0.5), abs=2e-3)
    assert stats.nemenyi_cd(7, 11) == pytest.approx(2.716, abs=1e-3)
    assert stats.nemenyi_cd(7, 11, q_groups=8) == pytest.approx(2.792, abs=1e-3)
    with pytest.raises(ValueError, match=">= 3 methods"):
        stats.friedman_test(ranks[["a", "b"]])


def test_regression_band_contains_fit_and_narrows_at_centre():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 20)
    y = 2 * x + rng.normal(0, 0.1, 20)
    g, fit, lo, hi = stats.regression_band(x, y)
    assert np.all(lo <= fit) and np.all(fit <= hi)
    width = hi - lo
    assert width[len(g) // 2] < width[0] and width[len(g) // 2] < width[-1]
    slope = (fit[-1] - fit[0]) / (g[-1] - g[0])
    assert slope == pytest.approx(np.polyfit(x, y, 1)[0])
    with pytest.raises(ValueError, match="constant"):
        stats.regression_band([1, 1, 1], [1, 2, 3])


# ------------------------------------------------------------------------------------------ AUC
def _mann_whitney_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Independent reference: P(s+ > s-) + P(s+ = s-) / 2 from average ranks."""
    n_pos = int(positive.sum())
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(positive) - n_pos)))


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_roc_auc_binary_equals_mann_whitney_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    probs = np.round(_softmax(rng.normal(size=(300, 2)) + y[:, None] * [0, 0.8]), 2)  # ties count one half
    expected = _mann_whitney_auc(y == 1, probs[:, 1])
    assert stats.roc_auc(y, probs) == pytest.approx(expected, abs=1e-12)
    assert stats.roc_auc(y, probs[:, 1]) == pytest.approx(expected, abs=1e-12)
    assert 0.5 < expected < 1.0


def test_roc_auc_multiclass_and_multilabel_macro() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    probs = _softmax(rng.normal(size=(400, 3)) + np.eye(3)[y])
    expected = np.mean([_mann_whitney_auc(y == c, probs[:, c]) for c in range(3)])
    assert stats.roc_auc(y, probs) == pytest.approx(expected, abs=1e-12)
    # A class absent from a small split: averaged over the classes where AUC is defined (sklearn raises).
    keep = y != 2
    expected = np.mean([_mann_whitney_auc(y[keep] == c, probs[keep, c]) for c in (0, 1)])
    assert stats.roc_auc(y[keep], probs[keep]) == pytest.approx(expected, abs=1e-12)
    labels = rng.integers(0, 2, (250, 4))
    labels[:, 3] = 1  # a column with no negative example is skipped
    scores = rng.random((250, 4))
    expected = np.mean([_mann_whitney_auc(labels[:, k] == 1, scores[:, k]) for k in range(3)])
    assert stats.roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_roc_auc_known_values_and_errors() -> None:
    assert stats.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert stats.roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    with pytest.raises(IncompatibleError, match="single class"):
        stats.roc_auc([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(IncompatibleError, match="NaN"):
        stats.roc_auc([0, 1], [np.nan, 0.5])
    with pytest.raises(IncompatibleError, match="3 labels but 2"):
        stats.roc_auc([0, 1, 1], [0.1, 0.2])
    with pytest.raises(IncompatibleError, match="outside the 2 predicted classes"):
        stats.roc_auc([0, 1, 2], np.full((3, 2), 0.5))
# ------------------------------------------------------------------------------------ Keras AUC (Table 3.2)
def test_keras_auc_hand_computed() -> None:
    # flattened pairs: truth (1, 0, 1, 0), scores (0.9, 0.6, 0.4, 0.1)
    onehot = np.array([[1, 0], [1, 0]])
    probs = np.array([[0.9, 0.6], [0.4, 0.1]])
    # 3 thresholds (-eps, 0.5, 1+eps): (fpr, recall) = (1, 1), (0.5, 0.5), (0, 0) -> 0.375 + 0.125
    assert stats.keras_auc(onehot, probs, num_thresholds=3) == pytest.approx(0.5)
    # 5 thresholds add 0.25 and 0.75: (1, 1), (0.5, 1), (0.5, 0.5), (0, 0.5), (0, 0) -> 0.5 + 0.25
    assert stats.keras_auc(onehot, probs, num_thresholds=5) == pytest.approx(0.75)
    # the exact AUC of these pairs is 3/4 (0.4 loses to 0.6 only)
    assert roc_auc_score([1, 0, 1, 0], [0.9, 0.6, 0.4, 0.1]) == pytest.approx(0.75)


def test_keras_auc_tends_to_exact_micro_auc() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + 1.5 * np.eye(3)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    exact = roc_auc_score(np.eye(3)[labels].ravel(), probs.ravel())
    errors = [abs(stats.keras_auc(labels, probs, num_thresholds=k) - exact) for k in (5, 200, 20000)]
    assert errors[0] > errors[2] and errors[1] < 5e-3 and errors[2] < 2e-4
    # 1-D binary scores mean the two softmax columns (1 - p, p)
    p = probs[:, 1] / probs[:, :2].sum(1)
    y = (labels == 1).astype(int)
    assert stats.keras_auc(y, p) == pytest.approx(stats.keras_auc(y, np.stack([1 - p, p], 1)))


def test_keras_auc_bad_input() -> None:
    with pytest.raises(ValueError, match="probabilities"):
        stats.keras_auc([0, 1], [[0.5, 1.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="class indices"):
        stats.keras_auc([0, 2], [[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="num_thresholds"):
        stats.keras_auc([0, 1], [[0.5, 0.5], [0.2, 0.8]], num_thresholds=1)
