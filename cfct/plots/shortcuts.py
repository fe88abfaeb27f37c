"""Figures of Chapter 4: MICCAT (Fig. 4.1), confounders (Fig. 4.2), robustness curves (Figs. 4.3, 4.4).

Every function returns a matplotlib Figure and uses matplotlib only (Agg-safe, no global state changed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from cfct.shortcuts import CONFOUNDER_LABELS, MICCAT

#: Colours per source role, fixed so every figure of the chapter reads the same way.
SOURCE_COLORS = {"natural": "#d95f02", "medical": "#1b9e77", "random": "#7570b3"}
_METRIC_LABELS = {"ood_auc": "o.o.d. AUC", "iid_auc": "i.i.d. AUC"}
_LEVEL_COLORS = {"patient": "#deebf7", "environment": "#fee6ce"}


def _box(
    ax,
    x: float,
    y: float,
    w: float,
    h: float,
    text: str,
    color: str,
    *,
    bold: bool = False,
    fontsize: float = 9.0,
    lw: float = 1.0,
) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.01,rounding_size=0.02",
            fc=color,
            ec="black",
            lw=lw,
        )
    )
    ax.text(
        x,
        y,
        text,
        ha="center",
        va="center",
        fontsize=fontsize,
        fontweight="bold" if bold else "normal",
        wrap=True,
    )


def miccat_figure(categories: Sequence | None = None, *, figsize: tuple[float, float] = (11, 5.2)) -> Figure:
    """Draw the MICCAT tree (Fig. 4.1): levels, categories and examples; studied confounders in bold.

    Parameters
    ----------
    categories : sequence of MiccatCategory, optional
        Default: :data:`cfct.shortcuts.MICCAT`.
    figsize : (float, float)
        Figure size in inches.
    """

    cats = list(categories if categories is not None else MICCAT)
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    _box(
        ax,
        0.5,
        0.93,
        0.62,
        0.08,
        "MICCAT: Medical Imaging Contextualized Confounder Taxonomy",
        "white",
        bold=True,
        fontsize=10.5,
    )
    levels = list(dict.fromkeys(c.level for c in cats))
    level_x = {lv: (i + 0.5) / len(levels) for i, lv in enumerate(levels)}
    for lv, x in level_x.items():
        ax.plot([0.5, x], [0.89, 0.80], color="black", lw=0.8)
        _box(ax, x, 0.76, 0.3, 0.07, f"{lv} level", _LEVEL_COLORS.get(lv, "#eeeeee"), bold=True, fontsize=10)
    width = 1.0 / max(len(cats), 1)
    for i, cat in enumerate(cats):
        x = (i + 0.5) * width
        ax.plot([level_x[cat.level], x], [0.725, 0.64], color="black", lw=0.8)
        _box(
            ax,
            x,
            0.6,
            width * 0.92,
            0.08,
            cat.name,
            _LEVEL_COLORS.get(cat.level, "#eeeeee"),
            bold=True,
            fontsize=9.5,
        )
        ax.plot([x, x], [0.56, 0.50], color="black", lw=0.8)
        lines = [(CONFOUNDER_LABELS.get(k, k), True) for k in cat.studied]
        lines += [(ex, False) for ex in cat.examples]
        y = 0.47
        for text, studied in lines:
            ax.text(
                x,
                y,
                text,
                ha="center",
                va="top",
                fontsize=8.3,
                fontweight="bold" if studied else "normal",
                bbox={
                    "boxstyle": "round,pad=0.25",
                    "fc": "white",
                    "ec": "black" if studied else "#bbbbbb",
                    "lw": 1.4 if studied else 0.6,
                },
            )
            y -= 0.075
    ax.text(
        0.5,
        0.01,
        "bold, black outline: confounders studied in Chapter 4 (implemented in cfct.shortcuts)",
        ha="center",
        va="bottom",
        fontsize=8,
        style="italic",
    )
    fig.tight_layout()
    return fig


def confounder_gallery(
    original: np.ndarray,
    variants: Mapping[str, np.ndarray],
    *,
    zoom: tuple[int, int, int, int] | None = None,
    residual_scale: float | None = None,
    figsize_per_panel: float = 2.2,
) -> Figure:
    """Fig. 4.2-like panel: the original, each confounded version and (second row) its residual.

    Parameters
    ----------
    original : ndarray
        One image ``(H, W)`` or ``(H, W, C)`` (the first channel is shown).
    variants : mapping of str to ndarray
        Title -> confounded image of the same shape.
    zoom : (row0, col0, row1, col1), optional
        Show only this window of every panel (Fig. 4.2b zooms in to make subtle changes visible).
    residual_scale : float, optional
        Grey levels mapped to the ends of the residual colour scale; default: the largest absolute residual.
    """

    def grey(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float64)
        a = a[..., 0] if a.ndim == 3 else a
        if zoom is not None:
            a = a[zoom[0] : zoom[2], zoom[1] : zoom[3]]
        return a

    base = grey(original)
    residuals = {k: grey(v) - base for k, v in variants.items()}
    scale = residual_scale or max([np.abs(r).max() for r in residuals.values()] + [1.0])
    n = len(variants) + 1
    fig, axes = plt.subplots(2, n, figsize=(figsize_per_panel * n, figsize_per_panel * 2.1), squeeze=False)
    axes[0, 0].imshow(base, cmap="gray", vmin=0, vmax=255)
    axes[0, 0].set_title("original", fontsize=9)
    axes[1, 0].axis("off")
    for j, (name, img) in enumerate(variants.items(), start=1):
        axes[0, j].imshow(grey(img), cmap="gray", vmin=0, vmax=255)
        axes[0, j].set_title(name, fontsize=9)
        im = axes[1, j].imshow(residuals[name], cmap="RdBu_r", vmin=-scale, vmax=scale)
        axes[1, j].set_title(f"residual (std {residuals[name].std():.2f})", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=axes[1, 1:].tolist(), shrink=0.8, label="grey levels")
    return fig


def robustness_curves(
    summary: pd.DataFrame,
    *,
    row: str = "metric",
    col: str = "setting",
    sources: Sequence[str] | None = None,
    reference: Mapping[str, float] | None = None,
    ylim: tuple[float, float] = (0.0, 1.02),
    figsize_per_panel: tuple[float, float] = (3.1, 2.6),
) -> Figure:
    """Mean AUC with 95 % CI against ``p_art`` per source, in a grid of panels (Figs. 4.3 and 4.4).

    Parameters
    ----------
    summary : DataFrame
        Long table with columns ``p_art``, ``source``, ``mean``, ``ci_low``, ``ci_high`` and the ``row`` and
        ``col`` keys (e.g. from :func:`cfct.experiments.ch4.summarize`). Rows / columns appear in table order.
    row, col : str
        Columns whose values index the panel rows and columns (Fig. 4.3: ``metric`` x ``setting``; Fig. 4.4:
        ``modality`` x ``contrast``).
    sources : sequence of str, optional
        Source roles to draw, in legend order (default: those present).
    reference : mapping of str to float, optional
        A horizontal dotted line per column value (e.g. chance level 0.5).
    ylim : (float, float)
        AUC axis limits.
    """
    rows = list(dict.fromkeys(summary[row]))
    cols = list(dict.fromkeys(summary[col]))
    srcs = list(sources) if sources is not None else list(dict.fromkeys(summary["source"]))
    w, h = figsize_per_panel
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(w * len(cols), h * len(rows)), squeeze=False, sharex=True, sharey=True
    )
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            panel = summary[(summary[row] == r) & (summary[col] == c)]
            for s in srcs:
                d = panel[panel["source"] == s].sort_values("p_art")
                if d.empty:
                    continue
                color = SOURCE_COLORS.get(s)
                ax.plot(d["p_art"], d["mean"], marker="o", ms=3.5, color=color, label=s)
                ax.fill_between(d["p_art"], d["ci_low"], d["ci_high"], color=color, alpha=0.18, lw=0)
            if reference and c in reference:
                ax.axhline(reference[c], color="grey", ls=":", lw=1)
            ax.set_ylim(*ylim)
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(str(c), fontsize=9.5)
            if j == 0:
                ax.set_ylabel(_METRIC_LABELS.get(str(r), f"{r}\nAUC"), fontsize=9)
            if i == len(rows) - 1:
                ax.set_xlabel("$p_{art}$")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes.ravel():
        if handles:
            break
        handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, 1.0))
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig
