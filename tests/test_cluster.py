"""cfct.cluster and cfct sweep: a smoke sweep locally and through a real single-node Slurm (job array, a job
killed mid-run and resubmitted), failures, races, and the Optuna search on a file journal and on SQLite."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from cfct import chapters, cluster, results, search
from cfct.cli import main
from cfct.errors import ConfigError
from cfct.experiments import transfer
from cfct.experiments.jobs import Job, chapter_jobs, pretrain_job, run_job
from cfct.train import FinetuneConfig

sys.path.insert(0, str(Path(__file__).parent))
from _slurm import SlurmUnavailable, local_slurm  # noqa: E402

# A smoke sweep of Chapter 3 small enough for a test: one target, one fold, one pre-trained source (200
# PneumoniaMNIST images) and random initialisation; three epochs, so a job can be killed after its first
# epoch's checkpoint. Jobs: 1 pre-training (stage 0) + 3 fine-tunes (stage 1: the source without and with
# freezing, the random baseline; "medical" is given the same source, so its runs are the same keys, listed once).
SWEEP = dict(profile="smoke", targets="breastmnist", folds=1, epochs=3, patience=3, max_train_images=96,
             natural_source="pretrained:resnet18:medmnist:pneumoniamnist@200",
             medical_source="pretrained:resnet18:medmnist:pneumoniamnist@200")
METRICS = ("test_auc", "test_acc", "test_loss", "val_auc", "val_loss", "best_epoch", "epochs")


@pytest.fixture(scope="module")
def jobs() -> list[Job]:
    return chapter_jobs("3", SWEEP)


@pytest.fixture(scope="module")
def local_sweep(jobs, tmp_path_factory) -> tuple[results.Store, cluster.SweepReport]:
    """The smoke sweep through the local executor, two jobs at a time."""
    root = tmp_path_factory.mktemp("local")
    store = results.Store(root / "results")
    report = cluster.run_sweep(jobs, cluster.ExecutorSettings(array_parallelism=2), store=store,
                               folder=root / "sweeps", progress=False)
    return store, report


def test_chapter_jobs_are_the_notebooks_runs(jobs):
    assert [j.stage for j in jobs] == sorted(j.stage for j in jobs)
    assert [j.kind for j in jobs] == ["pretrain", "finetune", "finetune", "finetune"]
    assert len({j.key for j in jobs}) == len(jobs)
    assert all(j.key == results.config_hash(j.config) for j in jobs)


def test_local_sweep_fills_the_store_the_notebook_reads(jobs, local_sweep, monkeypatch):
    store, report = local_sweep
    assert not report.failed, report.summary()
    assert [o.state for o in report.outcomes] == ["computed"] * len(jobs)
    # The chapter's own call (transfer_matrix, as in the notebook) finds every run: nothing is recomputed.
    cfg = chapters.resolve("3", **SWEEP)
    n_before = len(store.runs("finetune"))
    monkeypatch.setattr(results, "default_store", lambda: store)
    ft = FinetuneConfig(optimizer="adam", lr=cfg.lr, batch_size=cfg.profile.batch_size, max_epochs=cfg.epochs,
                        patience=cfg.patience, monitor="val_loss", augment="ch3", device=cfg.device)
    runs = transfer.transfer_matrix(cfg.targets, {"natural": cfg.natural_source, "medical": cfg.medical_source,
                                                  "random init": f"random:{cfg.arch}"}, ft, size=cfg.image_size,
                                    folds=cfg.folds, seed=cfg.seed, max_train_images=cfg.max_train_images,
                                    profile="smoke", progress=False)
    assert len(store.runs("finetune")) == n_before == 3
    assert {r.result.run.key for r in runs} == {j.key for j in jobs if j.kind == "finetune"}
    # A second sweep submits nothing.
    again = cluster.run_sweep(jobs, store=store, folder=store.root.parent / "again", progress=False)
    assert [o.state for o in again.outcomes] == ["complete"] * len(jobs)
    assert not (store.root.parent / "again" / "stage0").exists()


def _cheap_job(n: int) -> Job:
    """A real pre-training job of a few seconds (1 epoch on n BreastMNIST images)."""
    job = pretrain_job(f"pretrained:resnet18:medmnist:breastmnist@{n}", "smoke")
    assert job is not None
    return job


def test_failed_job_is_reported_with_its_log_and_does_not_block(tmp_path):
    store = results.Store(tmp_path / "results")
    bad = Job("finetune", {"no": "recipe"}, 0)  # no compute: run_job cannot make it
    good = _cheap_job(40)
    report = cluster.run_sweep([bad, good], store=store, folder=tmp_path / "sweeps", progress=False)
    states = {o.job.key: o for o in report.outcomes}
    assert states[good.key].state == "computed"
    failed = states[bad.key]
    assert failed.state == "failed" and "has no compute function" in failed.error
    assert failed.log.exists() and "has no compute function" in failed.log.read_text()
    assert "FAILED" in report.summary() and str(failed.log) in report.summary()
    assert store.get(good.kind, good.config) is not None


def test_two_racing_jobs_compute_once(tmp_path):
    store = results.Store(tmp_path / "results")
    job = _cheap_job(60)
    settings = cluster.ExecutorSettings(array_parallelism=2)
    submitted = cluster.submit([job, job], settings, store, tmp_path / "sweeps")
    outcomes = cluster.wait(submitted, settings=settings, store=store, folder=tmp_path / "sweeps", progress=False)
    assert [o.state for o in outcomes] == ["computed", "computed"]
    assert len(store.runs(job.kind)) == 1
    # One of the two found the run complete once the other released the lock: the stored run is the only one,
    # and its wall-clock seconds (which a second computation would change) are what both return.
    run = store.get(job.kind, job.config)
    assert {o.info["path"] for o in outcomes} == {str(run.path)}


def test_settings_and_cli_errors(capsys):
    with pytest.raises(ConfigError, match="executor"):
        cluster.ExecutorSettings(executor="pbs")
    with pytest.raises(ConfigError, match="array_parallelism"):
        cluster.ExecutorSettings(array_parallelism=0)
    with pytest.raises(ConfigError, match="unknown chapter"):
        chapter_jobs("9", {"profile": "smoke"})
    assert main(["sweep", "3", "--search", "optuna", "-p", "targets=breastmnist"]) == 2
    assert "chapter 6 only" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no compute function"):
        run_job(Job("finetune", {"x": 1}, 1), results.Store(Path(os.environ["CFCT_DATA"])))


def test_cli_dry_run_lists_missing_jobs(capsys):
    args = ["sweep", "3", "--dry-run"] + [f"-p{k}={v}" for k, v in SWEEP.items() if k != "profile"]
    assert main(args + ["--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "4 jobs, 4 missing" in out and "stage 0  pretrain/" in out


# ------------------------------------------------------------------------------------------------ Slurm
@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """munged + slurmctld + slurmd in a temporary folder; killed at teardown. Skips, saying why, when they
    cannot start (CI installs them with `make slurm-deps` and runs as root)."""
    folder = tmp_path_factory.mktemp("slurm")
    try:
        with local_slurm(folder) as env:
            saved = os.environ.get("SLURM_CONF")
            os.environ.update(env)
            try:
                yield folder
            finally:
                if saved is None:
                    os.environ.pop("SLURM_CONF", None)
                else:
                    os.environ["SLURM_CONF"] = saved
    except SlurmUnavailable as why:
        pytest.skip(f"local Slurm unavailable: {why}")


def _wait_for_checkpoint(store: results.Store, keys: set[str], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for key in keys:
            if (store.root / "finetune" / f"{key}.partial" / "epoch.pt").exists():
                return key
        time.sleep(0.2)
    raise AssertionError(f"no fine-tune wrote an epoch checkpoint within {timeout_s:.0f} s")


def test_slurm_job_array_killed_job_resumes_same_numbers(slurm, jobs, local_sweep, tmp_path):
    local_store, _ = local_sweep
    store = results.Store(tmp_path / "results")
    settings = cluster.ExecutorSettings(executor="slurm", array_parallelism=2, timeout_min=30)
    pre = [j for j in jobs if j.stage == 0]
    stage1 = [j for j in jobs if j.stage == 1]
    first = cluster.run_sweep(pre, settings, store=store, folder=tmp_path / "s0", progress=False)
    assert [o.state for o in first.outcomes] == ["computed"], first.summary()

    submitted = cluster.submit(stage1, settings, store, tmp_path / "s1")
    array_ids = {h.job_id.split("_")[0] for _, h in submitted}
    assert len(array_ids) == 1 and all("_" in h.job_id for _, h in submitted)  # one job array
    victim_key = _wait_for_checkpoint(store, {j.key for j in stage1}, timeout_s=240)
    victim = next(h for j, h in submitted if j.key == victim_key)
    subprocess.run(["scancel", victim.job_id], check=True)
    outcomes = cluster.wait(submitted, settings=settings, store=store, folder=tmp_path / "s1", progress=False)
    by_key = {o.job.key: o for o in outcomes}
    assert by_key[victim_key].state == "failed" and "without a result" in by_key[victim_key].error
    assert (store.root / "finetune" / f"{victim_key}.partial" / "epoch.pt").exists()
    assert store.get("finetune", jobs[[j.key for j in jobs].index(victim_key)].config) is None

    resumed = cluster.run_sweep(jobs, settings, store=store, folder=tmp_path / "again", progress=False)
    states = {o.job.key: o for o in resumed.outcomes}
    assert [k for k, o in states.items() if o.state == "computed"] == [victim_key]  # only the killed one
    assert states[victim_key].info["resumed"] is True
    assert all(o.state == "complete" for k, o in states.items() if k != victim_key)

    # Every run completed once, with the numbers of the local sweep.
    for job in jobs:
        assert not (store.root / job.kind / f"{job.key}.partial").exists()
        ours, ref = store.get(job.kind, job.config), local_store.get(job.kind, job.config)
        if job.kind == "finetune":
            for name in METRICS:
                assert ours.metrics[name] == pytest.approx(ref.metrics[name], rel=1e-5, abs=1e-6), name
            np.testing.assert_allclose(ours.array("test_probs"), ref.array("test_probs"), rtol=1e-4, atol=1e-6)
        else:
            assert ours.metrics["train_loss"] == pytest.approx(ref.metrics["train_loss"], rel=1e-5)


# ------------------------------------------------------------------------------------------------ Optuna
SEARCH = dict(profile="smoke", targets="breastmnist", sources="random:{arch}", grid_lr="0.1,0.01",
              grid_momentum="0.9,0.0", grid_weight_decay="0.0", grid_batch_size="32", epochs=2, patience=2)


@pytest.fixture(scope="module")
def search_store(tmp_path_factory) -> results.Store:
    """Shared by both storages: the second study's trials replay the first one's stored fine-tunes."""
    return results.Store(tmp_path_factory.mktemp("search") / "results")


@pytest.mark.parametrize("backend", ["journal", "sqlite"])
def test_optuna_two_workers_share_a_study(backend, search_store, tmp_path):
    store = search_store
    trained_before = {r.key for r in store.runs("finetune")}
    url = str(tmp_path / "journal.log") if backend == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    outcomes = cluster.run_search_workers(SEARCH, cluster.ExecutorSettings(), workers=2, trials=4,
                                          storage_url=url, prefix="t", store=store, folder=tmp_path / "sw",
                                          progress=False)
    assert [o.state for o in outcomes] == ["computed", "computed"], [o.error for o in outcomes]
    study = optuna.load_study(study_name=search.study_name("t", "breastmnist", "random:resnet18"),
                              storage=search.storage(url))
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert 4 <= len(finished) <= 5  # MaxTrialsCallback across two workers may let one extra trial start
    space = {"lr": {0.1, 0.01}, "momentum": {0.9, 0.0}, "weight_decay": {0.0}, "batch_size": {32}}
    assert all(t.params[k] in v for t in finished for k, v in space.items())
    complete = [t for t in finished if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(0.0 <= t.value <= 1.0 and "test_auc" in t.user_attrs for t in complete)
    assert all(len(t.intermediate_values) >= 1 for t in finished)  # per-epoch validation AUC
    assert all(t.user_attrs["worker"] for t in finished)
    if len(trained_before) >= 3:  # the journal study trained (at least) 3 of the 4 points: replayed here
        assert any(t.user_attrs["replayed"] for t in finished)
    # Each complete trial is a stored fine-tune whose validation AUC is the trial's value.
    aucs = sorted(r.metrics["val_auc"] for r in store.runs("finetune"))
    assert all(any(abs(t.value - a) < 1e-12 for a in aucs) for t in complete)


def test_search_space_and_storage_choices(tmp_path):
    from cfct.experiments import ch6 as tr

    grid = tr.hyperparameter_grid("breastmnist", [1.0, 0.1], [0.0], [0.9, 0.0], [0])
    assert search.search_space(grid) == {"lr": [1.0, 0.1], "weight_decay": [0.0], "momentum": [0.9, 0.0],
                                         "batch_size": [32, 64]}  # Table 6.1's pair for BreastMNIST
    assert len(grid) == 2 * 2 * 2
    with pytest.raises(ConfigError, match="empty"):
        search.search_space([])
    assert search.storage("sqlite:///x.db") == "sqlite:///x.db"
    assert isinstance(search.storage(tmp_path / "j.log"), optuna.storages.JournalStorage)
    with pytest.raises(ConfigError, match="trials"):
        search.SearchSettings(trials=0)
