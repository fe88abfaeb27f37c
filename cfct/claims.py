"""Thesis findings as tested objects: a :class:`Claim` per finding, the evidence of a run, and a verdict.

Every finding the book re-tests is declared *before* any data are seen, in the registry
``cfct/claims_registry.yaml``: where the thesis states it, its words, the quantity compared, the thesis's
direction and the rule that decides. A chapter computes replicates (folds, seeds, targets) and calls
:func:`evaluate`; the rule turns them into an :class:`Evidence` with an estimate, a 95% interval or a p-value
and one of three verdicts:

``holds``
    the interval (or test) supports the thesis's direction;
``contradicted``
    it supports the opposite direction;
``inconclusive``
    neither, with the minimum detectable difference at this n (80% power) so a reader sees what it would
    take; or *too few replicates* (fewer than :data:`MIN_REPLICATES` per arm), when no test is attempted.

Rules (each a two-sided test at level ``alpha``, so pure noise is inconclusive in about 1 - alpha of draws):

``paired_difference``
    mean of ``a - b`` over paired replicates (same fold / seed), Student-t interval.
``unpaired_difference``
    ``mean(a) - mean(b)`` of independent replicates, Welch-t interval.
``correlation``
    rank agreement (Kendall tau-b by default; Spearman, Pearson or weighted tau) of ``x`` and ``y``; the
    verdict comes from a permutation test of no association, the interval is a percentile bootstrap over pairs
    (reported, not used for the verdict).
``greater_than``
    one-sample: mean of ``values`` against ``threshold`` (direction ``greater`` or ``less``), Student-t.

Direction ``none`` states "no difference / no association": it holds when the whole interval lies inside
``(-margin, margin)`` (an equivalence test), is contradicted when the interval excludes 0, and is inconclusive
otherwise. A finding of "no effect" is never declared to hold merely because a test failed to reject.
"""

from __future__ import annotations

import dataclasses
import functools
import html
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

from cfct import paths
from cfct.errors import ConfigError, unknown_choice

__all__ = [
    "RULES",
    "DIRECTIONS",
    "VERDICTS",
    "MIN_REPLICATES",
    "Published",
    "Claim",
    "Untestable",
    "Evidence",
    "paired_difference",
    "unpaired_difference",
    "correlation",
    "greater_than",
    "evaluate",
    "arms_from_table",
    "registry",
    "untestable",
    "get_claim",
    "record",
    "recorded",
    "ledger",
    "write_ledger",
    "render_ledger",
    "report",
    "LEDGER_COLUMNS",
]

RULES = ("paired_difference", "unpaired_difference", "correlation", "greater_than")
DIRECTIONS = ("greater", "less", "none")
VERDICTS = ("holds", "contradicted", "inconclusive", "not run")
CORRELATION_METHODS = ("kendall", "spearman", "pearson", "weighted_tau")
MIN_REPLICATES = 3
POWER = 0.8  # power at which the minimum detectable difference is quoted
REGISTRY_FILE = "claims_registry.yaml"


# ------------------------------------------------------------------------------------------------- records
@dataclasses.dataclass(frozen=True)
class Published:
    """A number printed in the thesis, shown for comparison only, with where it is printed."""

    value: float | str
    source: str

    def __str__(self) -> str:
        return f"{self.value} ({self.source})"


