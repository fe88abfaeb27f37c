"""Chapter 6 experiment: live source selection (6.4): candidate sources, their features and scores, the
fine-tuned ground truth and the ranks.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from tqdm.auto import tqdm

from cfct import claims, data, published, results, sources, stats, thesis
from cfct import train as tr_
from cfct.config import ChapterConfig, Profile
from cfct.experiments.jobs import Job, pretrain_jobs
from cfct.sources import source_config
from cfct.transferability import (
    METHODS,
    THESIS_SETTINGS,
    feature_update_score,
    score_sources,
    source_outputs,
    transferability_score,
)

# selection
#: Batch sizes of the 6.4.2 grid per target (thesis Table 6.1).
TABLE_6_1_BATCH_SIZES: dict[str, tuple[int, int]] = {
    "pathmnist": (128, 256),
    "dermamnist": (128, 256),
    "octmnist": (64, 128),
    "pneumoniamnist": (32, 64),
    "retinamnist": (64, 128),
    "breastmnist": (32, 64),
    "bloodmnist": (128, 256),
    "tissuemnist": (128, 256),
    "organamnist": (128, 256),
    "organcmnist": (128, 256),
    "organsmnist": (128, 256),
}


_SCORE_VERSION = 2
#: Source kinds without a classification head of their own (LEEP gets a seeded random head).
_HEADLESS = ("random", "ct")


def hyperparameter_grid(target: str, lrs: Sequence[float], weight_decays: Sequence[float],
                        momenta: Sequence[float], batch_sizes: Sequence[int]) -> list[dict]:
    """The SGD grid of 6.4.2 for one target; a batch size of 0 stands for the target's Table 6.1 pair."""
    flag = target.split(":")[-1].split("@")[0]
    sizes: list[int] = []
    for b in batch_sizes:
        if int(b) == 0:
            if flag not in TABLE_6_1_BATCH_SIZES:
                raise ValueError(f"Table 6.1 has no batch sizes for {target!r}; give explicit batch sizes")
            sizes.extend(TABLE_6_1_BATCH_SIZES[flag])
        else:
            sizes.append(int(b))
    return [
        {"lr": float(lr), "weight_decay": float(wd), "momentum": float(m), "batch_size": int(bs)}
        for lr in lrs
        for wd in weight_decays
        for m in momenta
        for bs in dict.fromkeys(sizes)
    ]


_OTHER_FALLBACK = ("pneumoniamnist", "breastmnist")


def expand_sources(templates: Sequence[str], target: str, targets: Sequence[str], *,
                   arch: str = "resnet18") -> list[str]:
    """Source specs for one target: ``{target}`` -> the target, ``{other}`` -> the next target of ``targets``
    (cyclically; with a single target, pneumoniamnist or breastmnist, the two flags of the offline mirror),
    ``{arch}`` -> ``arch``. Each is validated."""

    flags = [t.split(":")[-1] for t in targets]
    flag = target.split(":")[-1]
    others = [f for f in flags if f != flag]
    if others:
        other = others[(flags.index(flag) if flag in flags else 0) % len(others)]
    else:  # a single target: the other MedMNIST dataset of the offline mirror
        other = next(f for f in _OTHER_FALLBACK if f != flag)
    out = []
    for t in templates:
        spec = t.format(target=flag, other=other, arch=arch)
        sources.parse_spec(spec)
        out.append(spec)
    return list(dict.fromkeys(out))


def source_label(spec: str) -> str:
    """A short readable name of a source spec for tables and figures."""
    parts = spec.split(":")
    if parts[0] == "random":
        return "random init"
    if parts[0] == "imagenet":
        return f"ImageNet ({parts[1]})"
    if parts[0] == "ct":
        return f"CT ({parts[1]})"
    if parts[0] == "pretrained":
        data = ":".join(parts[2:])
        if data.startswith("medmnist-lto:"):
            return f"MedMNIST without {data.split(':', 1)[1]} (LTO)"
        return data.replace("medmnist:", "").replace("csv:", "")
    return spec


def target_splits(target: str, size: int, train_per_class: int, val_per_class: int,
                  seed: int = 0) -> tuple[data.ImageSet, data.ImageSet, data.ImageSet]:
    """The target subsample of 6.4.1: n per class from the official train and val splits, the full test
    set."""

    train = data.subsample_per_class(data.load_target(target, "train", size), train_per_class, seed=seed)
    val = data.subsample_per_class(data.load_target(target, "val", size), val_per_class, seed=seed)
    test = data.load_target(target, "test", size)
    return train, val, test


def source_features_config(spec: str, train: data.ImageSet, *, profile: Profile | str | None = None,
                           fu_batches: int = 6) -> dict[str, Any]:
    """The cache key (kind ``ch6-source-features``) of :func:`source_features`."""
    return {
        "version": _SCORE_VERSION,
        "source": source_config(spec, pretrain=profile, seed=0),
        "train": train.fingerprint(),
        "input_size": int(train.images.shape[1]),
        "fu_batches": fu_batches,
    }


