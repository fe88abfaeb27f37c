"""cfct.experiments.jobs: the Job contract, and a chapter whose jobs ran renders without computing anything."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import pytest

from cfct import results, sources
from cfct.errors import ConfigError, IncompatibleError
from cfct.experiments import ch3, transfer
from cfct.experiments.jobs import Job, chapter_jobs, run_job


def _write(value: int, store: results.Store, kind: str = "toy") -> results.Run:
    return store.cached(kind, {"value": value}, lambda workdir: {"double": 2 * value})


def test_job_contract(tmp_path: Path) -> None:
    store = results.Store(tmp_path)
    job = Job("toy", {"value": 3}, compute=functools.partial(_write, 3))
    assert job.key == results.config_hash({"value": 3})
    assert job == Job("toy", {"value": 3})  # compute is not part of equality
    run = run_job(job, store)
    assert (run.kind, run.key, run.metrics) == ("toy", job.key, {"double": 6})
    assert run_job(Job("toy", {"value": 3}), store).path == run.path  # in the store: nothing to compute
    with pytest.raises(ConfigError, match="no compute"):
        run_job(Job("toy", {"value": 4}), store)
    with pytest.raises(IncompatibleError, match="computed the run"):
        run_job(Job("toy", {"value": 5}, compute=functools.partial(_write, 6)), store)


def test_chapter_jobs_are_staged_and_name_the_runs_the_chapter_reads() -> None:
    jobs = chapter_jobs("6", {"profile": "smoke"})
    assert [j.kind for j in jobs if j.stage == 0] == ["pretrain"] * sum(j.stage == 0 for j in jobs)
    assert {j.kind for j in jobs if j.stage == 1} == {"ch6-source-features", "finetune"}
    assert len({(j.kind, j.key) for j in jobs}) == len(jobs)
    assert pickle.loads(pickle.dumps(jobs[-1])) == jobs[-1]  # shippable to a cluster executor
    # The pre-training run each job names is the one the chapter's sources look up.
    spec = "pretrained:resnet18:cifar10@300"
    expected = sources.pretrain_config("resnet18", "cifar10@300", **sources.pretrain_settings("cifar10@300", "smoke"))
    assert results.config_hash(expected) in {j.key for j in jobs}
    assert sources.parse_spec(spec).kind == "pretrained"
    with pytest.raises(ConfigError, match="unknown parameter"):
        chapter_jobs("3", {"profile": "smoke", "fold": 2})


def test_after_its_jobs_chapter_3_computes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    params = {"profile": "smoke", "targets": "breastmnist", "folds": 1, "epochs": 1, "max_train_images": 64}
    jobs = chapter_jobs("3", params)
    stages = [j.stage for j in jobs]
    assert stages == sorted(stages) and set(stages) == {0, 1}
    assert sum(j.kind == "pretrain" for j in jobs) == 2  # natural and leave-target-out medical source
    assert sum(j.kind == "finetune" for j in jobs) == 5  # natural, medical x 2 strategies + random init
    for job in jobs:
        run_job(job)

    cached = results.Store.cached

    def no_compute(self, kind, config, compute):
        return cached(self, kind, config, lambda workdir: pytest.fail(f"{kind} was computed again"))

    monkeypatch.setattr(results.Store, "cached", no_compute)
    from cfct.chapters import resolve

    runs = transfer.transfer_matrix(**ch3.matrix_arguments(resolve("3", **params)), progress=False)
    assert {r.result.run.key for r in runs} == {j.key for j in jobs if j.kind == "finetune"}


def test_after_its_jobs_chapter_5_computes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from cfct.chapters import resolve
    from cfct.experiments import ch5

    # Small sources (128 images) keep the four pre-trainings (two sources, their edited twins) short.
    params = {"profile": "smoke", "p_arts": "1", "epochs": 1, "n_dev": 40, "n_test": 40, "priority_images": 8,
              "natural_source": "pretrained:resnet18:cifar10@128",
              "medical_source": "pretrained:resnet18:medmnist-lto:breastmnist@128"}
    first = chapter_jobs("5", params)
    stages = [j.stage for j in first]
    assert stages == sorted(stages) and set(stages) == {0, 1, 2}
    assert sum(j.kind == "ch5-edited-images" for j in first) == 2
    for job in first:
        run_job(job)
    # The edited sources' runs are keyed by their weights' hash: listed once the edited pre-training is stored.
    jobs = chapter_jobs("5", params)
    later = [j for j in jobs if (j.kind, j.key) not in {(f.kind, f.key) for f in first}]
    assert {j.stage for j in later} == {3, 4} and {j.kind for j in later} >= {"finetune", "learning-priority"}
    for job in later:
        run_job(job)
    assert {(j.kind, j.key) for j in chapter_jobs("5", params)} == {(j.kind, j.key) for j in jobs}

    cached = results.Store.cached

    def no_compute(self, kind, config, compute):
        return cached(self, kind, config, lambda workdir: pytest.fail(f"{kind} was computed again"))

    monkeypatch.setattr(results.Store, "cached", no_compute)
    # The notebook's compute path (chapters/05_frequency_shortcuts.md), as its cells call it.
    cfg = resolve("5", **params)
    plan = ch5.chapter_plan(cfg)
    experiment = dict(p_arts=cfg.p_arts, folds=cfg.folds, size=cfg.image_size, finetune=plan["finetune"],
                      priority_images=cfg.priority_images, seed=cfg.seed, profile=cfg.profile.name)
    probes = {t: ch5.probe_set(t, a, size=cfg.image_size, n_dev=plan["sizes"][t][0], n_test=plan["sizes"][t][1],
                               seed=cfg.seed) for t, a in plan["artifacts"].items()}
    edits = {k: ch5.edited_spec(plan["baseline"][o], e, profile=cfg.profile.name, **kw)
             for k, (o, e, kw) in plan["edit_plan"].items()}
    for roles in (plan["baseline"], edits):
        for t, a in plan["artifacts"].items():
            ch5.frequency_shortcut_experiment(t, a, roles, n_dev=plan["sizes"][t][0], n_test=plan["sizes"][t][1],
                                              progress=False, **experiment)
        ch5.priority_table(probes, roles, n_images=cfg.priority_images, profile=cfg.profile.name)
        ch5.source_priority_folds(probes, roles, folds=cfg.folds, n_images=cfg.priority_images,
                                  profile=cfg.profile.name)


def test_ch4_jobs_fold_replicates_within_budget() -> None:
    """Chapter 4's plan at three folds (the quick profile's): every fold a separate fine-tune, the runs at
    p_art = 0 shared between confounders of a target, 93 fine-tunes in all (the book's budget: no more than
    the 95 of the earlier one-fold, six-level plan)."""
    jobs = chapter_jobs("4", {"profile": "smoke", "folds": 3})
    finetunes = {j.key for j in jobs if j.kind == "finetune"}
    # per fold: X-ray p_art=0 3 + tag 3 + denoising 3 + noise 2; two-level 2 x 2; sex 3 x 2; CT p_art=0 3 +
    # tag 3 + denoising 2 + image-domain noise 2 (CT projection noise at N0 = 2e7 changes no pixel: not run)
    assert len(finetunes) == 3 * 31
    assert {j.stage for j in jobs} == {0, 1, 2}
