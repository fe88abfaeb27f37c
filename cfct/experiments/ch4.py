"""Chapter 4 experiment: confounded development/test sets, the p_art robustness sweeps of Fig. 4.3/4.4, the
chapter's settings and verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from cfct import data, stats, train
from cfct.config import ChapterConfig
from cfct.experiments import robustness
from cfct.experiments.findings import Finding
from cfct.experiments.jobs import Job
from cfct.shortcuts import (
    CONFOUNDER_LABELS,
    P_ART_LEVELS,
    Confounder,
    get_confounder,
)

#: Source roles compared in Chapter 4, in the order figures use.
SOURCE_ROLES: tuple[str, ...] = ("natural", "medical", "random")


def default_sources(target: str, arch: str = "resnet18") -> dict[str, str]:
    """The offline stand-ins of the thesis's sources for a target: natural (CIFAR-10 for ImageNet), medical
    (leave-target-out MedMNIST for RadImageNet) and random initialisation.

    For ``csv:`` targets every MedMNIST flag is out-of-target; the medical source is then the PneumoniaMNIST
    source (``medmnist-lto:breastmnist``, the largest medical source available offline), which the book
    pre-trains anyway.
    """

    t = data.parse_target(target)
    flag = t.arg if t.kind == "medmnist" else "breastmnist"
    return {
        "natural": f"pretrained:{arch}:cifar10",
        "medical": f"pretrained:{arch}:medmnist-lto:{flag}",
        "random": f"random:{arch}",
    }


def robustness_experiment(
    target: str,
    confounder: str | Confounder,
    sources: Mapping[str, str],
    *,
    p_arts: Sequence[float] = P_ART_LEVELS,
    folds: int = 5,
    size: int = 28,
    n_dev: int = 250,
    n_test: int = 200,
    pos_fraction: float = 0.5,
    val_fraction: float = 0.15,
    finetune: Any = None,
    seed: int = 0,
    store: Any = None,
    profile: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Fine-tune every source on every ``p_art`` and fold, then measure i.i.d. and o.o.d. AUC (Sec. 4.2.2).

    Parameters
    ----------
    target : str
        Binary target spec (``pneumoniamnist``, ``csv:nih-cxr14-sample``, ...).
    confounder : str or Confounder
        Key of :data:`CONFOUNDERS`.
    sources : mapping of str to str
        Role (``natural``, ``medical``, ``random``) -> source spec.
    p_arts : sequence of float
        Correlation levels (thesis: :data:`P_ART_LEVELS`).
    folds : int
        Train/validation splits of the development set (thesis: 5).
    size : int
        Image side in px.
    n_dev, n_test : int
        Development (train + val) and test set sizes (Table 4.1).
    pos_fraction : float
        Share of positives (Table 4.1: 0.3 for X-ray lung mass, 0.5 for CT and atelectasis).
    val_fraction : float
        Validation share of the development set (Table 4.1: 10-20 %).
    finetune : cfct.train.FinetuneConfig, optional
        Fine-tuning settings; default: 4.2.2's (Adam 1e-5, 200 epochs, patience 30 on validation loss, or on
        validation AUC for balanced tasks, 3.4.1 augmentation without flips). ``seed`` is offset per fold.
    seed : int
        Seed of set construction and folds.
    store : cfct.results.Store, optional
    profile : Profile or str, optional
        Profile that fixes the pre-training of ``pretrained:`` sources.
    progress : bool
        tqdm bar over the runs.

    Returns
    -------
    DataFrame
        One row per (p_art, fold, source): ``iid_auc``, ``ood_auc``, ``val_auc``, recall of positives on the
        o.o.d. and i.i.d. sets, epochs and seconds.
    """

    conf = get_confounder(confounder)
    if finetune is None:
        finetune = train.FinetuneConfig(
            lr=1e-5,
            max_epochs=200,
            patience=30,
            augment="ch3",
            hflip=False,
            monitor="val_auc" if abs(pos_fraction - 0.5) < 1e-9 else "val_loss",
            select="val_loss",
        )
    runs = robustness.sweep(target, conf, sources, finetune, p_arts=p_arts, folds=folds, size=size, n_dev=n_dev,
                            n_test=n_test, pos_fraction=pos_fraction, val_fraction=val_fraction, seed=seed,
                            store=store, profile=profile, progress=progress)
    return pd.DataFrame([run.row() for run in runs])


