"""Jobs: the unit a sweep is made of, so that any executor (a loop here, submitit on a cluster) can compute a
chapter's cached runs and the notebook then renders from the results store without recomputing.

A :class:`Job` names one run of the results store (its ``kind`` and its full ``config``, whose hash is the run's
key) and carries how to compute it. :func:`run_job` computes a job whose run is missing (through
:meth:`cfct.results.Store.cached`: idempotent, locked, resumable from its ``.partial`` folder).
:func:`chapter_jobs` lists the jobs of a chapter for its (validated) parameters in stage order: a job of stage
``s`` may read the runs of stages below ``s`` (pre-training of sources before fine-tuning).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cfct import chapters, results, sources, train
from cfct.config import Profile
from cfct.errors import ConfigError, IncompatibleError


@dataclasses.dataclass(frozen=True)
class Job:
    """One run of the results store and how to compute it.

    Attributes
    ----------
    kind : str
        Results-store kind (namespace), e.g. ``'pretrain'``, ``'finetune'``.
    config : mapping
        The run's full configuration; the store key is ``results.config_hash(config)``.
    stage : int
        Jobs of stage ``s`` may read the runs of stages ``< s``.
    compute : callable, optional
        ``compute(store) -> results.Run``: computes the run into ``store`` (a picklable module-level function
        or ``functools.partial`` of one, so that a cluster executor can ship it). Not part of equality.
    """

    kind: str
    config: Mapping[str, Any]
    stage: int = 0
    compute: Callable[[results.Store], results.Run] | None = dataclasses.field(default=None, compare=False,
                                                                               repr=False)

    @property
    def key(self) -> str:
        """The run's key in the store: :func:`cfct.results.config_hash` of :attr:`config`."""
        return results.config_hash(self.config)


def run_job(job: Job, store: results.Store | None = None) -> results.Run:
    """The job's run, computed first if the store does not hold it yet.

    Raises
    ------
    ConfigError
        The run is missing and the job has no ``compute``.
    IncompatibleError
        ``compute`` produced a different run than the job names (a planning bug: the job's config must be the
        one the computation stores).
    """
    store = store if store is not None else results.default_store()
    run = store.get(job.kind, job.config)
    if run is not None:
        return run
    if job.compute is None:
        raise ConfigError(f"job {job.kind}/{job.key} is not in the store and has no compute function")
    run = job.compute(store)
    if (run.kind, run.key) != (job.kind, job.key):
        raise IncompatibleError(f"job {job.kind}/{job.key} computed the run {run.kind}/{run.key} instead")
    return run


def unique(jobs: Iterable[Job]) -> list[Job]:
    """Jobs in stage order, each (kind, key) once (the first one kept)."""
    seen, out = set(), []
    for job in sorted(jobs, key=lambda j: j.stage):
        if (job.kind, job.key) not in seen:
            seen.add((job.kind, job.key))
            out.append(job)
    return out


def _pretrain(arch: str, dataset: str, settings: Mapping[str, Any], store: results.Store) -> results.Run:
    return train.pretrain(arch, dataset, store=store, progress=False, **settings)


def pretrain_job(spec: str, profile: Profile | str | None, *, seed: int = train.SOURCE_SEED,
                 stage: int = 0) -> Job | None:
    """The pre-training job of a ``pretrained:`` source (None for other kinds), with the settings
    :func:`cfct.train.finetune` uses for it (the pinned source seed)."""
    src = sources.parse_spec(spec)
    if src.kind != "pretrained":
        return None
    settings = sources.pretrain_settings(src.arg, profile, seed=seed)
    config = sources.pretrain_config(src.arch, src.arg, **settings)
    return Job("pretrain", config, stage, functools.partial(_pretrain, src.arch, src.arg, settings))


def pretrain_jobs(specs: Iterable[str], profile: Profile | str | None) -> list[Job]:
    """Stage-0 jobs of every ``pretrained:`` source among ``specs``."""
    return unique(job for spec in specs if (job := pretrain_job(spec, profile)) is not None)


def chapter_jobs(chapter: str | int, params: Mapping[str, Any] | None = None) -> list[Job]:
    """Every store run the chapter computes with these parameters, in stage order.

    Parameters
    ----------
    chapter : str or int
        Chapter id or number.
    params : mapping, optional
        Chapter parameters (validated by :func:`cfct.chapters.resolve`; missing ones take the profile's values).
    """
    cfg = chapters.resolve(str(chapter), **dict(params or {}))
    # Each experiment module defines jobs(cfg); imported by name so that it may itself use Job (no cycle).
    module = importlib.import_module(f"cfct.experiments.ch{chapters.get_chapter(cfg.chapter).number}")
    return unique(module.jobs(cfg))
