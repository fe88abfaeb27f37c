"""Chapter 5 experiment: frequency shortcuts, learning priority of sources and fine-tuned models, edited sources."""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from cfct import claims, data, results, shortcuts, sources, stats, train
from cfct.config import ChapterConfig
from cfct.data import ImageSet
from cfct.errors import ConfigError, unknown_choice
from cfct.experiments import ch4, robustness
from cfct.experiments.jobs import Job, pretrain_jobs
from cfct.spectral import (
    SOURCE_EDITS,
    _check_imageset,
    artifact_spectrum,
    band_fraction,
    edit_source,
    get_artifact,
    learning_priority,
    normalize_psd,
    normalized_frequencies,
    spectral_centroid,
    spectral_overlap,
)


def write_image_folder(ds: ImageSet, root: Path) -> Path:
    """Write an ImageSet as an image-folder tree (``root/<NN>-<class>/<i>.png``, lossless), atomically.

    ``cfct.data.load_dataset('imagefolder:<root>')`` reads it back with the same labels (class folders sort in
    label order). A finished tree holds a ``DONE`` marker with the set's fingerprint and is not rewritten.
    """
    from PIL import Image

    _check_imageset(ds)
    root = Path(root)
    done = root / "DONE"
    if done.exists():
        return root
    tmp = root.with_name(root.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    safe = ["".join(ch if ch.isalnum() else "_" for ch in name) for name in ds.class_names]
    for k, name in enumerate(safe):
        (tmp / f"{k:03d}-{name}").mkdir(parents=True)
    labels = np.asarray(ds.labels).reshape(-1)
    for i, (image, label) in enumerate(zip(ds.images, labels, strict=True)):
        pixels = image[..., 0] if image.shape[-1] == 1 else image
        Image.fromarray(pixels).save(tmp / f"{int(label):03d}-{safe[int(label)]}" / f"{i:06d}.png")
    (tmp / "DONE").write_text(ds.fingerprint())
    if root.exists():
        shutil.rmtree(root)
    os.replace(tmp, root)
    return root


def edited_source(
    arch: str,
    dataset: str,
    edit: str,
    *,
    profile: Any = None,
    store: Any = None,
    progress: bool = True,
    **edit_params: Any,
) -> str:
    """Pre-train ``arch`` on an edited copy of a source dataset (5.2.4) and return its source spec.

    The edited source sees exactly the images the unedited ``pretrained:<arch>:<dataset>`` source sees (same
    profile settings: image size, seeded subsample, epochs, batch size, learning rate), each edited by
    :func:`edit_source`. The edited images are written once as an image folder in the results store (kind
    ``ch5-edited-images``) and pre-trained with :func:`cfct.train.pretrain` (cached in the results store).

    Parameters
    ----------
    arch : str
        Architecture.
    dataset : str
        Dataset spec of the unedited source (``'cifar10'``, ``'medmnist-lto:breastmnist'``, ...).
    edit : str
        Key of :data:`SOURCE_EDITS`.
    profile : str or Profile, optional
        Profile fixing the pre-training settings (as for the unedited source).
    store : cfct.results.Store, optional
    progress : bool
    **edit_params
        Parameters of the edit (e.g. ``cutoff`` for ``'lowpass-coarse'``).

    Returns
    -------
    str
        ``checkpoint:<arch>:<path of the pre-trained weights>``: a spec every fine-tune accepts; its cache
        key is the checkpoint's SHA-256.
    """
    run = _edited_pretrain(arch, dataset, edit, edit_params, profile, store, progress)
    return f"checkpoint:{arch}:{run.file('model.safetensors')}"


def _edited_settings(dataset: str, edit: str, edit_params: Mapping[str, Any],
                     profile: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pre-training settings of an edited source and the key of its edited images (kind ``ch5-edited-images``)."""
    if edit not in SOURCE_EDITS:
        raise unknown_choice("source edit", edit, SOURCE_EDITS)
    settings = sources.pretrain_settings(dataset, pretrain=profile, seed=train.SOURCE_SEED)
    config = {"version": 1, "dataset": dataset, "edit": edit, "params": dict(edit_params),
              "image_size": settings["image_size"], "max_images": settings["max_images"],
              "seed": settings["seed"]}
    return settings, config


def _edited_images(dataset: str, edit: str, edit_params: Mapping[str, Any], profile: Any,
                   store: Any) -> results.Run:
    """The stored image folder of an edited source (the images its unedited twin is pre-trained on, edited)."""
    settings, config = _edited_settings(dataset, edit, edit_params, profile)
    store = store if store is not None else results.default_store()

    def compute(workdir: Path) -> dict[str, Any]:
        # the subsample train.pretrain would draw
        ds = data.load_dataset(dataset, settings["image_size"], split="train", seed=settings["seed"],
                               max_images=settings["max_images"])
        write_image_folder(edit_source(ds, edit, **edit_params), workdir / "images")
        return {"n_images": len(ds)}

    return store.cached("ch5-edited-images", config, compute)


def _edited_pretrain_settings(arch: str, dataset: str, edit: str, edit_params: Mapping[str, Any], profile: Any,
                              store: results.Store) -> dict[str, Any]:
    """Keyword arguments of the edited source's :func:`cfct.train.pretrain` (its dataset: the stored image
    folder, whose path lies in ``store``)."""
    settings, config = _edited_settings(dataset, edit, edit_params, profile)
    root = store.root / "ch5-edited-images" / results.config_hash(config) / "images"
    return {"arch": arch, "dataset": f"imagefolder:{root}", **settings, "max_images": None}


def _edited_pretrain(arch: str, dataset: str, edit: str, edit_params: Mapping[str, Any], profile: Any,
                     store: Any, progress: bool = False) -> results.Run:
    """The pre-training run of an edited source (its edited images first, when missing)."""
    store = store if store is not None else results.default_store()
    root = _edited_images(dataset, edit, edit_params, profile, store).path / "images"
    kwargs = _edited_pretrain_settings(arch, dataset, edit, edit_params, profile, store)
    if kwargs["dataset"] != f"imagefolder:{root}":
        raise ConfigError(f"edited images stored at {root}, expected {kwargs['dataset']}")
    return train.pretrain(**kwargs, store=store, progress=progress)


def _priority_key(model_key: Mapping[str, Any], ds: ImageSet, labels: str, n_images: int) -> dict[str, Any]:
    """Key of a learning-priority run (kind ``learning-priority``): the model, the first ``n_images`` images."""
    subset = ds if len(ds) <= n_images else ds.subset(np.arange(n_images))
    # version 2: Eq. 5.1 as printed (magnitude, angular integral) replaced the ring-summed power spectrum
    return {"version": 2, "model": dict(model_key), "data": subset.fingerprint(), "name": subset.name,
            "labels": labels}


def _priority_run(store: Any, model_key: Mapping[str, Any], ds: ImageSet, labels: str, n_images: int,
                  load_model: Callable[[], nn.Module], device: str) -> results.Run:

    store = store if store is not None else results.default_store()
    subset = ds if len(ds) <= n_images else ds.subset(np.arange(n_images))
    key = _priority_key(model_key, ds, labels, n_images)

    def compute(workdir: Path) -> dict[str, Any]:
        psd = learning_priority(load_model(), subset, labels=labels, device=device)
        results.save_arrays(workdir, psd=psd)
        return {"n_images": len(subset), "total": float(psd.sum())}

    return store.cached("learning-priority", key, compute)


def source_priority(spec: str, ds: ImageSet, *, n_images: int = 128, profile: Any = None, store: Any = None,
                    device: str = "auto") -> np.ndarray:
    """Learning priority of a source model before fine-tuning (Fig. 5.3, top row), cached.

    The source's own head knows none of the target's classes, so the loss is taken against the model's own
    predicted class (``labels='predicted'``); ``random:`` sources get a seeded two-class head. Every source
    is probed on the same target images, so differences between curves come from the models alone.
    """

    size = int(ds.images.shape[1])
    kind = sources.parse_spec(spec).kind

    def load() -> nn.Module:
        classes = 2 if kind == "random" else None
        return train.load_source(spec, classes, input_size=size, store=store, pretrain=profile, seed=0)

    return _priority_run(store, _source_model_key(spec, size, profile), ds, "predicted", n_images, load,
                         device).array("psd")


def _source_model_key(spec: str, size: int, profile: Any) -> dict[str, Any]:
    return {"source": sources.source_config(spec, pretrain=profile, seed=0), "input_size": int(size)}


def finetuned_priority(result: Any, ds: ImageSet, *, n_images: int = 128, store: Any = None,
                       device: str = "auto") -> np.ndarray:
    """Learning priority of a fine-tuned model (a :class:`cfct.train.FinetuneResult`) on labelled images."""
    return _priority_run(store, {"finetune": result.run.key}, ds, "true", n_images, result.load_model,
                         device).array("psd")


@dataclasses.dataclass
class ShortcutRuns:
    """Outcome of :func:`frequency_shortcut_experiment`.

    Attributes
    ----------
    table : DataFrame
        One row per (p_art, fold, source): ``iid_auc``, ``ood_auc``, ``val_auc``, epochs, seconds.
    priorities : DataFrame
        One row per (p_art, fold, source, radial bin): ``k``, ``omega`` (normalised frequency) and
        ``psd`` (learning priority of the fine-tuned model on the clean probe images).
    probe : ImageSet
        The clean test images the learning priorities are measured on.
    """

    table: pd.DataFrame
    priorities: pd.DataFrame
    probe: Any


def frequency_shortcut_experiment(
    target: str,
    artifact: str | shortcuts.Confounder,
    sources: Mapping[str, str],
    *,
    p_arts: tuple[float, ...] = shortcuts.P_ART_LEVELS,
    folds: int = 5,
    size: int = 28,
    n_dev: int = 250,
    n_test: int = 200,
    pos_fraction: float = 0.5,
    val_fraction: float = 0.15,
    finetune: Any = None,
    priority_images: int = 128,
    seed: int = 0,
    store: Any = None,
    profile: Any = None,
    progress: bool = True,
) -> ShortcutRuns:
    """Fine-tune every source at every p_art (degradation) and fold; o.o.d. / i.i.d. AUC and learning priorities.

    "Degradation" (5.1.2) is the fraction of positive training images carrying the artifact; the o.o.d. test
    set carries it in every negative and no positive, the i.i.d. test set is drawn like the training set.
    The sets, folds, fine-tunes and o.o.d. evaluations are Chapter 4's
    (:func:`cfct.experiments.robustness.sweep`: :func:`~cfct.experiments.robustness.experiment_sets`,
    :func:`~cfct.shortcuts.dev_splits`, :func:`cfct.train.finetune`, :func:`~cfct.experiments.robustness.evaluate_ood`),
    so a run both chapters need (the same target, artifact and
    settings) is computed once. Each fine-tuned model's learning priority is then measured on the same clean
    test images (:func:`finetuned_priority`).

    Parameters
    ----------
    target : str
        Binary target spec.
    artifact : str or Confounder
        Key of :data:`ARTIFACTS` (or any image confounder of Chapter 4).
    sources : mapping of str to str
        Role -> source spec (e.g. natural, medical, random, and the edited sources of 5.2.4).
    p_arts : tuple of float
        Fractions of positive training images with the artifact.
    folds : int
        Train/validation splits of one development set, each with its own initialisation seed, and one test set
        (thesis: 5). Chapter 4's disjoint test sets per fold would exhaust Chapter 5's test pools at three folds.
    size : int
        Image side in px.
    n_dev, n_test : int
        Development (train + validation) and test set sizes.
    pos_fraction : float
        Share of positives in every set.
    val_fraction : float
        Validation share of the development set.
    finetune : cfct.train.FinetuneConfig, optional
        Default: the 3.4.2 protocol with validation-AUC early stopping and no flips.
    priority_images : int
        Clean test images the learning priorities are averaged over.
    seed : int
    store : cfct.results.Store, optional
    profile : Profile or str, optional
        Profile fixing the pre-training of ``pretrained:`` sources.
    progress : bool

    Returns
    -------
    ShortcutRuns
    """

    conf = artifact if isinstance(artifact, shortcuts.Confounder) else get_artifact(artifact)
    if not sources:
        raise ConfigError("frequency_shortcut_experiment needs at least one source (role -> spec)")
    if finetune is None:
        finetune = train.FinetuneConfig.thesis_ch3(monitor="val_auc", hflip=False)
    probe = probe_set(target, conf, size=size, n_dev=n_dev, n_test=n_test, pos_fraction=pos_fraction,
                      seed=seed)
    n_bins = size // 2
    rows, curves = [], []
    for run in robustness.sweep(target, conf, sources, finetune, p_arts=p_arts, folds=folds, size=size,
                                n_dev=n_dev, n_test=n_test, pos_fraction=pos_fraction, val_fraction=val_fraction,
                                seed=seed, store=store, profile=profile, progress=progress):
        psd = finetuned_priority(run.result, probe, n_images=priority_images, store=store, device=finetune.device)
        rows.append(run.row())
        curves.append(pd.DataFrame({
            "target": target, "confounder": conf.name, "source": run.role, "p_art": run.p_art, "fold": run.fold,
            "k": np.arange(n_bins), "omega": normalized_frequencies(n_bins), "psd": psd,
        }))
    return ShortcutRuns(pd.DataFrame(rows), pd.concat(curves, ignore_index=True), probe)


def probe_set(target: str, artifact: str | shortcuts.Confounder, *, size: int, n_dev: int, n_test: int,
              pos_fraction: float = 0.5, seed: int = 0) -> ImageSet:
    """The clean test set of a target (the i.i.d. set at degradation 0), on which every model's learning
    priority and the artifact's PSD are measured."""
    conf = artifact if isinstance(artifact, shortcuts.Confounder) else get_artifact(artifact)
    return robustness.experiment_sets(target, conf, 0.0, size=size, n_dev=n_dev, n_test=n_test,
                                     pos_fraction=pos_fraction, seed=seed).iid


def summarize(table: pd.DataFrame, metrics: tuple[str, ...] = ("ood_auc", "iid_auc"),
              keys: tuple[str, ...] = ("target", "source", "p_art")) -> pd.DataFrame:
    """Mean and standard deviation over folds (as Figs. 5.2 and 5.4 plot), :func:`cfct.stats.fold_summary`."""
    return stats.fold_summary(table, metrics, keys)


def balanced_sizes(target: str, size: int, n_dev: int, n_test: int, *,
                   pos_fraction: float = 0.5) -> tuple[int, int]:
    """Development and test set sizes capped to what a target's pools hold at ``pos_fraction`` positives.

    BreastMNIST's official test split, for instance, has 42 malignant images, so a balanced test set holds at
    most 84. A single-pool (``csv:``) target is split by group, so 10 % of its smaller class is kept in
    reserve for the group-disjoint draw; the test set shrinks first.
    """
    def cap(labels: np.ndarray) -> int:
        positive = shortcuts.positive_class(target)
        n_pos = int(np.sum(np.asarray(labels) == positive))
        n_neg = len(labels) - n_pos
        return int(min(n_pos / pos_fraction, n_neg / (1 - pos_fraction)))

    dev_pool, test_pool = robustness.load_pools(target, size)
    if test_pool is not None:
        return min(int(n_dev), cap(dev_pool.labels)), min(int(n_test), cap(test_pool.labels))
    total = int(0.9 * cap(dev_pool.labels))
    n_dev = min(int(n_dev), total // 2)
    return n_dev, min(int(n_test), total - n_dev)


def source_dataset(spec: str, *, n: int = 2000, profile: Any = None, seed: int = 0) -> ImageSet | None:
    """A seeded, stratified sample of the images a ``pretrained:`` source is pre-trained on (None for
    ``random:``, ``imagenet:`` and ``checkpoint:`` sources, whose data cfct does not hold)."""

    src = sources.parse_spec(spec)
    if src.kind != "pretrained":
        return None
    size = sources.pretrain_settings(src.arg, pretrain=profile, seed=seed)["image_size"]
    return data.load_dataset(src.arg, size, split="train", seed=seed, max_images=int(n))


def edited_spec(spec: str, edit: str, *, profile: Any = None, store: Any = None, progress: bool = True,
                **edit_params: Any) -> str:
    """:func:`edited_source` for a ``pretrained:<arch>:<dataset>`` spec: the spec of its edited twin.

    Raises
    ------
    ConfigError
        For sources whose images cfct does not hold (``imagenet:``, ``checkpoint:``, ``random:``): editing
        needs the source data. With internet, pre-train on a local ImageNet copy
        (``pretrained:<arch>:imagefolder:<path>``) to edit it.
    """

    src = sources.parse_spec(spec)
    if src.kind != "pretrained":
        raise ConfigError(
            f"cannot edit {spec!r}: source editing (5.2.4) re-pre-trains on edited source images, so it "
            "needs a 'pretrained:<arch>:<dataset>' source (pretrained:resnet50:imagefolder:<ImageNet copy>)"
        )
    return edited_source(src.arch, src.arg, edit, profile=profile, store=store, progress=progress,
                         **edit_params)


def priority_table(probes: Mapping[str, ImageSet], sources: Mapping[str, str], *, n_images: int = 128,
                   profile: Any = None, store: Any = None, device: str = "auto") -> pd.DataFrame:
    """Learning priorities of pre-trained sources (:func:`source_priority`) on each target's probe images.

    Returns
    -------
    DataFrame
        ``target, source, k, omega, psd``: one row per radial bin.
    """
    frames = []
    for target, probe in probes.items():
        for role, spec in sources.items():
            psd = source_priority(spec, probe, n_images=n_images, profile=profile, store=store, device=device)
            frames.append(pd.DataFrame({"target": target, "source": role, "k": np.arange(len(psd)),
                                        "omega": normalized_frequencies(len(psd)), "psd": psd}))
    return pd.concat(frames, ignore_index=True)


def robustness_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Per target and source: AUC without the shortcut (degradation 0) and with it everywhere (the largest
    degradation), o.o.d. and i.i.d., and the o.o.d. drop between them (from :func:`summarize`)."""
    rows = []
    for (target, role), d in summary.groupby(["target", "source"], sort=False):
        lo, hi = d["p_art"].min(), d["p_art"].max()

        def at(level: float, metric: str, frame: pd.DataFrame = d) -> float:
            v = frame[(frame["p_art"] == level) & (frame["metric"] == metric)]["mean"]
            return float(v.iloc[0]) if len(v) else float("nan")

        ood = d[(d["metric"] == "ood_auc") & (d["p_art"] > lo)]["mean"]
        rows.append({"target": target, "source": role, "ood_auc_clean": at(lo, "ood_auc"),
                     "ood_auc_max": at(hi, "ood_auc"), "ood_auc_mean_degraded": float(ood.mean()),
                     "iid_auc_max": at(hi, "iid_auc"), "ood_drop": at(lo, "ood_auc") - at(hi, "ood_auc")})
    return pd.DataFrame(rows)


def priority_shift(pretrained: pd.DataFrame, finetuned: pd.DataFrame) -> pd.DataFrame:
    """How much fine-tuning moves a learning priority (5.2.2).

    Per target and source: the spectral centroid (:func:`spectral_centroid`) before and after fine-tuning
    (mean over folds and degradations) and the correlation of the log-densities of the two curves (1 = same
    shape).
    """
    rows = []
    for (target, role), d in finetuned.groupby(["target", "source"], sort=False):
        pre = pretrained[(pretrained["target"] == target) & (pretrained["source"] == role)]
        if pre.empty:
            continue
        after = d.groupby("k")["psd"].mean().to_numpy()
        before = pre.sort_values("k")["psd"].to_numpy()
        corr = float(np.corrcoef(np.log(normalize_psd(before)), np.log(normalize_psd(after)))[0, 1])
        rows.append({"target": target, "source": role, "centroid_pretrained": spectral_centroid(before),
                     "centroid_finetuned": spectral_centroid(after), "log_psd_correlation": corr})
    return pd.DataFrame(rows)


def overlap_table(pretrained: pd.DataFrame, artifacts: Mapping[str, np.ndarray],
                  robustness: pd.DataFrame | None = None) -> pd.DataFrame:
    """Overlap (:func:`spectral_overlap`) of each source's learning priority with the target's artifact PSD,
    next to the source's robustness (5.2.3) when a :func:`robustness_table` is given."""
    rows = []
    for (target, role), d in pretrained.groupby(["target", "source"], sort=False):
        if target not in artifacts:
            continue
        row = {"target": target, "source": role,
               "overlap": spectral_overlap(d.sort_values("k")["psd"].to_numpy(), artifacts[target]),
               "centroid": spectral_centroid(d.sort_values("k")["psd"].to_numpy()),
               "artifact_centroid": spectral_centroid(artifacts[target])}
        if robustness is not None:
            r = robustness[(robustness["target"] == target) & (robustness["source"] == role)]
            if len(r):
                row["ood_auc_mean_degraded"] = float(r["ood_auc_mean_degraded"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def chapter_plan(cfg: ChapterConfig) -> dict[str, Any]:
    """What the chapter's runs are made of, as its notebook sets them up: ``artifacts`` (target -> artifact),
    ``sizes`` (target -> (n_dev, n_test)), ``baseline`` (role -> source spec), ``finetune`` (Chapter 4's
    fine-tuning config), ``edit_plan`` (edited role -> (original role, edit, edit parameters), only for sources
    whose images cfct holds)."""
    artifacts = {cfg.ct_target: get_artifact("ct-noise", n0=cfg.ct_n0),
                 cfg.denoise_target: get_artifact("nlm-denoising", strength=cfg.nlm_strength)}
    baseline = {"natural": cfg.natural_source, "medical": cfg.medical_source, "random": f"random:{cfg.arch}"}
    edit_plan = {"natural edited": ("natural", "lowpass-coarse", {"cutoff": cfg.lowpass_cutoff}),
                 "medical edited": ("medical", "spectrum-whiten", {})}
    return {
        "artifacts": artifacts,
        "sizes": {t: balanced_sizes(t, cfg.image_size, cfg.n_dev, cfg.n_test) for t in artifacts},
        "baseline": baseline,
        "finetune": ch4.chapter_finetune_config(0.5, lr=cfg.lr, epochs=cfg.epochs, patience=cfg.patience,
                                                seed=cfg.seed, device=cfg.device),
        "edit_plan": {k: v for k, v in edit_plan.items() if sources.parse_spec(baseline[v[0]]).kind == "pretrained"},
    }


def _edited_images_job(dataset: str, edit: str, edit_params: Mapping[str, Any], profile: Any,
                       store: results.Store) -> results.Run:
    return _edited_images(dataset, edit, edit_params, profile, store)


def _edited_pretrain_job(arch: str, dataset: str, edit: str, edit_params: Mapping[str, Any], profile: Any,
                         store: results.Store) -> results.Run:
    return _edited_pretrain(arch, dataset, edit, edit_params, profile, store)


def _source_priority_job(spec: str, probe: Mapping[str, Any], n_images: int, profile: Any,
                         store: results.Store) -> results.Run:
    ds = probe_set(**probe)
    source_priority(spec, ds, n_images=n_images, profile=profile, store=store)
    return store.get("learning-priority", _priority_key(_source_model_key(spec, ds.images.shape[1], profile), ds,
                                                        "predicted", n_images))


def _source_chunk_priority_job(spec: str, probe: Mapping[str, Any], fold: int, folds: int, n_images: int,
                               profile: Any, store: results.Store) -> results.Run:
    chunk = probe_chunks(probe_set(**probe), folds, n_images)[fold]
    source_priority(spec, chunk, n_images=len(chunk), profile=profile, store=store)
    return store.get("learning-priority", _priority_key(_source_model_key(spec, chunk.images.shape[1], profile),
                                                        chunk, "predicted", len(chunk)))


def _finetuned_priority_job(index: int, arguments: Mapping[str, Any], probe: Mapping[str, Any], n_images: int,
                            profile: Any, store: results.Store) -> results.Run:
    finetune_run = robustness._sweep_job(index, "finetune", arguments, profile, store)
    result = train.FinetuneResult.from_run(finetune_run)
    ds = probe_set(**probe)
    _priority_run(store, {"finetune": finetune_run.key}, ds, "true", n_images, result.load_model,
                  arguments["finetune"].device)
    return store.get("learning-priority", _priority_key({"finetune": finetune_run.key}, ds, "true", n_images))


def _experiment_jobs(cfg: ChapterConfig, plan: Mapping[str, Any], roles: Mapping[str, str], stage: int) -> list[Job]:
    """The runs of :func:`frequency_shortcut_experiment` for ``roles`` on every target (the sweep's fine-tunes and
    o.o.d. predictions, the fine-tuned models' learning priorities) and :func:`priority_table`'s source
    priorities; stages shifted by ``stage``."""
    out: list[Job] = []
    for target, conf in plan["artifacts"].items():
        n_dev, n_test = plan["sizes"][target]
        probe = {"target": target, "artifact": conf, "size": cfg.image_size, "n_dev": n_dev, "n_test": n_test,
                 "seed": cfg.seed}
        ds = probe_set(**probe)
        arguments = {"target": target, "confounder": conf, "sources": dict(roles), "finetune": plan["finetune"],
                     "p_arts": tuple(cfg.p_arts), "folds": cfg.folds, "size": cfg.image_size, "n_dev": n_dev,
                     "n_test": n_test, "pos_fraction": 0.5, "val_fraction": 0.15, "seed": cfg.seed}
        sweep = robustness.sweep_jobs(**arguments, profile=cfg.profile)
        out += [dataclasses.replace(job, stage=job.stage + stage) for job in sweep]
        finetunes = [job for job in sweep if job.kind == "finetune"]
        for i, job in enumerate(finetunes):
            key = _priority_key({"finetune": job.key}, ds, "true", cfg.priority_images)
            out.append(Job("learning-priority", key, stage + 2, functools.partial(
                _finetuned_priority_job, i, arguments, probe, cfg.priority_images, cfg.profile)))
        chunks = probe_chunks(ds, cfg.folds, cfg.priority_images)
        for spec in roles.values():
            key = _priority_key(_source_model_key(spec, cfg.image_size, cfg.profile), ds, "predicted",
                                cfg.priority_images)
            out.append(Job("learning-priority", key, stage + 1, functools.partial(
                _source_priority_job, spec, probe, cfg.priority_images, cfg.profile)))
            # the claims' replicates: the same source on each fold's chunk of the probe images
            for fold, chunk in enumerate(chunks):
                key = _priority_key(_source_model_key(spec, cfg.image_size, cfg.profile), chunk, "predicted",
                                    len(chunk))
                out.append(Job("learning-priority", key, stage + 1, functools.partial(
                    _source_chunk_priority_job, spec, probe, fold, cfg.folds, cfg.priority_images, cfg.profile)))
    return out


def jobs(cfg: ChapterConfig) -> list[Job]:
    """The chapter's store runs, as its notebook computes them.

    Stage 0: pre-training of the natural and medical sources, the edited source images of 5.2.4. Stage 1-2:
    the baseline sweeps (fine-tunes, then o.o.d. predictions and learning priorities), the sources' learning
    priorities and the pre-training of the edited sources. Stages 3-4: the edited sources' sweeps and
    priorities. These last name their source by the SHA-256 of its weights (a ``checkpoint:`` spec), so they
    are listed once the edited pre-training is in the store: plan again after the first stages have run
    (:func:`cfct.cluster.sweep_chapter` does). The edited images' path is the default store's.
    """
    plan = chapter_plan(cfg)
    store = results.default_store()
    out = pretrain_jobs([cfg.natural_source, cfg.medical_source], cfg.profile)
    out += _experiment_jobs(cfg, plan, plan["baseline"], 0)
    edits: dict[str, str] = {}
    for role, (original, edit, params) in plan["edit_plan"].items():
        src = sources.parse_spec(plan["baseline"][original])
        _, images = _edited_settings(src.arg, edit, params, cfg.profile)
        out.append(Job("ch5-edited-images", images, 0, functools.partial(
            _edited_images_job, src.arg, edit, params, cfg.profile)))
        kwargs = _edited_pretrain_settings(src.arch, src.arg, edit, params, cfg.profile, store)
        config = sources.pretrain_config(**kwargs)
        out.append(Job("pretrain", config, 1, functools.partial(
            _edited_pretrain_job, src.arch, src.arg, edit, params, cfg.profile)))
        run = store.get("pretrain", config)
        if run is not None:
            edits[role] = f"checkpoint:{src.arch}:{run.file('model.safetensors')}"
    if edits:
        out += _experiment_jobs(cfg, plan, edits, 2)
    return out


@dataclasses.dataclass(frozen=True)
class CollapsedRuns:
    """Fine-tunes of one target and source that collapsed to a constant score (a caveat, not a verdict)."""

    target: str
    source: str
    collapsed: int
    total: int

    @property
    def share(self) -> float:
        return self.collapsed / self.total

    @property
    def sentence(self) -> str:
        return (f"\n* **{self.target} / {self.source}**: {self.collapsed} of {self.total} fine-tunes predict one "
                "constant score for every test image (AUC exactly 0.5): the model collapsed rather than learned or "
                "ignored the shortcut, so its o.o.d. AUC says nothing about robustness.")


def collapsed_runs(table: pd.DataFrame) -> list[CollapsedRuns]:
    """Fine-tunes that predict one constant score for every test image (AUC exactly 0.5 on both test sets),
    per target and source: their o.o.d. AUC says nothing about robustness."""
    collapsed = table[(table.iid_auc == 0.5) & (table.ood_auc == 0.5)]
    return [CollapsedRuns(target, source, len(d), len(table[(table.target == target) & (table.source == source)]))
            for (target, source), d in collapsed.groupby(["target", "source"], sort=False)]


# ------------------------------------------------------------------------------------------------ claims ledger
#: Roles of the edited sources of 5.2.4 (the notebook's ``edit_plan`` keys).
LOWPASS_ROLE, WHITENED_ROLE = "natural edited", "medical edited"
#: "Mid-to-high frequencies" of 5.2.3: the band above a third of the highest frequency (claims_registry.yaml).
MID_HIGH_ABOVE = 1 / 3


def probe_chunks(probe: ImageSet, folds: int, n_images: int) -> list[ImageSet]:
    """``folds`` disjoint chunks of a probe set, one per fold: consecutive images, ``min(n_images, len // folds)``
    each. A pre-trained source is one model, so its replicates are measurements on disjoint images."""
    if int(folds) < 1 or int(n_images) < 1:
        raise ConfigError(f"folds and n_images must be at least 1, got {folds} and {n_images}")
    m = min(int(n_images), len(probe) // int(folds))
    if m < 1:
        raise ConfigError(f"a probe set of {len(probe)} images cannot give {folds} disjoint chunks")
    return [probe.subset(np.arange(f * m, (f + 1) * m)) for f in range(int(folds))]


def source_priority_folds(probes: Mapping[str, ImageSet], sources: Mapping[str, str], *, folds: int,
                          n_images: int = 128, profile: Any = None, store: Any = None,
                          device: str = "auto") -> pd.DataFrame:
    """Learning priorities of pre-trained sources (:func:`source_priority`, cached) on each fold's chunk of the
    probe images (:func:`probe_chunks`).

    Returns
    -------
    DataFrame
        ``target, source, fold, k, omega, psd``: one row per radial bin.
    """
    frames = []
    for target, probe in probes.items():
        for fold, chunk in enumerate(probe_chunks(probe, folds, n_images)):
            for role, spec in sources.items():
                psd = source_priority(spec, chunk, n_images=len(chunk), profile=profile, store=store, device=device)
                frames.append(pd.DataFrame({"target": target, "source": role, "fold": fold, "k": np.arange(len(psd)),
                                            "omega": normalized_frequencies(len(psd)), "psd": psd}))
    return pd.concat(frames, ignore_index=True)


def artifact_folds(probes: Mapping[str, ImageSet], artifacts: Mapping[str, Any], *, folds: int, n_images: int,
                   seed: int = 0) -> pd.DataFrame:
    """Per target and fold: the artifact's PSD (:func:`cfct.spectral.artifact_spectrum`, seed ``seed + fold``) on
    the fold's chunk of the probe images and its share above :data:`MID_HIGH_ABOVE` (``mid_high_fraction``).

    Returns
    -------
    DataFrame
        ``target, fold, k, omega, psd, mid_high_fraction``: one row per radial bin.
    """
    frames = []
    for target, probe in probes.items():
        for fold, chunk in enumerate(probe_chunks(probe, folds, n_images)):
            psd = artifact_spectrum(chunk.images, artifacts[target], seed=seed + fold)
            frames.append(pd.DataFrame({"target": target, "fold": fold, "k": np.arange(len(psd)),
                                        "omega": normalized_frequencies(len(psd)), "psd": psd,
                                        "mid_high_fraction": band_fraction(psd, MID_HIGH_ABOVE)}))
    return pd.concat(frames, ignore_index=True)


def fold_robustness(table: pd.DataFrame) -> pd.DataFrame:
    """Per target, source and fold (one fine-tune per degradation): the replicates of the AUC claims.

    ``ood_auc_clean`` is the o.o.d. AUC at the lowest degradation, ``ood_auc_degraded`` its mean over the higher
    degradations, ``ood_drop`` the difference of the two, ``iid_auc`` the i.i.d. AUC averaged over every
    degradation.
    """
    missing = {"target", "source", "fold", "p_art", "ood_auc", "iid_auc"} - set(table.columns)
    if missing:
        raise ConfigError(f"fold_robustness needs columns {sorted(missing)}")
    rows = []
    for (target, role, fold), d in table.groupby(["target", "source", "fold"], sort=False):
        lo = d["p_art"].min()
        clean, degraded = d[d["p_art"] == lo], d[d["p_art"] > lo]
        ood_clean = float(clean["ood_auc"].mean())
        ood_degraded = float(degraded["ood_auc"].mean()) if len(degraded) else float("nan")
        rows.append({"target": target, "source": role, "fold": fold, "ood_auc_clean": ood_clean,
                     "ood_auc_degraded": ood_degraded, "ood_drop": ood_clean - ood_degraded,
                     "iid_auc": float(d["iid_auc"].mean())})
    return pd.DataFrame(rows)


def _log_corr(a: np.ndarray, b: np.ndarray) -> float:
    # the shape measure of priority_shift: correlation of the log-densities (1 = same shape)
    return float(np.corrcoef(np.log(normalize_psd(a)), np.log(normalize_psd(b)))[0, 1])


def fold_priorities(pretrained: pd.DataFrame, artifacts: pd.DataFrame | None = None,
                    finetuned: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per target, source and fold: the replicates of the learning-priority claims.

    Parameters
    ----------
    pretrained : DataFrame
        :func:`source_priority_folds`: ``target, source, fold, k, psd``.
    artifacts : DataFrame, optional
        :func:`artifact_folds`; adds ``overlap`` (:func:`spectral_overlap` of the source's priority on the fold's
        chunk with the artifact's PSD on the same chunk).
    finetuned : DataFrame, optional
        Fine-tuned priorities (:attr:`ShortcutRuns.priorities`: ``target, source, p_art, fold, k, psd``); adds
        ``centroid_finetuned`` (of the fold's curve averaged over degradations) and, for the natural and medical
        sources, ``similarity_own`` / ``similarity_other``: the log-PSD correlation of that curve with the
        fold's pre-trained curve of the same source / of the other source.

    Returns
    -------
    DataFrame
        ``target, source, fold, centroid_pretrained`` and the columns above.
    """
    curve = {key: d.sort_values("k")["psd"].to_numpy()
             for key, d in pretrained.groupby(["target", "source", "fold"], sort=False)}
    art = {} if artifacts is None else {key: d.sort_values("k")["psd"].to_numpy()
                                        for key, d in artifacts.groupby(["target", "fold"], sort=False)}
    tuned = {} if finetuned is None else {
        key: d.groupby("k")["psd"].mean().sort_index().to_numpy()
        for key, d in finetuned.groupby(["target", "source", "fold"], sort=False)}
    other = {"natural": "medical", "medical": "natural"}
    rows = []
    for (target, role, fold), psd in curve.items():
        row: dict[str, Any] = {"target": target, "source": role, "fold": fold,
                               "centroid_pretrained": spectral_centroid(psd)}
        if (target, fold) in art:
            row["overlap"] = spectral_overlap(psd, art[target, fold])
        if (target, role, fold) in tuned:
            after = tuned[target, role, fold]
            row["centroid_finetuned"] = spectral_centroid(after)
            if role in other and (target, other[role], fold) in curve:
                row["similarity_own"] = _log_corr(psd, after)
                row["similarity_other"] = _log_corr(curve[target, other[role], fold], after)
        rows.append(row)
    return pd.DataFrame(rows)


def _arms(table: pd.DataFrame, value: str, a: str, b: str, keys: list[str],
          arm: str = "source") -> dict[str, np.ndarray] | None:
    """Paired arms by key (:func:`cfct.claims.arms_from_table`); None when an arm is absent from this run."""
    if value not in table.columns or not {a, b} <= set(table[arm]):
        return None
    return claims.arms_from_table(table.dropna(subset=[value]), value=value, arm=arm, a=a, b=b, pair_by=keys)


def _stack(table: pd.DataFrame, columns: Mapping[str, str], arm: str, keys: list[str]) -> pd.DataFrame:
    """Long form of wide columns (column -> arm name), for :func:`cfct.claims.arms_from_table`."""
    present = {c: name for c, name in columns.items() if c in table.columns}
    return pd.concat([table[[*keys, c]].rename(columns={c: "value"}).assign(**{arm: name})
                      for c, name in present.items()], ignore_index=True) if present else pd.DataFrame()


def claims_data(table: pd.DataFrame, *, ct_target: str, denoise_target: str,
                priorities: pd.DataFrame | None = None,
                artifacts: pd.DataFrame | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Each Chapter 5 claim's replicates (``claims_registry.yaml``), built by key from the chapter's tables.

    Parameters
    ----------
    table : DataFrame
        Fine-tunes, one row per (target, source, p_art, fold) (:attr:`ShortcutRuns.table`, baseline and edited).
    ct_target, denoise_target : str
        The targets carrying the CT-noise and the NLM artifact.
    priorities : DataFrame, optional
        :func:`fold_priorities` (with its ``overlap`` and fine-tuned columns where the claims need them).
    artifacts : DataFrame, optional
        :func:`artifact_folds`.

    Returns
    -------
    dict
        Claim id -> data for :func:`cfct.claims.evaluate`; a claim whose sources this run lacks (e.g. no edited
        source for ``imagenet:``) is left out, and the ledger shows it as not run.

    Raises
    ------
    ConfigError
        When the arms of a paired claim do not hold the same replicates (a fold missing from one source).
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    robust = fold_robustness(table)
    pair = ["target", "fold"]
    ct, dn = robust[robust.target == ct_target], robust[robust.target == denoise_target]
    spec = {
        "ch5.natural-prone-noise-shortcut": (ct, "ood_auc_degraded", "medical", "natural"),
        "ch5.natural-prone-denoise-shortcut": (dn, "ood_auc_degraded", "medical", "natural"),
        "ch5.iid-competitive": (robust[robust.target.isin([ct_target, denoise_target])], "iid_auc", "medical",
                                "natural"),
        "ch5.whitened-medical-picks-up-shortcut": (ct, "ood_auc_degraded", "medical", WHITENED_ROLE),
        "ch5.lowpass-natural-more-robust": (ct, "ood_auc_degraded", LOWPASS_ROLE, "natural"),
    }
    if priorities is not None:
        pc = priorities[priorities.target == ct_target]
        spec.update({
            "ch5.natural-priority-higher-frequency": (pc, "centroid_pretrained", "natural", "medical"),
            "ch5.natural-overlaps-artifact": (pc, "overlap", "natural", "medical"),
            "ch5.whitened-priority-higher": (pc, "centroid_pretrained", WHITENED_ROLE, "medical"),
            "ch5.lowpass-priority-like-medical": (pc, "centroid_pretrained", LOWPASS_ROLE, "medical"),
        })
    for cid, (frame, value, a, b) in spec.items():
        arms = _arms(frame, value, a, b, pair)
        if arms is not None:
            out[cid] = arms
    lowpass = _arms(ct, "ood_auc_degraded", LOWPASS_ROLE, "medical", pair)
    if lowpass is not None:
        out["ch5.lowpass-natural-noninferior-to-medical"] = {"values": lowpass["a"] - lowpass["b"]}
    # random initialisation's spread: |o.o.d. AUC - median over folds| at each target and degradation, from
    # groups of at least 3 folds (with 1 fold the deviation is 0, with 2 both are half the range)
    dev = table[table.source.isin(["random", "natural", "medical"])].copy()
    if {"random", "natural", "medical"} <= set(dev.source):
        group = dev.groupby(["target", "source", "p_art"])["ood_auc"]
        dev["abs_dev"] = (dev["ood_auc"] - group.transform("median")).abs()
        dev = dev[group.transform("size") >= 3]
        is_random = (dev.source == "random").to_numpy()
        out["ch5.random-unstable"] = {"a": dev["abs_dev"].to_numpy(float)[is_random],
                                      "b": dev["abs_dev"].to_numpy(float)[~is_random]}
    if artifacts is not None:
        frac = artifacts.drop_duplicates(["target", "fold"])
        for cid, target in (("ch5.noise-artifact-mid-high", ct_target),
                            ("ch5.denoise-artifact-mid-high", denoise_target)):
            v = frac[frac.target == target].sort_values("fold")["mid_high_fraction"].to_numpy(float)
            if len(v):
                out[cid] = {"values": v}
    if priorities is not None:
        keys = ["target", "source", "fold"]
        base = priorities[(priorities.target == ct_target) & priorities.source.isin(["natural", "medical"])]
        stable = _stack(base.dropna(subset=[c for c in ("similarity_own", "similarity_other") if c in base]),
                        {"similarity_own": "own", "similarity_other": "other"}, "reference", keys)
        arms = _arms(stable, "value", "own", "other", keys, arm="reference") if len(stable) else None
        if arms is not None:
            out["ch5.priority-stable-after-ft"] = arms
        shift = _stack(base.dropna(subset=[c for c in ("centroid_finetuned",) if c in base]),
                       {"centroid_finetuned": "fine-tuned", "centroid_pretrained": "pre-trained"}, "stage", keys)
        arms = _arms(shift, "value", "fine-tuned", "pre-trained", keys, arm="stage") if len(shift) else None
        if arms is not None:
            out["ch5.priority-peak-shifts-up"] = arms
        if "overlap" in priorities.columns:
            both = priorities.dropna(subset=["overlap"]).merge(robust, on=keys, how="inner")
            both = both[both.target.isin([ct_target, denoise_target])].sort_values(keys)
            if len(both):
                out["ch5.overlap-predicts-shortcut"] = {"x": both["overlap"].to_numpy(float),
                                                        "y": both["ood_drop"].to_numpy(float)}
    return out


#: The chapter's section (MyST target) that shows each claim's data, for the ledger's links.
CLAIM_SECTIONS = {
    "ch5.natural-prone-noise-shortcut": "ch5-baseline", "ch5.natural-prone-denoise-shortcut": "ch5-baseline",
    "ch5.iid-competitive": "ch5-baseline", "ch5.random-unstable": "ch5-baseline",
    "ch5.natural-priority-higher-frequency": "ch5-priority", "ch5.priority-stable-after-ft": "ch5-priority",
    "ch5.priority-peak-shifts-up": "ch5-priority", "ch5.noise-artifact-mid-high": "ch5-overlap",
    "ch5.denoise-artifact-mid-high": "ch5-overlap", "ch5.natural-overlaps-artifact": "ch5-overlap",
    "ch5.overlap-predicts-shortcut": "ch5-editing", "ch5.whitened-medical-picks-up-shortcut": "ch5-editing",
    "ch5.whitened-priority-higher": "ch5-editing", "ch5.lowpass-natural-more-robust": "ch5-editing",
    "ch5.lowpass-natural-noninferior-to-medical": "ch5-editing", "ch5.lowpass-priority-like-medical": "ch5-editing",
}


def claims_evidence(table: pd.DataFrame, *, ct_target: str, denoise_target: str, profile: str = "",
                    priorities: pd.DataFrame | None = None, artifacts: pd.DataFrame | None = None,
                    sources: str = "", page: str = "") -> dict[str, claims.Evidence]:
    """:func:`cfct.claims.evaluate` on every Chapter 5 claim :func:`claims_data` can build from these tables.

    ``page`` (e.g. ``"05_frequency_shortcuts.html"``) is joined with the claim's section of
    :data:`CLAIM_SECTIONS` into the evidence's link.

    Returns
    -------
    dict
        Claim id -> Evidence, in registry order.
    """
    found = claims_data(table, ct_target=ct_target, denoise_target=denoise_target, priorities=priorities,
                        artifacts=artifacts)
    return {c.id: claims.evaluate(c, found[c.id], profile=profile, sources=sources,
                                  link=f"{page}#{CLAIM_SECTIONS[c.id]}" if page else "")
            for c in claims.registry(5) if c.id in found}


def evidence_sentence(ev: claims.Evidence) -> str:
    """One Markdown bullet from a claim's Evidence: the thesis's words, this run's estimate with its 95% interval
    and n, and the verdict of the declared rule with its reason (the chapter types no verdict itself)."""
    c = claims.get_claim(ev.claim_id)
    if c.rule == "correlation":
        what = f"{c.method} correlation of {c.arms[0]} and {c.arms[1]}"
    elif c.rule == "greater_than":
        what = f"mean {c.arms[0] if c.arms else 'value'} (threshold {c.threshold:g})"
    else:
        what = f"{c.arms[0]} - {c.arms[1]}" if c.arms else "difference"
    ci = (f" [95% CI {ev.ci_low:+.3f}, {ev.ci_high:+.3f}]" if np.isfinite(ev.ci_low) and np.isfinite(ev.ci_high)
          else "")
    est = f"{ev.estimate:+.3f}" if np.isfinite(ev.estimate) else "n/a"
    return (f"* *\"{c.quote}\"* (§{c.section}, `{c.id}`): {what} = {est}{ci}, n = {'/'.join(map(str, ev.n))}: "
            f"**{ev.verdict}** ({ev.reason})")


def evidence_lines(evidence: Mapping[str, claims.Evidence], ids: list[str] | tuple[str, ...]) -> str:
    """:func:`evidence_sentence` for the claims ``ids`` this run evaluated, one per line."""
    return "\n".join(evidence_sentence(evidence[i]) for i in ids if i in evidence)


def replicate_note(evidence: Mapping[str, claims.Evidence], minimum: int = 3) -> str:
    """Whether every verdict rests on at least ``minimum`` replicates per arm, computed from the Evidence."""
    short = {i: ev.n for i, ev in evidence.items() if not ev.n or min(ev.n) < minimum}
    counts = sorted({min(ev.n) for ev in evidence.values() if ev.n})
    if not short:
        return (f"Every one of the {len(evidence)} verdicts rests on at least {minimum} replicates per arm "
                f"(fewest: {counts[0] if counts else 'none'}).")
    return (f"{len(short)} of {len(evidence)} claims have fewer than {minimum} replicates in an arm ("
            + ", ".join(f"`{i}`: n = {'/'.join(map(str, n))}" for i, n in short.items())
            + "): the declared rules give them no verdict (inconclusive, too few replicates); run with "
            f"`folds={minimum}` or more.")


def variant_sentence(comparisons: Mapping[str, Any]) -> str:
    """The sentence on how much the exponent of Eq. 5.1 changes normalised curves, from
    :func:`cfct.spectral.compare_psd_variants` results (label -> :class:`~cfct.spectral.VariantComparison`)."""
    if not comparisons:
        raise ConfigError("variant_sentence needs at least one comparison")
    tolerances = {float(c.tolerance) for c in comparisons.values()}
    if len(tolerances) != 1:
        raise ConfigError(f"the comparisons use different tolerances {sorted(tolerances)}")
    tol = tolerances.pop()
    parts = "; ".join(f"{label}: centroid {c.centroid_a:.3f} -> {c.centroid_b:.3f}, largest difference of the "
                      f"normalised curves {c.max_abs_difference:.3f}" for label, c in comparisons.items())
    moved = [label for label, c in comparisons.items() if not c.changes_little]
    if not moved:
        verdict = f"the normalised curves change little (every centroid moves by less than {tol:g})"
    else:
        verdict = (f"the exponent is not a detail: the centroid moves by {tol:g} or more on the normalised "
                   f"frequency axis in {', '.join(moved)}")
    return f"Magnitude (Eq. 5.1) vs power spectrum ({parts}): {verdict}."