def summarize(
    table: pd.DataFrame,
    metrics: Sequence[str] = ("ood_auc", "iid_auc"),
    keys: Sequence[str] = ("target", "confounder", "source", "p_art"),
) -> pd.DataFrame:
    """Mean, std and 95 % CI over folds of a sweep table (:func:`cfct.stats.fold_summary`)."""
    return stats.fold_summary(table, metrics, keys)


def compare_sources(
    results: pd.DataFrame,
    a: str = "natural",
    b: str = "medical",
    metric: str = "ood_auc",
    keys: Sequence[str] = ("target", "confounder", "p_art"),
    n_resamples: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """Permutation test of the difference between two sources at each ``p_art`` (Sec. 4.3).

    The fold AUCs of the two sources are treated as independent samples (labels shuffled), which is what the
    thesis's smallest p-value shows: with five folds per source the smallest two-sided p is
    ``2 / C(10, 5) = 0.0079``, its reported lower bound "0.008 < p". With ``k`` folds the floor is
    ``2 / C(2k, k)`` (0.1 at three folds), so a quick run cannot reach significance at 0.05.
    """

    rows = []
    for key, grp in results.groupby(list(keys), sort=False):
        x = grp[grp["source"] == a].sort_values("fold")[metric].to_numpy(dtype=float)
        y = grp[grp["source"] == b].sort_values("fold")[metric].to_numpy(dtype=float)
        if len(x) == 0 or len(x) != len(y):
            continue
        p = (
            stats.permutation_test(x, y, n_resamples=n_resamples, paired=False, seed=seed)
            if len(x) > 1
            else float("nan")
        )
        rows.append(
            {
                **dict(zip(keys, key)),
                f"{a}": x.mean(),
                f"{b}": y.mean(),
                "difference": x.mean() - y.mean(),
                "p_value": p,
                "folds": len(x),
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Setting:
    """One experiment of the chapter: a target, a confounder, the sources compared and where it is drawn.

    Attributes
    ----------
    figure : str
        ``'4.3'`` or ``'4.4'``.
    target, confounder : str
    roles : tuple of str
        Source roles fine-tuned (Fig. 4.4 of the thesis shows the two pre-trained sources only).
    pos_fraction : float
        Share of positives (Table 4.1: 0.3 for the X-ray lung-mass task, 0.5 for CT and atelectasis).
    modality, contrast : str
        Panel labels of Fig. 4.4 (row and column).
    """

    figure: str
    target: str
    confounder: str
    roles: tuple[str, ...]
    pos_fraction: float
    modality: str = ""
    contrast: str = ""

    @property
    def label(self) -> str:
        name = self.target.split("/")[-1].removeprefix("csv:").removeprefix("medmnist:")
        return f"{name}: {CONFOUNDER_LABELS.get(self.confounder, self.confounder)}"


def chapter_settings(
    targets: Sequence[str],
    confounders: Sequence[str],
    *,
    sex_target: str | None,
    noise_target: str | None,
    ct_target: str | None,
) -> list[Setting]:
    """The experiments of Figs. 4.3 and 4.4 for the chapter's parameters, in drawing order."""
    three, two = SOURCE_ROLES, SOURCE_ROLES[:2]
    out = [Setting("4.3", t, c, three, 0.3, "", "") for t in targets for c in confounders]
    if sex_target:
        out.append(Setting("4.3", sex_target, "sex", three, 0.5))
    if noise_target:
        out += [
            Setting("4.4", noise_target, "noise", two, 0.3, "X-ray", "noise vs no noise"),
            Setting("4.4", noise_target, "noise-levels", two, 0.3, "X-ray", "high vs low noise"),
        ]
    if ct_target:
        out += [
            Setting("4.4", ct_target, "ct-noise", two, 0.5, "CT", "noise vs no noise"),
            Setting("4.4", ct_target, "noise", two, 0.5, "CT", "high vs low noise"),
        ]
    return out


def sources_for(target: str, arch: str, natural: str | None = None, medical: str | None = None) -> dict[str, str]:
    """Source specs per role for one target; ``medical`` may hold ``{target}`` (replaced by the MedMNIST flag
    of a MedMNIST target)."""

    out = default_sources(target, arch)
    if natural:
        out["natural"] = natural
    if medical:
        t = data.parse_target(target)
        out["medical"] = medical.replace("{target}", t.arg) if t.kind == "medmnist" else medical
    return out


#: Numbers the thesis reports in the text of Sec. 4.3 and in Table 4.1 (published; never computed here).
PUBLISHED: dict[str, Any] = {
    "source": "Juodelyte (2024), Sec. 4.3 and Table 4.1 (ResNet50, ImageNet vs RadImageNet, 5 folds)",
    "ct_tag_ood_auc": {"start": 0.84, "imagenet": 0.02, "radimagenet": 0.22},
    "ct_denoising_ood_auc": {"imagenet": (0.70, 0.01), "radimagenet": (0.83, 0.60)},
    "sex_gap_mean_p_art_ge_0.1": 0.12,
    "sex_p_value_range": (0.008, 0.032),
    "mean_epochs": {"radimagenet": 141, "imagenet": 72},
    "table_4_1": pd.DataFrame(
        [
            ("Lung mass (NIH CXR14)", "T, D, N", "83/248", "90/10", "30/70", "512x512", 32),
            ("Lung mass (LIDC-IDRI)", "T, D, N", "1710/500", "80/20", "50/50", "362x362", 32),
            ("Atelectasis (NIH CXR14)", "Gender", "400/400", "85/15", "50/50", "256x256", 64),
        ],
        columns=["task", "confounder", "test/dev", "train/val %", "pos/neg %", "image size", "batch size"],
    ),
}


def chapter_finetune_config(
    pos_fraction: float, *, lr: float, epochs: int, patience: int, seed: int = 0, device: str = "auto"
) -> Any:
    """Fine-tuning of Sec. 4.2.2: Adam, early stopping on validation loss (on validation AUC for the balanced
    tasks), the lowest-loss epoch kept, 3.4.1 augmentation without flips, batch size 32 (Table 4.1)."""

    balanced = abs(float(pos_fraction) - 0.5) < 1e-9
    return train.FinetuneConfig(
        optimizer="adam",
        lr=float(lr),
        max_epochs=int(epochs),
        patience=int(patience),
        batch_size=32,
        monitor="val_auc" if balanced else "val_loss",
        select="val_loss",
        augment="ch3",
        hflip=False,
        seed=int(seed),
        device=device,
    )


def run_settings(
    settings: Sequence[Setting],
    *,
    arch: str,
    natural_source: str | None = None,
    medical_source: str | None = None,
    p_arts: Sequence[float] = P_ART_LEVELS,
    folds: int = 5,
    size: int = 28,
    n_dev: int = 250,
    n_test: int = 200,
    lr: float = 1e-5,
    epochs: int = 200,
    patience: int = 30,
    seed: int = 0,
    device: str = "auto",
    store: Any = None,
    profile: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run :func:`robustness_experiment` for every setting; one tidy table with the setting's labels."""
    frames = []
    for st in settings:
        sources = sources_for(st.target, arch, natural_source, medical_source)
        ft = chapter_finetune_config(st.pos_fraction, lr=lr, epochs=epochs, patience=patience, seed=seed, device=device)
        df = robustness_experiment(
            st.target,
            st.confounder,
            {r: sources[r] for r in st.roles},
            p_arts=p_arts,
            folds=folds,
            size=size,
            n_dev=n_dev,
            n_test=n_test,
            pos_fraction=st.pos_fraction,
            finetune=ft,
            seed=seed,
            store=store,
            profile=profile,
            progress=progress,
        )
        frames.append(df.assign(figure=st.figure, setting=st.label, modality=st.modality, contrast=st.contrast))
    return pd.concat(frames, ignore_index=True)


def jobs(cfg: ChapterConfig) -> list[Job]:
    """The chapter's store runs: pre-training of every source (stage 0), the sweeps' fine-tunes (stage 1) and
    their o.o.d. predictions (stage 2), as :func:`run_settings` computes them."""
    settings = chapter_settings(cfg.targets, cfg.confounders, sex_target=cfg.sex_target,
                                noise_target=cfg.noise_target, ct_target=cfg.ct_target)
    out: list[Job] = []
    for st in settings:
        roles = sources_for(st.target, cfg.arch, cfg.natural_source, cfg.medical_source)
        ft = chapter_finetune_config(st.pos_fraction, lr=cfg.lr, epochs=cfg.epochs, patience=cfg.patience,
                                     seed=cfg.seed, device=cfg.device)
        out += robustness.sweep_jobs(st.target, get_confounder(st.confounder), {r: roles[r] for r in st.roles}, ft,
                                     p_arts=cfg.p_arts, folds=cfg.folds, size=cfg.image_size, n_dev=cfg.n_dev,
                                     n_test=cfg.n_test, pos_fraction=st.pos_fraction, val_fraction=0.15,
                                     seed=cfg.seed, profile=cfg.profile)
    return out


# --------------------------------------------------------------------------------------------------
# What a run shows against the thesis (Sec. 4.3): estimates, verdicts and the sentences the chapter prints
SHORTCUT_DROP = 0.1
"""A source has learned a shortcut when its o.o.d. AUC falls by at least this much from the lowest to the
highest p_art; smaller changes are read as run-to-run noise."""


def summary_value(summary: pd.DataFrame, p_art: float, metric: str = "ood_auc", **where: str) -> float:
    """The mean of one summary row (:func:`summarize`) picked by ``p_art``, ``metric`` and column values;
    NaN when absent."""
    mask = (summary["p_art"] == p_art) & (summary["metric"] == metric)
    for column, value in where.items():
        mask &= summary[column] == value
    rows = summary[mask]
    return float(rows["mean"].iloc[0]) if len(rows) else float("nan")


def source_robustness(fig43: pd.DataFrame, p_lo: float, p_hi: float) -> tuple[list[str], Finding, Finding]:
    """Fig. 4.3 against Sec. 4.3: per setting, the o.o.d. AUC of both pre-trained sources from ``p_lo`` to
    ``p_hi``; whether the medical source keeps the higher o.o.d. AUC at ``p_hi`` in most settings (the thesis's
    finding); and in which settings a shortcut was learned at all (:data:`SHORTCUT_DROP`).

    Returns
    -------
    lines : list of str
        One Markdown bullet per setting.
    verdict : Finding
        ``estimate``: share of settings where the medical source is ahead at ``p_hi``.
    learned : Finding
        ``estimate``: number of settings where a pre-trained source lost at least SHORTCUT_DROP; ``agrees`` is
        None (a condition of the comparison, not a claim).
    """
    lines, pairs, learned = [], [], []
    for s in fig43["setting"].unique():
        nat0, nat1 = (summary_value(fig43, p, setting=s, source="natural") for p in (p_lo, p_hi))
        med0, med1 = (summary_value(fig43, p, setting=s, source="medical") for p in (p_lo, p_hi))
        iid_gap = (summary_value(fig43, p_hi, "iid_auc", setting=s, source="natural")
                   - summary_value(fig43, p_hi, "iid_auc", setting=s, source="medical"))
        more = "medical" if med1 > nat1 else "natural"
        lines.append(
            f"* **{s}**: o.o.d. AUC from {nat0:.2f} to {nat1:.2f} (natural) and from {med0:.2f} to {med1:.2f} "
            f"(medical) as $p_{{art}}$ goes from {p_lo:g} to {p_hi:g}; at $p_{{art}}={p_hi:g}$ the **{more}** "
            f"source holds up better (difference {abs(med1 - nat1):.2f}), while their i.i.d. AUCs differ by "
            f"{iid_gap:+.2f}."
        )
        pairs.append((med1, nat1))
        if min(nat1 - nat0, med1 - med0) <= -SHORTCUT_DROP:
            learned.append(s)
    wins = sum(m > n for m, n in pairs)
    agrees = wins > len(pairs) / 2
    verdict = Finding(
        "the medical source is the more robust one (Sec. 4.3)", wins / len(pairs) if pairs else float("nan"),
        agrees if pairs else None,
        f"The medical source keeps the higher o.o.d. AUC at $p_{{art}}={p_hi:g}$ in {wins} of {len(pairs)} "
        "experiments: " + ("this **agrees** with the thesis." if agrees else
                           "this **disagrees** with the thesis, which finds the medical source the more robust one."),
    )
    caveat = Finding(
        "a shortcut was learned", float(len(learned)), None,
        f" A shortcut was learned (o.o.d. AUC falling by at least {SHORTCUT_DROP:g} for a pre-trained source) in: "
        f"{', '.join(learned) or 'none of the experiments'}; where none was, the comparison is within run-to-run "
        "noise.",
    )
    return lines, verdict, caveat


def random_init_diagnosis(change: float, recall: float, flat: float = SHORTCUT_DROP,
                          no_recall: float = 0.1) -> str:
    """What random initialisation's o.o.d. curve means (Sec. 4.3): the thesis's class-imbalance artifact
    (flat, recall of positives near 0), insensitivity (flat, recall above 0), or a learned / absent shortcut.

    Parameters
    ----------
    change : float
        Mean o.o.d. AUC at the highest minus at the lowest p_art.
    recall : float
        Mean o.o.d. recall of positives (threshold 0.5).
    """
    if abs(change) < flat:
        return "flat, recall near 0 (the imbalance artifact)" if recall < no_recall else \
            "flat with non-zero recall (insensitive)"
    return f"falls by {-change:.2f} (takes the shortcut)" if change < 0 else f"rises by {change:.2f} (no shortcut)"


def noise_findings(drop: pd.DataFrame) -> list[Finding]:
    """Fig. 4.4 against Sec. 4.3, from the o.o.d. AUC change between the lowest and highest p_art.

    Parameters
    ----------
    drop : DataFrame
        Index (modality, contrast), columns ``natural`` and ``medical``: o.o.d. AUC change per source;
        contrasts ``'noise vs no noise'`` and ``'high vs low noise'``.

    Returns
    -------
    list of Finding
        X-ray noise makes both sources fall alike; the medical source drops less under CT projection noise;
        high vs low noise is the milder shortcut; and, when no source lost :data:`SHORTCUT_DROP`, a caveat
        (``agrees`` None).
    """
    nv = drop.xs("noise vs no noise", level="contrast")
    hl = drop.xs("high vs low noise", level="contrast")
    out = []
    if "X-ray" in nv.index:
        gap = abs(nv.loc["X-ray", "natural"] - nv.loc["X-ray", "medical"])
        both = max(nv.loc["X-ray", "natural"], nv.loc["X-ray", "medical"]) <= -SHORTCUT_DROP
        agrees = bool(gap < SHORTCUT_DROP and both)
        out.append(Finding("X-ray noise makes both sources fall alike", float(gap), agrees,
                           f"X-ray noise makes both sources fall alike (changes differ by {gap:.2f}): "
                           + ("agrees" if agrees else "disagrees")))
    if "CT" in nv.index:
        margin = float(nv.loc["CT", "medical"] - nv.loc["CT", "natural"])
        out.append(Finding("the medical source drops less under CT projection noise", margin, margin > 0,
                           "the medical source drops less under CT projection noise: "
                           + ("agrees" if margin > 0 else "disagrees")))
    ratio = float(hl.abs().to_numpy().mean() / nv.abs().to_numpy().mean())
    out.append(Finding("high vs low noise is the milder shortcut", ratio, ratio < 1,
                       "high vs low noise is the milder shortcut: " + ("agrees" if ratio < 1 else "disagrees")))
    if drop.to_numpy().min() > -SHORTCUT_DROP:
        out.append(Finding("a noise shortcut was learned", float(drop.to_numpy().min()), None,
                           f"but no source lost {SHORTCUT_DROP:g} o.o.d. AUC to any noise confounder here, so the "
                           "noise shortcut was not learned at this scale and these comparisons are within "
                           "run-to-run noise"))
    return out
