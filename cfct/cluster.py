"""Sweeps anywhere: the missing runs of a chapter submitted through submitit, locally or as Slurm job arrays.

A sweep is the list of :class:`cfct.experiments.jobs.Job` a chapter computes (:func:`chapter_jobs`); each job is
one run of the results store, keyed by the hash of its full configuration. :func:`run_sweep` submits, stage by
stage, only the jobs whose run is not complete in the store, waits for them, and reports each one (computed,
already complete, failed with its log path). The store is the single source of truth and ``CFCT_DATA`` on a
shared filesystem the coordination point:

- a run already complete is never resubmitted;
- a job killed or pre-empted mid-run leaves its ``<kind>/<key>.partial/`` folder with the epoch checkpoint;
  resubmitted (by Slurm's requeue on pre-emption or time-out, or by the next ``cfct sweep``) it resumes there;
- two jobs racing on one key compute it once (the store's per-key file lock);
- a failed job is reported with its log path and does not stop the others.

This module relies only on the job contract: ``Job.kind``, ``Job.config``, ``Job.stage``, ``Job.key``,
:func:`run_job` and :func:`chapter_jobs`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import submitit
from tqdm.auto import tqdm

from cfct import chapters, paths, results
from cfct.errors import ConfigError, unknown_choice
from cfct.experiments.jobs import Job, chapter_jobs, run_job

EXECUTORS: tuple[str, ...] = ("local", "slurm")
# Seconds a Slurm job may be absent from squeue without a result file before it counts as lost (killed,
# cancelled, node failure): squeue forgets a job as soon as it ends, a result file appears a moment later.
_LOST_GRACE_S = 5.0


@dataclasses.dataclass(frozen=True)
class ExecutorSettings:
    """Where and how jobs run.

    Parameters
    ----------
    executor : {'local', 'slurm'}
        ``local``: one subprocess per job on this machine, at most ``array_parallelism`` at a time (default 1,
        what the book does). ``slurm``: one Slurm job array per stage.
    slurm_partition : str, optional
        Partition (``--partition``); None: the cluster's default.
    gpus_per_job : int
        GPUs per job (``--gpus-per-node``).
    cpus_per_job : int
        CPUs per job (``--cpus-per-task``).
    mem_gb : float, optional
        Memory per job; None: the partition's default.
    timeout_min : int
        Wall-clock limit of one job; a job that reaches it is requeued and resumes from its checkpoint.
    array_parallelism : int, optional
        Jobs of one stage running at once (Slurm: ``--array=...%N``); None: 1 locally, 256 on Slurm.
    slurm_additional : mapping, optional
        Further ``#SBATCH`` options, e.g. ``{"account": "proj", "qos": "high"}``.
    """

    executor: str = "local"
    slurm_partition: str | None = None
    gpus_per_job: int = 0
    cpus_per_job: int = 1
    mem_gb: float | None = None
    timeout_min: int = 24 * 60
    array_parallelism: int | None = None
    slurm_additional: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise unknown_choice("executor", self.executor, EXECUTORS)
        for name, lowest in (("gpus_per_job", 0), ("cpus_per_job", 1), ("timeout_min", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
                raise ConfigError(f"{name} must be an int >= {lowest}; got {value!r}")
        if self.array_parallelism is not None and (not isinstance(self.array_parallelism, int)
                                                   or self.array_parallelism < 1):
            raise ConfigError(f"array_parallelism must be a positive int; got {self.array_parallelism!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise ConfigError(f"mem_gb must be > 0; got {self.mem_gb!r}")
        if self.executor == "slurm" and shutil.which("sbatch") is None:
            raise ConfigError("--executor slurm needs Slurm's sbatch on the PATH (this machine has none); "
                              "run on a login node of the cluster, or use --executor local")

    @property
    def parallelism(self) -> int:
        return self.array_parallelism or (256 if self.executor == "slurm" else 1)


def make_executor(settings: ExecutorSettings, folder: Path | str) -> submitit.Executor:
    """A submitit executor writing its job files and logs under ``folder`` (``%j`` is the job id)."""
    folder = Path(folder)
    if settings.executor == "local":
        executor: submitit.Executor = submitit.LocalExecutor(folder / "%j")
        executor.update_parameters(timeout_min=settings.timeout_min, gpus_per_node=settings.gpus_per_job,
                                   cpus_per_task=settings.cpus_per_job)
        return executor
    executor = submitit.SlurmExecutor(folder / "%j", max_num_timeout=3)
    params: dict[str, Any] = {"time": settings.timeout_min, "cpus_per_task": settings.cpus_per_job,
                              "array_parallelism": settings.parallelism, "job_name": "cfct-sweep",
                              "signal_delay_s": 90}
    if settings.gpus_per_job:
        params["gpus_per_node"] = settings.gpus_per_job
    if settings.slurm_partition:
        params["partition"] = settings.slurm_partition
    if settings.mem_gb is not None:
        params["mem"] = f"{int(settings.mem_gb * 1024)}M"
    if settings.slurm_additional:
        params["additional_parameters"] = dict(settings.slurm_additional)
    executor.update_parameters(**params)
    return executor


def _partial_started(store: results.Store, job: Job) -> bool:
    """Whether an earlier attempt left work in the run's ``.partial`` folder (beyond its config)."""
    partial = store.root / job.kind / f"{job.key}.partial"
    return partial.is_dir() and any(p.name != "config.json" for p in partial.iterdir())


