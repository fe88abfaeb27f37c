"""The p_art robustness sweep shared by Chapters 4 and 5.

A confounder (Ch. 4) or a frequency artifact (Ch. 5) is put into a share p_art of the positive development
images; each source is fine-tuned on every fold at every p_art and tested on an i.i.d. test set (the same
share) and an o.o.d. one (every negative image carries the artifact, no positive one does).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cfct import data, results, stats, train
from cfct.errors import ConfigError, unknown_choice
from cfct.experiments.jobs import Job, pretrain_jobs
from cfct.shortcuts import (
    Confounder,
    _check_fraction,
    artifact_mask,
    attribute_confounded_split,
    dev_splits,
    get_confounder,
    ood_mask,
    positive_class,
    split_dev_test,
)

_CACHE_VERSION = 1


def _array_digest(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _cached_arrays(config: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]], store: Any,
                   use_cache: bool) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, kept in the results store (kind ``ch4-confounded-images``) under ``config``."""
    if not use_cache:
        return compute()
    names: list[str] = []

    def run(workdir: Path) -> dict[str, Any]:
        arrays = compute()
        names.extend(arrays)
        results.save_arrays(workdir, **arrays)
        return {"arrays": sorted(arrays)}

    done = (store if store is not None else results.default_store()).cached("ch4-confounded-images", config, run)
    return {name: done.array(name) for name in done.metrics["arrays"]}


@dataclass
class ConfoundedSets:
    """The three sets of one point of the sweep (Sec. 4.2.2).

    Attributes
    ----------
    dev : ImageSet
        Development set (train + val): the confounder in ``p_art`` of the positives.
    iid : ImageSet
        i.i.d. test set, drawn like ``dev``.
    ood : ImageSet
        o.o.d. test set: the confounder in every negative, no positive.
    dev_artifact, iid_artifact, ood_artifact : ndarray of bool
        Which images of each set carry the confounder.
    confounder : Confounder
    p_art : float
    positive : int
        Label of the class that carries the confounder in ``dev``.
    """

    dev: Any
    iid: Any
    ood: Any
    dev_artifact: np.ndarray
    iid_artifact: np.ndarray
    ood_artifact: np.ndarray
    confounder: Confounder
    p_art: float
    positive: int

    def composition(self) -> pd.DataFrame:
        """Counts of (set, class, artifact): the check that each set has its stated composition."""
        rows = []
        for name in ("dev", "iid", "ood"):
            ds, art = getattr(self, name), getattr(self, f"{name}_artifact")
            pos = np.asarray(ds.labels) == self.positive
            for cls, m in (("positive", pos), ("negative", ~pos)):
                rows.append({"set": name, "class": cls, "n": int(m.sum()), "with confounder": int((art & m).sum())})
        return pd.DataFrame(rows)


def _with_images(ds: Any, images: np.ndarray, name: str) -> Any:
    """A copy of an ImageSet-like dataclass with new images and name (labels, groups, meta kept)."""
    return dataclasses.replace(ds, images=images, name=name)


def _tagname(base: str, conf: Confounder, what: str) -> str:
    return f"{base}|{conf.name}:{results.config_hash(conf.config())[:8]}:{what}"


