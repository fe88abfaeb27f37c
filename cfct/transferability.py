"""Transferability estimation (thesis Chapter 6): score a pre-trained source for a target without fine-tuning.

Per-source scores take the target's penultimate features ``(n, D)`` (or the source's softmax, for LEEP) and the
target labels ``(n,)``:

- :func:`logme` (You et al., 2021), :func:`leep` (Nguyen et al., 2020), :func:`nleep` (Li et al., 2021),
  :func:`parc` (Bolya et al., 2021), :func:`sfda` (Shao et al., 2022);
- the thesis metric's two terms (6.3.2): :func:`label_prediction_score` S_LP (Eq. 6.2, NCA + 5-NN) and
  :func:`feature_update_score` S_FU (Eqs. 6.3-6.4, ratio of triplet-loss gradient norms of the second and first
  convolution).

Set-level scores normalise across the candidate sources of one target and take a mapping source -> inputs:
:func:`ncti` (Wang et al., 2023) and :func:`transferability_score` (Eqs. 6.5, 6.6 and 6.8).

Every metric is implemented from its paper's definition. Where the thesis's study (the authors' public code,
DovileDo/transferability-in-medical-imaging, which wraps the original LogME, SFDA, PARC and NCTI code) used a
different variant or setting, a keyword offers it and the docstring names the difference; :data:`THESIS_SETTINGS`
collects the keywords that reproduce the study. ``bench/bench_metrics.py`` times every metric against that code
and prints the value differences.

Speed: the costly step of most metrics is a decomposition of the (n, D) feature matrix. Where n < D (the thesis's
targets: 100 images per class, D = 512-2048) it is done on the n x n Gram matrix, which has the same non-zero
spectrum; the result is the same up to rounding. A few top components (PARC's exact PCA) come from Lanczos on
that Gram matrix. S_LP's NCA runs scikit-learn's fit step for step (same initialisation, objective arithmetic and
L-BFGS-B call) without its per-evaluation validation; PARC ranks with one unstable sort.

Degenerate input is refused early with a :class:`ValueError` naming the problem: fewer than two classes, NaN or
infinite features, features that are constant over the target set, labels that do not match the features.
n < D (the thesis's low-data case: 200 images of a binary target, D = 512) is supported by every metric.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import torch
from scipy import linalg, optimize
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestNeighbors

__all__ = [
    "logme",
    "leep",
    "nleep",
    "parc",
    "sfda",
    "ncti",
    "label_prediction_score",
    "feature_update_score",
    "transferability_score",
    "minmax",
    "nca_fit",
    "THESIS_SETTINGS",
    "METHODS",
]

#: Keyword settings that reproduce the thesis's study (its public code), per metric.
THESIS_SETTINGS: dict[str, dict] = {
    "logme": {"variant": "thesis"},
    "nleep": {"variant": "thesis"},
    "parc": {"variant": "thesis", "pca": "randomized", "random_state": 1919},
    "sfda": {"variant": "thesis"},
    "ncti": {"variant": "thesis", "random_state": 42},
    "label_prediction_score": {"reduce": "mean", "n_components": 50, "random_state": 42},
    "feature_update_score": {"n_batches": 6},
}

#: The seven methods compared in Tables 6.2 / 6.3, in the thesis's column order.
METHODS: tuple[str, ...] = ("logme", "parc", "sfda", "ncti", "leep", "nleep", "ours")


# ----------------------------------------------------------------------------------------------- validation
def _check_labels(labels, n: int | None = None) -> tuple[np.ndarray, int]:
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"labels must be a 1-D array of class indices, got shape {y.shape}")
    if n is not None and y.shape[0] != n:
        raise ValueError(f"labels have {y.shape[0]} entries but there are {n} samples")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError("labels must be integer class indices")
    counts = np.bincount(y) if y.size and y.min() >= 0 else None
    if counts is not None and counts.all():  # already 0..C-1 (the usual case): no sort
        classes = np.arange(counts.size)
    else:
        classes, y = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(
            f"transferability needs at least two classes in the target labels, got one ({classes[0]}): "
            "every source would predict a single class perfectly"
        )
    return y.astype(np.int64, copy=False), int(classes.size)


def _check_features(features, labels, *, keep_float32: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    # keep_float32: hand float32 features to scikit-learn as they are, as the thesis's code did (its PCA then runs
    # in float32: same value as the study's, and faster)
    x = np.asarray(features)
    if not (keep_float32 and x.dtype == np.float32):
        x = x.astype(np.float64, copy=False)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D array (n, D), got shape {x.shape}")
    if x.shape[0] < 3:
        raise ValueError(f"need at least 3 samples, got {x.shape[0]}")
    # column max and min propagate NaN and hold any infinity: two passes over x check finiteness and constancy
    hi, lo = x.max(axis=0), x.min(axis=0)
    if not (np.all(np.isfinite(hi)) and np.all(np.isfinite(lo))):
        raise ValueError("features contain NaN or infinite values (a diverged source model?)")
    if np.all(hi == lo):
        raise ValueError(
            "features are constant over the target set: the source maps every image to the same "
            "representation, so no score can rank it"
        )
    y, c = _check_labels(labels, x.shape[0])
    return x, y, c


def _check_probs(probs, labels) -> tuple[np.ndarray, np.ndarray, int]:
    p = np.asarray(probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else probs)
    if p.dtype != np.float32:  # float32 softmax outputs stay float32 (LEEP needs no more precision)
        p = p.astype(np.float64)
    if p.ndim != 2:
        raise ValueError(f"source_probs must be 2-D (n, source classes), got shape {p.shape}")
    row_sums = p.sum(axis=1)  # NaN or inf anywhere in a row makes its sum non-finite: one pass checks both
    if not np.all(np.isfinite(row_sums)):
        raise ValueError("source_probs contain NaN or infinite values")
    if p.min() < 0 or np.abs(row_sums - 1.0).max() > 1e-4:
        raise ValueError(
            "source_probs must be probabilities (rows >= 0 summing to 1): apply a softmax over the "
            "source's own classes to the logits first"
        )
    y, c = _check_labels(labels, p.shape[0])
    return p, y, c


def minmax(values) -> np.ndarray:
    """Min-max normalisation across the candidate set (thesis Eq. 6.5); NaN entries stay NaN.

    Raises
    ------
    ValueError
        When fewer than two finite values, or all finite values are equal (the normalisation is undefined: the
        term cannot rank the candidates).
    """
    v = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(v)
    if finite.sum() < 2:
        raise ValueError("min-max normalisation needs at least two candidates with a finite score")
    lo, hi = v[finite].min(), v[finite].max()
    if hi == lo:
        raise ValueError("all candidates have the same score; min-max normalisation (Eq. 6.5) is undefined")
    return (v - lo) / (hi - lo)


# ------------------------------------------------------------------------------------------- linear algebra
def _gram_eigh(
    x: np.ndarray, *, left: bool = True, right: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Eigen-decomposition of the smaller Gram matrix of x: (sigma, u, v), largest first.

    sigma are the squared singular values of x, u (n, r) its left and v (D, r) its right singular vectors for the
    r = min(n, D) directions (``left`` / ``right`` False: that side is not computed and is None). One symmetric
    eigen-decomposition of an (r, r) matrix replaces the SVD of (n, D): several times faster at the thesis's
    sizes. Singular values below ~1e-8 of the largest lose relative accuracy, which none of the metrics here
    depends on (they enter as log(alpha + beta sigma) or are cut); the vectors of those directions are zero.
    """
    n, d = x.shape
    small = x @ x.T if n <= d else x.T @ x
    sigma, vecs = linalg.eigh(small, overwrite_a=True, check_finite=False, driver="evd")
    sigma, vecs = sigma[::-1].clip(min=0), vecs[:, ::-1]
    keep = sigma > sigma[0] * 1e-14
    other = None
    if (n <= d and right) or (n > d and left):
        other = np.zeros((d if n <= d else n, vecs.shape[1]))
        other[:, keep] = ((x.T if n <= d else x) @ vecs[:, keep]) / np.sqrt(sigma[keep])
    u, v = (vecs, other) if n <= d else (other, vecs)
    return sigma, (u if left else None), (v if right else None)