class Worker(submitit.helpers.Checkpointable):
    """The callable each submitted job runs: :func:`run_job` on the shared store, with timing.

    On pre-emption or time-out submitit calls :meth:`checkpoint`, which requeues the same job; the state to
    resume from is on disk (the run's ``.partial`` folder), so nothing else needs saving.
    """

    def __call__(self, job: Job, store_root: str, submitted: float) -> dict[str, Any]:
        started = time.time()
        store = results.Store(store_root)
        resumed = _partial_started(store, job)
        computed_before = store.get(job.kind, job.config) is not None
        run = run_job(job, store)
        return {"key": job.key, "kind": job.kind, "host": socket.gethostname(), "pid": os.getpid(),
                "submitted": submitted, "started": started, "finished": time.time(), "resumed": resumed,
                "was_complete": computed_before, "path": str(run.path)}

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        return submitit.helpers.DelayedSubmission(Worker(), *args, **kwargs)


@dataclasses.dataclass
class Outcome:
    """What became of one job of a sweep.

    ``state``: ``'complete'`` (already in the store, not submitted), ``'computed'`` (a job ran it),
    ``'failed'`` (``error`` says why, ``log`` is its stderr file).
    """

    job: Job
    state: str
    job_id: str | None = None
    log: Path | None = None
    error: str | None = None
    info: dict[str, Any] | None = None


@dataclasses.dataclass
class SweepReport:
    """Every job of a sweep and what became of it."""

    outcomes: list[Outcome]
    folder: Path
    seconds: float

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    def table(self) -> pd.DataFrame:
        """One row per job: stage, kind, key, state, job id, log, resumed, queue and run seconds."""
        rows = []
        for o in self.outcomes:
            info = o.info or {}
            rows.append({
                "stage": o.job.stage, "kind": o.job.kind, "key": o.job.key,
                "state": o.state, "job_id": o.job_id,
                "resumed": info.get("resumed"),
                "queue_s": info["started"] - info["submitted"] if info else None,
                "run_s": info["finished"] - info["started"] if info else None,
                "log": str(o.log) if o.log else None, "error": o.error,
            })
        return pd.DataFrame(rows)

    def summary(self) -> str:
        counts = pd.Series([o.state for o in self.outcomes], dtype=object).value_counts().to_dict()
        lines = [f"{len(self.outcomes)} jobs in {self.seconds:.1f} s: "
                 + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
                 + f"; job files and logs in {self.folder}"]
        for o in self.failed:
            first = (o.error or "").strip().splitlines()
            lines.append(f"  FAILED {o.job.kind}/{o.job.key}: "
                         f"{first[-1] if first else 'no error message'}\n    log: {o.log}")
        return "\n".join(lines)


def missing(jobs: Sequence[Job], store: results.Store) -> list[Job]:
    """The jobs whose run is not complete in ``store`` (each key once, order kept)."""
    seen: set[str] = set()
    out = []
    for job in jobs:
        if job.key not in seen and store.get(job.kind, job.config) is None:
            seen.add(job.key)
            out.append(job)
    return out