def confounded_sets(
    dev: Any,
    test: Any,
    confounder: str | Confounder,
    p_art: float,
    *,
    positive: int = 1,
    seed: int = 0,
    cache: bool = True,
    store: results.Store | None = None,
) -> ConfoundedSets:
    """Put an image confounder into a development set and build its i.i.d. and o.o.d. test sets.

    Parameters
    ----------
    dev, test : ImageSet
        Clean development and test sets (e.g. from :func:`split_dev_test`); binary labels.
    confounder : str or Confounder
        An ``'image'`` confounder of :data:`CONFOUNDERS` (attribute confounders select images instead:
        :func:`attribute_confounded_split`).
    p_art : float
        Fraction of development and i.i.d. positives carrying the artifact.
    positive : int
        Label of the class that carries it.
    seed : int
        Randomness (which positives, noise draws). The o.o.d. set does not depend on ``p_art``.
    cache : bool
        Keep confounded images in the results store (kind ``ch4-confounded-images``), keyed by a hash of the
        image bytes, labels, confounder, ``p_art`` and seed, so a sweep computes each version once.
    store : cfct.results.Store, optional
        Where (default: the default store).

    Returns
    -------
    ConfoundedSets
        ``dev``/``iid``/``ood`` are copies of the inputs with new images and names; at ``p_art = 0`` the
        development set keeps its name (and fingerprint) when the confounder has no base treatment, so runs
        at ``p_art = 0`` are shared between confounders of the same target.
    """
    conf = get_confounder(confounder)
    if conf.kind != "image":
        raise ConfigError(f"confounder {conf.name!r} selects images by metadata; use attribute_confounded_split")
    p_art = _check_fraction("p_art", p_art)
    dev_mask = artifact_mask(dev.labels, p_art, positive=positive, seed=seed)
    iid_mask = artifact_mask(test.labels, p_art, positive=positive, seed=seed + 1)
    o_mask = ood_mask(test.labels, positive=positive)
    base = {
        "kind": "sets",
        "version": _CACHE_VERSION,
        "confounder": conf.config(),
        "positive": int(positive),
        "seed": int(seed),
    }

    def one(ds: Any, mask: np.ndarray, stream: int, what: str) -> np.ndarray:
        # The mask is part of the key, so p_art is too; the o.o.d. set is thus computed once per sweep.
        cfg = {**base, "what": what, "data": _array_digest(ds.images, np.asarray(ds.labels), mask)}
        images = _cached_arrays(
            cfg, lambda: {"images": conf.apply(ds.images, mask, seed=seed * 7919 + stream)}, store, cache
        )
        return images["images"]

    untouched = not conf.base_function
    dev_images = dev.images if (untouched and not dev_mask.any()) else one(dev, dev_mask, 0, "dev")
    dev_name = dev.name if (untouched and not dev_mask.any()) else _tagname(dev.name, conf, f"p{p_art:g}:s{seed}")
    iid_images = test.images if (untouched and not iid_mask.any()) else one(test, iid_mask, 1, "iid")
    iid_name = test.name if (untouched and not iid_mask.any()) else _tagname(test.name, conf, f"iid{p_art:g}:s{seed}")
    return ConfoundedSets(
        dev=_with_images(dev, dev_images, dev_name),
        iid=_with_images(test, iid_images, iid_name),
        ood=_with_images(test, one(test, o_mask, 2, "ood"), _tagname(test.name, conf, f"ood:s{seed}")),
        dev_artifact=dev_mask,
        iid_artifact=iid_mask,
        ood_artifact=o_mask,
        confounder=conf,
        p_art=p_art,
        positive=int(positive),
    )


def load_pools(target: str, size: int) -> tuple[Any, Any | None]:
    """The images a target offers: (development pool, official test pool or None).

    MedMNIST targets give their official train (development pool; val is not needed, folds are drawn from
    the development set) and test splits; ``csv:`` folders give one pool that :func:`split_dev_test` splits
    by patient or group.
    """

    t = data.parse_target(target)
    if t.kind == "medmnist":
        return data.load_target(target, "train", size), data.load_target(target, "test", size)
    return data.load_target(target, "all", size), None


def _binary_check(ds: Any) -> None:
    if ds.task != "binary":
        raise ConfigError(f"Chapter 4's sets need a binary target; {ds.name!r} is {ds.task} ({ds.n_classes} classes)")


