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
from cfct.experiments.jobs import Job, pretrain_jobs
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


def chapter_sources(cfg: ChapterConfig) -> list[str]:
    """Every source spec the chapter's settings fine-tune."""
    settings = chapter_settings(cfg.targets, cfg.confounders, sex_target=cfg.sex_target,
                                noise_target=cfg.noise_target, ct_target=cfg.ct_target)
    specs = []
    for st in settings:
        roles = sources_for(st.target, cfg.arch, cfg.natural_source, cfg.medical_source)
        specs += [roles[r] for r in st.roles]
    return specs


def jobs(cfg: ChapterConfig) -> list[Job]:
    """The chapter's stage-0 jobs: pre-training of every source its settings fine-tune.

    The sweep's fine-tunes (:func:`cfct.experiments.robustness.sweep`) run in the notebook.
    """
    return pretrain_jobs(chapter_sources(cfg), cfg.profile)
