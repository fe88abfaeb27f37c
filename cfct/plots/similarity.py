"""Figures of Chapter 3, sections 3.5.2-3.5.4 (Figs. 3.3-3.6 and the appendix's 3.7-3.12).

Each function takes tidy tables produced by :mod:`cfct.similarity` and returns a matplotlib Figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cfct.errors import ConfigError  # noqa: E402
from cfct.experiments.ch3 import PAIR_LABELS, PAIRS_A, PAIRS_B  # noqa: E402
from cfct.similarity import STAGES  # noqa: E402

MEASURE_LABELS = {"cca": "CCA similarity (Eq. 3.1)", "svcca": "SVCCA similarity", "cka": "linear CKA"}


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ConfigError(f"{what} table lacks columns {missing}; has {list(df.columns)}")


def fold_means(similarity: pd.DataFrame) -> pd.DataFrame:
    """Average the 3.3.1 repeats within each fold: one value per target, fold, pair, layer and measure."""
    _require(similarity, ["a", "b", "layer", "measure", "value"], "similarity")
    keys = [c for c in ("target", "fold", "a", "b", "layer", "measure") if c in similarity.columns]
    return similarity.groupby(keys, as_index=False)["value"].mean()


def layer_similarity_figure(
    similarity: pd.DataFrame,
    *,
    title: str = "",
    measures: Sequence[str] = ("cca", "cka"),
    panels: Sequence[Sequence[tuple[str, str]]] = (PAIRS_A, PAIRS_B),
    panel_titles: Sequence[str] = ("(a) before vs after fine-tuning", "(b) natural vs medical"),
) -> Figure:
    """Fig. 3.3 (and 3.7-3.12 per target): layer-wise similarity, mean +- std over folds.

    Rows are measures (CCA beside CKA), columns the panels: (a) each source against itself after
    fine-tuning, (b) natural against medical before and after fine-tuning, with the random baselines.
    """
    means = fold_means(similarity)
    measures = [m for m in measures if m in set(means["measure"])]
    if not measures:
        raise ConfigError(f"no rows for measures {measures}; table has {sorted(set(means['measure']))}")
    fig, axes = plt.subplots(
        len(measures),
        len(panels),
        figsize=(5.2 * len(panels), 3.4 * len(measures)),
        squeeze=False,
        sharex=True,
    )
    x = np.arange(len(STAGES))
    for i, measure in enumerate(measures):
        for j, pairs in enumerate(panels):
            ax = axes[i, j]
            for pair in pairs:
                sel = means[(means.a == pair[0]) & (means.b == pair[1]) & (means.measure == measure)]
                if sel.empty:
                    continue
                stats = sel.groupby("layer")["value"].agg(["mean", "std"]).reindex(STAGES)
                style = "--" if "freeze" in pair[1] and "medical_ft_freeze" != pair[0] and j == 0 else "-"
                ax.errorbar(
                    x,
                    stats["mean"],
                    yerr=stats["std"].fillna(0),
                    marker="o",
                    ms=4,
                    capsize=3,
                    ls=style,
                    label=PAIR_LABELS.get(pair, f"{pair[0]} - {pair[1]}"),
                )
            ax.set_ylim(0, 1.02)
            ax.set_xticks(x, STAGES)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(panel_titles[j] if j < len(panel_titles) else "")
            if j == 0:
                ax.set_ylabel(MEASURE_LABELS.get(measure, measure))
            if i == len(measures) - 1:
                ax.legend(fontsize=7, loc="lower left", frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def filters_figure(filters: Mapping[str, np.ndarray], gabor: np.ndarray, *, n: int = 36) -> Figure:
    """Fig. 3.4: the first ``n`` first-layer filters of each network beside a synthetic Gabor bank.

    Filters ``(out, in, k, k)`` are shown as RGB when they have 3 input channels (each network's filters
    min-max scaled together, as the thesis's script scales them), the Gabor bank in grey.
    """
    side = int(np.ceil(np.sqrt(n)))
    panels = list(filters.items()) + [("synthetic Gabor filters", gabor)]
    fig = plt.figure(figsize=(2.6 * len(panels), 2.9))
    outer = fig.add_gridspec(1, len(panels), wspace=0.15)
    for p, (name, w) in enumerate(panels):
        w = np.asarray(w, dtype=float)
        inner = outer[p].subgridspec(side, side, wspace=0.08, hspace=0.08)
        lo, hi = w[:n].min(), w[:n].max()
        for k in range(min(n, len(w))):
            ax = fig.add_subplot(inner[k // side, k % side])
            f = (w[k] - lo) / (hi - lo + 1e-12)
            if f.ndim == 3 and f.shape[0] == 3:
                ax.imshow(np.transpose(f, (1, 2, 0)), interpolation="nearest")
            else:
                ax.imshow(f if f.ndim == 2 else f.mean(0), cmap="gray", interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == side // 2:
                ax.set_title(name, fontsize=9)
    return fig


def prediction_similarity_figure(table: pd.DataFrame) -> Figure:
    """Fig. 3.5: prediction similarity (Eq. 3.2) per target as box plots over folds.

    ``table`` has columns ``target``, ``kind`` (e.g. 'after fine-tuning', 'before fine-tuning',
    'independent mistakes') and ``value``; one box per target and kind.
    """
    _require(table, ["target", "kind", "value"], "prediction similarity")
    targets = list(dict.fromkeys(table["target"]))
    kinds = list(dict.fromkeys(table["kind"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 2.2 * len(targets)), 3.6))
    width = 0.8 / len(kinds)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, kind in enumerate(kinds):
        data = [table[(table.target == t) & (table.kind == kind)]["value"].to_numpy() for t in targets]
        pos = np.arange(len(targets)) + (k - (len(kinds) - 1) / 2) * width
        bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True, showfliers=True)
        for box in bp["boxes"]:
            box.set_facecolor(colors[k % len(colors)])
            box.set_alpha(0.75)
        ax.plot([], [], "s", color=colors[k % len(colors)], label=kind)
    ax.set_xticks(np.arange(len(targets)), targets)
    ax.set_ylabel("prediction similarity (Eq. 3.2)")
    ax.set_ylim(0, 1.02)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


def gain_vs_similarity_figure(table: pd.DataFrame, *, measure: str = "cca") -> Figure:
    """Fig. 3.6: relative AUC gain over random initialisation against similarity before vs after fine-tuning.

    ``table`` has columns ``source`` ('natural'/'medical'), ``layer``, ``similarity``, ``gain``, ``target``
    and ``freeze``; one panel per source (row) and layer (column), a least-squares line per panel and the
    Spearman correlation in its title.
    """
    from scipy import stats

    _require(table, ["source", "layer", "similarity", "gain", "target", "freeze"], "gain vs similarity")
    sources = list(dict.fromkeys(table["source"]))
    targets = list(dict.fromkeys(table["target"]))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(
        len(sources), len(STAGES), figsize=(3.0 * len(STAGES), 2.8 * len(sources)), squeeze=False, sharey=True
    )
    for i, source in enumerate(sources):
        for j, layer in enumerate(STAGES):
            ax = axes[i, j]
            sel = table[(table.source == source) & (table.layer == layer)]
            for t, target in enumerate(targets):
                for freeze, marker in ((False, "o"), (True, "^")):
                    s = sel[(sel.target == target) & (sel.freeze == freeze)]
                    ax.scatter(
                        s["similarity"],
                        s["gain"],
                        color=colors[t % len(colors)],
                        marker=marker,
                        s=22,
                        label=f"{target}{' (freeze)' if freeze else ''}",
                    )
            if len(sel) > 2 and sel["similarity"].nunique() > 1:
                slope, intercept = np.polyfit(sel["similarity"], sel["gain"], 1)
                xs = np.linspace(sel["similarity"].min(), sel["similarity"].max(), 10)
                ax.plot(xs, slope * xs + intercept, color="k", lw=1)
                rho = stats.spearmanr(sel["similarity"], sel["gain"]).statistic
                ax.set_title(f"{source} {layer}  (rho={rho:+.2f})", fontsize=9)
            else:
                ax.set_title(f"{source} {layer}", fontsize=9)
            ax.axhline(0, color="grey", lw=0.5)
            ax.grid(alpha=0.3)
            if i == len(sources) - 1:
                ax.set_xlabel(f"{measure.upper()} before vs after FT")
            if j == 0:
                ax.set_ylabel("relative AUC gain")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="lower center",
        ncol=max(1, len(labels)),
        fontsize=8,
        frameon=False,
        bbox_to_anchor=(0.5, -0.02),
    )
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
