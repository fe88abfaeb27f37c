"""Chapter 4 experiment: confounded development/test sets, the p_art robustness sweeps of Fig. 4.3/4.4, the
chapter's settings, and the evidence its claims (``claims.registry(4)``) are decided on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from cfct import claims, data, stats, train
from cfct.config import ChapterConfig
from cfct.errors import ConfigError
from cfct.experiments import robustness
from cfct.experiments.jobs import Job
from cfct.shortcuts import (
    CONFOUNDER_LABELS,
    P_ART_LEVELS,
    THESIS_N0,
    Confounder,
    ct_photon_noise,
    get_confounder,
)

#: Source roles compared in Chapter 4, in the order figures use.
SOURCE_ROLES: tuple[str, ...] = ("natural", "medical", "random")


def default_sources(target: str, arch: str = "resnet18") -> dict[str, str]:
    """The offline stand-ins of the thesis's sources for a target: natural (CIFAR-10 for ImageNet), medical
    (every local medical set except the target, ``medical-lto:<target>``, for RadImageNet) and random
    initialisation.

    The medical source is the same architecture pre-trained by cfct (:mod:`cfct.sources`), so the sweeps
    compare like with like; for ``csv:`` targets the leave-target-out set excludes that folder.
    """

    data.parse_target(target)  # a clear error for an unknown target before any spec is built
    return {
        "natural": f"pretrained:{arch}:cifar10",
        "medical": f"pretrained:{arch}:medical-lto:{target}",
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
    scheme: str = "kfold",
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
        Folds (thesis: 5). With ``scheme='kfold'`` each fold is a replicate with its own development draw and a
        test set disjoint (patient- / group-disjoint) from the other folds'; ``'splits'``: train/validation
        splits of one development set sharing one test set (:data:`robustness.FOLD_SCHEMES`).
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
    scheme : str
        How folds differ (above).

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
                            store=store, profile=profile, progress=progress, scheme=scheme)
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
    ct_noise: bool = True,
) -> list[Setting]:
    """The experiments of Figs. 4.3 and 4.4 for the chapter's parameters, in drawing order.

    Fig. 4.3: every X-ray target with every confounder (three sources, 30 % positives), patient sex on
    ``sex_target``, and, as the thesis's LIDC-IDRI panels, the CT target with every confounder (50 %
    positives; random initialisation with the tag only, for Sec. 4.3's balanced-CT remark). Fig. 4.4: the two
    pre-trained sources under noise vs no noise and high vs low noise, on X-ray and CT. ``ct_noise=False``
    leaves out CT noise vs no noise (projection-domain noise that changes no pixel, see
    :func:`ct_noise_changed_fraction`).
    """
    three, two = SOURCE_ROLES, SOURCE_ROLES[:2]
    out = [Setting("4.3", t, c, three, 0.3, "X-ray", "") for t in targets for c in confounders]
    if sex_target:
        out.append(Setting("4.3", sex_target, "sex", three, 0.5, "X-ray"))
    if ct_target:
        out += [Setting("4.3", ct_target, c, three if c == "tag" else two, 0.5, "CT") for c in confounders]
    if noise_target:
        out += [
            Setting("4.4", noise_target, "noise", two, 0.3, "X-ray", "noise vs no noise"),
            Setting("4.4", noise_target, "noise-levels", two, 0.3, "X-ray", "high vs low noise"),
        ]
    if ct_target:
        if ct_noise:
            out.append(Setting("4.4", ct_target, "ct-noise", two, 0.5, "CT", "noise vs no noise"))
        out.append(Setting("4.4", ct_target, "noise", two, 0.5, "CT", "high vs low noise"))
    return out


def ct_noise_changed_fraction(target: str, n0: float, *, size: int, n_images: int = 16, seed: int = 0) -> float:
    """Share of pixels that projection-domain photon noise at ``n0`` changes on the first ``n_images`` images
    of a CT target at ``size`` px (0: the noise is below the images' 8-bit quantisation, the confounder is a
    no-op)."""
    images = robustness.load_pools(target, size)[0].images[:n_images]
    noisy = ct_photon_noise(images, n0, seed=seed)
    return float(np.mean(noisy != images))


def setting_confounder(setting: Setting, ct_n0: float = THESIS_N0) -> Confounder:
    """The confounder a setting runs: the registered one, with CT photon noise at ``ct_n0`` (Chapter 4 follows
    the thesis's N0 = 2e7; the registered ``ct-noise`` default is LoDoPaB-CT's 4096, Chapter 5's level)."""
    if setting.confounder == "ct-noise":
        return get_confounder("ct-noise", n0=float(ct_n0))
    return get_confounder(setting.confounder)


def sources_for(target: str, arch: str, natural: str | None = None, medical: str | None = None) -> dict[str, str]:
    """Source specs per role for one target; ``medical`` may hold ``{target}`` (replaced by the MedMNIST flag
    of a MedMNIST target, by the whole spec, e.g. ``csv:<folder>``, of any other)."""

    out = default_sources(target, arch)
    if natural:
        out["natural"] = natural
    if medical:
        t = data.parse_target(target)
        out["medical"] = medical.replace("{target}", t.arg if t.kind == "medmnist" else target)
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
    ct_n0: float = THESIS_N0,
    store: Any = None,
    profile: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run :func:`robustness_experiment` for every setting (folds as disjoint-test replicates, ``kfold``); one
    tidy table with the setting's labels."""
    frames = []
    for st in settings:
        sources = sources_for(st.target, arch, natural_source, medical_source)
        ft = chapter_finetune_config(st.pos_fraction, lr=lr, epochs=epochs, patience=patience, seed=seed, device=device)
        df = robustness_experiment(
            st.target,
            setting_confounder(st, ct_n0),
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
                                noise_target=cfg.noise_target, ct_target=cfg.ct_target,
                                ct_noise=bool(cfg.ct_target) and ct_noise_changed_fraction(
                                    cfg.ct_target, cfg.ct_n0, size=cfg.image_size) > 0)
    out: list[Job] = []
    for st in settings:
        roles = sources_for(st.target, cfg.arch, cfg.natural_source, cfg.medical_source)
        ft = chapter_finetune_config(st.pos_fraction, lr=cfg.lr, epochs=cfg.epochs, patience=cfg.patience,
                                     seed=cfg.seed, device=cfg.device)
        out += robustness.sweep_jobs(st.target, setting_confounder(st, cfg.ct_n0), {r: roles[r] for r in st.roles},
                                     ft, p_arts=cfg.p_arts, folds=cfg.folds, size=cfg.image_size, n_dev=cfg.n_dev,
                                     n_test=cfg.n_test, pos_fraction=st.pos_fraction, val_fraction=0.15,
                                     seed=cfg.seed, profile=cfg.profile, scheme="kfold")
    return out


# --------------------------------------------------------------------------------------------------
# What a run shows against the thesis (Sec. 4.3): numbers per setting, and the evidence of the registered claims
SHORTCUT_DROP = 0.1
"""A source has learned a shortcut when its o.o.d. AUC falls by at least this much from the lowest to the
highest p_art (a description of the run, not a verdict about the thesis)."""

CONFOUNDED_P_ART = 0.1
"""The levels the thesis's comparisons of sources average over: ``p_art >= 0.1`` (Sec. 4.3, "for p_art >= 0.1")."""


def summary_value(summary: pd.DataFrame, p_art: float, metric: str = "ood_auc", **where: str) -> float:
    """The mean of one summary row (:func:`summarize`) picked by ``p_art``, ``metric`` and column values;
    NaN when absent."""
    mask = (summary["p_art"] == p_art) & (summary["metric"] == metric)
    for column, value in where.items():
        mask &= summary[column] == value
    rows = summary[mask]
    return float(rows["mean"].iloc[0]) if len(rows) else float("nan")


def source_robustness(fig43: pd.DataFrame, p_lo: float, p_hi: float) -> tuple[list[str], list[str]]:
    """Fig. 4.3's numbers per setting: the mean o.o.d. AUC of both pre-trained sources from ``p_lo`` to ``p_hi``
    and their i.i.d. gap, and the settings where a pre-trained source lost at least :data:`SHORTCUT_DROP`.
    (Whether this agrees with the thesis is decided by the claims, :func:`claims_evidence`.)

    Returns
    -------
    lines : list of str
        One Markdown bullet per setting.
    learned : list of str
        Settings where a shortcut was learned.
    """
    lines, learned = [], []
    for s in fig43["setting"].unique():
        nat0, nat1 = (summary_value(fig43, p, setting=s, source="natural") for p in (p_lo, p_hi))
        med0, med1 = (summary_value(fig43, p, setting=s, source="medical") for p in (p_lo, p_hi))
        iid_gap = (summary_value(fig43, p_hi, "iid_auc", setting=s, source="natural")
                   - summary_value(fig43, p_hi, "iid_auc", setting=s, source="medical"))
        lines.append(
            f"* **{s}**: o.o.d. AUC from {nat0:.2f} to {nat1:.2f} (natural) and from {med0:.2f} to {med1:.2f} "
            f"(medical) as $p_{{art}}$ goes from {p_lo:g} to {p_hi:g}; at $p_{{art}}={p_hi:g}$ medical minus "
            f"natural o.o.d. AUC is {med1 - nat1:+.2f}, natural minus medical i.i.d. AUC {iid_gap:+.2f}."
        )
        if min(nat1 - nat0, med1 - med0) <= -SHORTCUT_DROP:
            learned.append(s)
    return lines, learned


# --------------------------------------------------------------------------------------------------
# Claims (cfct/claims_registry.yaml, chapter 4 and ch7.natural-more-vulnerable): replicates are folds
REQUIRED_COLUMNS: tuple[str, ...] = ("figure", "modality", "contrast", "target", "confounder", "source", "p_art",
                                     "fold", "iid_auc", "ood_auc", "best_epoch")


def _rows(table: pd.DataFrame, **where: Any) -> pd.DataFrame:
    mask = np.ones(len(table), dtype=bool)
    for col, value in where.items():
        mask &= (table[col].isin(value) if isinstance(value, (list, tuple, set)) else table[col] == value).to_numpy()
    return table[mask]


def _fold_means(rows: pd.DataFrame, value: str, by: Sequence[str], *, confounded: bool) -> pd.DataFrame:
    """One value per replicate ``by`` and source: the mean over the rows' settings and ``p_art`` levels (only
    ``p_art >= CONFOUNDED_P_ART`` when ``confounded``)."""
    if confounded:
        rows = rows[rows["p_art"] >= CONFOUNDED_P_ART]
    return rows.groupby([*by, "source"], as_index=False)[value].mean()


def _drop(rows: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """o.o.d. AUC at the lowest minus at the highest ``p_art`` per replicate ``by`` and source (column ``drop``);
    a replicate missing either end is an error."""
    lo, hi = rows["p_art"].min(), rows["p_art"].max()
    keys = [*by, "source"]
    a = rows[rows["p_art"] == lo].groupby(keys)["ood_auc"].mean()
    b = rows[rows["p_art"] == hi].groupby(keys)["ood_auc"].mean()
    if set(a.index) != set(b.index):
        raise ConfigError(f"o.o.d. AUC drop: replicates {sorted(set(a.index) ^ set(b.index))} lack p_art {lo:g} "
                          f"or {hi:g}")
    return (a - b).rename("drop").reset_index()


def claims_data(results: pd.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """The replicates of every Chapter 4 claim (and ``ch7.natural-more-vulnerable``) the results can decide.

    A replicate is a fold (``robustness_experiment(scheme='kfold')``: its own development draw and a test set
    disjoint from the other folds'), on one target; values are averaged over ``p_art >= 0.1``
    (:data:`CONFOUNDED_P_ART`) or, for drops, taken between the lowest and highest ``p_art``. Arms are paired by
    ``(target, fold)`` with :func:`cfct.claims.arms_from_table`, never by row order; the correlation claims
    pair ``p_art`` with the AUC of each (setting, fold, ``p_art``) fine-tune. A claim whose setting is not in
    the table is left out (its ledger row says "not run").

    Parameters
    ----------
    results : DataFrame
        :func:`run_settings`'s table (one row per setting, source, ``p_art`` and fold; :data:`REQUIRED_COLUMNS`).

    Returns
    -------
    dict
        Claim id -> the data :func:`cfct.claims.evaluate` takes (``a``/``b``, ``x``/``y`` or ``values``).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise ConfigError(f"claims_data needs columns {missing}; the table has {list(results.columns)}")
    t = results
    fig43 = _rows(t, figure="4.3")
    out: dict[str, dict[str, np.ndarray]] = {}
    pair = ["target", "fold"]

    def paired(rows: pd.DataFrame, value: str, a: str, b: str, *, confounded: bool = True) -> dict[str, np.ndarray]:
        return claims.arms_from_table(_fold_means(rows, value, pair, confounded=confounded), value=value,
                                      arm="source", a=a, b=b, pair_by=pair)

    def has(rows: pd.DataFrame, *sources: str) -> bool:
        return len(rows) > 0 and all((rows["source"] == s).any() for s in sources)

    def corr(rows: pd.DataFrame, value: str) -> dict[str, np.ndarray]:
        rows = rows.sort_values(["target", "confounder", "fold", "p_art"])
        return {"x": rows["p_art"].to_numpy(float), "y": rows[value].to_numpy(float)}

    xtag = _rows(fig43, modality="X-ray", confounder="tag")
    if has(xtag, "natural", "medical"):
        out["ch4.iid-comparable"] = paired(xtag, "iid_auc", "natural", "medical", confounded=False)
        out["ch4.tag-shortcut-ood-drop"] = paired(xtag, "ood_auc", "medical", "natural")
    xray43 = _rows(fig43, modality="X-ray", confounder=["tag", "denoising", "sex"])
    if has(xray43, "natural"):
        nat = _rows(xray43, source="natural")
        out["ch4.ood-falls-with-part"] = corr(nat, "ood_auc")
        out["ch4.iid-rises-with-part"] = corr(nat, "iid_auc")
    if has(xray43, "random"):
        out["ch4.xray-random-stable"] = corr(_rows(xray43, source="random"), "ood_auc")
    for cid, rows in (("ch4.denoise-shortcut-ood-drop", _rows(fig43, modality="X-ray", confounder="denoising")),
                      ("ch4.sex-gap-significant", _rows(fig43, confounder="sex")),
                      ("ch4.ct-tag-ood-drop", _rows(fig43, modality="CT", confounder="tag")),
                      ("ch4.ct-denoise-ood-drop", _rows(fig43, modality="CT", confounder="denoising"))):
        if has(rows, "natural", "medical"):
            out[cid] = paired(rows, "ood_auc", "medical", "natural")
    ct_tag = _rows(fig43, modality="CT", confounder="tag")
    if has(ct_tag, "random", "natural"):
        out["ch4.ct-random-degrades-like-natural"] = claims.arms_from_table(
            _drop(ct_tag, pair), value="drop", arm="source", a="random", b="natural", pair_by=pair)
    xnoise = _rows(t, figure="4.4", modality="X-ray", contrast="noise vs no noise")
    if has(xnoise, "medical"):
        gap = _fold_means(_rows(xnoise, source="medical").assign(gap=lambda d: d["iid_auc"] - d["ood_auc"]), "gap",
                          pair, confounded=True)
        out["ch4.xray-noise-relied-on"] = {"values": gap.sort_values(pair)["gap"].to_numpy(float)}
    if has(xnoise, "natural", "medical"):
        out["ch4.xray-noise-similar-reliance"] = paired(xnoise, "ood_auc", "medical", "natural")
    ct_noise = _rows(t, figure="4.4", modality="CT", contrast="noise vs no noise")
    if has(ct_noise, "natural", "medical") and "ch4.ct-noise-medical-robust" in _registered():
        out["ch4.ct-noise-medical-robust"] = paired(ct_noise, "ood_auc", "medical", "natural")
    fig44 = _rows(t, figure="4.4")
    both = [m for m in fig44["modality"].unique()
            if set(_rows(fig44, modality=m)["contrast"]) >= {"noise vs no noise", "high vs low noise"}]
    if both:
        drops = _drop(_rows(fig44, modality=both), ["modality", "contrast", "fold"])
        per = drops.groupby(["modality", "contrast", "fold"], as_index=False)["drop"].mean()  # mean of sources
        out["ch4.two-level-noise-smaller-drop"] = claims.arms_from_table(
            per, value="drop", arm="contrast", a="noise vs no noise", b="high vs low noise",
            pair_by=["modality", "fold"])
    if has(t, "natural", "medical"):
        epochs = _rows(t, source=["natural", "medical"])
        out["ch4.medical-trains-longer"] = paired(epochs, "best_epoch", "medical", "natural", confounded=False)
        out["ch7.natural-more-vulnerable"] = paired(epochs, "ood_auc", "medical", "natural")
    return out


def _registered() -> set[str]:
    return {c.id for c in claims.registry(4)} | {c.id for c in claims.registry(7)}


def claims_evidence(
    results: pd.DataFrame, *, profile: str = "", sources: str | Sequence[str] = "",
    link: str = "04_shortcut_transfer.html", min_replicates: int = 0,
) -> dict[str, claims.Evidence]:
    """Evaluate every claim :func:`claims_data` can build with its registered rule (:func:`cfct.claims.evaluate`).

    A difference claim on fewer than three folds is still evaluated (the rule answers "too few replicates"); a
    correlation claim with fewer than :data:`cfct.claims.MIN_REPLICATES` folds per ``p_art`` level is left out
    (its points would be settings, not replicates), and its ledger row says "not run".

    Parameters
    ----------
    results : DataFrame
        :func:`run_settings`'s table.
    profile, sources, link : str
        Recorded with each Evidence.
    min_replicates : int
        Raise :class:`~cfct.errors.ConfigError` when a claim rests on fewer replicates per arm (the quick
        profile's >= 3 folds); 0: no check.

    Returns
    -------
    dict
        Claim id -> Evidence, in registry order.
    """
    built = claims_data(results)
    folds = int(results["fold"].nunique())
    out: dict[str, claims.Evidence] = {}
    for claim in [*claims.registry(4), *claims.registry(7)]:
        if claim.id not in built:
            continue
        data_ = built[claim.id]
        n = replicates_per_arm(data_, folds)
        if min_replicates and n < min_replicates:
            raise ConfigError(f"claim {claim.id!r} rests on {n} replicate(s) per arm; needs {min_replicates}")
        if claim.rule == "correlation" and n < claims.MIN_REPLICATES:
            continue
        out[claim.id] = claims.evaluate(claim, data_, profile=profile, sources=sources, link=link)
    return out


def replicates_per_arm(data_: Mapping[str, np.ndarray], folds: int) -> int:
    """Replicates behind a claim's smallest arm: pairs or values; for a correlation (``x``, ``y``), the folds
    behind each ``p_art`` level (``folds``), or fewer where a level has fewer points."""
    if "x" in data_:
        _, counts = np.unique(np.asarray(data_["x"]), return_counts=True)
        return min(int(folds), int(counts.min())) if len(counts) else 0
    return min(len(np.asarray(v)) for v in data_.values())


def evidence_sentence(ev: claims.Evidence) -> str:
    """One Markdown sentence from a claim's Evidence: the thesis's words, the verdict, estimate, 95 % CI, p and n
    (no verdict is typed: it is ``ev.verdict``)."""
    c = claims.get_claim(ev.claim_id)
    if c.rule == "correlation":
        what = f"Kendall's tau between {c.arms[0]} and {c.arms[1]}" if c.arms else "tau"
    elif c.rule == "greater_than":
        what = f"mean {c.arms[0] if c.arms else 'value'} (against {c.threshold:g})"
    else:
        what = f"{c.arms[0]} minus {c.arms[1]}" if c.arms else "difference"
    ci = (f" [95 % CI {ev.ci_low:+.3f}, {ev.ci_high:+.3f}]"
          if np.isfinite(ev.ci_low) and np.isfinite(ev.ci_high) else "")
    est = f"{ev.estimate:+.3f}" if np.isfinite(ev.estimate) else "not computed"
    p = f", p = {ev.p_value:.2g}" if np.isfinite(ev.p_value) else ""
    return (f"*\"{c.quote}\"* ({c.figure or 'Sec. ' + c.section}; `{c.id}`): **{ev.verdict}**. {what}: {est}{ci}"
            f"{p}, n = {'/'.join(map(str, ev.n))}. {ev.reason}")