def _queued_slurm_ids() -> set[str] | None:
    """Ids (``123_4`` for array tasks) of every job Slurm still knows; None when squeue cannot answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def _outcome(job: Job, handle: submitit.Job) -> Outcome:
    log = Path(handle.paths.stderr)
    try:
        info = handle.result()
    except Exception as error:  # a failed job is reported, never raised: the others go on
        return Outcome(job, "failed", handle.job_id, log, f"{type(error).__name__}: {error}")
    return Outcome(job, "computed", handle.job_id, log, None, info)


def _lost(job: Job, handle: submitit.Job) -> Outcome:
    return Outcome(job, "failed", handle.job_id, Path(handle.paths.stderr),
                   "the job left the Slurm queue without a result (cancelled, killed, pre-empted without "
                   "requeue, or its node failed); resubmit to resume it from its checkpoint")


def submit(jobs: Sequence[Job], settings: ExecutorSettings, store: results.Store,
           folder: Path | str) -> list[tuple[Job, submitit.Job]]:
    """Submit ``jobs`` (one Slurm job array; locally, the first ``parallelism`` of them) without waiting.

    Locally, :func:`wait` submits the rest as earlier ones finish.
    """
    executor = make_executor(settings, folder)
    now = time.time()
    args = [(job, str(store.root), now) for job in jobs]
    if settings.executor == "slurm":
        handles = executor.map_array(Worker(), *zip(*args)) if jobs else []
        return list(zip(jobs, handles))
    return [(job, executor.submit(Worker(), *a)) for job, a in zip(jobs[: settings.parallelism],
                                                                     args[: settings.parallelism])]


def wait(submitted: list[tuple[Job, submitit.Job]], *, settings: ExecutorSettings, store: results.Store,
         folder: Path | str, queue: Sequence[Job] = (), poll_s: float = 1.0,
         progress: bool = True) -> list[Outcome]:
    """Wait for submitted jobs (and, locally, submit ``queue`` as slots free up); one outcome per job."""
    executor = make_executor(settings, folder) if queue else None
    pending = list(queue)
    running = list(submitted)
    outcomes: list[Outcome] = []
    absent_since: dict[str, float] = {}
    bar = tqdm(total=len(running) + len(pending), desc="sweep", unit="job", disable=not progress)
    while running or pending:
        queued = _queued_slurm_ids() if settings.executor == "slurm" else None
        still = []
        for job, handle in running:
            if handle.done():
                outcomes.append(_outcome(job, handle))
                bar.update()
            elif queued is not None and handle.job_id not in queued:
                first = absent_since.setdefault(handle.job_id, time.monotonic())
                if time.monotonic() - first > _LOST_GRACE_S and not handle.paths.result_pickle.exists():
                    outcomes.append(_lost(job, handle))
                    bar.update()
                else:
                    still.append((job, handle))
            else:
                still.append((job, handle))
        running = still
        while executor is not None and pending and len(running) < settings.parallelism:
            job = pending.pop(0)
            running.append((job, executor.submit(Worker(), job, str(store.root), time.time())))
        if running:
            time.sleep(poll_s)
    bar.close()
    return outcomes


def default_folder(name: str) -> Path:
    """``$CFCT_DATA/sweeps/<name>-<time>``: submitit's job files and logs, on the shared storage."""
    return paths.data_dir() / "sweeps" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_sweep(jobs: Sequence[Job], settings: ExecutorSettings | None = None, *,
              store: results.Store | None = None, folder: Path | str | None = None,
              progress: bool = True) -> SweepReport:
    """Compute every missing run of ``jobs``, stage after stage, through submitit; report each job.

    Parameters
    ----------
    jobs : sequence of Job
        E.g. :func:`chapter_jobs`.
    settings : ExecutorSettings, optional
        Default: local, one job at a time.
    store : Store, optional
        Default: ``$CFCT_DATA/results`` (on shared storage for Slurm).
    folder : path, optional
        submitit's job files and logs (default :func:`default_folder`).

    Returns
    -------
    SweepReport
        Jobs already complete are reported ``complete`` and never submitted; a failed job does not stop the
        others, nor the next stage (whose jobs that need it fail in turn and say so).
    """
    settings = settings or ExecutorSettings()
    store = store or results.default_store()
    folder = Path(folder) if folder is not None else default_folder("sweep")
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    outcomes: list[Outcome] = []
    for stage in sorted({job.stage for job in jobs}):
        stage_jobs = [job for job in jobs if job.stage == stage]
        todo = missing(stage_jobs, store)
        todo_keys = {job.key for job in todo}
        outcomes += [Outcome(job, "complete") for job in stage_jobs if job.key not in todo_keys]
        if not todo:
            continue
        stage_folder = folder / f"stage{stage}"
        submitted = submit(todo, settings, store, stage_folder)
        queue = todo[len(submitted):]
        outcomes += wait(submitted, settings=settings, store=store, folder=stage_folder, queue=queue,
                         progress=progress)
    return SweepReport(outcomes, folder, time.perf_counter() - t0)


