"""Figures of Chapter 6: ground-truth transfer (Fig. 6.4), score vs AUC (Fig. 6.5), ablation (Fig. 6.6) and
the
critical-difference diagram of the method ranks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfct import stats

METHOD_LABELS = {
    "logme": "LogME",
    "parc": "PARC",
    "sfda": "SFDA",
    "ncti": "NCTI",
    "leep": "LEEP",
    "nleep": "N-LEEP",
    "ours": "Ours",
    "lp": "S_LP",
    "fu": "S_FU",
}


def _short(name: str) -> str:
    if name == "medmnist":
        return "medmnist (LTO)"
    text = str(name).split(":")[-1]
    return text.removesuffix("mnist") if text.endswith("mnist") else text


def transfer_performance(
    truth: pd.DataFrame, order: Sequence[str] | None = None, *, title: str = ""
) -> Figure:
    """Test AUC of each source (y) on each target (panels), sources in ``order`` (e.g. by size), with a grey
    dashed line at each target's best source (Figure 6.4)."""
    rows = list(order) if order is not None else list(truth.index)
    targets = list(truth.columns)
    fig, axes = plt.subplots(
        1,
        len(targets),
        figsize=(1.9 * len(targets) + 1.5, 0.28 * len(rows) + 1.4),
        sharey=True,
        squeeze=False,
    )
    y = np.arange(len(rows))
    for ax, t in zip(axes[0], targets):
        vals = truth.loc[rows, t].to_numpy(float)
        ax.scatter(vals, y, s=18, color="tab:blue", zorder=3)
        if np.isfinite(vals).any():
            ax.axvline(np.nanmax(vals), color="grey", ls="--", lw=1)
            lo, hi = np.nanmin(vals), np.nanmax(vals)
            pad = max(0.01, 0.1 * (hi - lo))
            ax.set_xlim(lo - pad, hi + pad)
        ax.set_title(_short(t), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="y", lw=0.3)
    axes[0, 0].set_yticks(y, [_short(r) for r in rows], fontsize=8)
    axes[0, 0].invert_yaxis()  # first source (e.g. the smallest) on top
    fig.supxlabel("test AUC")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def score_vs_auc(
    scores: Mapping[str, pd.DataFrame],
    truth: pd.DataFrame,
    targets: Sequence[str] | None = None,
    *,
    title: str = "",
) -> Figure:
    """Ground-truth AUC (x) against each method's score (y), one row per target and one column per method,
    with the least-squares line and its 95% confidence band (Figure 6.5)."""

    targets = list(targets) if targets is not None else list(truth.columns)
    methods = list(scores)
    fig, axes = plt.subplots(
        len(targets), len(methods), figsize=(1.8 * len(methods), 1.6 * len(targets)), squeeze=False
    )
    for i, t in enumerate(targets):
        for j, m in enumerate(methods):
            ax = axes[i, j]
            x = truth[t].to_numpy(float)
            s = scores[m].loc[truth.index, t].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(s)
            ax.scatter(x[ok], s[ok], s=10, color="tab:blue", zorder=3)
            if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(s[ok]) > 0:
                g, fit, lo, hi = stats.regression_band(x[ok], s[ok])
                ax.plot(g, fit, color="black", lw=1)
                ax.fill_between(g, lo, hi, color="grey", alpha=0.3, lw=0)
                tau = stats.weighted_tau(s[ok], x[ok])
                ax.text(0.03, 0.92, f"τw={tau:.2f}", transform=ax.transAxes, fontsize=6, va="top")
            ax.tick_params(labelsize=5)
            ax.ticklabel_format(axis="y", useOffset=False)
            if i == 0:
                ax.set_title(METHOD_LABELS.get(m, m), fontsize=8)
            if j == 0:
                ax.set_ylabel(_short(t), fontsize=8)
    fig.supxlabel("ground-truth test AUC", fontsize=9)
    fig.supylabel("transferability score", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98 if title else 1))
    return fig


def ablation(taus: pd.DataFrame, *, title: str = "") -> Figure:
    """tau_w of S_LP alone, S_FU alone and their combination per target (Figure 6.6).

    ``taus``: rows = targets, columns ``lp``, ``fu``, ``ours``.
    """
    cols = [c for c in ("lp", "fu", "ours") if c in taus.columns]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(taus) + 1.5), 3.0))
    width = 0.8 / len(cols)
    x = np.arange(len(taus))
    colors = {"lp": "tab:orange", "fu": "tab:green", "ours": "tab:blue"}
    names = {"lp": "S_LP (feature quality)", "fu": "S_FU (feature update)", "ours": "S = S_LP x S_FU"}
    for k, c in enumerate(cols):
        ax.bar(
            x + (k - (len(cols) - 1) / 2) * width,
            taus[c].to_numpy(float),
            width,
            label=names[c],
            color=colors[c],
        )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xticks(x, [_short(t) for t in taus.index], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("weighted Kendall τw")
    ax.legend(fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def cd_diagram(ranks: pd.DataFrame, *, cd: float | None = None, title: str = "") -> Figure:
    """Critical-difference diagram of average method ranks (Demšar 2006), drawn by scikit-posthocs with the
    Nemenyi post-hoc test's significance matrix; ``cd`` is printed in the title when given."""
    import scikit_posthocs as sp

    avg = ranks.mean(axis=0).rename(index=lambda m: METHOD_LABELS.get(m, m))
    sig = sp.posthoc_nemenyi_friedman(ranks.to_numpy(float))
    sig.index = sig.columns = list(avg.index)
    fig, ax = plt.subplots(figsize=(6.0, 2.2))
    sp.critical_difference_diagram(avg, sig, ax=ax)
    text = title + (f" (Nemenyi CD = {cd:.3f})" if cd is not None else "")
    if text:
        ax.set_title(text, fontsize=9)
    fig.tight_layout()
    return fig
