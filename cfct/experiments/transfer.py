"""Transfer performance of natural, medical and randomly initialised sources across targets (3.4-3.5.1).

The experiment behind Table 3.2: each source is fine-tuned on each target, in k cross-validation folds
(3.4.3: 80 % train, 5 % validation, 15 % test, patient-disjoint where patient ids exist), without freezing and
with the freeze-then-full strategy of 3.4.2 (train the new head with the backbone frozen, then everything with
the same settings). Every fine-tune is cached, so later sections (layer similarity, prediction similarity)
reuse these runs instead of training again.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cfct import data, results, stats
from cfct.config import Profile
from cfct.errors import ConfigError, unknown_choice
from cfct.experiments.jobs import Job, pretrain_jobs
from cfct.train import FinetuneConfig, FinetuneResult, finetune
from cfct.train import finetune_config as finetune_config_key

# Display name -> cfct.train freeze strategy (3.4.2).
STRATEGIES: dict[str, str] = {"no freeze": "none", "freeze": "freeze_then_full"}


@dataclasses.dataclass(frozen=True)
class Fold:
    """One cross-validation fold of a target: its train, validation and test sets."""

    target: str
    fold: int
    train: data.ImageSet
    val: data.ImageSet
    test: data.ImageSet


def target_name(target: str) -> str:
    """The bare dataset name of a target spec (``'medmnist:breastmnist'`` -> ``'breastmnist'``)."""
    spec = data.parse_target(target)
    return spec.arg.rstrip("/").split("/")[-1] if spec.kind == "csv" else spec.arg


def target_folds(
    target: str,
    *,
    size: int,
    folds: int,
    seed: int = 0,
    max_train_images: int | None = None,
) -> list[Fold]:
    """The k folds of 3.4.3 over all images of a target (its official splits pooled).

    Parameters
    ----------
    target : str
        Target spec (``'breastmnist'``, ``'csv:nih-cxr14-sample'``).
    size : int
        Image size in px.
    folds : int
        Number of folds: disjoint test sets of ~15% each (:func:`cfct.data.cv_splits`), validation 5%,
        group-disjoint when the target has patient ids.
    seed : int
        Seeds the splits and the training-set cap.
    max_train_images : int, optional
        Cap on training images per fold (a seeded stratified subsample), for the small profiles.
    """
    if not isinstance(folds, int) or folds < 1:
        raise ConfigError(f"folds must be a positive int; got {folds!r}")
    pooled = data.load_target(target, "all", size)
    out = []
    for k, (tr, va, te) in enumerate(data.cv_splits(pooled, folds, seed)):
        if max_train_images and len(tr) > max_train_images:
            keep = data.stratified_subsample(pooled.labels[tr], max_train_images, seed + k)
            tr = np.sort(tr[keep])
        out.append(Fold(target, k, pooled.subset(tr), pooled.subset(va), pooled.subset(te)))
    return out


def source_for_target(template: str, target: str) -> str:
    """Fill ``{target}`` in a source spec template (leave-target-out sources depend on the target)."""
    return template.replace("{target}", target_name(target))


@dataclasses.dataclass(frozen=True)
class TransferRun:
    """One fine-tune of the matrix: which source (role and spec), target, fold and strategy, and its result."""

    target: str
    fold: int
    source: str
    spec: str
    strategy: str
    result: FinetuneResult


@dataclasses.dataclass(frozen=True)
class TransferUnit:
    """One planned fine-tune of the matrix (before it runs)."""

    fold: Fold
    source: str
    spec: str
    strategy: str
    config: FinetuneConfig


def transfer_plan(
    targets: Sequence[str],
    sources: Mapping[str, str],
    finetune_config: FinetuneConfig,
    *,
    size: int,
    folds: int,
    seed: int = 0,
    max_train_images: int | None = None,
    strategies: Sequence[str] = ("no freeze", "freeze"),
    single_strategy_sources: Sequence[str] = ("random init",),
) -> list[TransferUnit]:
    """Every fine-tune of :func:`transfer_matrix`, in its order (the arguments it passes on, documented there)."""
    for strategy in strategies:
        if strategy not in STRATEGIES:
            raise unknown_choice("strategy", strategy, STRATEGIES)
    units = []
    for target in targets:
        for fold in target_folds(target, size=size, folds=folds, seed=seed, max_train_images=max_train_images):
            for role, template in sources.items():
                spec = source_for_target(template, target)
                for strategy in strategies:
                    if role in single_strategy_sources and strategy != "no freeze":
                        continue
                    # Horizontal flips: cfct.train turns them off for chest X-ray targets (3.4.1) unless the
                    # config says otherwise.
                    cfg = dataclasses.replace(finetune_config, freeze=STRATEGIES[strategy], seed=seed + fold.fold)
                    units.append(TransferUnit(fold, role, spec, strategy, cfg))
    return units


def transfer_matrix(
    targets: Sequence[str],
    sources: Mapping[str, str],
    finetune_config: FinetuneConfig,
    *,
    profile: Profile | str | None = None,
    store: results.Store | None = None,
    progress: bool = True,
    **options: Any,
) -> list[TransferRun]:
    """Fine-tune every source on every fold of every target, with each strategy (Table 3.2).

    Parameters
    ----------
    targets : sequence of str
        Target specs.
    sources : mapping
        Role (e.g. ``'natural'``) -> source spec; ``{target}`` in a spec is replaced per target.
    finetune_config : FinetuneConfig
        Shared settings; ``freeze`` and ``seed`` (``seed + fold``) are set per run. Pre-trained sources do not
        depend on the fine-tuning seed (cfct.train pins their pre-training seed), so every fold reuses them.
    profile : Profile or str, optional
        Profile whose pre-training settings build ``pretrained:`` sources.
    store : cfct.results.Store, optional
        Results store (default store when None).
    **options
        :func:`transfer_plan`'s keywords: ``size`` and ``folds`` (required), ``seed``, ``max_train_images``,
        ``strategies`` (keys of :data:`STRATEGIES`), ``single_strategy_sources`` (roles fine-tuned only without
        freezing: freezing a random backbone measures nothing; Table 3.2 has no "freeze" column for random
        initialisation).

    Returns
    -------
    list of TransferRun
        One per (target, fold, source, strategy), cached in the results store.
    """
    units = transfer_plan(targets, sources, finetune_config, **options)
    runs = []
    for u in units:
        result = finetune(u.spec, u.fold.train, u.fold.val, u.fold.test, u.config, input_size=options["size"],
                          progress=progress, pretrain=profile, store=store)
        runs.append(TransferRun(u.fold.target, u.fold.fold, u.source, u.spec, u.strategy, result))
    return runs


def _unit_run(index: int, plan: Mapping[str, Any], profile: Profile | str | None,
              store: results.Store) -> results.Run:
    """Job compute of one fine-tune: rebuild the plan (data, folds) and run unit ``index``."""
    u = transfer_plan(**plan)[index]
    return finetune(u.spec, u.fold.train, u.fold.val, u.fold.test, u.config, input_size=plan["size"],
                    progress=False, pretrain=profile, store=store).run


def transfer_jobs(
    targets: Sequence[str],
    sources: Mapping[str, str],
    finetune_config: FinetuneConfig,
    *,
    profile: Profile | str | None = None,
    **options: Any,
) -> list[Job]:
    """The jobs of :func:`transfer_matrix` (same arguments; ``options`` are :func:`transfer_plan`'s keywords):
    pre-training of its sources (stage 0) and its fine-tunes (stage 1)."""
    plan = {"targets": tuple(targets), "sources": dict(sources), "finetune_config": finetune_config, **options}
    size = plan["size"]
    units = transfer_plan(**plan)
    out = pretrain_jobs({u.spec for u in units}, profile)
    for i, u in enumerate(units):
        config = finetune_config_key(u.spec, u.fold.train, u.fold.val, u.fold.test, u.config, input_size=size,
                                     pretrain=profile)
        out.append(Job("finetune", config, 1, functools.partial(_unit_run, i, plan, profile)))
    return out


def matrix_table(runs: Sequence[TransferRun]) -> pd.DataFrame:
    """Tidy table of a transfer matrix: one row per fine-tune with its test AUC and accuracy."""
    return pd.DataFrame(
        [
            {
                "target": r.target,
                "fold": r.fold,
                "source": r.source,
                "strategy": r.strategy,
                "spec": r.spec,
                "test_auc": r.result.metrics["test_auc"],
                "test_acc": r.result.metrics["test_acc"],
                "best_epoch": r.result.metrics.get("best_epoch"),
                "seconds": r.result.metrics.get("seconds"),
            }
            for r in runs
        ]
    )


def summarize_auc(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std test AUC (x100) over folds per target, source and strategy (the layout of Table 3.2)."""
    summary = stats.fold_summary(table, ["test_auc"], ["target", "source", "strategy"])
    out = summary.rename(columns={"mean": "auc_mean", "std": "auc_std", "n": "folds"})
    out = out[["target", "source", "strategy", "auc_mean", "auc_std", "folds"]].copy()
    out[["auc_mean", "auc_std"]] *= 100
    return out


def format_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Table 3.2 layout: targets as rows, (source, strategy) as columns, cells 'mean ± std'."""
    cells = summary.assign(cell=[f"{m:.1f} ± {s:.1f}" for m, s in zip(summary.auc_mean, summary.auc_std.fillna(0))])
    return cells.pivot(index="target", columns=["source", "strategy"], values="cell")
