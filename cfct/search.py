"""Hyper-parameter search beyond the 6.4.2 grid: a pruned Optuna study over the same space.

The thesis's ground truth is the full grid (6.4.2: learning rate x weight decay x momentum x the target's
batch sizes of Table 6.1, SGD, early stopping on the validation AUC, the lowest validation loss kept); it stays
the default. :func:`run_search` instead runs, for each (target, source), an Optuna study with the TPE sampler and
median pruning: each trial is one fine-tune of a grid point, its per-epoch validation AUC is reported as the
intermediate value, and a trial whose AUC falls below the median of earlier trials at the same epoch stops.
Trials are ordinary cached fine-tunes (:func:`cfct.train.finetune`), so a trial of a configuration the grid
already ran replays that run's per-epoch validation AUC (fine-tuning is deterministic, so the pruning decision is
the one a live run would meet) and a pruned trial leaves its ``.partial`` checkpoint for a later grid run.

Studies live in a storage several workers share: a file journal by default (Optuna's ``JournalStorage`` with a
file backend, which locks with a symlink or ``open(O_EXCL)`` and works on NFS), or any SQLAlchemy URL
(``sqlite:///...``, ``postgresql://...``) for many nodes.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from cfct import paths, results, train
from cfct.config import ChapterConfig
from cfct.errors import ConfigError
from cfct.experiments import ch6 as tr
from cfct.experiments import jobs
from cfct.experiments.jobs import Job

#: The space of 6.4.2 (batch sizes per target: Table 6.1), as Optuna's categorical choices.
SPACE_KEYS: tuple[str, ...] = ("lr", "weight_decay", "momentum", "batch_size")


def search_space(grid: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """The per-parameter choices of a grid (:func:`cfct.transferability.hyperparameter_grid`), in order."""
    if not grid:
        raise ConfigError("the hyper-parameter grid is empty")
    return {k: list(dict.fromkeys(g[k] for g in grid)) for k in SPACE_KEYS}


def storage(url_or_path: str | os.PathLike | None = None, *, create: bool = False,
            ) -> optuna.storages.BaseStorage | str:
    """Optuna storage: None -> a file journal at ``$CFCT_DATA/optuna/journal.log``; a path -> a file journal
    there; a URL with ``://`` (``sqlite:///study.db``, ``postgresql://...``) -> that SQLAlchemy database.

    ``create=True`` creates a database's schema now: call it once before starting workers, since workers
    creating a fresh schema at the same moment collide (a UNIQUE constraint on ``alembic_version``)."""
    from optuna.storages.journal import JournalFileBackend  # optuna >= 4.0 location

    if url_or_path is not None and "://" in str(url_or_path):
        if create:
            optuna.storages.RDBStorage(str(url_or_path))
        return str(url_or_path)
    path = Path(url_or_path) if url_or_path is not None else paths.data_dir() / "optuna" / "journal.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """A study per (target, source): ``trials`` trials (complete or pruned, summed over workers), TPE seeded by
    ``seed`` + worker index, MedianPruner with ``startup_trials`` unpruned trials and ``warmup_epochs``."""

    trials: int = 20
    startup_trials: int = 3
    warmup_epochs: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("trials", "startup_trials", "warmup_epochs", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "trials" else 0):
                raise ConfigError(f"SearchSettings.{name} must be a non-negative int (trials >= 1); got {value!r}")


def _objective(spec: str, splits: tuple, space: Mapping[str, list], cfg: ChapterConfig, store: results.Store):
    train_set, val, test = splits

    def objective(trial: optuna.Trial) -> float:
        g = {k: trial.suggest_categorical(k, space[k]) for k in SPACE_KEYS}
        ft = tr.grid_config(g, epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed, device=cfg.device,
                           augment=cfg.augment)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        key = train.finetune_config(spec, train_set, val, test, ft, pretrain=cfg.profile)
        done = store.get("finetune", key)
        trial.set_user_attr("replayed", done is not None)
        reported: list[int] = []

        def report(step: int, auc: float) -> None:
            trial.report(auc if np.isfinite(auc) else 0.0, step)
            trial.set_user_attr("epochs", step)
            reported.append(step)
            if trial.should_prune():
                raise optuna.TrialPruned()

        if done is None:
            done = train.finetune(spec, train_set, val, test, ft, store=store, progress=False, pretrain=cfg.profile,
                                  on_epoch_end=lambda row: report(int(row["global_epoch"]), float(row["val_auc"]))
                                  ).run
        if not reported:  # stored before (or by another worker while this one waited on its lock): replay
            history = pd.read_csv(done.file("history.csv"))
            for step, auc in enumerate(history["val_auc"].astype(float), start=1):
                report(step, auc)
        metrics = done.metrics
        trial.set_user_attr("test_auc", float(metrics["test_auc"]))
        trial.set_user_attr("val_loss", float(metrics["val_loss"]))
        value = float(metrics["val_auc"])
        return value if np.isfinite(value) else 0.0

    return objective


def study_name(prefix: str, target: str, spec: str) -> str:
    """The study of one (target, source) pair."""
    return f"{prefix}/{target}/{spec}"


def pretrain_jobs(cfg: ChapterConfig) -> list[Job]:
    """Stage-0 jobs: pre-training of the sources :func:`run_search` fine-tunes (the dataset scenario's)."""
    specs = [spec for target in cfg.targets
             for spec in tr.expand_sources(cfg.sources, target, cfg.targets, arch=cfg.profile.arch)]
    return jobs.pretrain_jobs(specs, cfg.profile)


def run_search(cfg: ChapterConfig, *, sources: Mapping[str, Sequence[str]] | None = None,
               space: Mapping[str, Mapping[str, list]] | None = None,
               settings: SearchSettings | None = None, storage_url: str | os.PathLike | None = None,
               study_prefix: str = "cfct-6.4.2", worker: int = 0, store: results.Store | None = None,
               ) -> dict[tuple[str, str], optuna.Study]:
    """Run (or join) the study of every (target, source) of a Chapter 6 config; returns the studies.

    Several workers (processes, Slurm jobs) may call this with the same storage and prefix: each study stops at
    ``settings.trials`` finished trials in total. ``sources`` / ``space`` per target default to the chapter's
    sources and its 6.4.2 grid.
    """
    settings = settings or SearchSettings()
    store = store or results.default_store()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    backend = storage(storage_url)
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    studies = {}
    for target in cfg.targets:
        specs = (sources or {}).get(target) or tr.expand_sources(cfg.sources, target, cfg.targets,
                                                                  arch=cfg.profile.arch)
        target_space = (space or {}).get(target) or search_space(tr.hyperparameter_grid(
            target, cfg.grid_lr, cfg.grid_weight_decay, cfg.grid_momentum, cfg.grid_batch_size))
        splits = tr.target_splits(target, cfg.image_size, cfg.train_per_class, cfg.val_per_class, seed=cfg.seed)
        for spec in specs:
            study = optuna.create_study(
                study_name=study_name(study_prefix, target, spec), storage=backend, direction="maximize",
                load_if_exists=True, sampler=optuna.samplers.TPESampler(seed=settings.seed + worker),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                                   n_warmup_steps=settings.warmup_epochs))
            left = settings.trials - len(study.get_trials(deepcopy=False, states=finished))
            if left > 0:
                study.optimize(_objective(spec, splits, target_space, cfg, store), n_trials=left,
                               callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=finished)])
            studies[(target, spec)] = study
    return studies


