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
from tqdm.auto import tqdm

from cfct import data, results, sources, stats
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
        "source": source_config(spec, profile=profile, seed=0),
        "train": train.fingerprint(),
        "input_size": int(train.images.shape[1]),
        "fu_batches": fu_batches,
    }


def source_features(spec: str, train: data.ImageSet, *, store: results.Store | None = None,
                    profile: Profile | str | None = None, fu_batches: int = 6,
                    device: str = "cpu") -> results.Run:
    """Penultimate features, source softmax and S_FU of one source on the target training subset (cached).

    Returns the stored :class:`cfct.results.Run`: arrays ``features``, ``probs``; metrics ``fu``,
    ``forward_seconds``, ``fu_seconds``. A ``random:`` source has no head of its own; a seeded random
    10-class head stands in for LEEP.
    """

    store = store or results.default_store()
    src = sources.parse_spec(spec)
    size = int(train.images.shape[1])
    config = source_features_config(spec, train, profile=profile, fu_batches=fu_batches)

    def compute(workdir):
        model = tr_.load_source(
            spec, 10 if src.kind == "random" else None, input_size=size, store=store, profile=profile, seed=0
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
        "source_configs": [source_config(s, profile=profile, seed=0) for s in sources],
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
        res = tr_.finetune(spec, train, val, test, cfg, store=store, progress=False, profile=profile)
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
    return tr_.finetune(spec, train, val, test, ft, store=store, progress=False, profile=cfg.profile).run


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
            for spec in specs:
                key = source_features_config(spec, train, profile=cfg.profile, fu_batches=cfg.fu_batches)
                out.append(Job("ch6-source-features", key, 1, functools.partial(_features_job, target, spec, cfg)))
                for point in grid:
                    ft = grid_config(point, epochs=cfg.epochs, patience=cfg.patience, augment=cfg.augment,
                                     seed=cfg.seed, device=cfg.device)
                    key = tr_.finetune_config(spec, train, val, test, ft, profile=cfg.profile)
                    out.append(Job("finetune", key, 1, functools.partial(_grid_job, target, spec, point, cfg)))
    return out