def source_features(spec: str, train: data.ImageSet, *, store: results.Store | None = None,
                    profile: Profile | str | None = None, fu_batches: int = 6,
                    device: str = "cpu") -> results.Run:
    """Penultimate features, source softmax and S_FU of one source on the target training subset (cached).

    Returns the stored :class:`cfct.results.Run`: arrays ``features``, ``probs``; metrics ``fu``,
    ``forward_seconds``, ``fu_seconds``. A ``random:`` source and Astra's CT encoder (``ct:``) have no head of
    their own; a seeded random 10-class head stands in for LEEP (so LEEP does not describe those sources).
    """

    store = store or results.default_store()
    src = sources.parse_spec(spec)
    size = int(train.images.shape[1])
    config = source_features_config(spec, train, profile=profile, fu_batches=fu_batches)

    def compute(workdir):
        model = tr_.load_source(
            spec, 10 if src.kind in _HEADLESS else None, input_size=size, store=store, pretrain=profile, seed=0
        )
        t0 = time.perf_counter()
        feats, probs = source_outputs(model, train, device=device)
        t1 = time.perf_counter()
        fu = feature_update_score(model, train, train.labels, n_batches=fu_batches, device=device)
        t2 = time.perf_counter()
        results.save_arrays(workdir, features=feats, probs=probs)
        return {"fu": fu, "forward_seconds": t1 - t0, "fu_seconds": t2 - t1}

    return store.cached("ch6-source-features", config, compute)