def sweep_chapter(chapter: str, params: Mapping[str, Any] | None = None,
                  settings: ExecutorSettings | None = None, *, store: results.Store | None = None,
                  folder: Path | str | None = None, progress: bool = True) -> SweepReport:
    """:func:`run_sweep` of :func:`chapter_jobs` (what ``cfct sweep <chapter>`` runs).

    Planned again after each sweep while new jobs appear: a chapter lists some runs only once the runs they
    depend on are stored (Chapter 5's edited sources are keyed by the hash of their pre-trained weights).
    """
    folder = Path(folder) if folder is not None else default_folder(f"ch{chapter}")
    seen: set[tuple[str, str]] = set()
    outcomes: list[Outcome] = []
    t0, passes = time.perf_counter(), 0
    while True:
        jobs = chapter_jobs(chapter, params)
        new = [job for job in jobs if (job.kind, job.key) not in seen]
        if not new:
            return SweepReport(outcomes, folder, time.perf_counter() - t0)
        seen |= {(job.kind, job.key) for job in jobs}
        report = run_sweep(new, settings, store=store, folder=folder / f"plan{passes}" if passes else folder,
                           progress=progress)
        outcomes += report.outcomes
        passes += 1


class _SearchWorker:
    """One Optuna worker: joins every (target, source) study of a Chapter 6 config (``cfct sweep --search``)."""

    def __call__(self, params: Mapping[str, Any], trials: int, storage_url: str | None, prefix: str, worker: int,
                 store_root: str) -> int:
        from cfct import chapters as chapters_
        from cfct import search  # optuna is imported by this path only

        cfg = chapters_.resolve("6", **params)
        studies = search.run_search(cfg, settings=search.SearchSettings(trials=trials, seed=cfg.seed),
                                    storage_url=storage_url, study_prefix=prefix, worker=worker,
                                    store=results.Store(store_root))
        return len(studies)


def run_search_workers(params: Mapping[str, Any], settings: ExecutorSettings, *, workers: int, trials: int,
                       storage_url: str | None, prefix: str, store: results.Store,
                       folder: Path | str, progress: bool = True) -> list[Outcome]:
    """Start ``workers`` jobs that share the Optuna studies of a Chapter 6 config, and wait for them.

    The pre-training of the sources the search fine-tunes runs first, so the workers do not queue on its lock.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive int; got {workers!r}")
    from cfct import search  # optuna is imported by this path only

    if storage_url is None:
        storage_url = str(paths.data_dir() / "optuna" / "journal.log")
    search.storage(storage_url, create=True)  # a database's schema, once, before the workers race on it
    pre = search.pretrain_jobs(chapters.resolve("6", **params))
    outcomes = run_sweep(pre, settings, store=store, folder=Path(folder) / "pretrain", progress=progress).outcomes
    settings = dataclasses.replace(settings, array_parallelism=max(workers, settings.array_parallelism or 1))
    executor = make_executor(settings, Path(folder) / "search")
    handles = [executor.submit(_SearchWorker(), dict(params), trials, storage_url, prefix, i, str(store.root))
               for i in range(workers)]
    for i, handle in enumerate(handles):
        label = Job("optuna-worker", {"study": prefix, "worker": i}, 1)
        try:
            handle.result()
            outcomes.append(Outcome(label, "computed", handle.job_id, Path(handle.paths.stderr)))
        except Exception as error:  # reported, like a failed sweep job
            outcomes.append(Outcome(label, "failed", handle.job_id, Path(handle.paths.stderr),
                                    f"{type(error).__name__}: {error}"))
    return outcomes


def cmd_sweep(args: Any) -> int:
    """``cfct sweep``: exit code 0 when every job is complete, 1 when some failed (listed with their logs)."""
    from cfct.runner import parse_assignments

    params = parse_assignments(args.param, args.chapter)
    if args.profile:
        params["profile"] = args.profile
    settings = ExecutorSettings(
        executor=args.executor, slurm_partition=args.slurm_partition, gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb, timeout_min=args.timeout_min,
        array_parallelism=args.array_parallelism)
    store = results.default_store()
    folder = Path(args.folder) if args.folder else default_folder(f"ch{args.chapter}")
    if args.search == "optuna":
        from cfct.chapters import get_chapter

        if get_chapter(args.chapter).number != 6:
            raise ConfigError("--search optuna searches the 6.4.2 grid's space: it applies to chapter 6 only")
        outcomes = run_search_workers(params, settings, workers=args.workers, trials=args.trials,
                                      storage_url=args.storage, prefix=args.study, store=store, folder=folder)
        report = SweepReport(outcomes, folder, 0.0)
    else:
        jobs = chapter_jobs(args.chapter, params)
        if args.dry_run:
            todo = {job.key for job in missing(jobs, store)}
            for job in jobs:
                state = "missing" if job.key in todo else "complete"
                print(f"stage {job.stage}  {job.kind}/{job.key}  {state:<8}")
            print(f"{len(jobs)} jobs, {len(todo)} missing; store {store.root}")
            return 0
        report = sweep_chapter(args.chapter, params, settings, store=store, folder=folder)
    print(report.summary())
    return 1 if report.failed else 0