@dataclasses.dataclass(frozen=True)
class Claim:
    """One thesis finding and the rule that will decide it, declared before the data.

    Attributes
    ----------
    id : str
        ``ch<N>.<slug>``, unique in the registry.
    chapter : int
        Thesis chapter (3-7; chapter 7 conclusions are tested with the chapter whose data they rest on).
    section : str
        Thesis section number where the finding is stated (e.g. ``"4.3"``).
    figure : str or None
        Figure or table that shows it (e.g. ``"Fig. 4.3"``).
    quote : str
        The thesis's words, short.
    quantity : str
        Key under which the experiment code reports the replicates (see :func:`evaluate`).
    rule : str
        One of :data:`RULES`.
    direction : str
        ``greater`` / ``less`` (the sign of the effect the thesis states) or ``none`` (no effect).
    threshold : float
        ``greater_than``: the value compared against.
    margin : float or None
        ``direction="none"``: the equivalence margin (effects smaller than this count as "no effect").
    method : str
        ``correlation``: the correlation coefficient (:data:`CORRELATION_METHODS`).
    arms : tuple of str
        Names of the compared arms (``a``, ``b``) or variables (``x``, ``y``), for the ledger.
    published : Published or None
        The thesis's own number for this quantity, labelled with its table/figure.
    data : tuple of str
        What the test needs here (targets, sources), for the reader.
    """

    id: str
    chapter: int
    section: str
    figure: str | None
    quote: str
    quantity: str
    rule: str
    direction: str
    threshold: float = 0.0
    margin: float | None = None
    method: str = "kendall"
    arms: tuple[str, ...] = ()
    published: Published | None = None
    data: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.id.startswith(f"ch{self.chapter}."):
            raise ConfigError(f"claim id {self.id!r} must start with 'ch{self.chapter}.'")
        if self.rule not in RULES:
            raise unknown_choice(f"rule of claim {self.id!r}", self.rule, RULES)
        if self.direction not in DIRECTIONS:
            raise unknown_choice(f"direction of claim {self.id!r}", self.direction, DIRECTIONS)
        if self.direction == "none" and not (self.margin is not None and self.margin > 0):
            raise ConfigError(f"claim {self.id!r}: direction 'none' needs a positive equivalence margin")
        if self.rule == "correlation" and self.method not in CORRELATION_METHODS:
            raise unknown_choice(f"correlation method of claim {self.id!r}", self.method, CORRELATION_METHODS)
        if not self.quote or not self.quantity:
            raise ConfigError(f"claim {self.id!r} needs a quote and a quantity")
        n_arms = 1 if self.rule == "greater_than" else 2
        if self.arms and len(self.arms) != n_arms:
            raise ConfigError(f"claim {self.id!r} ({self.rule}) names {len(self.arms)} arms {self.arms}; "
                              f"it compares {n_arms}")


@dataclasses.dataclass(frozen=True)
class Untestable:
    """A thesis finding this book cannot test with the data available here, and why."""

    id: str
    chapter: int
    section: str
    quote: str
    reason: str


@dataclasses.dataclass(frozen=True)
class _Outcome:
    """What a verdict rule returns; :class:`Evidence` adds which claim and which run."""

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    n: tuple[int, ...]
    verdict: str
    reason: str
    mdd: float
    method: str


