"""Statistics for comparing methods and runs: the AUC, confidence intervals, permutation tests, rank
correlation, per-target ranks, the Friedman test and the Nemenyi critical difference (thesis 3.4.3, 6.3.1, 6.5.2).

All functions take plain arrays / DataFrames and return plain numbers or DataFrames, so every chapter can use
them. Library routines are used where they exist (``sklearn.metrics.roc_auc_score``, ``scipy.stats.weightedtau``,
``scipy.stats.friedmanchisquare``, ``scipy.stats.studentized_range``, ``scipy.stats.permutation_test``); this
module adds argument checks and the conventions the thesis used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from sklearn.metrics import roc_auc_score

from cfct.errors import ConfigError, IncompatibleError

__all__ = [
    "roc_auc",
    "fold_summary",
    "keras_auc",
    "KERAS_EPSILON",
    "permutation_test",
    "mean_ci",
    "weighted_tau",
    "rank_methods",
    "average_ranks",
    "friedman_test",
    "nemenyi_cd",
    "regression_band",
]


def roc_auc(labels: Sequence | np.ndarray, probs: Sequence | np.ndarray) -> float:
    """AUC of predicted probabilities: the thesis's transfer-performance measure (3.4.3, 6.4.2).

    ``sklearn.metrics.roc_auc_score`` per class (binary: the positive class) after checks that name what is
    wrong with the input.

    Parameters
    ----------
    labels : array-like
        ``(N,)`` class indices, or ``(N, K)`` 0/1 for multi-label.
    probs : array-like
        Binary: ``(N,)`` positive-class scores or ``(N, 2)`` probabilities (column 1 is the positive class);
        multi-class: ``(N, C)``, scored one-vs-rest and macro-averaged (sklearn's ``multi_class='ovr'``);
        multi-label: ``(N, K)``, macro-averaged over labels.

    Returns
    -------
    float

    Raises
    ------
    IncompatibleError
        Shape mismatch, non-finite scores, or a single class in ``labels`` (AUC is undefined).

    Notes
    -----
    Where sklearn raises because a class (multi-class) or a label column (multi-label) has no positive or no
    negative example, this function averages over the classes / labels where AUC is defined, so that a small
    validation split does not abort a fine-tune; with every class present both agree.
    """
    y = np.asarray(labels)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) != len(p):
        raise IncompatibleError(f"roc_auc: {len(y)} labels but {len(p)} predictions")
    if not np.isfinite(p).all():
        raise IncompatibleError("roc_auc: predictions contain NaN or infinity (did training diverge?)")
    if y.ndim == 2:  # multi-label
        if p.shape != y.shape:
            raise IncompatibleError(f"roc_auc: multi-label labels {y.shape} but predictions {p.shape}")
        cols = [k for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
        if not cols:
            raise IncompatibleError("roc_auc: no label column has both positive and negative examples")
        return float(np.mean([roc_auc_score(y[:, k] == 1, p[:, k]) for k in cols]))
    y = y.reshape(-1)
    present = np.unique(y)
    if len(present) < 2:
        raise IncompatibleError(f"roc_auc: labels hold a single class ({present.tolist()}); AUC needs two")
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
        if len(present) > 2:
            raise IncompatibleError(f"roc_auc: 1-D scores need binary labels; got classes {present.tolist()}")
        return float(roc_auc_score(y == present[1], p.reshape(-1)))
    if p.ndim != 2:
        raise IncompatibleError(f"roc_auc: predictions must be (N,) or (N, C); got {p.shape}")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise IncompatibleError(f"roc_auc: labels {present.tolist()} outside the {p.shape[1]} predicted classes")
    if p.shape[1] == 2:
        return float(roc_auc_score(y == 1, p[:, 1]))
    return float(np.mean([roc_auc_score(y == c, p[:, c]) for c in present]))


def _as_1d(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def fold_summary(table: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str],
                 confidence: float = 0.95) -> pd.DataFrame:
    """Per group of ``keys`` and per metric: mean over folds, standard deviation, Student-t CI, count.

    The one summary of repeated runs every chapter uses (Table 3.2, Figs. 4.3-4.4, 5.2-5.4).

    Parameters
    ----------
    table : DataFrame
        One row per run, with the ``keys`` columns and one column per metric.
    metrics, keys : sequence of str
        Metric columns to summarise; grouping columns (groups keep their first-appearance order).
    confidence : float
        Level of the interval (:func:`mean_ci`).

    Returns
    -------
    DataFrame
        Long format: ``keys``, ``metric``, ``mean``, ``std`` (ddof 1; 0 for a single run), ``ci_low``,
        ``ci_high``, ``n``. Missing values are left out; a group without values is left out.
    """
    missing = [c for c in [*keys, *metrics] if c not in table.columns]
    if missing:
        raise ConfigError(f"fold_summary: the table has no column(s) {missing}; columns: {list(table.columns)}")
    rows = []
    for key, group in table.groupby(list(keys), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            values = group[metric].dropna().to_numpy(dtype=float)
            if len(values) == 0:
                continue
            mean, low, high = mean_ci(values, confidence)
            std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            rows.append({**dict(zip(keys, key, strict=True)), "metric": metric, "mean": mean, "std": std,
                         "ci_low": low, "ci_high": high, "n": len(values)})
    return pd.DataFrame(rows, columns=[*keys, "metric", "mean", "std", "ci_low", "ci_high", "n"])
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): the end thresholds sit this far outside [0, 1]


def keras_auc(labels, probs, *, num_thresholds: int = 200) -> float:
    """ROC AUC as ``tf.keras.metrics.AUC()`` reports it for one-hot labels: the thesis's Table 3.2 AUC.

    The thesis fine-tuned in Keras with ``metrics=[AUC()]`` and one-hot (categorical) labels. With its defaults
    (``curve='ROC'``, ``summation_method='interpolation'``, ``multi_label=False``) that metric

    1. flattens the one-hot label matrix and the predicted probabilities into one list of N*C (label, score)
       pairs, i.e. a *micro* average over classes;
    2. counts TP/FP/TN/FN at ``num_thresholds`` thresholds: ``-eps``, the ``num_thresholds - 2`` evenly spaced
       interior values ``i / (num_thresholds - 1)`` (i = 1 .. num_thresholds - 2) and ``1 + eps``
       (eps = :data:`KERAS_EPSILON`); a score counts as positive when it is strictly above the threshold;
    3. sums trapezoids of recall over the false-positive rate between neighbouring thresholds
       (a rate with a zero denominator is 0).

    Implemented here from that description (no TensorFlow dependency). It differs from the exact AUC
    (:func:`roc_auc`, per-class one-vs-rest averaged) in two ways: scores within one threshold bin
    are tied, and the average is over pooled (sample, class) pairs; with more thresholds it tends to the exact
    micro-averaged AUC (``sklearn.metrics.roc_auc_score(onehot.ravel(), probs.ravel())``).

    Parameters
    ----------
    labels : array-like of int, shape (N,), or one-hot array (N, C)
        Class index per sample, or the one-hot matrix itself.
    probs : array-like of float, shape (N, C), or (N,) for binary
        Predicted probabilities in [0, 1] (softmax outputs). A 1-D array is P(class 1) of a binary task and is
        expanded to the two columns ``(1 - p, p)`` a two-way softmax would give.
    num_thresholds : int
        Keras's ``num_thresholds`` (default 200, as the thesis used).

    Returns
    -------
    float

    Examples
    --------
    >>> round(keras_auc([1, 0], [[0.2, 0.8], [0.7, 0.3]]), 6)
    1.0
    """
    if int(num_thresholds) < 2:
        raise ValueError(f"num_thresholds must be at least 2, got {num_thresholds}")
    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be (N,) or (N, C) with C >= 2, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ValueError("probs must be probabilities in [0, 1] (Keras asserts this range)")
    y = np.asarray(labels)
    if y.ndim == 1:
        if y.shape[0] != p.shape[0]:
            raise ValueError(f"{y.shape[0]} labels but {p.shape[0]} predictions")
        if y.min() < 0 or y.max() >= p.shape[1]:
            raise ValueError(f"labels must be class indices in [0, {p.shape[1]}), got range {y.min()}..{y.max()}")
        onehot = np.eye(p.shape[1], dtype=bool)[y.astype(int)]
    elif y.shape == p.shape:
        onehot = y.astype(bool)
    else:
        raise ValueError(f"labels must be (N,) class indices or one-hot {p.shape}, got shape {y.shape}")
    truth, score = onehot.ravel(), p.ravel()
    if truth.all() or not truth.any():
        raise ValueError("keras_auc needs both positive and negative (sample, class) pairs")
    n = int(num_thresholds)
    inner = [(i + 1) / (n - 1) for i in range(n - 2)]
    thresholds = np.array([-KERAS_EPSILON, *inner, 1.0 + KERAS_EPSILON])
    # counts above each threshold, from sorted scores (strict '>' as Keras)
    pos, neg = np.sort(score[truth]), np.sort(score[~truth])
    tp = pos.size - np.searchsorted(pos, thresholds, side="right")
    fp = neg.size - np.searchsorted(neg, thresholds, side="right")
    recall = tp / pos.size
    fpr = fp / neg.size
    return float(np.sum((fpr[:-1] - fpr[1:]) * (recall[:-1] + recall[1:]) / 2.0))


def permutation_test(a, b, *, n_resamples: int = 10000, paired: bool = True, seed: int = 0) -> float:
    """Two-sided permutation test of a difference in means; returns the p-value.

    Parameters
    ----------
    a, b : array-like of float
        The two samples (e.g. per-fold AUCs of two methods). With ``paired=True`` they must have equal
        length and ``a[i]`` pairs with ``b[i]`` (same fold / same seed): the test flips the sign of each paired
        difference. With ``paired=False`` the group labels are shuffled.
    n_resamples : int
        Number of random permutations (exact enumeration is used by SciPy when it is smaller).
    paired : bool
        Paired (sign-flip) or independent-samples test.
    seed : int
        Seed of the permutation generator, so the p-value is reproducible.

    Returns
    -------
    float
        Two-sided p-value of H0 "no difference in means".

    Examples
    --------
    >>> round(permutation_test([1, 2, 3, 4], [1, 2, 3, 4]), 3)
    1.0
    """
    x, y = _as_1d(a, "a"), _as_1d(b, "b")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    if paired:
        if x.shape != y.shape:
            raise ValueError(f"paired samples need equal lengths, got {x.size} and {y.size}")
        d = x - y
        if np.allclose(d, 0):
            return 1.0
        res = sps.permutation_test(
            (d,),
            np.mean,
            permutation_type="samples",
            n_resamples=n_resamples,
            alternative="two-sided",
            random_state=rng,
        )
    else:
        if x.size < 2 or y.size < 2:
            raise ValueError("independent samples need at least 2 values each")

        def diff(u, v, axis=-1):
            return np.mean(u, axis=axis) - np.mean(v, axis=axis)

        res = sps.permutation_test(
            (x, y),
            diff,
            permutation_type="independent",
            n_resamples=n_resamples,
            alternative="two-sided",
            random_state=rng,
            vectorized=True,
        )
    return float(min(1.0, res.pvalue))


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and its Student-t confidence interval.

    Parameters
    ----------
    values : array-like of float
        Repeated measurements (e.g. test AUC of each fold).
    confidence : float
        Coverage of the interval, in (0, 1).

    Returns
    -------
    (mean, low, high) : tuple of float
        With a single value the interval collapses to the value (no spread can be estimated).

    Examples
    --------
    >>> mean_ci([1.0, 2.0, 3.0])[0]
    2.0
    """
    arr = _as_1d(values, "values")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    m = float(arr.mean())
    if arr.size == 1:
        return m, m, m
    sem = float(arr.std(ddof=1) / np.sqrt(arr.size))
    half = float(sps.t.ppf(0.5 + confidence / 2, arr.size - 1)) * sem
    return m, m - half, m + half


def weighted_tau(scores, truth) -> float:
    """Weighted Kendall's tau between transferability scores and ground-truth performance (thesis Eq. 6.1).

    Uses ``scipy.stats.weightedtau(scores, truth)`` with its defaults (``rank=True``: the importance of an
    element is decided by its rank under both variables, additive hyperbolic weigher 1/(r+1)), Vigna (2015).
    This is how the thesis's study computed the tau_w of Tables 6.2 and 6.3; with these defaults the published
    scores reproduce every printed cell.

    Parameters
    ----------
    scores, truth : array-like of float, same length
        One value per candidate source. Pairs where either value is NaN are dropped (the thesis leaves the
        target's own dataset out of its candidate set).

    Returns
    -------
    float
        tau_w in [-1, 1], or NaN when the scores are all equal (no ranking: the thesis prints "-" for SFDA on
        binary targets and gives such a method the lowest rank).
    """
    s = np.asarray(scores, dtype=float)
    t = np.asarray(truth, dtype=float)
    if s.shape != t.shape or s.ndim != 1:
        raise ValueError(f"scores and truth must be 1-D of equal length, got {s.shape} and {t.shape}")
    keep = np.isfinite(s) & np.isfinite(t)
    s, t = s[keep], t[keep]
    if s.size < 2:
        raise ValueError("weighted_tau needs at least two candidates with finite score and truth")
    if np.all(s == s[0]) or np.all(t == t[0]):
        return float("nan")
    return float(sps.weightedtau(s, t).statistic)


def rank_methods(taus: pd.DataFrame) -> pd.DataFrame:
    """Per-target ranks of methods (1 = best, highest tau_w), as in Tables 6.2 and 6.3.

    Parameters
    ----------
    taus : DataFrame, rows = targets, columns = methods
        NaN (a method that could not rank the sources) gets the lowest rank, as the thesis does for SFDA.

    Returns
    -------
    DataFrame of float ranks, same shape; ties share their average rank.
    """
    if not isinstance(taus, pd.DataFrame) or taus.empty:
        raise ValueError("taus must be a non-empty DataFrame (rows: targets, columns: methods)")
    filled = taus.astype(float).fillna(-np.inf)
    return filled.rank(axis=1, ascending=False, method="average")


def average_ranks(ranks: pd.DataFrame) -> pd.Series:
    """Mean rank of each method over targets (last row of Tables 6.2/6.3)."""
    if ranks.isna().any().any():
        raise ValueError("ranks contain NaN")
    return ranks.mean(axis=0)


def friedman_test(ranks: pd.DataFrame) -> tuple[float, float]:
    """Friedman test of "all methods rank alike" over targets (Demšar 2006), as in 6.5.2.

    Parameters
    ----------
    ranks : DataFrame, rows = targets (N >= 2), columns = methods (k >= 3)

    Returns
    -------
    (chi2, p_value)
    """
    n, k = ranks.shape
    if k < 3 or n < 2:
        raise ValueError(f"the Friedman test needs >= 3 methods and >= 2 targets, got {k} and {n}")
    res = sps.friedmanchisquare(*[ranks[c].to_numpy(float) for c in ranks.columns])
    return float(res.statistic), float(res.pvalue)


def nemenyi_cd(n_methods: int, n_datasets: int, alpha: float = 0.05, *, q_groups: int | None = None) -> float:
    """Nemenyi critical difference of average ranks, CD = q_alpha sqrt(k(k+1) / (6N)) (Demšar 2006).

    q_alpha is the studentized-range quantile for ``q_groups`` groups (default: ``n_methods``) divided by
    sqrt(2). The thesis prints CD = 2.792 for k = 7 methods and N = 11 targets; that value is obtained with
    the quantile for 8 groups (q = 3.031) while k = 7 gives q = 2.949 and CD = 2.716. ``q_groups=8``
    reproduces the printed number; the chapter shows both.

    Parameters
    ----------
    n_methods, n_datasets : int
        k >= 2 and N >= 1.
    alpha : float
        Family-wise significance level.
    q_groups : int, optional
        Number of groups for the studentized-range quantile.
    """
    if n_methods < 2 or n_datasets < 1:
        raise ValueError(f"need n_methods >= 2 and n_datasets >= 1, got {n_methods}, {n_datasets}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    groups = n_methods if q_groups is None else int(q_groups)
    q = float(sps.studentized_range.ppf(1 - alpha, groups, np.inf)) / np.sqrt(2.0)
    return q * float(np.sqrt(n_methods * (n_methods + 1) / (6.0 * n_datasets)))


def regression_band(
    x, y, *, confidence: float = 0.95, n_points: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares line of y on x with its pointwise confidence band for the mean (Figure 6.5).

    Returns
    -------
    grid, fit, low, high : arrays of length ``n_points``
        The band is fit +- t_{n-2} * s * sqrt(1/n + (g - mean x)^2 / Sxx) (the same band seaborn's regplot
        draws with ``ci=95``, computed analytically instead of by bootstrap).
    """
    xa, ya = _as_1d(x, "x"), _as_1d(y, "y")
    if xa.size != ya.size:
        raise ValueError(f"x and y need equal lengths, got {xa.size} and {ya.size}")
    if xa.size < 3:
        raise ValueError("a regression band needs at least 3 points")
    sxx = float(((xa - xa.mean()) ** 2).sum())
    if sxx == 0:
        raise ValueError("x is constant; no regression line")
    slope, intercept = np.polyfit(xa, ya, 1)
    resid = ya - (slope * xa + intercept)
    s = float(np.sqrt((resid**2).sum() / (xa.size - 2)))
    grid = np.linspace(xa.min(), xa.max(), n_points)
    fit = slope * grid + intercept
    tq = float(sps.t.ppf(0.5 + confidence / 2, xa.size - 2))
    half = tq * s * np.sqrt(1.0 / xa.size + (grid - xa.mean()) ** 2 / sxx)
    return grid, fit, fit - half, fit + half


def tau_table(
    scores: Mapping[str, pd.DataFrame], truth: pd.DataFrame, targets: Sequence[str] | None = None
) -> pd.DataFrame:
    """tau_w of each method (columns) on each target (rows) from score and truth tables (sources x targets).

    Parameters
    ----------
    scores : mapping method -> DataFrame indexed by source, one column per target
    truth : DataFrame indexed by source, one column per target (ground-truth AUC)
    targets : optional subset / order of targets
    """
    if not scores:
        raise ConfigError("no methods given")
    cols = (
        list(targets)
        if targets is not None
        else [c for c in truth.columns if all(c in s.columns for s in scores.values())]
    )
    out = pd.DataFrame(index=pd.Index(cols, name="target"), columns=list(scores), dtype=float)
    for method, table in scores.items():
        missing = set(truth.index) ^ set(table.index)
        if missing:
            raise ValueError(f"sources of {method!r} and the ground truth differ: {sorted(missing)}")
        for t in cols:
            out.loc[t, method] = weighted_tau(
                table.loc[truth.index, t].to_numpy(float), truth[t].to_numpy(float)
            )
    return out