def _top_eigh(small: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The k largest eigenpairs of a symmetric PSD matrix by Lanczos (ARPACK, tol 0: to machine precision), largest
    first; None when ARPACK does not converge (the caller then takes the dense route).

    A dense eigen-decomposition of the (r, r) Gram matrix costs O(r^3) whatever k is (~0.5 s at r = 700, ~2 s at
    r = 1100 on one core); the top 32 by Lanczos cost a few hundred matrix-vector products: 5-10x less, and the same
    eigenvalues and vectors to ~1e-14 (relative) at the thesis's sizes. The start vector is seeded: deterministic.
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    v0 = np.random.default_rng(0).normal(size=small.shape[0])
    try:
        w, v = eigsh(small, k=k, which="LA", tol=0, v0=v0)
    except ArpackNoConvergence:
        return None
    order = np.argsort(w)[::-1]
    return w[order].clip(min=0), v[:, order]


def _pca_exact(x: np.ndarray, n_components: int | float) -> tuple[np.ndarray, np.ndarray]:
    """Exact PCA scores (n, k) and explained variances (k,), by :func:`_gram_eigh` of the centred features.

    ``n_components`` in (0, 1) keeps the fewest components whose explained variance ratio reaches it (scikit-learn's
    rule). Each component's sign follows scikit-learn's PCA (the largest-magnitude loading positive), so the scores
    equal scikit-learn's exact PCA up to rounding; PARC, which correlates samples across components, depends on
    those signs. A number of components well below min(n, D) (PARC's 32) takes only the top eigenpairs of the Gram
    matrix, by Lanczos (:func:`_top_eigh`).
    """
    xc = x - x.mean(axis=0)
    n, d = xc.shape
    r = min(n, d)
    top = None
    if not 0 < n_components < 1 and 4 * int(n_components) < r:
        top = _top_eigh(xc @ xc.T if n <= d else xc.T @ xc, int(n_components))
    elif 0 < n_components < 1 and r >= 500:
        # N-LEEP's 80% of the variance: CNN features reach it within a few dozen components; try the top 64 by
        # Lanczos and take the dense route only if they do not reach it (the total is the Gram matrix's trace)
        small = xc @ xc.T if n <= d else xc.T @ xc
        top = _top_eigh(small, 64)
        if top is not None:
            ratio = np.cumsum(top[0]) / np.trace(small)
            if ratio[-1] < n_components:
                top = None
            else:
                k = int(np.searchsorted(ratio, n_components, side="right")) + 1
                top = (top[0][:k], top[1][:, :k])
    if top is not None:
        sigma, vecs = top
        k = sigma.size
        u, v = (vecs, None) if n <= d else (None, vecs)
    else:
        sigma, u, v = _gram_eigh(xc, left=n <= d, right=n > d)
        if 0 < n_components < 1:
            var = sigma / (n - 1)
            k = int(np.searchsorted(np.cumsum(var) / var.sum(), n_components, side="right")) + 1
        else:
            k = int(n_components)
        k = min(k, sigma.size)
    sigma = sigma[:k]
    if n <= d:
        scores = u[:, :k] * np.sqrt(sigma)
        loadings = xc.T @ u[:, :k]  # proportional to the components (D, k): only their signs are needed
    else:
        loadings = v[:, :k]
        scores = xc @ loadings
    sign = np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(k)])
    return scores * np.where(sign == 0, 1.0, sign), sigma / (n - 1)


