"""The unit a sweep is made of: one store run (kind + full config), its stage, and how to compute it.

PROVISIONAL: written by the "cluster" helper (issue 14) so that :mod:`cfct.cluster` and ``cfct sweep`` can be
built and tested before the "arch" helper's refactor (issue 9) lands; it is to be replaced by arch's
``cfct/experiments/jobs.py`` at merge. It implements the shared contract (:class:`Job` with ``kind``,
``config``, ``stage``, ``key``; :func:`run_job`; :func:`chapter_jobs`) for two sweeps through the current
``cfct.train`` / ``cfct.transfer`` / ``cfct.transferability`` code:

- Chapter 3: the pre-training of each ``pretrained:`` source (stage 0) and the 3.5.1 fine-tuning matrix,
  targets x folds x sources x freeze strategies (stage 1);
- Chapter 6: the pre-training of each candidate source (stage 0) and the 6.4.2 hyper-parameter grid of
  fine-tunes, targets x sources x grid configurations (stage 1).

A job's ``config`` is exactly the store key the notebook's own call computes, so a sweep fills the store the
notebook then reads without recomputing. ``recipe`` (not part of the contract, not compared) holds what
:func:`run_job` needs to rebuild the inputs (a fingerprint of the data is not the data).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cfct import config as config_
from cfct import results, train, transfer, zoo
from cfct import transferability as tr
from cfct.chapters import get_chapter
from cfct.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Job:
    """One store run of a sweep.

    Attributes
    ----------
    kind : str
        :class:`cfct.results.Store` kind (namespace), e.g. ``'finetune'``.
    config : mapping
        The full configuration; the store key is ``results.config_hash(config)``.
    stage : int
        A job of stage ``s`` may read results of stages ``< s`` (pre-training before fine-tuning).
    recipe : mapping
        How :func:`run_job` rebuilds the inputs (provisional; not compared, not part of the key).
    """

    kind: str
    config: Mapping[str, Any]
    stage: int = 0
    recipe: Mapping[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        """The store key, ``results.config_hash(config)``."""
        return results.config_hash(self.config)

    @property
    def label(self) -> str:
        """A short readable description for reports."""
        return str(self.recipe.get("label", f"{self.kind}/{self.key}"))


def _pretrain_job(spec: str, profile: str) -> Job | None:
    """Stage-0 job of a ``pretrained:`` source (None for other kinds: nothing to pre-train)."""
    src = zoo.parse_spec(spec)
    if src.kind != "pretrained":
        return None
    kwargs = zoo.pretrain_settings(src.arg, profile=profile, seed=train.SOURCE_SEED)
    key = train.pretrain_config(src.arch, src.arg, **{"lr": train.PRETRAIN_LR, **kwargs})
    return Job("pretrain", key, 0, {"call": "pretrain", "arch": src.arch, "dataset": src.arg, "kwargs": kwargs,
                                    "label": f"pretrain {spec}"})


def _finetune_job(spec: str, splits: tuple, cfg: train.FinetuneConfig, profile: str, rebuild: dict[str, Any],
                  label: str) -> Job:
    tr_, va, te = splits
    key = train.finetune_config(spec, tr_, va, te, cfg, profile=profile)
    recipe = {"call": "finetune", "spec": spec, "finetune": dataclasses.asdict(cfg), "profile": profile,
              "label": label, **rebuild}
    return Job("finetune", key, 1, recipe)


def _ch3_jobs(cfg: config_.ChapterConfig) -> list[Job]:
    # The same calls as chapters/03_hidden_representations.md (3.5.1), one job per fine-tune.
    profile = cfg.profile.name
    sources = {"natural": cfg.natural_source, "medical": cfg.medical_source, "random init": f"random:{cfg.arch}"}
    base = train.FinetuneConfig(optimizer="adam", lr=cfg.lr, batch_size=cfg.profile.batch_size,
                                max_epochs=cfg.epochs, patience=cfg.patience, monitor="val_loss", augment="ch3",
                                device=cfg.device)
    jobs: list[Job] = []
    for target in cfg.targets:
        split_args = {"target": target, "size": cfg.image_size, "folds": cfg.folds, "seed": cfg.seed,
                      "max_train_images": cfg.max_train_images or None}
        for fold in transfer.target_folds(**split_args):
            for role, template in sources.items():
                spec = transfer.source_for_target(template, target)
                for strategy, freeze in transfer.STRATEGIES.items():
                    if role == "random init" and strategy != "no freeze":
                        continue
                    ft = dataclasses.replace(base, freeze=freeze, seed=cfg.seed + fold.fold)
                    # transfer_matrix passes input_size=size: the same as the images' own side here.
                    jobs.append(_finetune_job(
                        spec, (fold.train, fold.val, fold.test), ft, profile,
                        {"splits": "ch3", "split_args": split_args, "fold": fold.fold},
                        f"{target} fold {fold.fold} {role} ({strategy})"))
    return jobs


def _ch6_jobs(cfg: config_.ChapterConfig) -> list[Job]:
    # The same calls as tr.run_scenario(cfg, "dataset") makes for its ground truth (6.4.2 grid).
    profile = cfg.profile.name
    jobs: list[Job] = []
    for target in cfg.targets:
        sources = tr.expand_sources(cfg.sources, target, cfg.targets, arch=cfg.profile.arch)
        split_args = {"target": target, "size": cfg.image_size, "train_per_class": cfg.train_per_class,
                      "val_per_class": cfg.val_per_class, "seed": cfg.seed}
        splits = tr.target_splits(**split_args)
        grid = tr.hyperparameter_grid(target, cfg.grid_lr, cfg.grid_weight_decay, cfg.grid_momentum,
                                      cfg.grid_batch_size)
        for spec in sources:
            for g in grid:
                ft = ch6_finetune_config(g, epochs=cfg.epochs, patience=cfg.patience, seed=cfg.seed,
                                         device=cfg.device, augment=cfg.augment)
                jobs.append(_finetune_job(spec, splits, ft, profile, {"splits": "ch6", "split_args": split_args},
                                          f"{target} {tr.source_label(spec)} {g}"))
    return jobs


def ch6_finetune_config(g: Mapping[str, Any], *, epochs: int, patience: int, seed: int, device: str,
                        augment: str) -> train.FinetuneConfig:
    """The fine-tuning settings of one 6.4.2 grid point (as :func:`cfct.transferability.ground_truth`)."""
    return train.FinetuneConfig(optimizer="sgd", lr=g["lr"], momentum=g["momentum"], weight_decay=g["weight_decay"],
                                batch_size=g["batch_size"], max_epochs=epochs, patience=patience,
                                monitor="val_auc", select="val_loss", augment=augment, seed=seed, device=device)


_BUILDERS = {3: _ch3_jobs, 6: _ch6_jobs}


def chapter_jobs(chapter: str, params: Mapping[str, Any] | None = None) -> list[Job]:
    """Every store run the chapter's sweep computes with these (validated) parameters, in stage order.

    Provisional coverage: Chapter 3 (3.5.1 matrix) and Chapter 6 (6.4.2 grid), each with its pre-training.

    Raises
    ------
    ConfigError
        Unknown chapter or parameter, or a chapter without a sweep here.
    """
    number = get_chapter(chapter).number
    if number not in _BUILDERS:
        raise ConfigError(f"chapter {chapter!r} has no sweep yet; chapters with one: "
                          f"{', '.join(map(str, _BUILDERS))}")
    cfg = config_.resolve(chapter, **dict(params or {}))
    finetunes = _BUILDERS[number](cfg)
    pretrains: dict[str, Job] = {}
    for job in finetunes:
        pre = _pretrain_job(job.recipe["spec"], cfg.profile.name)
        if pre is not None:
            pretrains.setdefault(pre.key, pre)
    unique = list({job.key: job for job in finetunes}.values())
    return sorted([*pretrains.values(), *unique], key=lambda j: j.stage)


def _splits(recipe: Mapping[str, Any]) -> tuple:
    args = recipe["split_args"]
    if recipe["splits"] == "ch3":
        fold = transfer.target_folds(**args)[recipe["fold"]]
        return fold.train, fold.val, fold.test
    return tr.target_splits(**args)


def run_job(job: Job, store: results.Store | None = None, *, progress: bool = False) -> results.Run:
    """Compute ``job`` if its run is not complete in ``store`` (idempotent), and return the run.

    The computation goes through :meth:`cfct.results.Store.cached`, so it resumes from its ``.partial`` folder
    (the epoch checkpoint of :func:`cfct.train.finetune`) and two processes racing on one key compute once.

    Raises
    ------
    ConfigError
        A job without a recipe this module knows.
    RuntimeError
        The rebuilt computation keys a different run than ``job.config`` (the data or code changed).
    """
    store = store if store is not None else results.default_store()
    done = store.get(job.kind, job.config)
    if done is not None:
        return done
    call = job.recipe.get("call")
    if call == "pretrain":
        run = train.pretrain(job.recipe["arch"], job.recipe["dataset"], store=store, progress=progress,
                             **job.recipe["kwargs"])
    elif call == "finetune":
        tr_, va, te = _splits(job.recipe)
        cfg = train.FinetuneConfig(**job.recipe["finetune"])
        run = train.finetune(job.recipe["spec"], tr_, va, te, cfg, store=store, progress=progress,
                             profile=job.recipe["profile"]).run
    else:
        raise ConfigError(f"job {job.kind}/{job.key} has no recipe run_job knows (call={call!r})")
    if run.key != job.key:
        raise RuntimeError(f"job {job.label}: the rebuilt computation keyed run {run.key}, not {job.key}; "
                           "the data or the code changed since the job list was made")
    return run