def score_target(
    sources: Sequence[str],
    train: data.ImageSet,
    *,
    store: results.Store | None = None,
    profile: Profile | str | None = None,
    scenario: str = "dataset",
    settings: Mapping[str, dict] | None = None,
    fu_batches: int = 6,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """All methods for every candidate source of one target (cached).

    Returns
    -------
    scores : DataFrame (sources x METHODS + lp, fu)
    seconds : dict, seconds per step (``forward``, ``fu`` and each metric), summed over sources
    """

    store = store or results.default_store()
    feats, probs, fu, seconds = {}, {}, {}, {"forward": 0.0, "fu": 0.0}
    for spec in tqdm(list(sources), desc=f"features + S_FU ({train.name})", disable=not progress):
        run = source_features(spec, train, store=store, profile=profile, fu_batches=fu_batches, device=device)
        feats[spec], probs[spec], fu[spec] = run.array("features"), run.array("probs"), run.metrics["fu"]
        seconds["forward"] += run.metrics["forward_seconds"]
        seconds["fu"] += run.metrics["fu_seconds"]
    config = {
        "version": _SCORE_VERSION,
        "sources": list(sources),
        "train": train.fingerprint(),
        "scenario": scenario,
        "fu_batches": fu_batches,
        "settings": dict(THESIS_SETTINGS if settings is None else settings),
        "source_configs": [source_config(s, pretrain=profile, seed=0) for s in sources],
    }

    def compute(workdir):
        table, secs = score_sources(feats, probs, fu, train.labels, settings=settings, scenario=scenario)
        table.to_csv(workdir / "scores.csv")
        return {"seconds": secs}

    run = store.cached("ch6-scores", config, compute)
    table = pd.read_csv(run.file("scores.csv"), index_col=0)
    seconds.update(run.metrics["seconds"])
    return table, seconds


def grid_config(point: Mapping[str, Any], *, epochs: int, patience: int, augment: str, seed: int,
                device: str) -> tr_.FinetuneConfig:
    """Fine-tuning of one point of the 6.4.2 grid: SGD, early stopping on validation AUC, the lowest
    validation loss kept."""
    return tr_.FinetuneConfig(optimizer="sgd", lr=point["lr"], momentum=point["momentum"],
                              weight_decay=point["weight_decay"], batch_size=point["batch_size"], max_epochs=epochs,
                              patience=patience, monitor="val_auc", select="val_loss", augment=augment, seed=seed,
                              device=device)


def ground_truth(
    sources: Sequence[str],
    train: data.ImageSet,
    val: data.ImageSet,
    test: data.ImageSet,
    grid: Sequence[Mapping[str, Any]],
    *,
    epochs: int,
    patience: int,
    store: results.Store | None = None,
    profile: Profile | str | None = None,
    seed: int = 0,
    device: str = "auto",
    augment: str = "ch6",
    progress: bool = True,
) -> pd.DataFrame:
    """Fine-tune every source with every grid configuration (SGD, 6.4.2) and return one row per run.

    Early stopping watches the validation AUC and the epoch with the lowest validation loss is kept, as in
    6.4.2; :func:`select_ground_truth` then picks, per source, the run with the lowest validation loss (the
    rule of the thesis's published analysis). Every run is cached by :func:`cfct.train.finetune`.
    ``augment`` is the :class:`cfct.data.BatchAugment` policy (``"ch6"``: the 6.4.2 augmentation).
    """

    rows = []
    jobs = [(s, g) for s in sources for g in grid]
    for spec, g in tqdm(jobs, desc=f"fine-tuning grid ({train.name})", disable=not progress):
        cfg = grid_config(g, epochs=epochs, patience=patience, augment=augment, seed=seed, device=device)
        res = tr_.finetune(spec, train, val, test, cfg, store=store, progress=False, pretrain=profile)
        m = res.metrics
        rows.append(
            {
                "source": spec,
                **g,
                "val_loss": m["val_loss"],
                "val_auc": m["val_auc"],
                "test_auc": m["test_auc"],
                "epochs": m["epochs"],
                "seconds": m["seconds"],
                "diverged": m.get("diverged", False),
            }
        )
    return pd.DataFrame(rows)


def select_ground_truth(runs: pd.DataFrame) -> pd.Series:
    """Per source, the test AUC of the grid run with the lowest validation loss (6.4.2)."""
    ok = runs[np.isfinite(runs["val_loss"].astype(float))]
    best = ok.loc[ok.groupby("source")["val_loss"].idxmin()]
    return best.set_index("source")["test_auc"].astype(float)


@dataclasses.dataclass
class LiveResult:
    """Outcome of :func:`run_scenario` for a list of targets.

    Attributes
    ----------
    scores : dict target -> DataFrame (sources x METHODS + lp, fu)
    runs : dict target -> DataFrame, one row per fine-tuning run of the grid
    truth : DataFrame, sources x targets, ground-truth test AUC (6.4.2 selection)
    taus : DataFrame, targets x METHODS, weighted Kendall tau
    scoring_seconds, finetune_seconds : dict target -> seconds (all sources of the target)
    """

    scenario: str
    scores: dict[str, pd.DataFrame]
    runs: dict[str, pd.DataFrame]
    truth: pd.DataFrame
    taus: pd.DataFrame
    scoring_seconds: dict[str, float]
    finetune_seconds: dict[str, float]

    def method_tables(self) -> dict[str, pd.DataFrame]:
        """Scores as ``method -> DataFrame (sources x targets)`` (the layout of the published files)."""
        methods = list(METHODS) + ["lp", "fu"]
        return {m: pd.DataFrame({t: s[m] for t, s in self.scores.items()}) for m in methods}

    def ablation_taus(self) -> pd.DataFrame:
        """tau_w of S_LP alone, S_FU alone and S per target (Figure 6.6), both terms normalised (Eq. 6.5)."""

        rows = {}
        for t, s in self.scores.items():
            truth = self.truth.loc[s.index, t].to_numpy(float)
            row = {}
            for terms, name in (("lp", "lp"), ("fu", "fu"), ("both", "ours")):
                sc = transferability_score(
                    s["lp"].to_dict(), s["fu"].to_dict(), scenario=self.scenario, terms=terms
                )
                row[name] = stats.weighted_tau(sc.to_numpy(float), truth)
            rows[t] = row
        return pd.DataFrame(rows).T

    def cost(self) -> pd.DataFrame:
        """Seconds of scoring all sources vs fine-tuning all of them with the grid, per target."""
        df = pd.DataFrame({"scoring_s": self.scoring_seconds, "finetuning_s": self.finetune_seconds})
        df["ratio"] = df["finetuning_s"] / df["scoring_s"]
        return df


def run_scenario(cfg: ChapterConfig, scenario: str = "dataset", *, store: results.Store | None = None,
                 progress: bool = True) -> LiveResult:
    """Source selection on real data for every target of a Chapter 6 config (section 6.4, at profile scale).

    ``scenario="dataset"``: the candidates are ``cfg.sources`` (one architecture, many source datasets);
    ``"model"``: ``cfg.model_source`` for each of ``cfg.archs`` (one source dataset, many architectures), with
    the thesis's reversals (Table 6.3, Eq. 6.8). For each target: the 6.4.1 subsample, all methods on every
    source, and the ground truth from the 6.4.2 grid.
    """

    if scenario not in ("dataset", "model"):
        raise ValueError(f"unknown scenario {scenario!r}; valid choices: dataset, model")
    device = str(tr_.resolve_device(cfg.device))
    profile = cfg.profile
    scores, runs, truth, taus, s_sec, f_sec = {}, {}, {}, {}, {}, {}
    for target in cfg.targets:
        sources = scenario_sources(cfg, target, scenario)
        train, val, test = target_splits(
            target, cfg.image_size, cfg.train_per_class, cfg.val_per_class, seed=cfg.seed
        )
        table, seconds = score_target(
            sources,
            train,
            store=store,
            profile=profile,
            scenario=scenario,
            fu_batches=cfg.fu_batches,
            device=device,
            progress=progress,
        )
        grid = hyperparameter_grid(
            target, cfg.grid_lr, cfg.grid_weight_decay, cfg.grid_momentum, cfg.grid_batch_size
        )
        log = ground_truth(
            sources,
            train,
            val,
            test,
            grid,
            epochs=cfg.epochs,
            patience=cfg.patience,
            store=store,
            profile=profile,
            seed=cfg.seed,
            device=cfg.device,
            augment=cfg.augment,
            progress=progress,
        )
        best = select_ground_truth(log)
        scores[target], runs[target], truth[target] = table, log, best
        taus[target] = {
            m: stats.weighted_tau(table.loc[best.index, m].to_numpy(float), best.to_numpy(float))
            for m in METHODS
        }
        s_sec[target] = float(sum(seconds.values()))
        f_sec[target] = float(log["seconds"].sum())
    return LiveResult(scenario, scores, runs, pd.DataFrame(truth), pd.DataFrame(taus).T, s_sec, f_sec)


def scenario_sources(cfg: ChapterConfig, target: str, scenario: str) -> list[str]:
    """The candidate sources of one target in one scenario (as :func:`run_scenario` draws them)."""
    if scenario == "dataset":
        return expand_sources(cfg.sources, target, cfg.targets, arch=cfg.profile.arch)
    return [cfg.model_source.format(arch=a) for a in cfg.archs]


def _features_job(target: str, spec: str, cfg: ChapterConfig, store: results.Store) -> results.Run:
    train, _, _ = target_splits(target, cfg.image_size, cfg.train_per_class, cfg.val_per_class, seed=cfg.seed)
    return source_features(spec, train, store=store, profile=cfg.profile, fu_batches=cfg.fu_batches,
                           device=str(tr_.resolve_device(cfg.device)))


def _grid_job(target: str, spec: str, point: Mapping[str, Any], cfg: ChapterConfig,
              store: results.Store) -> results.Run:
    train, val, test = target_splits(target, cfg.image_size, cfg.train_per_class, cfg.val_per_class, seed=cfg.seed)
    ft = grid_config(point, epochs=cfg.epochs, patience=cfg.patience, augment=cfg.augment, seed=cfg.seed,
                     device=cfg.device)
    return tr_.finetune(spec, train, val, test, ft, store=store, progress=False, pretrain=cfg.profile).run


def jobs(cfg: ChapterConfig) -> list[Job]:
    """The chapter's store runs for both scenarios: pre-training of every candidate source (stage 0), then its
    features and S_FU on each target and the fine-tunes of the 6.4.2 grid (stage 1).

    The scores (cheap, from the stored features) are computed by the notebook.
    """
    out: list[Job] = []
    for target in cfg.targets:
        train, val, test = target_splits(target, cfg.image_size, cfg.train_per_class, cfg.val_per_class,
                                         seed=cfg.seed)
        grid = hyperparameter_grid(target, cfg.grid_lr, cfg.grid_weight_decay, cfg.grid_momentum,
                                   cfg.grid_batch_size)
        for scenario in ("dataset", "model"):
            specs = scenario_sources(cfg, target, scenario)
            out += pretrain_jobs(specs, cfg.profile)
            zoo_only = [z for z in zoo_candidates(cfg, target, scenario)[0] if z not in specs]
            for spec in zoo_only:  # released sources scored only (features and S_FU, no fine-tuning)
                key = source_features_config(spec, train, profile=cfg.profile, fu_batches=cfg.fu_batches)
                out.append(Job("ch6-source-features", key, 1, functools.partial(_features_job, target, spec, cfg)))
            for spec in specs:
                key = source_features_config(spec, train, profile=cfg.profile, fu_batches=cfg.fu_batches)
                out.append(Job("ch6-source-features", key, 1, functools.partial(_features_job, target, spec, cfg)))
                for point in grid:
                    ft = grid_config(point, epochs=cfg.epochs, patience=cfg.patience, augment=cfg.augment,
                                     seed=cfg.seed, device=cfg.device)
                    key = tr_.finetune_config(spec, train, val, test, ft, pretrain=cfg.profile)
                    out.append(Job("finetune", key, 1, functools.partial(_grid_job, target, spec, point, cfg)))
    # a source scored in both scenarios (a released Lite) has one features run
    return list({(j.kind, j.key): j for j in out}.values())


# ------------------------------------------------------------------------------------------------ text checks
def _shorts() -> dict[str, str]:
    """MedMNIST flag / source / method -> the thesis's printed name (Blood, RadImageNet, NLEEP ...)."""
    return {v: k for k, v in thesis.NAMES_6.items()}


def _show(value: Any, decimals: int | None = None, *, extra: int = 0) -> str:
    """A printed or recomputed value as text: names in the thesis's words, numbers with ``decimals + extra``
    digits (ranks and counts as integers where they are)."""
    if isinstance(value, tuple):
        names = _shorts()
        return ", ".join(names.get(v, v) for v in value) if value else "none"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return str(int(value))
    v = float(value)
    if np.isnan(v):
        return "-"
    if decimals is None:
        return f"{v:g}"
    return f"{v:.{decimals + extra}f}"


def compare_value(printed: Any, recomputed: Any, decimals: int | None = None, compare: str = "equal") -> bool:
    """Whether a number (or names) printed in the thesis agrees with its recomputation.

    Parameters
    ----------
    printed, recomputed : float, int, bool or tuple of str
        The printed value and the value recomputed from the published files (NaN: "-" / undefined).
    decimals : int or None
        Digits printed after the point: a number agrees when it rounds to the printed one (|difference| at most
        half a unit of the last printed digit); None: counts and statements must be equal.
    compare : {'equal', 'subset'}
        Names: the same set, or every printed name in the recomputed set.

    Examples
    --------
    >>> compare_value(0.40, 0.3049, 2), compare_value(0.30, 0.3049, 2), compare_value(-0.0, -0.003, 2)
    (False, True, True)
    >>> compare_value(("a", "b"), ("b", "a")), compare_value(("a",), ("a", "b"), compare="subset")
    (True, True)
    """
    if compare not in ("equal", "subset"):
        raise ValueError(f"unknown compare {compare!r}; valid choices: equal, subset")
    if isinstance(printed, tuple) or isinstance(recomputed, tuple):
        if not (isinstance(printed, tuple) and isinstance(recomputed, tuple)):
            raise TypeError(f"names compare with names only: {printed!r} vs {recomputed!r}")
        return set(printed) <= set(recomputed) if compare == "subset" else set(printed) == set(recomputed)
    if isinstance(printed, bool | np.bool_) or isinstance(recomputed, bool | np.bool_):
        return bool(printed) == bool(recomputed)
    p, r = float(printed), float(recomputed)
    if np.isnan(p) or np.isnan(r):
        return bool(np.isnan(p) and np.isnan(r))
    if decimals is None:
        return p == r
    return abs(r - p) <= 0.5 * 10.0 ** -decimals + 1e-9


_CHECK_COLUMNS = ["check", "where", "item", "printed", "recomputed", "match", "note"]


def _mismatch_note(printed: Any, value: Any, decimals: int | None) -> str:
    """Why a printed number and its recomputation may differ: a last-digit rounding or a truncation."""
    if decimals is None or isinstance(printed, tuple | bool | np.bool_):
        return ""
    p, v = float(printed), float(value)
    if not (np.isfinite(p) and np.isfinite(v)) or compare_value(p, v, decimals):
        return ""
    if abs(np.trunc(v * 10**decimals) / 10**decimals - p) < 1e-9:
        return f"agrees if {v:.10g} is truncated instead of rounded"
    if abs(v - p) <= 10.0 ** -decimals + 1e-9:
        return "off by one in the last digit"
    return ""


def compare_table(check: str, printed: pd.DataFrame, recomputed: pd.DataFrame, *,
                  decimals: int | None) -> pd.DataFrame:
    """Every cell of a printed table against its recomputation (same row and column labels).

    Returns one row per printed cell: ``check`` (the table), ``where`` (row), ``item`` (column), both values as
    text, ``match`` and a ``note`` (``off by one in the last digit`` for a rounding-sized disagreement).

    Raises
    ------
    ValueError
        A printed row or column has no recomputed counterpart (the labels name it).
    """
    missing_rows = [r for r in printed.index if r not in recomputed.index]
    missing_cols = [c for c in printed.columns if c not in recomputed.columns]
    if missing_rows or missing_cols:
        raise ValueError(f"{check}: no recomputed value for rows {missing_rows} / columns {missing_cols}")
    names = _shorts()
    rows = []
    for r in printed.index:
        for c in printed.columns:
            p, v = float(printed.loc[r, c]), float(recomputed.loc[r, c])
            ok = compare_value(p, v, decimals)
            note = _mismatch_note(p, v, decimals)
            rows.append({"check": check, "where": names.get(r, r), "item": names.get(c, c),
                         "printed": _show(p, decimals), "recomputed": _show(v, decimals, extra=2), "match": ok,
                         "note": note})
    return pd.DataFrame(rows, columns=_CHECK_COLUMNS)


def compare_text(printed: Sequence[thesis.Printed], values: Mapping[str, Any]) -> pd.DataFrame:
    """Each number or list of names of the thesis's text against its recomputation (same table as
    :func:`compare_table`; ``where`` is the section, ``item`` the thesis's words).

    Raises
    ------
    KeyError
        A printed item has no recomputed value (the message names the key).
    """
    rows = []
    for p in printed:
        if p.key not in values:
            raise KeyError(f"no recomputed value for the printed {p.key!r} ({p.section}: {p.text})")
        v = values[p.key]
        ok = compare_value(p.value, v, p.decimals, p.compare)
        note = "the text names some of these" if p.compare == "subset" else _mismatch_note(p.value, v, p.decimals)
        rows.append({"check": f"text of {p.section}", "where": p.section, "item": p.text,
                     "printed": _show(p.value, p.decimals), "recomputed": _show(v, p.decimals, extra=2),
                     "match": ok, "note": note})
    return pd.DataFrame(rows, columns=_CHECK_COLUMNS)


def recomputed_tables() -> dict[str, pd.DataFrame]:
    """Tables 6.2-6.5 recomputed from the published files, labelled as the thesis's tables (x 100 for AUCs)."""
    taus_d, taus_m = published.tau_table("dataset"), published.tau_table("model")
    ranks_d, ranks_m = stats.rank_methods(taus_d), stats.rank_methods(taus_m)
    return {
        "Table 6.2 tau_w": taus_d, "Table 6.2 ranks": ranks_d,
        "Table 6.2 average rank": stats.average_ranks(ranks_d).to_frame("Avg. rank").T,
        "Table 6.3 tau_w": taus_m, "Table 6.3 ranks": ranks_m,
        "Table 6.3 average rank": stats.average_ranks(ranks_m).to_frame("Avg. rank").T,
        "Table 6.4 AUC x 100": 100 * published.aucs("dataset")[list(published.TARGETS)],
        "Table 6.5 AUC x 100": 100 * published.aucs("model")[list(published.TARGETS)],
    }


def printed_tables() -> dict[str, tuple[pd.DataFrame, int | None]]:
    """Tables 6.2-6.5 as printed (:mod:`cfct.thesis`), with the digits printed after the point (None: ranks)."""
    t2, r2, a2 = thesis.table_6_2()
    t3, r3, a3 = thesis.table_6_3()
    return {
        "Table 6.2 tau_w": (t2, 2), "Table 6.2 ranks": (r2, None), "Table 6.2 average rank": (a2.to_frame(
            "Avg. rank").T, 2),
        "Table 6.3 tau_w": (t3, 2), "Table 6.3 ranks": (r3, None), "Table 6.3 average rank": (a3.to_frame(
            "Avg. rank").T, 2),
        "Table 6.4 AUC x 100": (thesis.table_6_4(), 2), "Table 6.5 AUC x 100": (thesis.table_6_5(), 2),
    }


def text_checks(printed: Mapping[str, tuple[pd.DataFrame, int | None]] | None = None,
                text: Sequence[thesis.Printed] | None = None, *,
                recomputed: Mapping[str, pd.DataFrame] | None = None,
                values: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Every number printed in Tables 6.2-6.5 and in the text of 6.5 against the published files, cell by cell.

    Parameters
    ----------
    printed, text : optional
        The printed tables (:func:`printed_tables`) and text numbers (:data:`cfct.thesis.TEXT_6_5`); a test
        passes altered copies to see a mismatch reported.
    recomputed, values : optional
        The recomputations (:func:`recomputed_tables`, :func:`cfct.published.text_6_5_values`).

    Returns
    -------
    DataFrame, one row per printed number: check, where, item, printed, recomputed, match, note.
    """
    printed = printed_tables() if printed is None else printed
    recomputed = recomputed_tables() if recomputed is None else recomputed
    parts = [compare_table(name, table, recomputed[name], decimals=digits)
             for name, (table, digits) in printed.items()]
    parts.append(compare_text(thesis.TEXT_6_5 if text is None else text,
                              published.text_6_5_values() if values is None else values))
    return pd.concat(parts, ignore_index=True)


def text_check_summary(checks: pd.DataFrame) -> pd.DataFrame:
    """Per check (table or section): numbers compared, agreeing, differing."""
    g = checks.groupby("check", sort=False)["match"]
    return pd.DataFrame({"compared": g.size(), "agree": g.sum().astype(int),
                         "differ": (g.size() - g.sum()).astype(int)})


def text_check_sentences(checks: pd.DataFrame) -> list[str]:
    """One Markdown sentence per check, generated from the comparisons: all agree, or which differ."""
    out = []
    for check, rows in checks.groupby("check", sort=False):
        bad = rows[~rows["match"]]
        if bad.empty:
            out.append(f"**{check}**: all {len(rows)} printed numbers agree with the published files.")
            continue
        items = "; ".join(
            f"{r.where} / {r.item}: printed {r.printed}, recomputed {r.recomputed}" + (f" ({r.note})" if r.note else "")
            for r in bad.itertuples())
        out.append(f"**{check}**: {len(bad)} of {len(rows)} printed numbers differ from the published files "
                   f"({items}).")
    return out


# ------------------------------------------------------------------------------------------------------ claims
@dataclasses.dataclass
class BenchmarkTables:
    """The published benchmark as the Chapter 6 claims read it (all tables from the authors' files).

    Attributes
    ----------
    auc : DataFrame, sources x targets
        Ground-truth test AUC (0-1) of the dataset scenario (Table 6.4); NaN for a source on itself.
    sizes : DataFrame, sources x targets
        Training-set size of each source for each target (leave-target-out MedMNIST leaves the target out).
    taus_dataset, taus_model : DataFrame, targets x methods
        tau_w of Tables 6.2 and 6.3 (the model scenario with the thesis's 1 - S reversals).
    taus_model_raw : DataFrame, targets x methods
        tau_w of the model scenario before the reversals.
    ablation : DataFrame, targets x (lp, fu, ours)
        tau_w of S_LP alone, S_FU alone and S (Figure 6.6).
    """

    auc: pd.DataFrame
    sizes: pd.DataFrame
    taus_dataset: pd.DataFrame
    taus_model: pd.DataFrame
    taus_model_raw: pd.DataFrame
    ablation: pd.DataFrame


def source_sizes(sources: Sequence[str], targets: Sequence[str]) -> pd.DataFrame:
    """Training-set size of each published source for each target (sources x targets).

    Sizes are :data:`cfct.published.SOURCE_SIZES`; leave-target-out MedMNIST (``medmnist``) is the union of the
    12 MedMNIST training sets minus the target's, as 6.4.1 describes it.
    """
    unknown = [s for s in sources if s not in published.SOURCE_SIZES]
    if unknown:
        raise ValueError(f"no training-set size for sources {unknown}; known: {sorted(published.SOURCE_SIZES)}")
    out = pd.DataFrame(index=pd.Index(list(sources), name="source"), columns=list(targets), dtype=float)
    for t in targets:
        for s in sources:
            size = published.SOURCE_SIZES[s]
            if s == "medmnist":
                size -= published.SOURCE_SIZES.get(t, 0)
            out.loc[s, t] = float(size)
    return out


def published_tables() -> BenchmarkTables:
    """:class:`BenchmarkTables` from the published files (:mod:`cfct.published`)."""
    auc = published.aucs("dataset")[list(published.TARGETS)]
    return BenchmarkTables(
        auc=auc, sizes=source_sizes(list(auc.index), list(auc.columns)),
        taus_dataset=published.tau_table("dataset"), taus_model=published.tau_table("model"),
        taus_model_raw=published.tau_table("model", transformed=False), ablation=published.ablation_taus())


def size_taus(auc: pd.DataFrame, sizes: pd.DataFrame) -> pd.Series:
    """Per target, Kendall's tau-b between the sources' training-set size and their AUC (Figure 6.4's question).

    Sources without an AUC on a target (the target's own dataset) are left out of that target's tau.
    """
    out = {}
    for t in auc.columns:
        keep = auc[t].notna() & sizes.loc[auc.index, t].notna()
        x, y = sizes.loc[auc.index[keep], t].to_numpy(float), auc.loc[keep, t].to_numpy(float)
        out[t] = float(sps.kendalltau(x, y).statistic) if keep.sum() >= 2 else float("nan")
    return pd.Series(out, name="tau")


#: The sources the claim data read from the published files, for the ledger.
PUBLISHED_SOURCES = f"published files of {published.REPO} @ {published.COMMIT[:7]}"


def claims_data(tables: BenchmarkTables, *, live_taus: pd.DataFrame | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The replicates of every Chapter 6 claim, by claim id.

    Parameters
    ----------
    tables : BenchmarkTables
        The published benchmark: each target is one replicate (11 targets).
    live_taus : DataFrame, optional
        This run's tau_w, one row per (target, seed) with a column ``ours`` (dataset scenario).

    Returns
    -------
    dict claim id -> data for :func:`cfct.claims.evaluate`. The live claim is left out without a live run (it
    then appears as ``not run`` in the ledger).

    Notes
    -----
    SFDA's tau_w is undefined on the binary targets (it gives every source 1.0); it counts as 0 in the paired
    comparisons, as the registry declares (the thesis ranks it last there).
    """
    d, m, raw, abl = tables.taus_dataset, tables.taus_model, tables.taus_model_raw, tables.ablation
    auc = tables.auc
    pair = [t for t in auc.columns if np.isfinite(auc.loc["breastmnist", t]) and np.isfinite(auc.loc["organsmnist", t])]
    out: dict[str, dict[str, np.ndarray]] = {
        "ch6.size-not-predictive": {"values": size_taus(auc, tables.sizes).dropna().to_numpy()},
        "ch6.breast-beats-organs": {"a": auc.loc["breastmnist", pair].to_numpy(float),
                                    "b": auc.loc["organsmnist", pair].to_numpy(float)},
        "ch6.lto-beats-radimagenet": {"a": auc.loc["medmnist"].to_numpy(float),
                                      "b": auc.loc["radimagenet"].to_numpy(float)},
        "ch6.ours-positive-all-targets": {"values": d["ours"].to_numpy(float)},
        "ch6.leep-positive-all-targets": {"values": d["leep"].to_numpy(float)},
        "ch6.nleep-positive-all-targets": {"values": d["nleep"].to_numpy(float)},
        "ch6.ours-beats-nleep": {"a": d["ours"].to_numpy(float), "b": d["nleep"].to_numpy(float)},
        "ch6.ours-beats-sfda-dataset": {"a": d["ours"].to_numpy(float), "b": d["sfda"].fillna(0.0).to_numpy(float)},
        "ch6.ours-beats-ncti-dataset": {"a": d["ours"].to_numpy(float), "b": d["ncti"].to_numpy(float)},
        "ch6.ours-beats-sfda-model": {"a": m["ours"].to_numpy(float), "b": m["sfda"].fillna(0.0).to_numpy(float)},
        "ch6.ours-beats-ncti-model": {"a": m["ours"].to_numpy(float), "b": m["ncti"].to_numpy(float)},
        "ch6.feature-update-helps": {"a": abl["ours"].to_numpy(float), "b": abl["lp"].to_numpy(float)},
        "ch6.slp-beats-logme": {"a": abl["lp"].to_numpy(float), "b": d.loc[abl.index, "logme"].to_numpy(float)},
        "ch6.simple-beat-sophisticated": {
            "a": d[["leep", "nleep"]].mean(axis=1).to_numpy(float),
            "b": pd.concat([d["ncti"], d["sfda"].fillna(0.0)], axis=1).mean(axis=1).to_numpy(float)},
        "ch6.model-scores-negative": {
            "values": raw[["parc", "ncti", "leep", "nleep", "ours"]].mean(axis=1).to_numpy(float)},
    }
    if live_taus is not None and len(live_taus):
        out["ch6.live-ours-positive"] = {"values": live_taus["ours"].dropna().to_numpy(float)}
    return out


#: Where on the page each claim's evidence is shown (anchors of the chapter's sections).
_LINKS = {
    "ch6.size-not-predictive": "transfer-performance", "ch6.breast-beats-organs": "transfer-performance",
    "ch6.lto-beats-radimagenet": "transfer-performance", "ch6.feature-update-helps": "figures-6-5-and-6-6",
    "ch6.slp-beats-logme": "figures-6-5-and-6-6", "ch6.live-ours-positive": "live-source-selection-on-real-data",
}


def claims_evidence(data: Mapping[str, Mapping[str, Any]], *, profile: str = "",
                    live_sources: str = "") -> list[claims.Evidence]:
    """Evaluate every claim of :func:`claims_data` with its declared rule (:func:`cfct.claims.evaluate`).

    Returns the evidence in registry order. ``live_sources``
    describes the live run (targets, sources) for the ledger; published-file claims name the files.
    """
    order = [c.id for c in claims.registry(6)]
    unknown = sorted(set(data) - set(order))
    if unknown:
        raise ValueError(f"no Chapter 6 claim {unknown}; valid: {order}")
    out = []
    for cid in order:
        if cid not in data:
            continue
        live = cid == "ch6.live-ours-positive"
        anchor = _LINKS.get(cid, "claims-ledger-chapter-6")
        out.append(claims.evaluate(cid, data[cid], profile=profile,
                                   sources=live_sources if live else PUBLISHED_SOURCES,
                                   link=f"06_transferability.html#{anchor}"))
    return out


def verdict_sentence(ev: claims.Evidence, unit: str = "") -> str:
    """One Markdown sentence from an :class:`~cfct.claims.Evidence`: the thesis's words, the verdict with the
    estimate, its interval and n, and the reason (nothing typed about whether it agrees)."""
    c = claims.get_claim(ev.claim_id)
    est = f"{ev.estimate:+.3f}{unit}" if np.isfinite(ev.estimate) else "n/a"
    ci = f" [95% CI {ev.ci_low:+.3f}, {ev.ci_high:+.3f}]" if np.isfinite(ev.ci_low) else ""
    n = "/".join(map(str, ev.n))
    what = {"paired_difference": f"mean difference ({' - '.join(c.arms)})", "unpaired_difference":
            f"difference of means ({' - '.join(c.arms)})", "greater_than": f"mean ({', '.join(c.arms)})",
            "correlation": f"{c.method} correlation"}[c.rule]
    return f"*\"{c.quote}\"* ({c.section}): **{ev.verdict}**: {what} {est}{ci}, n = {n}; {ev.reason}."


def live_tables(results_: Mapping[int, LiveResult]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Tidy (target, seed) tau_w rows and (target, seed, source) ground-truth rows of live runs by seed."""
    taus, truth = [], []
    for seed, res in results_.items():
        taus.append(res.taus.rename_axis("target").reset_index().assign(seed=seed))
        t = res.truth.rename_axis("source").reset_index().melt(id_vars="source", var_name="target",
                                                               value_name="test_auc")
        truth.append(t.dropna(subset=["test_auc"]).assign(seed=seed))
    return pd.concat(taus, ignore_index=True), pd.concat(truth, ignore_index=True)


# ------------------------------------------------------------------------------------------ released zoo
def zoo_candidates(cfg: ChapterConfig, target: str, scenario: str) -> tuple[list[str], list[str]]:
    """The candidates of the released-zoo comparison on one target: (all candidates, those fine-tuned).

    Dataset scenario: the live candidates (fine-tuned for the ground truth) plus ``cfg.zoo``; model scenario:
    ``imagenet:<arch>`` for each of ``cfg.zoo_archs``. A zoo source is fine-tuned only when it is also one of
    the live candidates (the ``paper`` profile lists them in ``sources`` / ``archs``).
    """
    live = scenario_sources(cfg, target, scenario)
    extra = list(cfg.zoo) if scenario == "dataset" else [f"imagenet:{a}" for a in cfg.zoo_archs]
    for spec in extra:
        sources.parse_spec(spec)
    if scenario == "dataset":
        return list(dict.fromkeys(live + extra)), live
    return extra, [s for s in extra if s in live]


def zoo_scores(cfg: ChapterConfig, scenario: str, live: LiveResult | None = None, *,
               store: results.Store | None = None, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Every method's score of the released sources beside the live candidates, per target (cached features).

    Returns target -> DataFrame (candidates x METHODS + lp, fu) with ``test_auc`` (the ground truth where the
    candidate was fine-tuned, from ``live``; NaN where it was only scored) and ``seconds`` (features + S_FU).
    Scores are normalised over the whole candidate set, as the method would be used to choose among them.
    """
    if scenario not in ("dataset", "model"):
        raise ValueError(f"unknown scenario {scenario!r}; valid choices: dataset, model")
    store = store or results.default_store()
    device = str(tr_.resolve_device(cfg.device))
    out = {}
    for target in cfg.targets:
        specs, _ = zoo_candidates(cfg, target, scenario)
        if not specs:
            continue
        train, _, _ = target_splits(target, cfg.image_size, cfg.train_per_class, cfg.val_per_class, seed=cfg.seed)
        table, _ = score_target(specs, train, store=store, profile=cfg.profile, scenario=scenario,
                                fu_batches=cfg.fu_batches, device=device, progress=progress)
        secs = {}
        for spec in specs:
            m = source_features(spec, train, store=store, profile=cfg.profile, fu_batches=cfg.fu_batches,
                                device=device).metrics
            secs[spec] = m["forward_seconds"] + m["fu_seconds"]
        truth = live.truth[target] if live is not None and target in live.truth else pd.Series(dtype=float)
        table["test_auc"] = [float(truth.get(s, np.nan)) for s in table.index]
        table["seconds"] = pd.Series(secs)
        out[target] = table
    return out


def zoo_picks(table: pd.DataFrame, zoo_specs: Sequence[str]) -> pd.DataFrame:
    """Per method: the candidate it ranks first, and the rank (1 = best) it gives each released source."""
    rows = {}
    for m in METHODS:
        col = table[m].astype(float)
        ranks = col.rank(ascending=False, method="min")
        rows[m] = {"pick": col.idxmax() if col.notna().any() else None,
                   **{f"rank of {z}": ranks.get(z, np.nan) for z in zoo_specs if z in table.index}}
    return pd.DataFrame(rows).T