# --------------------------------------------------------------------------------------------------- LogME
def logme(features, labels, *, variant: str = "paper", tol: float = 1e-3, max_iter: int = 11) -> float:
    """LogME: mean over classes of the per-sample log maximum evidence of a Bayesian linear model (You et al.
    2021, Eq. 2, maximised by the fixed-point iteration of You et al. 2022, Algorithm 2).

    For each class k, regress the one-hot target column y_k on the features F with prior w ~ N(0, 1/alpha I) and
    noise N(0, 1/beta); the evidence is

        log p(y|F, alpha, beta) = n/2 log beta + D/2 log alpha - n/2 log 2 pi - beta/2 ||F m - y||^2
                                  - alpha/2 ||m||^2 - 1/2 log |alpha I + beta F^T F|,

    maximised over alpha, beta and divided by n.

    Parameters
    ----------
    features : (n, D) array
    labels : (n,) int array
    variant : {"paper", "thesis"}
        ``"paper"``: log|A| sums over all D eigenvalues of F^T F, including the D - rank zero ones (each
        contributes log alpha), as in the paper's equation, and the evidence is evaluated at the final
        alpha, beta. ``"thesis"``: the public LogME code the thesis's study used sums only over the min(n, D)
        singular values, which changes the score when n < D (the thesis's case: 200 images, D = 512), adds 1e-5
        to ||m||^2 and the residual, and evaluates the evidence with the last iteration's ||m||^2 and residual.
    tol, max_iter : float, int
        Stop when alpha/beta changes by less than ``tol`` (relative), at most ``max_iter`` iterations (the
        paper's defaults).
    """
    if variant not in ("paper", "thesis"):
        raise ValueError(f"unknown variant {variant!r}; valid choices: paper, thesis")
    f, y, c = _check_features(features, labels)
    n, d = f.shape
    onehot = np.eye(c)[y]
    if n <= d:
        sigma, u, _ = _gram_eigh(f, right=False)
        keep = sigma > sigma[0] * 1e-14
        proj = u[:, keep].T @ onehot
    else:  # u^T y = v^T F^T y / s: no (n, D) matrix of left vectors
        sigma, _, v = _gram_eigh(f, left=False)
        keep = sigma > sigma[0] * 1e-14
        proj = (v[:, keep].T @ (f.T @ onehot)) / np.sqrt(sigma[keep])[:, None]
    rank = int(keep.sum())
    sigma = sigma[keep]
    x2_all = proj**2  # (rank, C): squared projections of each class column on the left singular vectors
    n_zero = d - rank if variant == "paper" else min(n, d) - rank if n <= d else 0
    # The reference code adds 1e-5 to ||m||^2 and the residual for stability; it biases alpha when ||m||^2 is
    # small, so the paper variant only guards against division by zero.
    eps = 1e-5 if variant == "thesis" else 1e-10
    evidences = []
    for k in range(c):
        x2 = x2_all[:, k]
        res_x2 = max(float(onehot[:, k].sum() - x2.sum()), 0.0)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
            res2 = float((x2 * (t / (t + sigma)) ** 2).sum() + res_x2)
            alpha = gamma / (m2 + eps)
            beta = (n - gamma) / (res2 + eps)
            if abs(alpha / beta - t) / t <= tol or alpha / beta < 1e-12:
                break
        if variant == "paper":
            t = alpha / beta
            m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
            res2 = float((x2 * (t / (t + sigma)) ** 2).sum() + res_x2)
        ev = (
            d / 2 * math.log(alpha)
            + n / 2 * math.log(beta)
            - 0.5 * (np.log(alpha + beta * sigma).sum() + n_zero * math.log(alpha))
            - beta / 2 * res2
            - alpha / 2 * m2
            - n / 2 * math.log(2 * math.pi)
        )
        evidences.append(ev / n)
    return float(np.mean(evidences))


# ---------------------------------------------------------------------------------------------------- LEEP
def _leep_from_assignments(theta: np.ndarray, y: np.ndarray, c: int, *, log: bool) -> float:
    joint = np.eye(c, dtype=theta.dtype)[:, y] @ theta  # n P(y, z) = sum_i theta_z(x_i) [y_i = y]; n cancels
    pz = joint.sum(axis=0)
    cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z)
    eep = (theta @ cond.T)[np.arange(y.size), y]  # empirical predictor's probability of the true label
    if log:
        return float(np.log(np.maximum(eep, np.finfo(eep.dtype).tiny)).mean())
    return float(eep.mean())


def leep(source_probs, labels) -> float:
    """LEEP (Nguyen et al. 2020, Eq. 2): average log-likelihood of the expected empirical predictor.

    With theta(x) the source model's softmax over its own C_s classes, P(y, z) = 1/n sum_i theta_z(x_i) [y_i = y],
    P(y|z) = P(y, z) / P(z), and

        LEEP = 1/n sum_i log( sum_z P(y_i | z) theta_z(x_i) ).

    Parameters
    ----------
    source_probs : (n, C_s) array of probabilities (softmax over the source's label space, not logits)
    labels : (n,) int array of target labels
    """
    p, y, c = _check_probs(source_probs, labels)
    return _leep_from_assignments(p, y, c, log=True)


def nleep(
    features,
    labels,
    *,
    random_state: int = 0,
    variant: str = "paper",
    energy: float = 0.8,
    components_per_class: int = 5,
) -> float:
    """Gaussian LEEP, N-LEEP (Li et al. 2021): LEEP with the source head replaced by a Gaussian mixture.

    PCA keeps ``energy`` of the feature variance, a Gaussian mixture (full covariances) with
    ``components_per_class`` x C components is fitted on the reduced target features, and its posterior p(v|x)
    plays the role of theta(x) in :func:`leep`.

    The PCA is exact (:func:`_pca_exact`, on the Gram matrix when n < D); it, not the mixture, is the costly step
    at the thesis's sizes (the mixture of 5 C components on a few dozen PCA dimensions converges in a few EM
    steps). The mixture is scikit-learn's, as in the study.

    Parameters
    ----------
    variant : {"paper", "thesis"}
        ``"paper"``: mean log-likelihood, as LEEP, with the mixture's covariances regularised by 1e-4 (stable on
        float features whose PCA components have small variance). ``"thesis"``: as the thesis's study, the mean
        of the empirical predictor's *probability* of the true label without the log (its published N-LEEP scores
        lie in [0, 1]) and scikit-learn's default regularisation 1e-6.
    random_state : int
        Seed of the mixture's k-means initialisation. The study left it unseeded, so its N-LEEP varies from run
        to run by the spread over seeds (``bench/bench_metrics.py`` shows it).
    """
    if variant not in ("paper", "thesis"):
        raise ValueError(f"unknown variant {variant!r}; valid choices: paper, thesis")
    f, y, c = _check_features(features, labels)
    reduced, _ = _pca_exact(f, energy)
    k = min(components_per_class * c, f.shape[0])
    reg = 1e-6 if variant == "thesis" else 1e-4
    gmm = GaussianMixture(n_components=k, random_state=random_state, reg_covar=reg).fit(reduced)
    theta = gmm.predict_proba(reduced)
    return _leep_from_assignments(theta, y, c, log=(variant == "paper"))


# ---------------------------------------------------------------------------------------------------- PARC
def _average_ranks(x: np.ndarray) -> np.ndarray:
    """``scipy.stats.rankdata(x)`` (ties get their average rank; the same numbers): one unstable argsort instead of
    SciPy's stable one, which the average over ties makes unnecessary (~3x faster on PARC's 10^5-10^6 entries)."""
    order = np.argsort(x)
    xs = x[order]
    first = np.empty(x.size, dtype=bool)
    first[0] = True
    np.not_equal(xs[1:], xs[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.diff(np.append(starts, x.size))
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(starts + 1 + (counts - 1) / 2, counts)
    return ranks


def _few_value_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks of an array with few distinct values (``rankdata``'s numbers), by hashing instead of sorting."""
    codes, uniq = pd.factorize(values + 0.0)  # + 0.0: -0.0 and 0.0 are one value, as for rankdata
    counts = np.bincount(codes, minlength=uniq.size)
    order = np.argsort(uniq)
    before = np.cumsum(counts[order]) - counts[order]  # entries below each distinct value
    avg = np.empty(uniq.size)
    avg[order] = before + 1 + (counts[order] - 1) / 2
    return avg[codes]


def _label_rdm_ranks(y: np.ndarray, c: int, iu: tuple[np.ndarray, np.ndarray], variant: str) -> np.ndarray:
    """Average ranks of the one-hot label dissimilarities 1 - corr(e_{y_i}, e_{y_j}) over the pairs ``iu``.

    ``"paper"``: the exact values (0 within a class, 1 + 1/(C-1) between classes); the dissimilarity depends only on
    the pair of classes, so it is ranked from a C x C table (no n x n matrix). ``"thesis"``: the values exactly as
    ``1 - np.corrcoef(onehot)`` rounds them in the published code, where equal dissimilarities of some pairs differ
    in the last bit (e.g. 1.1666666666666665 vs 1.1666666666666667 for C = 7), and not always alike for every pair
    of the same two classes (the BLAS product's rounding depends on the position), so the n x n matrix is formed as
    there; its few distinct values are ranked by hashing (:func:`_few_value_ranks`).
    """
    if variant == "thesis":
        return _few_value_ranks((1 - np.corrcoef(np.eye(c)[y]))[iu])
    table = np.full((c, c), 1.0 + 1.0 / (c - 1))
    np.fill_diagonal(table, 0.0)
    codes = y[iu[0]] * c + y[iu[1]]
    counts = np.bincount(codes, minlength=c * c).astype(np.float64)
    values = table.ravel()
    order = np.argsort(values, kind="stable")
    uniq, inverse = np.unique(values[order], return_inverse=True)
    per_value = np.bincount(inverse, weights=counts[order], minlength=uniq.size)
    avg_rank = np.cumsum(per_value) - per_value + (per_value + 1) / 2  # average rank of each distinct value
    rank_of_code = np.empty(c * c)
    rank_of_code[order] = avg_rank[inverse]
    return rank_of_code[codes]


def parc(
    features,
    labels,
    *,
    n_dims: int = 32,
    pca: str = "randomized",
    random_state: int = 1919,
    variant: str = "paper",
) -> float:
    """PARC (Bolya et al. 2021): Spearman correlation between the feature and label dissimilarity matrices.

    Features are reduced to ``n_dims`` by PCA (the paper's 32) and standardised; the representation
    dissimilarity matrices are 1 - Pearson correlation between samples (of features, and of one-hot labels); the
    score is 100 x Spearman's rho of their upper triangles.

    Parameters
    ----------
    pca : {"randomized", "full"}
        ``"randomized"`` (default): PARC's own code (and the thesis's study) reduces with scikit-learn's
        randomised PCA, one power iteration, seed ``random_state`` = 1919; the approximation moves the score by
        about a point against the exact PCA (``bench/bench_metrics.py``). ``"full"``: the exact PCA.
    random_state : int
        Seed of the randomised PCA.
    variant : {"paper", "thesis"}
        The label dissimilarities. ``"paper"``: the exact two values. ``"thesis"``: as the published code
        computes them with ``np.corrcoef``, whose last-bit rounding splits the tied between-class (and
        within-class) values into groups by class pair; Spearman's rho then ranks those groups apart, which
        changes the score by up to ~10 points for some C (e.g. C = 7) and not at all for C = 2.

    Notes
    -----
    The label dissimilarity depends on the class pair only, so its ranks come from a C x C table: one ranking of
    the n(n-1)/2 feature dissimilarities instead of two, and no n x n label matrix in the paper variant.
    """
    if pca not in ("randomized", "full"):
        raise ValueError(f"unknown pca {pca!r}; valid choices: randomized, full")
    if variant not in ("paper", "thesis"):
        raise ValueError(f"unknown variant {variant!r}; valid choices: paper, thesis")
    f, y, c = _check_features(features, labels, keep_float32=True)
    dims = min(n_dims, f.shape[0], f.shape[1])
    if dims < f.shape[1]:
        if pca == "randomized":
            reducer = PCA(n_components=dims, svd_solver="randomized", random_state=random_state, iterated_power=1)
            f = reducer.fit_transform(f)
        else:
            f = _pca_exact(f.astype(np.float64), dims)[0]
    f = np.asarray(f, dtype=np.float64)
    std = f.std(axis=0)
    f = (f - f.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if np.any(f.max(axis=1) == f.min(axis=1)):
        raise ValueError(
            "PARC: a sample has identical values in every reduced feature; its correlation to the "
            "other samples is undefined"
        )
    iu = np.triu_indices(f.shape[0], 1)
    rank_f = _average_ranks((1 - np.corrcoef(f))[iu])
    rho = np.corrcoef(rank_f, _label_rdm_ranks(y, c, iu, variant))[0, 1]
    return float(rho * 100)


# ---------------------------------------------------------------------------------------------------- SFDA
def _shrunk(cov: np.ndarray, lam: float) -> np.ndarray:
    d = cov.shape[0]
    out = (1.0 - lam) * cov
    out.flat[:: d + 1] += lam * np.trace(cov) / d
    return out


def _top_eigenvalue_power(centred: np.ndarray, iterations: int = 3) -> float:
    """SFDA's code's estimate of S_w's largest eigenvalue: ``iterations`` double power steps from S_w 1.

    S_w = centred^T centred / n is applied as two matrix-vector products with ``centred`` (no D x D matrix).
    """
    n = centred.shape[0]

    def sw(v):
        return centred.T @ (centred @ v) / n

    x = sw(np.ones(centred.shape[1]))
    yv = x
    for _ in range(iterations):
        t = sw(x)
        yv = t / np.linalg.norm(t)
        t = sw(yv)
        x = t / np.linalg.norm(t)
    return float(x @ sw(yv))


def _fda_probs(
    x: np.ndarray, y: np.ndarray, c: int, lam: float | None, *, power: bool = False
) -> tuple[np.ndarray, float]:
    """Regularised FDA of SFDA: returns softmax class probabilities and the shrinkage used.

    SFDA's classifier uses coef = M V V^T with V the generalised eigenvectors of (S_b, S_w'); because
    V^T S_w' V = I, V V^T = S_w'^{-1}, so coef = M S_w'^{-1}. With S_w' = a I + b C^T C (C the class-centred
    features / sqrt(n)), it is computed from the eigen-decomposition of the smaller Gram matrix of C: no D x D
    generalised eigen-problem (same numbers, tested against the eigen route).
    """
    n, d = x.shape
    priors = np.bincount(y, minlength=c) / y.size
    means = np.zeros((c, d))
    np.add.at(means, y, x)
    means /= np.bincount(y, minlength=c)[:, None]
    centred = (x - means[y]) / math.sqrt(n)  # S_w = sum_k prior_k cov_k = centred^T centred
    s, _, v = _gram_eigh(centred, left=False)
    if lam is None:
        # adaptive shrinkage lambda = exp(-a * largest eigenvalue of S_w), a = 5 (SFDA Eq. 4)
        top = _top_eigenvalue_power(centred * math.sqrt(n)) if power else float(s[0])
        lam = max(math.exp(-5.0 * top), 1e-10)
    a = lam * float(s.sum()) / d  # lambda * trace(S_w) / D on the diagonal
    b = 1.0 - lam
    # S_w'^{-1} M^T = M^T / a + V diag(1 / (a + b s) - 1 / a) V^T M^T  (V spans the non-null space of S_w)
    proj = v.T @ means.T
    coef = (means.T / a + v @ ((1.0 / (a + b * s) - 1.0 / a)[:, None] * proj)).T
    intercept = -0.5 * np.einsum("kd,kd->k", means, coef) + np.log(priors)
    logits = x @ coef.T + intercept
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True), lam


def _fda_probs_eigen(x: np.ndarray, y: np.ndarray, c: int, lam: float) -> np.ndarray:
    """SFDA's original route (generalised eigenvectors of S_b and the shrunk S_w); kept to test the solve."""
    priors = np.bincount(y, minlength=c) / y.size
    means = np.stack([x[y == k].mean(axis=0) for k in range(c)])
    sw = sum(priors[k] * np.cov(x[y == k].T, bias=True).reshape(x.shape[1], x.shape[1]) for k in range(c))
    sw_s = _shrunk(sw, lam)
    sb = _shrunk(np.cov(x.T, bias=True), lam) - sw_s
    _, vecs = linalg.eigh(sb, sw_s)
    coef = means @ vecs @ vecs.T
    logits = x @ coef.T - 0.5 * np.einsum("kd,kd->k", means, coef) + np.log(priors)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def sfda(features, labels, *, variant: str = "paper") -> float:
    """SFDA (Shao et al. 2022): self-challenging Fisher discriminant analysis.

    1. Reg-FDA: Fisher projection with the within-class scatter shrunk by lambda = exp(-5 sigma_max(S_w)) (SFDA
       Eq. 4); class probabilities from the Gaussian classifier in that space.
    2. ConfMix (self-challenging): each sample is mixed toward the mean of the other classes by one minus its
       softened probability of the true class, x <- p x + (1 - p) mu_{-y}.
    3. Reg-FDA again (same lambda) on the mixed features; the score is the mean probability of the true class.

    As in SFDA's reference code (which the thesis's study used), the final expectation is taken over
    probabilities, not log-probabilities. In the low-data regime (binary targets, n = 200 < D) the probabilities
    saturate at 1 for every source, so SFDA cannot rank them (Table 6.2, "-").

    Parameters
    ----------
    variant : {"paper", "thesis"}
        How sigma_max(S_w) is obtained. ``"paper"``: exactly. ``"thesis"``: SFDA's public code (used by the
        thesis's study) estimates it with three power iterations, which under-estimates it when the top
        eigenvalues are close and so gives a larger lambda.
    """
    if variant not in ("paper", "thesis"):
        raise ValueError(f"unknown variant {variant!r}; valid choices: paper, thesis")
    f, y, c = _check_features(features, labels)
    prob, lam = _fda_probs(f, y, c, None, power=(variant == "thesis"))
    soft = np.exp(prob) / np.exp(prob).sum(axis=1, keepdims=True)
    means = np.zeros((c, f.shape[1]))
    np.add.at(means, y, f)
    means /= np.bincount(y, minlength=c)[:, None]
    others = (means.sum(axis=0, keepdims=True) - means) / (c - 1)
    w = soft[np.arange(y.size), y][:, None]
    mixed = w * f + (1 - w) * others[y]
    prob2, _ = _fda_probs(mixed, y, c, lam)
    return float(prob2[np.arange(y.size), y].mean())


# ---------------------------------------------------------------------------------------------------- NCTI
def _ncti_terms(x: np.ndarray, y: np.ndarray, c: int, variant: str, random_state: int) -> tuple[float, float, float]:
    dims = min(64, x.shape[0], x.shape[1])
    pca = PCA(n_components=dims, random_state=random_state)
    z = pca.fit_transform(x)
    lam = max(math.exp(-float(pca.explained_variance_[:32].sum())), 1e-10)
    lda = (
        LinearDiscriminantAnalysis(solver="svd")
        if lam == 1e-10
        else LinearDiscriminantAnalysis(solver="eigen", shrinkage=lam)
    )
    low = lda.fit_transform(z, y)
    low = low - low.mean(axis=0, keepdims=True)
    seli = float(np.linalg.norm(low, ord="nuc"))
    probs = lda.predict_proba(z)
    ncc = float(probs[np.arange(y.size), y].mean())
    nuc = float(sum(np.linalg.norm(probs[y == k], ord="nuc") for k in range(c)))
    vc = math.log(nuc) if variant == "thesis" else -nuc
    return seli, ncc, vc


def ncti(features: Mapping[str, np.ndarray], labels, *, variant: str = "paper", random_state: int = 0) -> pd.Series:
    """NCTI (Wang et al. 2023): how far each source is from neural collapse on the target, across a source set.

    For each source: PCA to 64 dims, shrinkage LDA; S_seli = nuclear norm of the centred LDA projection (SELI
    geometry), S_ncc = mean LDA probability of the true class (nearest-centre classifier), S_vc = minus the sum
    over classes of the nuclear norm of the class's predicted probabilities (within-class variability collapse).
    Each term is min-max normalised over the candidate sources and the three are summed.

    Parameters
    ----------
    features : mapping source name -> (n, D) features of the same target images
    labels : (n,) int array
    variant : {"paper", "thesis"}
        ``"thesis"``: the thesis's study used S_vc = +log(sum of nuclear norms), i.e. with the opposite sign to
        the paper, so its NCTI rewards within-class *variability* (its published NCTI reaches 3.0 = all three
        normalised terms at their maximum).
    random_state : int
        Seed of scikit-learn's PCA (randomised for inputs larger than 500 x 500; the study used 42). Float32
        features are reduced in float32, as in the study.

    Returns
    -------
    pandas Series indexed by source.
    """
    if variant not in ("paper", "thesis"):
        raise ValueError(f"unknown variant {variant!r}; valid choices: paper, thesis")
    if len(features) < 2:
        raise ValueError("NCTI normalises across candidate sources; give at least two")
    terms = {}
    for name, x in features.items():
        f, y, c = _check_features(x, labels, keep_float32=True)
        terms[name] = _ncti_terms(f, y, c, variant, random_state)
    table = pd.DataFrame(terms, index=["seli", "ncc", "vc"]).T
    total = sum(_minmax_or_zero(table[col].to_numpy()) for col in table.columns)
    return pd.Series(total, index=table.index, name="ncti")


def _minmax_or_zero(v: np.ndarray) -> np.ndarray:
    # A term equal for all sources carries no ranking information: it contributes 0 rather than 0/0.
    return np.zeros_like(v, dtype=float) if np.ptp(v) == 0 else minmax(v)


# ----------------------------------------------------------------------------------------------------- NCA
def _nca_loss_grad(flat: np.ndarray, x: np.ndarray, same_class: np.ndarray) -> tuple[float, np.ndarray]:
    """Minus NCA's objective and its gradient at the flattened map ``flat``: scikit-learn's ``_loss_grad_lbfgs``
    step for step in the same precision, without its per-call input validation and with the squared distances
    computed as its float32 route does (upcast to float64, then rounded to float32) in one block instead of
    memory-sized chunks: the same numbers up to the last bit of a float64 sum before that rounding.
    """
    a = flat.reshape(-1, x.shape[1])
    emb = np.dot(x, a.T)  # (n, k)
    e64 = emb.astype(np.float64) if emb.dtype == np.float32 else emb
    sq = np.einsum("ij,ij->i", e64, e64)
    dist = -2 * (e64 @ e64.T)  # a @ a.T: one symmetric BLAS product (syrk)
    dist += sq[:, None]
    dist += sq[None, :]
    if emb.dtype == np.float32:
        dist = dist.astype(np.float32)
    np.maximum(dist, 0, out=dist)
    np.fill_diagonal(dist, np.inf)
    p_ij = np.negative(dist, out=dist)  # softmax(-d) as scikit-learn's: subtract the row max, exp, normalise
    p_ij -= p_ij.max(axis=1).reshape(-1, 1)
    np.exp(p_ij, out=p_ij)
    p_ij /= np.sum(p_ij, axis=1).reshape(-1, 1)
    masked = p_ij * same_class
    p = np.sum(masked, axis=1, keepdims=True)  # (n, 1): probability of a correct neighbour
    loss = np.sum(p)
    weighted = masked - p_ij * p
    sym = weighted + weighted.T
    np.fill_diagonal(sym, -weighted.sum(axis=0))
    grad = 2 * emb.T.dot(sym).dot(x)
    return -loss, -grad.ravel()


def nca_fit(
    features,
    labels,
    *,
    n_components: int = 50,
    max_iter: int = 50,
    tol: float = 1e-5,
    random_state: int = 0,
) -> np.ndarray:
    """Neighbourhood Components Analysis (Goldberger et al. 2004): the linear map A maximising the expected
    leave-one-out nearest-neighbour accuracy sum_i sum_{j: y_j = y_i} softmax_j(-||A x_i - A x_j||^2).

    The fit of scikit-learn's :class:`~sklearn.neighbors.NeighborhoodComponentsAnalysis` with PCA initialisation
    and L-BFGS-B, ``max_iter`` = 50 (the thesis's study): the same initialisation (scikit-learn's PCA seeded as
    there), the same objective evaluated in the same precision and the same SciPy L-BFGS-B call with the same
    options, so the same iterates and the same stopping iteration. What is saved per objective evaluation (10-30%
    of the fit, ``bench/bench_metrics.py``) is scikit-learn's input re-validation and its chunked float32 distance
    routine (:func:`_nca_loss_grad`). Float32 features are kept float32: scikit-learn then evaluates the objective
    in float32 (SciPy hands L-BFGS-B's iterates to it in the initial point's dtype), and that arithmetic decides
    when L-BFGS stops (on a 7-class target, the same fit in float64 stopped one iteration earlier and moved S_LP
    by 1.6%), so casting would not reproduce the study.

    Parameters
    ----------
    n_components : int
        Output dimension (the thesis's study used 50), capped at min(n, D).
    random_state : int
        Seed of the PCA initialisation (scikit-learn's randomised PCA above 500 x 500 inputs; the study used 42).

    Returns
    -------
    (n_components, D) projection matrix A; project with ``features @ A.T``.
    """
    f, y, _ = _check_features(features, labels, keep_float32=True)
    return _nca_fit(f, y, n_components=n_components, max_iter=max_iter, tol=tol, random_state=random_state)


def _nca_fit(f: np.ndarray, y: np.ndarray, *, n_components: int, max_iter: int, tol: float, random_state: int):
    k = min(n_components, f.shape[0], f.shape[1])
    # scikit-learn seeds the PCA with the estimator's RandomState(random_state), not with the integer
    init = PCA(n_components=k, random_state=np.random.RandomState(random_state)).fit(f).components_
    same_class = y[:, None] == y[None, :]
    result = optimize.minimize(
        _nca_loss_grad,
        np.ravel(init),
        args=(f, same_class),
        method="L-BFGS-B",
        jac=True,
        tol=tol,
        options={"maxiter": max_iter},
    )
    return result.x.reshape(-1, f.shape[1])


def nca_loo_accuracy(embedded, labels) -> float:
    """Leave-one-out 1-NN accuracy of an embedding: the quantity NCA maximises (in expectation)."""
    z = np.asarray(embedded, dtype=np.float64)
    y, _ = _check_labels(labels, z.shape[0])
    idx = NearestNeighbors(n_neighbors=2).fit(z).kneighbors(z, return_distance=False)[:, 1]
    return float((y[idx] == y).mean())


# ---------------------------------------------------------------------------------------- thesis metric
def label_prediction_score(
    features,
    labels,
    *,
    n_components: int = 50,
    n_neighbors: int = 5,
    reduce: str = "sum",
    exclude_self: bool = False,
    random_state: int = 0,
) -> float:
    """Label prediction probability S_LP (thesis Eq. 6.2): NCA on the penultimate features, then a k-NN (k = 5)
    estimate of p(y|x~), summed over the target set.

        S_LP(phi_m, T) = sum_i p(y_i | x~_i),   x~_i = A x^_i

    Parameters
    ----------
    n_components : int
        NCA output dimension (thesis study: 50), see :func:`nca_fit`.
    reduce : {"sum", "mean"}
        Eq. 6.2 sums; the thesis's study divided by n (its published S_LP lie in [0, 1]). For one target both
        rank sources identically.
    exclude_self : bool
        The thesis's study fits the k-NN on the target set and queries the same points, so each point is one of
        its own 5 neighbours (``False``, default). ``True`` gives the leave-one-out estimate.
    random_state : int
        Seed of NCA's PCA initialisation (the study used 42).
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"unknown reduce {reduce!r}; valid choices: sum, mean")
    f, y, c = _check_features(features, labels, keep_float32=True)
    a = _nca_fit(f, y, n_components=n_components, max_iter=50, tol=1e-5, random_state=random_state)
    z = f @ a.T.astype(f.dtype)  # the embedding in the features' precision, as NCA's own transform
    k = min(n_neighbors + int(exclude_self), f.shape[0])
    idx = NearestNeighbors(n_neighbors=k).fit(z).kneighbors(z, return_distance=False)
    if exclude_self:
        idx = idx[:, 1:]
    p_true = (y[idx] == y[:, None]).mean(axis=1)  # uniform-weight k-NN posterior of the true class
    return float(p_true.sum() if reduce == "sum" else p_true.mean())


def _as_input_tensor(images, normalization: str) -> torch.Tensor:
    from cfct import data

    x = images.images if hasattr(images, "images") else images
    if isinstance(x, np.ndarray):
        if x.dtype != np.uint8:
            raise ValueError("images must be uint8 (N, H, W, C) arrays or an ImageSet")
        x = data.to_tensor(x)
    return data.normalize(x, normalization)


def feature_update_score(
    model,
    images,
    labels,
    *,
    n_batches: int = 1,
    margin: float = 0.05,
    device: str = "cpu",
    normalization: str | None = None,
) -> float:
    """Feature update score S_FU (thesis Eqs. 6.3-6.4): ratio of the gradient norms of the second to the first
    convolutional layer after one backward pass of a triplet margin loss on the penultimate features.

        L = max(||x^a - x^p|| - ||x^a - x^n|| + alpha, 0)   (Eq. 6.3, pytorch-metric-learning's
                                                              TripletMarginLoss over all triplets of a batch)
        S_FU = ||grad_conv2 L||_2 / ||grad_conv1 L||_2       (Eq. 6.4)

    Parameters
    ----------
    model : cfct.zoo.Classifier
        Source model; ``model.features`` gives penultimate features and ``model.conv_layers()`` the first and
        second convolution. Used in eval mode (BatchNorm running statistics), weights unchanged.
    images : ImageSet or uint8 array (N, H, W, C)
    labels : (N,) int array
    n_batches : int
        1 (Eq. 6.4): one backward pass over the whole target set. The thesis's study split the target set into
        6 batches (batch size floor(n/6)), took one backward pass per batch and divided the mean conv2 norm by
        the mean conv1 norm (``n_batches=6``).
    margin : float
        alpha of Eq. 6.3 (pytorch-metric-learning's default 0.05, used by the thesis's study).
    """
    from pytorch_metric_learning import losses

    y, _ = _check_labels(labels)
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    norm = normalization or getattr(model, "normalization", "half")
    x = _as_input_tensor(images, norm)
    if x.shape[0] != y.size:
        raise ValueError(f"{x.shape[0]} images but {y.size} labels")
    first, second = model.conv_layers()
    was_training = model.training
    # Only the two convolutions' weight gradients are needed: freezing the rest skips their weight gradients.
    saved = {p: p.requires_grad for p in model.parameters()}
    for p in saved:
        p.requires_grad_(p is first.weight or p is second.weight)
    model.eval()
    model.to(device)
    loss_fn = losses.TripletMarginLoss(margin=margin)
    size = max(2, x.shape[0] // n_batches)
    g1, g2 = [], []
    try:
        for start in range(0, size * n_batches, size):
            xb = x[start : start + size].to(device)
            yb = torch.as_tensor(y[start : start + size], device=device)
            if xb.shape[0] < 3 or torch.unique(yb).numel() < 2:
                continue
            model.zero_grad(set_to_none=True)
            loss = loss_fn(model.features(xb), yb)
            if not loss.requires_grad or float(loss.detach()) == 0.0:
                continue
            loss.backward()
            if first.weight.grad is None or second.weight.grad is None:
                raise ValueError(
                    "the first/second convolution received no gradient; are they part of model.features?"
                )
            g1.append(float(first.weight.grad.norm()))
            g2.append(float(second.weight.grad.norm()))
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in saved.items():
            p.requires_grad_(flag)
        model.train(was_training)
    if not g1:
        raise ValueError(
            "no batch had a non-zero triplet loss (every batch single-class, or all triplets "
            "already satisfy the margin): S_FU is undefined"
        )
    if np.mean(g1) == 0:
        raise ValueError("the first convolution's gradient is zero; S_FU (Eq. 6.4) is undefined")
    return float(np.mean(g2) / np.mean(g1))


def transferability_score(
    lp: Mapping[str, float],
    fu: Mapping[str, float],
    *,
    scenario: str = "dataset",
    terms: str = "both",
    combine: str = "product",
) -> pd.Series:
    """The thesis's transferability score over a candidate set (Eqs. 6.5, 6.6, 6.8).

    Both terms are min-max normalised across the candidate sources of one target (Eq. 6.5) and combined:

    - ``scenario="dataset"``: S = S_LP' x S_FU' (Eq. 6.6). The prose says "sum" while Eq. 6.6 is a product;
      the product is what the published scores reproduce, and the default (``combine="sum"`` offers the prose).
    - ``scenario="model"``: both terms reversed before combining, (1 - S_LP')(1 - S_FU') (Eq. 6.8 for S_FU;
      the study applied the same reversal to S_LP, which reproduces Table 6.3's "1-Ours" column).
    - ``terms="lp"`` / ``"fu"``: the ablations of Figure 6.6 (one normalised term alone).

    A NaN term marks a candidate without that score (the thesis's study leaves the target's own dataset out of
    S_LP but keeps its S_FU in the normalisation); that candidate's score is NaN, the others are unaffected.

    Parameters
    ----------
    lp, fu : mapping source -> S_LP, S_FU (same keys)

    Returns
    -------
    pandas Series indexed by source.
    """
    if scenario not in ("dataset", "model"):
        raise ValueError(f"unknown scenario {scenario!r}; valid choices: dataset, model")
    if terms not in ("both", "lp", "fu"):
        raise ValueError(f"unknown terms {terms!r}; valid choices: both, lp, fu")
    if combine not in ("product", "sum"):
        raise ValueError(f"unknown combine {combine!r}; valid choices: product, sum")
    if set(lp) != set(fu):
        raise ValueError(f"S_LP and S_FU have different sources: {sorted(set(lp) ^ set(fu))}")
    names = list(lp)
    a = minmax([lp[s] for s in names])
    b = minmax([fu[s] for s in names])
    if scenario == "model":
        a, b = 1 - a, 1 - b
    if terms == "lp":
        out = a
    elif terms == "fu":
        out = b
    else:
        out = a * b if combine == "product" else a + b
    return pd.Series(out, index=names, name="ours")


# ------------------------------------------------------------------------------------ source outputs
def source_outputs(
    model, images, *, batch_size: int = 256, device: str = "cpu", normalization: str | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One batched forward pass of the target images through a source: (penultimate features, source softmax).

    Both float32. The softmax is over the source's own head (needed by LEEP); None when the model has no head of
    its own.
    """
    norm = normalization or getattr(model, "normalization", "half")
    x = _as_input_tensor(images, norm)
    model.eval().to(device)
    feats, probs = [], []
    head = getattr(model, "head", None)
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            xb = x[start : start + batch_size].to(device)
            h = model.features(xb)
            feats.append(h.cpu())
            if head is not None:
                probs.append(torch.softmax(head(h), dim=1).cpu())
    # float32, as the model computes them and as the thesis's study passed them to its metrics: scikit-learn's
    # PCA and NCA then run in float32 as there, which decides where NCA's L-BFGS stops (see nca_fit)
    f = torch.cat(feats).numpy()
    p = torch.cat(probs).numpy() if probs else None
    return f, p


def score_sources(
    features: Mapping[str, np.ndarray],
    probs: Mapping[str, np.ndarray | None],
    fu: Mapping[str, float],
    labels,
    *,
    settings: Mapping[str, dict] | None = None,
    scenario: str = "dataset",
    progress: Callable | None = None,
) -> tuple[pd.DataFrame, dict]:
    """All seven methods of Tables 6.2/6.3 for the candidate sources of one target.

    Returns
    -------
    scores : DataFrame indexed by source, columns ``METHODS`` + ``lp``, ``fu``
    seconds : dict method -> seconds spent (the cost side of the chapter's cost ratio)
    """
    st = dict(THESIS_SETTINGS if settings is None else settings)
    names = list(features)
    rows: dict[str, dict[str, float]] = {s: {} for s in names}
    seconds: dict[str, float] = {}
    per_source: dict[str, Callable] = {
        "logme": lambda f, p: logme(f, labels, **st.get("logme", {})),
        "parc": lambda f, p: parc(f, labels, **st.get("parc", {})),
        "sfda": lambda f, p: sfda(f, labels, **st.get("sfda", {})),
        "leep": lambda f, p: leep(p, labels) if p is not None else float("nan"),
        "nleep": lambda f, p: nleep(f, labels, **st.get("nleep", {})),
        "lp": lambda f, p: label_prediction_score(f, labels, **st.get("label_prediction_score", {})),
    }
    iterator = progress(list(per_source.items())) if progress else per_source.items()
    for method, fn in iterator:
        t0 = time.perf_counter()
        for s in names:
            rows[s][method] = fn(features[s], probs.get(s))
        seconds[method] = time.perf_counter() - t0
    t0 = time.perf_counter()
    nc = ncti(features, labels, **st.get("ncti", {}))
    seconds["ncti"] = time.perf_counter() - t0
    table = pd.DataFrame(rows).T
    table["ncti"] = nc
    table["fu"] = pd.Series(fu)
    try:
        table["ours"] = transferability_score(table["lp"].to_dict(), table["fu"].to_dict(), scenario=scenario)
    except ValueError as err:  # a term equal for every candidate: Eq. 6.5 is undefined, say so and go on
        warnings.warn(f"the thesis metric cannot rank these sources: {err}", stacklevel=2)
        table["ours"] = np.nan
    if scenario == "model":
        # The thesis's model scenario reverses the methods it names (Table 6.3: 1-PARC, 1-NCTI, 1-LEEP, 1-NLEEP).
        for m in MODEL_REVERSED:
            table[m] = 1 - table[m]
    return table[list(METHODS) + ["lp", "fu"]], seconds


#: Methods whose score the thesis reverses (1 - S) in the model-transferability scenario (Table 6.3).
MODEL_REVERSED: tuple[str, ...] = ("parc", "ncti", "leep", "nleep")


# ======================================================================================= live source