def search_vs_grid(cfg: ChapterConfig, *, targets: Sequence[str] | None = None,
                   sources: Mapping[str, Sequence[str]] | None = None,
                   grid: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                   settings: SearchSettings | None = None, store: results.Store | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """How close the pruned search comes to the grid, and at what share of the runs (one row per target, source).

    The grid is fine-tuned in full (:func:`cfct.transferability.ground_truth`, cached) and its ground truth
    picked by the 6.4.2 rule (lowest validation loss); the search is a fresh in-memory study over the same space
    whose best trial (highest validation AUC) gives its test AUC. ``targets`` default to the chapter's; ``sources``
    and ``grid`` per target to its sources and 6.4.2 grid. Columns: ``grid_runs``, ``grid_epochs``,
    ``grid_test_auc``, ``search_runs`` (distinct configurations trained), ``pruned``, ``search_epochs``,
    ``search_test_auc``, ``auc_gap`` (grid - search), ``run_share`` and ``epoch_share`` (search / grid).
    """
    settings = settings or SearchSettings()
    store = store or results.default_store()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    for target in targets or cfg.targets:
        specs = (sources or {}).get(target) or tr.expand_sources(cfg.sources, target, cfg.targets,
                                                                  arch=cfg.profile.arch)
        target_grid = list((grid or {}).get(target) or tr.hyperparameter_grid(
            target, cfg.grid_lr, cfg.grid_weight_decay, cfg.grid_momentum, cfg.grid_batch_size))
        splits = tr.target_splits(target, cfg.image_size, cfg.train_per_class, cfg.val_per_class, seed=cfg.seed)
        log = tr.ground_truth(specs, *splits, target_grid, epochs=cfg.epochs, patience=cfg.patience, store=store,
                              profile=cfg.profile, seed=cfg.seed, device=cfg.device, augment=cfg.augment,
                              progress=progress)
        truth = tr.select_ground_truth(log)
        for spec in specs:
            study = optuna.create_study(
                direction="maximize", sampler=optuna.samplers.TPESampler(seed=settings.seed),
                pruner=optuna.pruners.MedianPruner(n_startup_trials=settings.startup_trials,
                                                   n_warmup_steps=settings.warmup_epochs))
            study.optimize(_objective(spec, splits, search_space(target_grid), cfg, store),
                           n_trials=settings.trials)
            trials = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                                optuna.trial.TrialState.PRUNED)]
            epochs: dict[tuple, int] = {}
            for t in trials:  # a configuration suggested twice is trained once (the store caches it)
                point = tuple(t.params[k] for k in SPACE_KEYS)
                epochs[point] = max(epochs.get(point, 0), int(t.user_attrs.get("epochs", 0)))
            grid_rows = log[log["source"] == spec]
            best = study.best_trial
            rows.append({
                "target": target, "source": tr.source_label(spec),
                "grid_runs": len(grid_rows), "grid_epochs": int(grid_rows["epochs"].sum()),
                "grid_test_auc": float(truth[spec]),
                "search_runs": len(epochs),
                "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
                "search_epochs": int(sum(epochs.values())),
                "search_test_auc": float(best.user_attrs["test_auc"]),
            })
    out = pd.DataFrame(rows)
    out["auc_gap"] = out["grid_test_auc"] - out["search_test_auc"]
    out["run_share"] = out["search_runs"] / out["grid_runs"]
    out["epoch_share"] = out["search_epochs"] / out["grid_epochs"]
    return out