def experiment_sets(
    target: str,
    confounder: str | Confounder,
    p_art: float,
    *,
    size: int,
    n_dev: int,
    n_test: int,
    pos_fraction: float,
    seed: int = 0,
    replicate: int | None = None,
    cache: bool = True,
    store: results.Store | None = None,
) -> ConfoundedSets:
    """Development, i.i.d. and o.o.d. sets of one target, confounder and ``p_art`` (Sec. 4.2.2).

    Image confounders: a seeded development / test draw with exact class shares (:func:`split_dev_test`,
    patient- or group-disjoint for ``csv:`` targets), then :func:`confounded_sets`. Attribute confounders
    (patient sex): :func:`attribute_confounded_split` on the target's metadata.

    ``replicate=r`` draws the sets of replicate ``r`` of a cross-validation: seed ``seed + r`` (a new
    development draw, artifact order and noise) and a test set disjoint from those of replicates ``0 .. r-1``
    (patient- / group-disjoint on ``csv:`` targets; :func:`replicate_test_indices`). Replicate 0 is the plain
    draw with ``seed``. None: the plain draw (one test set shared by every train/val split).
    """
    conf = get_confounder(confounder)
    positive = positive_class(target)
    dev_pool, test_pool = load_pools(target, size)
    _binary_check(dev_pool)
    rep = None if replicate is None else int(replicate)
    if rep is not None and rep < 0:
        raise ConfigError(f"replicate must be >= 0; got {replicate}")
    draw_seed = seed + (rep or 0)
    exclude = None
    if rep:
        space = _attribute_pool(dev_pool, test_pool) if conf.kind == "attribute" else (
            dev_pool if test_pool is None else test_pool)
        earlier = replicate_test_indices(target, conf, rep, size=size, n_dev=n_dev, n_test=n_test,
                                         pos_fraction=pos_fraction, seed=seed)
        exclude = np.isin(np.arange(len(space)), np.concatenate(earlier))
    rtag = f":r{rep}" if rep else ""
    if conf.kind == "attribute":
        pool = _attribute_pool(dev_pool, test_pool)
        split = _attribute_split(pool, conf, target, p_art, n_dev=n_dev, n_test=n_test, pos_fraction=pos_fraction,
                                 positive=positive, seed=draw_seed, exclude=exclude)
        tag = f"|{conf.name}={conf.value}:p{p_art:g}:s{draw_seed}{rtag}"
        dev, iid, ood = (pool.subset(split[k]) for k in ("dev", "iid", "ood"))
        dev.name, iid.name = pool.name + tag + ":dev", pool.name + tag + ":iid"
        ood.name = pool.name + f"|{conf.name}={conf.value}:ood:s{draw_seed}{rtag}"
        return ConfoundedSets(
            dev,
            iid,
            ood,
            split["dev_attr"],
            split["iid_attr"],
            split["ood_attr"],
            conf,
            float(p_art),
            positive,
        )
    dev_idx, test_idx = _image_split(dev_pool, test_pool, target, n_dev=n_dev, n_test=n_test,
                                     pos_fraction=pos_fraction, positive=positive, seed=draw_seed, exclude=exclude)
    dev = dev_pool.subset(dev_idx)
    test = (dev_pool if test_pool is None else test_pool).subset(test_idx)
    dev.name += f"[dev n={n_dev} pos={pos_fraction:g} s{draw_seed}{rtag}]"
    test.name += f"[test n={n_test} pos={pos_fraction:g} s{draw_seed}{rtag}]"
    return confounded_sets(dev, test, conf, p_art, positive=positive, seed=draw_seed, cache=cache, store=store)


def _attribute_pool(dev_pool: Any, test_pool: Any | None) -> Any:
    return dev_pool if test_pool is None else _concat([dev_pool, test_pool], name=dev_pool.name)


def _attribute_split(pool: Any, conf: Confounder, target: str, p_art: float, *, n_dev: int, n_test: int,
                     pos_fraction: float, positive: int, seed: int, exclude: np.ndarray | None) -> dict[str, Any]:
    if pool.meta is None or conf.attribute not in pool.meta.columns:
        cols = [] if pool.meta is None else list(pool.meta.columns)
        raise ConfigError(
            f"confounder {conf.name!r} needs a {conf.attribute!r} column in {target}'s labels.csv; "
            f"it has: {', '.join(cols) or 'no metadata'}"
        )
    meta = pool.meta.copy()
    meta["__label"] = pool.labels
    meta["__group"] = pool.groups if pool.groups is not None else np.arange(len(pool)).astype(str)
    return _fitting(
        lambda nd, nt: attribute_confounded_split(
            meta, "__label", conf.attribute, p_art, value=conf.value, n_dev=nd, n_test=nt,
            pos_fraction=pos_fraction, positive=positive, group="__group", seed=seed, test_exclude=exclude,
        ),
        n_dev,
        n_test,
        target,
    )


