"""Figures of Chapter 5: a PSD example (Fig. 5.1), spectra of data and artifacts, robustness against frequency
shortcuts (Figs. 5.2, 5.4) and learning priorities (Fig. 5.3).

Every function returns a matplotlib Figure and uses matplotlib only (Agg-safe, no global state changed).
Frequency axes are the normalised radial frequency of Fig. 5.3, ``omega_bar = k / (M/2 - 1)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from cfct.plots.shortcuts import SOURCE_COLORS as _CH4_COLORS
from cfct.spectral import radial_psd

#: Colours per source role (Chapter 4's for the shared roles); edited sources share their original's colour
#: and are drawn dotted (Fig. 5.4).
SOURCE_COLORS: dict[str, str] = {**_CH4_COLORS, "natural edited": _CH4_COLORS["natural"],
                                 "medical edited": _CH4_COLORS["medical"]}
ARTIFACT_COLOR = "#2ca02c"  # the green of Fig. 5.3
METRIC_LABELS = {"ood_auc": "o.o.d. AUC", "iid_auc": "i.i.d. AUC"}


def _freqs(n: int) -> np.ndarray:
    return np.arange(n) / max(n - 1, 1)


def _density(psd: np.ndarray) -> np.ndarray:
    psd = np.asarray(psd, dtype=float)
    return psd / max(psd.sum(), np.finfo(float).tiny)


def _color(role: str) -> str:
    return SOURCE_COLORS.get(role, "0.3")


def _style(role: str) -> str:
    return ":" if role.endswith("edited") else "-"


def psd_example(image: np.ndarray, k: int | None = None, *, title: str = "") -> Figure:
    """Fig. 5.1: an image, its centred log power spectrum with the ring of frequency ``omega_k``, and its PSD.

    Parameters
    ----------
    image : ndarray
        ``(H, W)`` grey image.
    k : int, optional
        Radial frequency to highlight (default: a quarter of the band).
    """

    img = np.asarray(image, dtype=float)
    psd = radial_psd(img)
    k = len(psd) // 2 if k is None else int(k)
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(img, norm="ortho")) ** 2)
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    axes[0].imshow(img, cmap="gray")
    axes[0].set_title("image")
    axes[1].imshow(np.log10(spectrum + 1e-12), cmap="magma")
    c = (img.shape[1] // 2, img.shape[0] // 2)
    axes[1].add_patch(plt.Circle(c, k, fill=False, color="cyan", lw=1.5))
    axes[1].set_title(rf"$\log_{{10}}|\mathcal{{F}}(X)|^2$, ring $\omega_{{{k}}}$")
    for ax in axes[:2]:
        ax.set_xticks([])
        ax.set_yticks([])
    axes[2].semilogy(np.arange(len(psd)), psd, color="0.2")
    axes[2].plot([k], [psd[k]], "o", color="cyan", mec="k")
    axes[2].set_xlabel(r"radial frequency $\omega_k$ (cycles per image)")
    axes[2].set_ylabel("PSD (Eq. 5.1)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def psd_curves(
    curves: Mapping[str, np.ndarray],
    *,
    colors: Mapping[str, str] | None = None,
    styles: Mapping[str, str] | None = None,
    title: str = "",
    ylabel: str = "normalised PSD",
    ax: plt.Axes | None = None,
) -> Figure:
    """Several PSDs on one log-scaled axis, each normalised to sum 1 (a density over frequency).

    Parameters
    ----------
    curves : mapping
        Label -> PSD ``(K,)``; curves of different lengths (image sizes) share the normalised axis.
    colors, styles : mapping, optional
        Label -> matplotlib colour / line style.
    """
    if not curves:
        raise ValueError("psd_curves needs at least one curve")
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 3.6))
    else:
        fig = ax.figure
    for label, psd in curves.items():
        psd = np.asarray(psd, dtype=float)
        ax.semilogy(_freqs(len(psd)), _density(psd), label=label, color=(colors or {}).get(label),
                    ls=(styles or {}).get(label, "-"))
    ax.set_xlabel(r"normalised radial frequency $\bar\omega_k$")
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def artifact_gallery(clean: np.ndarray, modified: Mapping[str, np.ndarray], *, n: int = 4,
                     title: str = "") -> Figure:
    """Rows of example images: clean, each artifact, and the artifact's residual (modified - clean).

    Parameters
    ----------
    clean : ndarray
        ``(N, H, W, C)`` uint8 images.
    modified : mapping
        Artifact name -> the same images with the artifact.
    n : int
        Images per row.
    title : str
        Figure title.
    """
    n = min(n, len(clean))
    rows = 1 + 2 * len(modified)
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.6 * rows), squeeze=False)
    panels = [("clean", clean, "gray", None)]
    for name, mod in modified.items():
        residual = mod.astype(float) - clean.astype(float)
        lim = max(np.abs(residual[:n]).max(), 1e-9)
        panels += [(name, mod, "gray", None), (f"{name}: residual", residual, "RdBu_r", lim)]
    for r, (label, arr, cmap, lim) in enumerate(panels):
        for j in range(n):
            ax = axes[r, j]
            img = arr[j, :, :, 0] if arr.ndim == 4 else arr[j]
            if lim is None:
                ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
            else:
                ax.imshow(img, cmap=cmap, vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94) if title else None)
    return fig


def robustness(
    summary: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("ood_auc", "iid_auc"),
    targets: Sequence[str] | None = None,
    sources: Sequence[str] | None = None,
    target_labels: Mapping[str, str] | None = None,
) -> Figure:
    """Figs. 5.2 / 5.4: AUC (mean and standard deviation over folds) against degradation.

    Parameters
    ----------
    summary : DataFrame
        From :func:`cfct.experiments.ch5.summarize`: ``target, source, p_art, metric, mean, std, n``.
    metrics : sequence
        One row of panels per metric (Fig. 5.2: o.o.d. on top, i.i.d. below; Fig. 5.4: o.o.d. only).
    targets, sources : sequence, optional
        Column order and the sources drawn (default: as they appear). Sources named ``'<role> edited'`` are
        drawn dotted in their original's colour, as in Fig. 5.4.
    target_labels : mapping, optional
        Column titles.
    """
    targets = list(targets or dict.fromkeys(summary["target"]))
    sources = list(sources or dict.fromkeys(summary["source"]))
    fig, axes = plt.subplots(len(metrics), len(targets), figsize=(4.4 * len(targets), 3.1 * len(metrics)),
                             squeeze=False, sharex=True)
    for i, metric in enumerate(metrics):
        for j, target in enumerate(targets):
            ax = axes[i, j]
            for role in sources:
                d = summary[(summary["target"] == target) & (summary["source"] == role)
                            & (summary["metric"] == metric)].sort_values("p_art")
                if d.empty:
                    continue
                x, m, s = d["p_art"].to_numpy(), d["mean"].to_numpy(), d["std"].to_numpy()
                ax.plot(x, m, marker="o", ms=3.5, color=_color(role), ls=_style(role), label=role)
                if (s > 0).any():
                    alpha = 0.12 if _style(role) == "-" else 0.06
                    ax.fill_between(x, m - s, m + s, color=_color(role), alpha=alpha)
            ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
            ax.set_ylim(0, 1.02)
            if i == 0:
                ax.set_title((target_labels or {}).get(target, target), fontsize=10)
            if i == len(metrics) - 1:
                ax.set_xlabel("p_art (degradation)")
            if j == 0:
                ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes[0, -1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    return fig


def learning_priorities(
    pretrained: pd.DataFrame,
    finetuned: pd.DataFrame,
    artifacts: Mapping[str, np.ndarray],
    *,
    columns: Sequence[tuple[str, str]],
    edited: Mapping[str, str] | None = None,
    target_labels: Mapping[str, str] | None = None,
) -> Figure:
    """Fig. 5.3: normalised learning priorities of pre-trained and fine-tuned models, artifact PSDs overlaid.

    Columns are (target, source role) pairs. Top row: the pre-trained source's learning priority (solid), its
    edited version's (dotted, an arrow from one to the other at the frequency where they differ most) and
    the artifact's PSD (green). Middle row: the fine-tuned models' learning priority as a heat map over
    degradation (rows) and frequency (columns), averaged over folds, each row normalised to sum 1. Bottom row:
    the same for the edited source (left empty when there is none).

    Parameters
    ----------
    pretrained : DataFrame
        ``target, source, psd`` (one row per bin, in order) of the sources before fine-tuning.
    finetuned : DataFrame
        :attr:`cfct.experiments.ch5.ShortcutRuns.priorities` rows: ``target, source, p_art, fold, k, psd``.
    artifacts : mapping
        Target -> artifact PSD.
    columns : sequence of (target, role)
    edited : mapping, optional
        Role -> role of its edited version (e.g. ``{'natural': 'natural edited'}``).
    target_labels : mapping, optional
    """
    edited = dict(edited or {})
    n = len(columns)
    fig, axes = plt.subplots(3, n, figsize=(3.3 * n, 8.6), squeeze=False,
                             gridspec_kw={"height_ratios": [1.2, 1, 1], "hspace": 0.5, "wspace": 0.35})
    images = []
    for j, (target, role) in enumerate(columns):
        ax = axes[0, j]
        label = (target_labels or {}).get(target, target)
        ax.set_title(f"{label}\n{role}", fontsize=9)

        def curve(r: str, t: str = target) -> np.ndarray | None:
            d = pretrained[(pretrained["target"] == t) & (pretrained["source"] == r)]
            return None if d.empty else _density(d["psd"].to_numpy())

        base = curve(role)
        if base is not None:
            ax.semilogy(_freqs(len(base)), base, color=_color(role), label=f"{role} (pre-trained)")
        other = curve(edited[role]) if role in edited else None
        if other is not None:
            x = _freqs(len(other))
            ax.semilogy(x, other, color=_color(role), ls=":", label=edited[role])
            if base is not None and len(base) == len(other):
                i = int(np.argmax(np.abs(np.log(other) - np.log(base))[1:])) + 1
                ax.annotate("", xy=(x[i], other[i]), xytext=(x[i], base[i]),
                            arrowprops={"arrowstyle": "->", "color": "k", "lw": 1})
        if target in artifacts:
            art = _density(artifacts[target])
            ax.semilogy(_freqs(len(art)), art, color=ARTIFACT_COLOR, label="artifact")
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.set_ylabel("normalised PSD", fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
        for row, r in ((1, role), (2, edited.get(role))):
            ax = axes[row, j]
            d = finetuned[(finetuned["target"] == target) & (finetuned["source"] == r)] if r else None
            if d is None or d.empty:
                ax.axis("off")
                continue
            grid = d.groupby(["p_art", "k"])["psd"].mean().unstack("k").sort_index()
            heat = grid.to_numpy() / grid.to_numpy().sum(axis=1, keepdims=True)
            levels = grid.index.to_numpy()
            im = ax.imshow(np.log10(heat), aspect="auto", origin="lower", cmap="viridis",
                           extent=(0, 1, -0.5, len(levels) - 0.5))
            images.append(im)
            ax.set_yticks(range(len(levels)))
            ax.set_yticklabels([f"{v:g}" for v in levels], fontsize=7)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(f"fine-tuned from {r}", fontsize=8)
            if j == 0:
                ax.set_ylabel("p_art (degradation)", fontsize=8)
            if row == 2 or not edited.get(role):
                ax.set_xlabel(r"$\bar\omega_k$", fontsize=8)
    if images:
        lo = min(im.get_array().min() for im in images)
        hi = max(im.get_array().max() for im in images)
        for im in images:
            im.set_clim(lo, hi)
        fig.colorbar(images[0], ax=axes[1:, :].ravel().tolist(), shrink=0.6, label="log10 normalised PSD")
    return fig