@dataclasses.dataclass(frozen=True)
class Evidence(_Outcome):
    """What one run says about one claim.

    Attributes
    ----------
    claim_id : str
    estimate : float
        Mean difference, mean, or correlation (NaN when not computed).
    ci_low, ci_high : float
        95% interval (``1 - alpha``) of the estimate.
    p_value : float
        Two-sided p-value of "no effect" (NaN for the equivalence rule's own decision; still reported).
    n : tuple of int
        Replicates per arm (one entry for paired / one-sample / correlation designs).
    verdict : str
        ``holds``, ``contradicted`` or ``inconclusive``.
    reason : str
        One sentence: why this verdict (including "too few replicates" and the minimum detectable difference).
    mdd : float
        Minimum detectable difference at this n (two-sided ``alpha``, 80% power); NaN if not computable.
    method : str
        The interval / test used (``t``, ``welch``, ``permutation``, ...).
    profile, sources, link : str
        The profile and sources that produced the replicates, and the anchor of the evidence section.
    """

    claim_id: str
    profile: str = ""
    sources: str = ""
    link: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NaN as None)."""
        out = dataclasses.asdict(self)
        out["n"] = list(self.n)
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Evidence:
        """Inverse of :meth:`to_dict`."""
        kw = {f.name: d.get(f.name) for f in dataclasses.fields(cls) if f.name in d}
        for k in ("estimate", "ci_low", "ci_high", "p_value", "mdd"):
            kw[k] = float("nan") if kw.get(k) is None else float(kw[k])
        kw["n"] = tuple(int(v) for v in kw.get("n") or ())
        return cls(**kw)


# ---------------------------------------------------------------------------------------------------- rules
def _values(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be one-dimensional (one value per replicate), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} contains NaN or infinite values; drop failed replicates explicitly")
    return arr


def _check_common(direction: str, alpha: float, margin: float | None) -> None:
    if direction not in DIRECTIONS:
        raise unknown_choice("direction", direction, DIRECTIONS)
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if direction == "none" and not (margin is not None and margin > 0):
        raise ConfigError("direction 'none' needs a positive equivalence margin")


def _too_few(n: tuple[int, ...], estimate: float, method: str) -> _Outcome:
    return _Outcome(
        estimate, float("nan"), float("nan"), float("nan"), n, "inconclusive",
        f"too few replicates ({', '.join(map(str, n))} < {MIN_REPLICATES} per arm): no verdict",
        float("nan"), method,
    )


def _decide(
    estimate: float, low: float, high: float, p: float, direction: str, margin: float | None, mdd: float, what: str
) -> tuple[str, str]:
    """Verdict from a two-sided interval [low, high] of an effect whose null value is 0."""
    if direction == "none":
        if -margin < low and high < margin:
            return "holds", f"the interval [{low:.3g}, {high:.3g}] lies within +-{margin:g}: no {what} beyond it"
        if low > 0 or high < 0:
            return "contradicted", f"the interval [{low:.3g}, {high:.3g}] excludes 0: a {what} exists"
        return "inconclusive", (
            f"the interval [{low:.3g}, {high:.3g}] neither excludes 0 nor lies within +-{margin:g}"
        )
    sign = 1 if direction == "greater" else -1
    if (low > 0 and sign > 0) or (high < 0 and sign < 0):
        return "holds", f"the interval [{low:.3g}, {high:.3g}] excludes 0 in the thesis's direction"
    if (low > 0 and sign < 0) or (high < 0 and sign > 0):
        return "contradicted", f"the interval [{low:.3g}, {high:.3g}] excludes 0 in the opposite direction"
    return "inconclusive", (
        f"the interval [{low:.3g}, {high:.3g}] contains 0; at this n only a {what} of about "
        f"{mdd:.3g} or more would be detected (80% power)"
    )


def _t_mdd(se: float, df: float, alpha: float) -> float:
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(POWER, df)) * se)


def _t_outcome(
    est: float, se: float, df: float, n: tuple[int, ...], direction: str, alpha: float, margin: float | None,
    method: str, what: str,
) -> _Outcome:
    if se == 0:  # every replicate identical: the interval is the point
        low = high = est
        p = 1.0 if est == 0 else 0.0
    else:
        half = float(sps.t.ppf(1 - alpha / 2, df)) * se
        low, high = est - half, est + half
        p = float(2 * sps.t.sf(abs(est) / se, df))
    mdd = _t_mdd(se, df, alpha)
    verdict, reason = _decide(est, low, high, p, direction, margin, mdd, what)
    return _Outcome(est, low, high, p, n, verdict, reason, mdd, method)


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, direction: str = "greater", alpha: float = 0.05,
    margin: float | None = None,
) -> _Outcome:
    """Paired difference ``a - b`` over replicates (same fold or seed in both arms), Student-t interval.

    Parameters
    ----------
    a, b : sequence of float, equal length
        One value per replicate; ``a[i]`` and ``b[i]`` come from the same fold / seed.
    direction : {'greater', 'less', 'none'}
        The thesis's claim: ``a > b``, ``a < b``, or no difference beyond ``margin``.
    alpha : float
        Two-sided level of the interval (0.05: a 95% interval).
    margin : float, optional
        Equivalence margin for ``direction='none'``.

    Returns
    -------
    outcome with estimate = mean(a - b), ci_low/ci_high, p_value (paired t), n = (len,), verdict, reason, mdd.

    Examples
    --------
    >>> paired_difference([0.9, 0.92, 0.91, 0.93], [0.8, 0.83, 0.8, 0.82]).verdict
    'holds'
    """
    _check_common(direction, alpha, margin)
    x, y = _values(a, "a"), _values(b, "b")
    if x.shape != y.shape:
        raise ConfigError(f"paired arms need equal lengths, got {x.size} and {y.size}")
    d = x - y
    est = float(d.mean()) if d.size else float("nan")
    if d.size < MIN_REPLICATES:
        return _too_few((d.size,), est, "paired t")
    se = float(d.std(ddof=1) / math.sqrt(d.size))
    return _t_outcome(est, se, d.size - 1, (d.size,), direction, alpha, margin, "paired t", "difference")


def unpaired_difference(
    a: Sequence[float], b: Sequence[float], *, direction: str = "greater", alpha: float = 0.05,
    margin: float | None = None,
) -> _Outcome:
    """Difference of means ``mean(a) - mean(b)`` of independent replicates, Welch-t interval.

    Parameters are those of :func:`paired_difference`; ``a`` and ``b`` may differ in length.

    Examples
    --------
    >>> unpaired_difference([0.5, 0.52, 0.49], [0.8, 0.81, 0.79, 0.82], direction="less").verdict
    'holds'
    """
    _check_common(direction, alpha, margin)
    x, y = _values(a, "a"), _values(b, "b")
    est = float(x.mean() - y.mean()) if x.size and y.size else float("nan")
    if min(x.size, y.size) < MIN_REPLICATES:
        return _too_few((x.size, y.size), est, "Welch t")
    vx, vy = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = float(math.sqrt(vx + vy))
    # Welch-Satterthwaite degrees of freedom
    df = (vx + vy) ** 2 / (vx**2 / (x.size - 1) + vy**2 / (y.size - 1)) if se > 0 else x.size + y.size - 2
    return _t_outcome(est, se, float(df), (x.size, y.size), direction, alpha, margin, "Welch t", "difference")


def greater_than(
    values: Sequence[float], threshold: float = 0.0, *, direction: str = "greater", alpha: float = 0.05,
    margin: float | None = None,
) -> _Outcome:
    """One-sample comparison of the mean of ``values`` with ``threshold``, Student-t interval.

    The estimate and interval are of the mean itself (not of mean - threshold), so they read in the quantity's
    own units; the verdict compares them with ``threshold``.

    Examples
    --------
    >>> greater_than([0.61, 0.66, 0.64, 0.7], 0.5).verdict
    'holds'
    """
    _check_common(direction, alpha, margin)
    x = _values(values, "values")
    est = float(x.mean()) if x.size else float("nan")
    if x.size < MIN_REPLICATES:
        return _too_few((x.size,), est, "one-sample t")
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    out = _t_outcome(est - threshold, se, x.size - 1, (x.size,), direction, alpha, margin, "one-sample t",
                     f"difference from {threshold:g}")
    return dataclasses.replace(out, estimate=est, ci_low=out.ci_low + threshold, ci_high=out.ci_high + threshold)


def _sign_matrix(v: np.ndarray) -> np.ndarray:
    """``sign(v_i - v_j)`` for every pair; the last axis pairs (…, n, n)."""
    return np.sign(v[..., :, None] - v[..., None, :])


def _tau_b(sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Kendall tau-b from pairwise sign matrices, batched over leading axes (NaN when one side is constant)."""
    num = (sx * sy).sum((-1, -2))
    den = np.sqrt((sx * sx).sum((-1, -2)) * (sy * sy).sum((-1, -2)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(-1, keepdims=True)
    yc = y - y.mean(-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (xc * yc).sum(-1) / np.where(den > 0, den, 1), np.nan)


def _corr_batch(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Correlation of rows of ``x`` with rows of ``y`` (both (B, n)), vectorised where the method allows."""
    if method == "kendall":
        return _tau_b(_sign_matrix(x), _sign_matrix(y))
    if method == "spearman":
        return _pearson_rows(sps.rankdata(x, axis=-1), sps.rankdata(y, axis=-1))
    if method == "pearson":
        return _pearson_rows(x, y)
    out = np.empty(x.shape[0])
    for i in range(x.shape[0]):  # scipy's weightedtau has no batched form
        xi, yi = x[i], y[i]
        out[i] = np.nan if np.all(xi == xi[0]) or np.all(yi == yi[0]) else sps.weightedtau(xi, yi).statistic
    return out


def correlation(
    x: Sequence[float], y: Sequence[float], *, method: str = "kendall", direction: str = "greater",
    alpha: float = 0.05, margin: float | None = None, n_resamples: int = 2000, seed: int = 0,
) -> _Outcome:
    """Rank agreement of ``x`` and ``y``: permutation test of no association, bootstrap interval.

    Parameters
    ----------
    x, y : sequence of float, equal length (at least 3 pairs)
    method : {'kendall', 'spearman', 'pearson', 'weighted_tau'}
        Kendall tau-b by default (ties handled); ``weighted_tau`` is SciPy's weighted tau (thesis Eq. 6.1).
    direction : {'greater', 'less', 'none'}
        Positive, negative or no association (``none`` needs ``margin``: ``|rho|`` below it counts as none).
    n_resamples : int
        Permutations of ``y`` for the p-value, and bootstrap resamples of pairs for the interval.
    seed : int
        Seed of both resampling generators.

    Returns
    -------
    outcome: the coefficient, its percentile bootstrap interval, the two-sided permutation p-value (with the
    observed statistic counted among the permutations, so p >= 1/(n_resamples + 1)), and a verdict: with a
    direction, ``holds`` / ``contradicted`` when p < alpha with the coefficient's sign matching / opposing it;
    with ``none``, the equivalence rule on the bootstrap interval. ``mdd`` is the coefficient detectable at
    80% power, from the spread of the permutation distribution.

    Examples
    --------
    >>> correlation([1, 2, 3, 4, 5, 6, 7, 8], [1.1, 2.3, 2.9, 4.2, 5.1, 5.8, 7.4, 8.0]).verdict
    'holds'
    """
    _check_common(direction, alpha, margin)
    if method not in CORRELATION_METHODS:
        raise unknown_choice("correlation method", method, CORRELATION_METHODS)
    if int(n_resamples) < 100:
        raise ConfigError(f"n_resamples must be at least 100, got {n_resamples}")
    xa, ya = _values(x, "x"), _values(y, "y")
    if xa.shape != ya.shape:
        raise ConfigError(f"x and y need equal lengths, got {xa.size} and {ya.size}")
    n = xa.size
    label = {"kendall": "Kendall tau-b", "spearman": "Spearman rho", "pearson": "Pearson r",
             "weighted_tau": "weighted tau"}[method] + ", permutation"
    if n < MIN_REPLICATES:
        return _too_few((n,), float("nan"), label)
    est = float(_corr_batch(xa[None], ya[None], method)[0])
    if not math.isfinite(est):
        return _Outcome(est, float("nan"), float("nan"), float("nan"), (n,), "inconclusive",
                        "one variable is constant: no correlation can be computed", float("nan"), label)
    rng = np.random.default_rng(seed)
    perm = np.argsort(rng.random((int(n_resamples), n)), axis=1)
    null = _corr_batch(np.broadcast_to(xa, perm.shape), ya[perm], method)
    null = null[np.isfinite(null)]
    p = float((1 + np.sum(np.abs(null) >= abs(est) - 1e-12)) / (1 + null.size))
    boot_idx = rng.integers(0, n, size=(int(n_resamples), n))
    boot = _corr_batch(xa[boot_idx], ya[boot_idx], method)
    boot = boot[np.isfinite(boot)]
    low, high = (float(v) for v in np.quantile(boot, [alpha / 2, 1 - alpha / 2])) if boot.size else (est, est)
    mdd = float((sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(POWER)) * null.std())
    if direction == "none":
        verdict, reason = _decide(est, low, high, p, direction, margin, mdd, "association")
    elif p < alpha and np.sign(est) == (1 if direction == "greater" else -1):
        verdict, reason = "holds", f"p = {p:.3g} < {alpha:g} and the association has the thesis's sign"
    elif p < alpha:
        verdict, reason = "contradicted", f"p = {p:.3g} < {alpha:g} with the opposite sign"
    else:
        verdict, reason = "inconclusive", (
            f"p = {p:.3g} >= {alpha:g}; at n = {n} only a coefficient of about {mdd:.2g} or more would be "
            "detected (80% power)"
        )
    return _Outcome(est, low, high, p, (n,), verdict, reason, mdd, label)


def evaluate(
    claim: Claim | str, data: Mapping[str, Any], *, profile: str = "", sources: str | Sequence[str] = "",
    link: str = "", alpha: float = 0.05, seed: int = 0,
) -> Evidence:
    """Apply a claim's declared rule to the replicates a chapter computed.

    Parameters
    ----------
    claim : Claim or str
        The claim or its registry id.
    data : mapping
        The replicates under the keys the rule needs: ``a`` and ``b`` (differences), ``x`` and ``y``
        (correlation), ``values`` (``greater_than``). Extra keys are an error, so a mislabelled arm fails loudly.
    profile, sources, link : str
        Recorded with the evidence: the profile and sources that produced the data, the anchor of the section
        that shows it (e.g. ``"04_shortcut_transfer.html#tag"``).
    alpha : float
        Two-sided level (0.05: 95% intervals).
    seed : int
        Seed of the resampling in the correlation rule.

    Returns
    -------
    Evidence
    """
    c = get_claim(claim) if isinstance(claim, str) else claim
    needed = {"paired_difference": ("a", "b"), "unpaired_difference": ("a", "b"), "correlation": ("x", "y"),
              "greater_than": ("values",)}[c.rule]
    if set(data) != set(needed):
        raise ConfigError(f"claim {c.id!r} ({c.rule}) needs data keys {needed}, got {tuple(data)}")
    if c.rule == "paired_difference":
        out = paired_difference(data["a"], data["b"], direction=c.direction, alpha=alpha, margin=c.margin)
    elif c.rule == "unpaired_difference":
        out = unpaired_difference(data["a"], data["b"], direction=c.direction, alpha=alpha, margin=c.margin)
    elif c.rule == "correlation":
        out = correlation(data["x"], data["y"], method=c.method, direction=c.direction, alpha=alpha,
                          margin=c.margin, seed=seed)
    else:
        out = greater_than(data["values"], c.threshold, direction=c.direction, alpha=alpha, margin=c.margin)
    src = sources if isinstance(sources, str) else ", ".join(sources)
    return Evidence(claim_id=c.id, profile=profile, sources=src, link=link, **dataclasses.asdict(out))


def arms_from_table(
    table: pd.DataFrame, *, value: str, arm: str, a: Any, b: Any, pair_by: str | Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """The two arms of a difference claim from a tidy results table, paired by key rather than by row order.

    Parameters
    ----------
    table : DataFrame
        One row per replicate and arm (e.g. the per-fold AUC table of a chapter).
    value : str
        Column holding the compared quantity (e.g. ``"test_auc"``).
    arm : str
        Column naming the arm (e.g. ``"source"``).
    a, b : scalar
        The values of ``arm`` that form arms ``a`` and ``b``.
    pair_by : str or list of str, optional
        Columns identifying a replicate (e.g. ``["target", "fold"]``): the arms are aligned on them and a
        replicate missing from either arm is an error. None: independent arms (unpaired rules).

    Returns
    -------
    dict with ``a`` and ``b`` arrays, ready for :func:`evaluate`.
    """
    for col in [value, arm, *([pair_by] if isinstance(pair_by, str) else list(pair_by or []))]:
        if col not in table.columns:
            raise ConfigError(f"column {col!r} is not in the table; columns: {list(table.columns)}")
    sel_a, sel_b = table[table[arm] == a], table[table[arm] == b]
    if sel_a.empty or sel_b.empty:
        raise ConfigError(f"no rows with {arm} == {a if sel_a.empty else b!r}; values: {sorted(table[arm].unique())}")
    if pair_by is None:
        return {"a": sel_a[value].to_numpy(float), "b": sel_b[value].to_numpy(float)}
    keys = [pair_by] if isinstance(pair_by, str) else list(pair_by)
    for name, sel in (("a", sel_a), ("b", sel_b)):
        if sel.duplicated(keys).any():
            raise ConfigError(f"arm {name} has several rows per replicate {keys}; aggregate them first")
    merged = sel_a[[*keys, value]].merge(sel_b[[*keys, value]], on=keys, how="outer", suffixes=("_a", "_b"),
                                         indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    if len(unmatched):
        raise ConfigError(f"replicates present in only one arm: {unmatched[keys].to_dict('records')}")
    merged = merged.sort_values(keys)
    return {"a": merged[f"{value}_a"].to_numpy(float), "b": merged[f"{value}_b"].to_numpy(float)}


# ------------------------------------------------------------------------------------------------- registry
@functools.lru_cache(maxsize=1)
def _load_registry() -> tuple[dict[str, Claim], tuple[Untestable, ...]]:
    text = resources.files("cfct").joinpath(REGISTRY_FILE).read_text(encoding="utf-8")
    doc = yaml.safe_load(text)
    claims: dict[str, Claim] = {}
    for entry in doc.get("claims", []):
        entry = dict(entry)
        pub = entry.pop("published", None)
        if pub is not None:
            entry["published"] = Published(value=pub["value"], source=pub["source"])
        for key in ("arms", "data"):
            if key in entry:
                entry[key] = tuple(entry[key])
        claim = Claim(**entry)
        if claim.id in claims:
            raise ConfigError(f"claim id {claim.id!r} is declared twice in {REGISTRY_FILE}")
        claims[claim.id] = claim
    untested = tuple(Untestable(**dict(e)) for e in doc.get("untestable", []))
    ids = set(claims)
    for u in untested:
        if u.id in ids:
            raise ConfigError(f"finding {u.id!r} is both testable and untestable in {REGISTRY_FILE}")
        ids.add(u.id)
    return claims, untested


def registry(chapter: int | None = None) -> list[Claim]:
    """Every testable thesis finding (optionally of one chapter), in registry order."""
    claims = list(_load_registry()[0].values())
    return [c for c in claims if chapter is None or c.chapter == int(chapter)]


def untestable(chapter: int | None = None) -> list[Untestable]:
    """The findings that cannot be tested with the data available here, with the reason."""
    return [u for u in _load_registry()[1] if chapter is None or u.chapter == int(chapter)]


def get_claim(claim_id: str) -> Claim:
    """The registered claim with this id."""
    claims = _load_registry()[0]
    if claim_id not in claims:
        raise unknown_choice("claim", claim_id, sorted(claims))
    return claims[claim_id]


# --------------------------------------------------------------------------------------------------- ledger
LEDGER_COLUMNS = (
    "chapter", "id", "section", "figure", "quote", "quantity", "direction", "rule", "published", "published_source",
    "estimate", "ci_low", "ci_high", "p_value", "n", "mdd", "verdict", "reason", "profile", "sources", "link",
)


def _claims_dir() -> Path:
    return paths.data_dir() / "claims"


def record(evidence: Iterable[Evidence], chapter: int, profile: str, root: Path | str | None = None) -> Path:
    """Store a chapter's evidence so the ledger page can assemble it (``$CFCT_DATA/claims/ch<N>-<profile>.json``).

    The file is replaced as a whole (atomic rename): it always holds one complete run of the chapter.
    Evidence for Chapter 7's conclusions (``ch7.*``) is accepted from any chapter.
    """
    items = list(evidence)
    # Chapter 7's conclusions rest on the data of Chapters 3-6, so the chapter that computes them records them.
    known = {c.id for c in registry(chapter)} | {c.id for c in registry(7)}
    stray = [e.claim_id for e in items if e.claim_id not in known]
    if stray:
        raise ConfigError(f"evidence for claims not registered under chapter {chapter} (or 7): {stray}")
    folder = Path(root) if root is not None else _claims_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ch{int(chapter)}-{profile}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([e.to_dict() for e in items], indent=2))
    os.replace(tmp, path)
    return path


def recorded(profile: str, root: Path | str | None = None) -> list[Evidence]:
    """Every chapter's stored evidence for one profile (empty when no chapter has run)."""
    folder = Path(root) if root is not None else _claims_dir()
    out: list[Evidence] = []
    for path in sorted(folder.glob(f"ch*-{profile}.json")):
        out.extend(Evidence.from_dict(d) for d in json.loads(path.read_text()))
    return out


def ledger(evidence: Iterable[Evidence] = (), chapter: int | None = None) -> pd.DataFrame:
    """The claims ledger: one row per registered finding, its evidence where a run produced some.

    A finding without evidence gets the verdict ``not run`` and empty numbers: a verdict is never typed in.

    Parameters
    ----------
    evidence : iterable of Evidence
        From :func:`evaluate` (this chapter) or :func:`recorded` (all chapters).
    chapter : int, optional
        Restrict to one chapter's findings.

    Returns
    -------
    DataFrame with :data:`LEDGER_COLUMNS`, in registry order.
    """
    by_id: dict[str, Evidence] = {}
    for e in evidence:
        get_claim(e.claim_id)  # unknown ids are an error, not a silent extra row
        by_id[e.claim_id] = e
    rows = []
    for c in registry(chapter):
        e = by_id.get(c.id)
        row = {
            "chapter": c.chapter, "id": c.id, "section": c.section, "figure": c.figure or "", "quote": c.quote,
            "quantity": c.quantity, "direction": c.direction, "rule": c.rule,
            "published": "" if c.published is None else c.published.value,
            "published_source": "" if c.published is None else c.published.source,
        }
        if e is None:
            row.update(estimate=np.nan, ci_low=np.nan, ci_high=np.nan, p_value=np.nan, n="", mdd=np.nan,
                       verdict="not run", reason="no run of this chapter has produced this finding yet",
                       profile="", sources="", link="")
        else:
            row.update(estimate=e.estimate, ci_low=e.ci_low, ci_high=e.ci_high, p_value=e.p_value,
                       n="/".join(map(str, e.n)), mdd=e.mdd, verdict=e.verdict, reason=e.reason,
                       profile=e.profile, sources=e.sources, link=e.link)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(LEDGER_COLUMNS))


def write_ledger(table: pd.DataFrame) -> Path | None:
    """Write ledger rows to ``tables/claims_ledger.csv`` of the current ``cfct run`` folder (else nothing).

    A chapter calls it with its own rows; the run folder holds one chapter, so the file is that chapter's part.
    """
    from cfct.runner import save_table  # runner imports the chapter registry; keep claims importable alone

    missing = [c for c in LEDGER_COLUMNS if c not in table.columns]
    if missing:
        raise ConfigError(f"not a ledger table: columns {missing} are missing")
    return save_table(table.loc[:, list(LEDGER_COLUMNS)], "claims_ledger")


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def render_ledger(table: pd.DataFrame, chapter: int | None = None) -> str:
    """A chapter's (or the whole) ledger as an HTML table for a page (``IPython.display.HTML``).

    HTML rather than Markdown because myst-nb renders a cell's Markdown output as CommonMark, which has no
    tables. Columns: finding (id, figure), the thesis's words, the published number with its source, this
    run's estimate with its interval, p, n, the verdict with its reason, and the link to the evidence. The
    last line counts the verdicts.
    """
    rows = table if chapter is None else table[table["chapter"] == int(chapter)]
    heads = ("finding", "thesis", "published", "estimate [95% CI]", "p", "n", "verdict", "evidence")
    out = ['<table class="claims-ledger">', "<thead><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead>",
           "<tbody>"]
    for _, r in rows.iterrows():
        pub = f"{r['published']} ({r['published_source']})" if str(r["published"]) else ""
        est = _fmt(r["estimate"])
        if est and _fmt(r["ci_low"]):
            est += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        verdict = f"<b>{r['verdict']}</b>" + (f": {html.escape(str(r['reason']))}" if r["verdict"] != "not run" else "")
        where = f"§{r['section']}"
        link = f'<a href="{html.escape(str(r["link"]))}">{where}</a>' if r["link"] else where
        cells = (f"<code>{r['id']}</code><br>{html.escape(str(r['figure']) or where)}", html.escape(str(r["quote"])),
                 html.escape(pub), est, _fmt(r["p_value"], 2), str(r["n"]), verdict, link)
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    counts = rows["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    out += ["</tbody>", "</table>", f"<p>{len(rows)} findings: {summary}.</p>"]
    return "\n".join(out)


def report(evidence: Iterable[Evidence], chapter: int, profile: str) -> str:
    """End of a chapter: store its evidence, write its ledger rows (``cfct run``), return its ledger as HTML.

    One call per chapter run: :func:`record` (for the ledger page), :func:`write_ledger` (the run folder's
    ``tables/claims_ledger.csv``), :func:`render_ledger` (the chapter's closing table).
    """
    items = list(evidence)
    record(items, chapter, profile)
    table = ledger(items, chapter=chapter)
    write_ledger(table)
    return render_ledger(table, chapter=chapter)