def _image_split(dev_pool: Any, test_pool: Any | None, target: str, *, n_dev: int, n_test: int,
                 pos_fraction: float, positive: int, seed: int,
                 exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    return _fitting(
        lambda nd, nt: split_dev_test(
            dev_pool.labels,
            n_dev=nd,
            n_test=nt,
            pos_fraction=pos_fraction,
            positive=positive,
            groups=dev_pool.groups if test_pool is None else None,
            test_labels=None if test_pool is None else test_pool.labels,
            seed=seed,
            test_exclude=exclude,
        ),
        n_dev,
        n_test,
        target,
    )


def replicate_test_indices(
    target: str,
    confounder: str | Confounder,
    replicates: int,
    *,
    size: int,
    n_dev: int,
    n_test: int,
    pos_fraction: float,
    seed: int = 0,
) -> list[np.ndarray]:
    """The test images of replicates ``0 .. replicates-1`` of :func:`experiment_sets`, as sorted indices into
    the target's test pool (MedMNIST: its official test split; ``csv:``: the one pool).

    Each replicate's test set avoids the images (and, on ``csv:`` targets, the patients / groups) of the
    earlier ones, so the returned arrays are pairwise disjoint: the replicates of a verdict do not share test
    images. Attribute confounders count every image either test set (i.i.d. at any ``p_art``, o.o.d.) may use.
    """
    conf = get_confounder(confounder)
    positive = positive_class(target)
    dev_pool, test_pool = load_pools(target, size)
    pool = _attribute_pool(dev_pool, test_pool) if conf.kind == "attribute" else (
        dev_pool if test_pool is None else test_pool)
    out: list[np.ndarray] = []
    for r in range(int(replicates)):
        exclude = np.isin(np.arange(len(pool)), np.concatenate(out)) if out else None
        if conf.kind == "attribute":
            used = [
                _attribute_split(pool, conf, target, p, n_dev=n_dev, n_test=n_test, pos_fraction=pos_fraction,
                                 positive=positive, seed=seed + r, exclude=exclude)
                for p in (0.0, 1.0)
            ]
            idx = np.concatenate([u[k] for u in used for k in ("iid", "ood")])
        else:
            idx = _image_split(dev_pool, test_pool, target, n_dev=n_dev, n_test=n_test, pos_fraction=pos_fraction,
                               positive=positive, seed=seed + r, exclude=exclude)[1]
        out.append(np.unique(idx))
    return out


def _fitting(draw: Callable[[int, int], Any], n_dev: int, n_test: int, target: str) -> Any:
    """``draw(n_dev, n_test)``, shrinking both sizes by 15 % steps while the target has too few images.

    The paper profile asks for Table 4.1's sizes (400 / 400), which a small local sample such as the
    1,000-image NIH CXR14 subset cannot give under the exact class / attribute shares; the sets then shrink
    (with a warning) instead of failing. The realised sizes are in every result row (``n_train``, ``n_test``).
    """

    nd, nt = int(n_dev), int(n_test)
    for _ in range(15):
        try:
            out = draw(nd, nt)
        except ConfigError as err:
            if "available" not in str(err) and "not enough" not in str(err):
                raise
            nd, nt = int(nd * 0.85), int(nt * 0.85)
            if min(nd, nt) < 8:
                raise
            continue
        if (nd, nt) != (int(n_dev), int(n_test)):
            warnings.warn(
                f"{target}: too few images for n_dev={n_dev}, n_test={n_test} at these class shares; "
                f"using n_dev={nd}, n_test={nt}",
                stacklevel=3,
            )
        return out
    raise ConfigError(f"{target}: could not draw development / test sets of any size")


def _concat(sets: Sequence[Any], name: str) -> Any:
    """One ImageSet from several (same task and classes); groups and meta are concatenated."""

    first = sets[0]
    groups = None
    if all(s.groups is not None for s in sets):
        groups = np.concatenate([s.groups for s in sets])
    meta = None
    if all(s.meta is not None for s in sets):
        meta = pd.concat([s.meta for s in sets], ignore_index=True)
    return data.ImageSet(
        images=np.concatenate([s.images for s in sets]),
        labels=np.concatenate([s.labels for s in sets]),
        task=first.task,
        class_names=first.class_names,
        name=name,
        groups=groups,
        meta=meta,
    )


def _recall(labels: np.ndarray, probs: np.ndarray, positive: int) -> float:
    """Share of positives predicted positive at the 0.5 threshold (the thesis's 'recall = 0' check)."""
    y = np.asarray(labels) == positive
    pred = np.asarray(probs)[:, positive] >= 0.5
    return float(pred[y].mean()) if y.any() else float("nan")


def _ood_key(finetune_key: str, ood: data.ImageSet) -> dict[str, Any]:
    return {"finetune": finetune_key, "ood": ood.fingerprint(), "name": ood.name}


def evaluate_ood(result: Any, ood: Any, *, store: Any = None, device: str = "auto") -> np.ndarray:
    """Probabilities of a fine-tuned model on an o.o.d. set, cached beside the fine-tune run."""

    store = store if store is not None else results.default_store()
    key = _ood_key(result.run.key, ood)

    def compute(workdir: Path) -> dict[str, Any]:
        probs = train.predict(result.load_model(), ood, device=device)
        results.save_arrays(workdir, probs=probs.astype(np.float32))
        return {"auc": stats.roc_auc(np.asarray(ood.labels), probs)}

    return store.cached("shortcut-ood", key, compute).array("probs").astype(np.float64)


@dataclass(frozen=True)
class SweepRun:
    """One fine-tune of a p_art sweep: where it sits (p_art, fold, source role) and what it gave."""

    target: str
    confounder: str
    p_art: float
    fold: int
    role: str
    spec: str
    sets: ConfoundedSets
    n_train: int
    n_val: int
    result: train.FinetuneResult
    ood_probs: np.ndarray

    def row(self) -> dict[str, Any]:
        """The run's row of a sweep table: i.i.d., o.o.d. and validation AUC, recalls, epochs, sizes."""
        res, sets = self.result, self.sets
        return {
            "target": self.target,
            "confounder": self.confounder,
            "source": self.role,
            "spec": self.spec,
            "p_art": self.p_art,
            "fold": self.fold,
            "iid_auc": float(res.metrics["test_auc"]),
            "ood_auc": stats.roc_auc(np.asarray(sets.ood.labels), self.ood_probs),
            "val_auc": float(res.metrics["val_auc"]),
            "iid_recall": _recall(res.test_labels, res.test_probs, sets.positive),
            "ood_recall": _recall(sets.ood.labels, self.ood_probs, sets.positive),
            "epochs": int(res.metrics["epochs"]),
            "best_epoch": int(res.metrics["best_epoch"]),
            "seconds": float(res.metrics["seconds"]),
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": len(sets.iid),
        }


#: How the folds of a sweep differ. ``splits``: train/validation splits of one development set, one test set
#: for all (Chapter 5, and Chapter 4's earlier protocol); ``kfold``: fold k is replicate k of
#: :func:`experiment_sets`, with its own development draw and a test set disjoint from the other folds'.
FOLD_SCHEMES: tuple[str, ...] = ("splits", "kfold")


def _fold_sets(target: str, confounder: Confounder, p: float, *, folds: int, scheme: str, size: int, n_dev: int,
               n_test: int, pos_fraction: float, val_fraction: float, seed: int,
               store: results.Store | None) -> Iterator[tuple[int, ConfoundedSets, np.ndarray, np.ndarray]]:
    """(fold, sets, train_idx, val_idx) of one ``p_art`` under a fold scheme."""
    if scheme not in FOLD_SCHEMES:
        raise unknown_choice("fold scheme", scheme, FOLD_SCHEMES)
    if scheme == "splits":
        sets = experiment_sets(target, confounder, p, size=size, n_dev=n_dev, n_test=n_test,
                               pos_fraction=pos_fraction, seed=seed, store=store)
        splits = dev_splits(sets.dev.labels, k=folds, val_fraction=val_fraction, groups=sets.dev.groups, seed=seed)
        for k, (tr, va) in enumerate(splits):
            yield k, sets, tr, va
        return
    for k in range(int(folds)):
        sets = experiment_sets(target, confounder, p, size=size, n_dev=n_dev, n_test=n_test,
                               pos_fraction=pos_fraction, seed=seed, replicate=k, store=store)
        tr, va = dev_splits(sets.dev.labels, k=1, val_fraction=val_fraction, groups=sets.dev.groups, seed=seed + k)[0]
        yield k, sets, tr, va


def _units(target: str, confounder: Confounder, sources: Mapping[str, str], finetune: train.FinetuneConfig, *,
           p_arts: Sequence[float], folds: int, size: int, n_dev: int, n_test: int, pos_fraction: float,
           val_fraction: float, seed: int, store: results.Store | None,
           scheme: str = "splits") -> Iterator[tuple]:
    """The fine-tunes of a sweep in order: (p_art, fold, role, spec, sets, train, val, config)."""
    for p in p_arts:
        for k, sets, tr, va in _fold_sets(target, confounder, p, folds=folds, scheme=scheme, size=size, n_dev=n_dev,
                                          n_test=n_test, pos_fraction=pos_fraction, val_fraction=val_fraction,
                                          seed=seed, store=store):
            trn, val = sets.dev.subset(tr), sets.dev.subset(va)
            cfg = dataclasses.replace(finetune, seed=finetune.seed + k)
            for role, spec in sources.items():
                yield float(p), k, role, spec, sets, trn, val, cfg


def sweep(
    target: str,
    confounder: Confounder,
    sources: Mapping[str, str],
    finetune: train.FinetuneConfig,
    *,
    p_arts: Sequence[float],
    folds: int,
    size: int,
    n_dev: int,
    n_test: int,
    pos_fraction: float,
    val_fraction: float,
    seed: int = 0,
    store: results.Store | None = None,
    profile: Any = None,
    progress: bool = True,
    scheme: str = "splits",
) -> Iterator[SweepRun]:
    """Fine-tune every source at every ``p_art`` and fold (Sec. 4.2.2 / 5.1.2), one :class:`SweepRun` each.

    For each ``p_art`` the development and test sets come from :func:`experiment_sets`; the development set is
    split into ``folds`` train/validation splits (:func:`cfct.shortcuts.dev_splits`, group-disjoint); fold
    ``k`` fine-tunes with seed ``finetune.seed + k``. ``scheme='kfold'`` (:data:`FOLD_SCHEMES`) instead makes
    fold ``k`` replicate ``k`` of :func:`experiment_sets`: its own development draw and one train/val split, and
    a test set disjoint from the other folds' (real replicates for a verdict). Every fine-tune and every o.o.d.
    evaluation is cached in the results store, so a chapter that shares runs with another computes them once.
    """
    plan = [(p, k, role) for p in p_arts for k in range(int(folds)) for role in sources]
    bar = tqdm(total=len(plan), desc=f"{target} / {confounder.name}", disable=not progress)
    for p, k, role, spec, sets, trn, val, cfg in _units(
        target, confounder, sources, finetune, p_arts=p_arts, folds=folds, size=size, n_dev=n_dev, n_test=n_test,
        pos_fraction=pos_fraction, val_fraction=val_fraction, seed=seed, store=store, scheme=scheme,
    ):
        bar.set_postfix_str(f"p_art={p:g} fold={k} {role}")
        res = train.finetune(spec, trn, val, sets.iid, cfg, store=store, pretrain=profile, progress=False)
        ood_probs = evaluate_ood(res, sets.ood, store=store, device=cfg.device)
        yield SweepRun(target, confounder.name, p, k, role, spec, sets, len(trn), len(val), res, ood_probs)
        bar.update()
    bar.close()


def _sweep_job(index: int, what: str, arguments: Mapping[str, Any], profile: Any,
               store: results.Store) -> results.Run:
    """Job compute of one unit of a sweep: its fine-tune, or (``what='ood'``) its o.o.d. predictions."""
    p, k, role, spec, sets, trn, val, cfg = list(_units(**arguments, store=store))[index]
    res = train.finetune(spec, trn, val, sets.iid, cfg, store=store, pretrain=profile, progress=False)
    if what == "finetune":
        return res.run
    evaluate_ood(res, sets.ood, store=store, device=cfg.device)
    return store.get("shortcut-ood", _ood_key(res.run.key, sets.ood))


def sweep_jobs(target: str, confounder: Confounder, sources: Mapping[str, str], finetune: train.FinetuneConfig, *,
               p_arts: Sequence[float], folds: int, size: int, n_dev: int, n_test: int, pos_fraction: float,
               val_fraction: float, seed: int = 0, profile: Any = None, scheme: str = "splits") -> list[Job]:
    """The store runs of :func:`sweep` (same arguments): each fine-tune (stage 1) and its o.o.d. predictions
    (stage 2). Planning builds the confounded sets (cached in the store, as the sweep would)."""
    arguments = {"target": target, "confounder": confounder, "sources": dict(sources), "finetune": finetune,
                 "p_arts": tuple(p_arts), "folds": folds, "size": size, "n_dev": n_dev, "n_test": n_test,
                 "pos_fraction": pos_fraction, "val_fraction": val_fraction, "seed": seed, "scheme": scheme}
    out = pretrain_jobs(sources.values(), profile)
    for i, (_, _, _, spec, sets, trn, val, cfg) in enumerate(_units(**arguments, store=None)):
        key = train.finetune_config(spec, trn, val, sets.iid, cfg, pretrain=profile)
        out.append(Job("finetune", key, 1, functools.partial(_sweep_job, i, "finetune", arguments, profile)))
        out.append(Job("shortcut-ood", _ood_key(results.config_hash(key), sets.ood), 2,
                       functools.partial(_sweep_job, i, "ood", arguments, profile)))
    return out
