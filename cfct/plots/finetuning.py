"""Figures of transfer performance (3.5.1, Table 3.2)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

SOURCE_COLORS = {"natural": "tab:orange", "medical": "tab:blue", "random init": "tab:gray"}


def transfer_auc_figure(
    table: pd.DataFrame,
    published: pd.DataFrame | None = None,
    published_target_of: dict[str, str] | None = None,
) -> Figure:
    """Test AUC per source and strategy, one panel per target: folds as dots, mean ± std as a bar.

    Parameters
    ----------
    table : DataFrame
        :func:`cfct.experiments.transfer.matrix_table` output (target, fold, source, strategy, test_auc).
    published : DataFrame, optional
        :func:`cfct.thesis.table_3_2` (AUC x 100), drawn as black diamonds labelled "thesis (published)".
    published_target_of : dict, optional
        Our target -> the thesis's target name, for the published comparison.
    """
    targets = list(dict.fromkeys(table["target"]))
    combos = list(dict.fromkeys(zip(table["source"], table["strategy"])))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 3.6), squeeze=False, sharey=True)
    for ax, target in zip(axes[0], targets):
        sub = table[table["target"] == target]
        for x, (source, strategy) in enumerate(combos):
            aucs = 100 * sub[(sub.source == source) & (sub.strategy == strategy)]["test_auc"].to_numpy()
            if aucs.size == 0:
                continue
            color = SOURCE_COLORS.get(source, "tab:green")
            ax.bar(x, aucs.mean(), yerr=aucs.std(ddof=1) if aucs.size > 1 else 0, color=color,
                   alpha=0.35 if strategy == "freeze" else 0.7, capsize=3, edgecolor=color)
            jitter = np.linspace(-0.15, 0.15, aucs.size) if aucs.size > 1 else np.zeros(1)
            ax.scatter(x + jitter, aucs, s=12, color="k", zorder=3)
            if published is not None and published_target_of and target in published_target_of:
                pub = published[(published.target == published_target_of[target])
                                & published.source.str.startswith(source) & (published.strategy == strategy)]
                if len(pub):
                    ax.scatter([x], pub.auc_mean, marker="D", s=40, facecolor="none", edgecolor="k", zorder=4,
                               label="thesis Table 3.2 (published)" if x == 0 else None)
        ax.set_xticks(range(len(combos)), [f"{s}\n{t}" for s, t in combos], fontsize=8)
        ax.set_title(target)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test AUC (x100)")
    lo = max(0.0, 100 * table["test_auc"].min() - 10)
    axes[0][0].set_ylim(lo, 100)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=1, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if handles else 0, 1, 1))
    return fig
