"""Chapter 4 experiment: confounded development/test sets, the p_art robustness sweeps of Fig. 4.3/4.4, the
chapter's settings and verdicts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cfct import data, paths, results, stats, train
from cfct.errors import ConfigError
from cfct.shortcuts import (
    CONFOUNDER_LABELS,
    P_ART_LEVELS,
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


def _config_hash(config: Mapping[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_root() -> Path:

    return paths.cache_dir("shortcuts")


def _cached_arrays(
    config: Mapping[str, Any], compute: Callable[[], dict[str, np.ndarray]], use_cache: bool
) -> dict[str, np.ndarray]:
    """Load ``compute()``'s arrays from an npz keyed by the config hash, or compute and save atomically."""
    if not use_cache:
        return compute()
    path = _cache_root() / f"{config.get('kind', 'sets')}-{_config_hash(config)}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    arrays = compute()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.partial")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return arrays


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
    return f"{base}|{conf.name}:{_config_hash(conf.config())[:8]}:{what}"


def confounded_sets(
    dev: Any,
    test: Any,
    confounder: str | Confounder,
    p_art: float,
    *,
    positive: int = 1,
    seed: int = 0,
    cache: bool = True,
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
        Keep confounded images in an npz under ``cache_dir('shortcuts')``, keyed by a hash of the image bytes,
        labels, confounder, ``p_art`` and seed, so a sweep computes each version once.

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
        return _cached_arrays(cfg, lambda: {"images": conf.apply(ds.images, mask, seed=seed * 7919 + stream)}, cache)[
            "images"
        ]

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


#: Source roles compared in Chapter 4, in the order figures use.
SOURCE_ROLES: tuple[str, ...] = ("natural", "medical", "random")


def default_sources(target: str, arch: str = "resnet18") -> dict[str, str]:
    """The offline stand-ins of the thesis's sources for a target: natural (CIFAR-10 for ImageNet), medical
    (leave-target-out MedMNIST for RadImageNet) and random initialisation.

    For ``csv:`` targets every MedMNIST flag is out-of-target; the medical source is then the PneumoniaMNIST
    source (``medmnist-lto:breastmnist``, the largest medical source available offline), which the book
    pre-trains anyway.
    """

    t = data.parse_target(target)
    flag = t.arg if t.kind == "medmnist" else "breastmnist"
    return {
        "natural": f"pretrained:{arch}:cifar10",
        "medical": f"pretrained:{arch}:medmnist-lto:{flag}",
        "random": f"random:{arch}",
    }


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
    cache: bool = True,
) -> ConfoundedSets:
    """Development, i.i.d. and o.o.d. sets of one target, confounder and ``p_art`` (Sec. 4.2.2).

    Image confounders: a seeded development / test draw with exact class shares (:func:`split_dev_test`,
    patient- or group-disjoint for ``csv:`` targets), then :func:`confounded_sets`. Attribute confounders
    (patient sex): :func:`attribute_confounded_split` on the target's metadata.
    """
    conf = get_confounder(confounder)
    positive = positive_class(target)
    dev_pool, test_pool = load_pools(target, size)
    _binary_check(dev_pool)
    if conf.kind == "attribute":
        if dev_pool.meta is None or conf.attribute not in dev_pool.meta.columns:
            cols = [] if dev_pool.meta is None else list(dev_pool.meta.columns)
            raise ConfigError(
                f"confounder {conf.name!r} needs a {conf.attribute!r} column in {target}'s labels.csv; "
                f"it has: {', '.join(cols) or 'no metadata'}"
            )
        pool = dev_pool if test_pool is None else _concat([dev_pool, test_pool], name=dev_pool.name)
        meta = pool.meta.copy()
        meta["__label"] = pool.labels
        meta["__group"] = pool.groups if pool.groups is not None else np.arange(len(pool)).astype(str)
        split = _fitting(
            lambda nd, nt: attribute_confounded_split(
                meta,
                "__label",
                conf.attribute,
                p_art,
                value=conf.value,
                n_dev=nd,
                n_test=nt,
                pos_fraction=pos_fraction,
                positive=positive,
                group="__group",
                seed=seed,
            ),
            n_dev,
            n_test,
            target,
        )
        tag = f"|{conf.name}={conf.value}:p{p_art:g}:s{seed}"
        dev, iid, ood = (pool.subset(split[k]) for k in ("dev", "iid", "ood"))
        dev.name, iid.name = pool.name + tag + ":dev", pool.name + tag + ":iid"
        ood.name = pool.name + f"|{conf.name}={conf.value}:ood:s{seed}"
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
    dev_idx, test_idx = _fitting(
        lambda nd, nt: split_dev_test(
            dev_pool.labels,
            n_dev=nd,
            n_test=nt,
            pos_fraction=pos_fraction,
            positive=positive,
            groups=dev_pool.groups if test_pool is None else None,
            test_labels=None if test_pool is None else test_pool.labels,
            seed=seed,
        ),
        n_dev,
        n_test,
        target,
    )
    dev = dev_pool.subset(dev_idx)
    test = (dev_pool if test_pool is None else test_pool).subset(test_idx)
    dev.name += f"[dev n={n_dev} pos={pos_fraction:g} s{seed}]"
    test.name += f"[test n={n_test} pos={pos_fraction:g} s{seed}]"
    return confounded_sets(dev, test, conf, p_art, positive=positive, seed=seed, cache=cache)


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


def evaluate_ood(result: Any, ood: Any, *, store: Any = None, device: str = "auto") -> np.ndarray:
    """Probabilities of a fine-tuned model on an o.o.d. set, cached beside the fine-tune run."""

    store = store if store is not None else results.default_store()
    key = {"finetune": result.run.key, "ood": ood.fingerprint(), "name": ood.name}

    def compute(workdir: Path) -> dict[str, Any]:
        probs = train.predict(result.load_model(), ood, device=device)
        results.save_arrays(workdir, probs=probs.astype(np.float32))
        return {"auc": stats.roc_auc(np.asarray(ood.labels), probs)}

    return store.cached("shortcut-ood", key, compute).array("probs").astype(np.float64)


def robustness_experiment(
    target: str,
    confounder: str | Confounder,
    sources: Mapping[str, str],
    *,
    p_arts: Sequence[float] = P_ART_LEVELS,
    folds: int = 5,
    size: int = 28,
    n_dev: int = 250,
    n_test: int = 200,
    pos_fraction: float = 0.5,
    val_fraction: float = 0.15,
    finetune: Any = None,
    seed: int = 0,
    store: Any = None,
    profile: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Fine-tune every source on every ``p_art`` and fold, then measure i.i.d. and o.o.d. AUC (Sec. 4.2.2).

    Parameters
    ----------
    target : str
        Binary target spec (``pneumoniamnist``, ``csv:nih-cxr14-sample``, ...).
    confounder : str or Confounder
        Key of :data:`CONFOUNDERS`.
    sources : mapping of str to str
        Role (``natural``, ``medical``, ``random``) -> source spec.
    p_arts : sequence of float
        Correlation levels (thesis: :data:`P_ART_LEVELS`).
    folds : int
        Train/validation splits of the development set (thesis: 5).
    size : int
        Image side in px.
    n_dev, n_test : int
        Development (train + val) and test set sizes (Table 4.1).
    pos_fraction : float
        Share of positives (Table 4.1: 0.3 for X-ray lung mass, 0.5 for CT and atelectasis).
    val_fraction : float
        Validation share of the development set (Table 4.1: 10-20 %).
    finetune : cfct.train.FinetuneConfig, optional
        Fine-tuning settings; default: 4.2.2's (Adam 1e-5, 200 epochs, patience 30 on validation loss, or on
        validation AUC for balanced tasks, 3.4.1 augmentation without flips). ``seed`` is offset per fold.
    seed : int
        Seed of set construction and folds.
    store : cfct.results.Store, optional
    profile : Profile or str, optional
        Profile that fixes the pre-training of ``pretrained:`` sources.
    progress : bool
        tqdm bar over the runs.

    Returns
    -------
    DataFrame
        One row per (p_art, fold, source): ``iid_auc``, ``ood_auc``, ``val_auc``, recall of positives on the
        o.o.d. and i.i.d. sets, epochs and seconds.
    """

    conf = get_confounder(confounder)
    if finetune is None:
        finetune = train.FinetuneConfig(
            lr=1e-5,
            max_epochs=200,
            patience=30,
            augment="ch3",
            hflip=False,
            monitor="val_auc" if abs(pos_fraction - 0.5) < 1e-9 else "val_loss",
            select="val_loss",
        )
    plan = [(p, k, role) for p in p_arts for k in range(int(folds)) for role in sources]
    rows = []
    bar = tqdm(total=len(plan), desc=f"{target} / {conf.name}", disable=not progress)
    for p in p_arts:
        sets = experiment_sets(
            target, conf, p, size=size, n_dev=n_dev, n_test=n_test, pos_fraction=pos_fraction, seed=seed
        )
        splits = dev_splits(sets.dev.labels, k=folds, val_fraction=val_fraction, groups=sets.dev.groups, seed=seed)
        for k, (tr, va) in enumerate(splits):
            trn, val = sets.dev.subset(tr), sets.dev.subset(va)
            cfg = dataclasses.replace(finetune, seed=finetune.seed + k)
            for role, spec in sources.items():
                bar.set_postfix_str(f"p_art={p:g} fold={k} {role}")
                res = train.finetune(spec, trn, val, sets.iid, cfg, store=store, profile=profile, progress=False)
                ood_probs = evaluate_ood(res, sets.ood, store=store, device=cfg.device)
                rows.append(
                    {
                        "target": target,
                        "confounder": conf.name,
                        "source": role,
                        "spec": spec,
                        "p_art": float(p),
                        "fold": k,
                        "iid_auc": float(res.metrics["test_auc"]),
                        "ood_auc": stats.roc_auc(np.asarray(sets.ood.labels), ood_probs),
                        "val_auc": float(res.metrics["val_auc"]),
                        "iid_recall": _recall(res.test_labels, res.test_probs, sets.positive),
                        "ood_recall": _recall(sets.ood.labels, ood_probs, sets.positive),
                        "epochs": int(res.metrics["epochs"]),
                        "best_epoch": int(res.metrics["best_epoch"]),
                        "seconds": float(res.metrics["seconds"]),
                        "n_train": len(trn),
                        "n_val": len(val),
                        "n_test": len(sets.iid),
                    }
                )
                bar.update()
    bar.close()
    return pd.DataFrame(rows)


def summarize(
    results: pd.DataFrame,
    metrics: Sequence[str] = ("ood_auc", "iid_auc"),
    keys: Sequence[str] = ("target", "confounder", "source", "p_art"),
) -> pd.DataFrame:
    """Mean and 95 % CI over folds (Student t, :func:`cfct.stats.mean_ci`), long format: one row per
    (keys, metric) with ``mean``, ``ci_low``, ``ci_high``, ``n``."""

    rows = []
    for key, grp in results.groupby(list(keys), sort=False):
        for m in metrics:
            vals = grp[m].dropna().to_numpy(dtype=float)
            if len(vals) == 0:
                continue
            mean, lo, hi = stats.mean_ci(vals)
            rows.append(
                {
                    **dict(zip(keys, key)),
                    "metric": m,
                    "mean": mean,
                    "ci_low": lo,
                    "ci_high": hi,
                    "n": len(vals),
                }
            )
    return pd.DataFrame(rows)


def compare_sources(
    results: pd.DataFrame,
    a: str = "natural",
    b: str = "medical",
    metric: str = "ood_auc",
    keys: Sequence[str] = ("target", "confounder", "p_art"),
    n_resamples: int = 10000,
    seed: int = 0,
) -> pd.DataFrame:
    """Permutation test of the difference between two sources at each ``p_art`` (Sec. 4.3).

    The fold AUCs of the two sources are treated as independent samples (labels shuffled), which is what the
    thesis's smallest p-value shows: with five folds per source the smallest two-sided p is
    ``2 / C(10, 5) = 0.0079``, its reported lower bound "0.008 < p". With ``k`` folds the floor is
    ``2 / C(2k, k)`` (0.1 at three folds), so a quick run cannot reach significance at 0.05.
    """

    rows = []
    for key, grp in results.groupby(list(keys), sort=False):
        x = grp[grp["source"] == a].sort_values("fold")[metric].to_numpy(dtype=float)
        y = grp[grp["source"] == b].sort_values("fold")[metric].to_numpy(dtype=float)
        if len(x) == 0 or len(x) != len(y):
            continue
        p = (
            stats.permutation_test(x, y, n_resamples=n_resamples, paired=False, seed=seed)
            if len(x) > 1
            else float("nan")
        )
        rows.append(
            {
                **dict(zip(keys, key)),
                f"{a}": x.mean(),
                f"{b}": y.mean(),
                "difference": x.mean() - y.mean(),
                "p_value": p,
                "folds": len(x),
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Setting:
    """One experiment of the chapter: a target, a confounder, the sources compared and where it is drawn.

    Attributes
    ----------
    figure : str
        ``'4.3'`` or ``'4.4'``.
    target, confounder : str
    roles : tuple of str
        Source roles fine-tuned (Fig. 4.4 of the thesis shows the two pre-trained sources only).
    pos_fraction : float
        Share of positives (Table 4.1: 0.3 for the X-ray lung-mass task, 0.5 for CT and atelectasis).
    modality, contrast : str
        Panel labels of Fig. 4.4 (row and column).
    """

    figure: str
    target: str
    confounder: str
    roles: tuple[str, ...]
    pos_fraction: float
    modality: str = ""
    contrast: str = ""

    @property
    def label(self) -> str:
        name = self.target.split("/")[-1].removeprefix("csv:").removeprefix("medmnist:")
        return f"{name}: {CONFOUNDER_LABELS.get(self.confounder, self.confounder)}"


def chapter_settings(
    targets: Sequence[str],
    confounders: Sequence[str],
    *,
    sex_target: str | None,
    noise_target: str | None,
    ct_target: str | None,
) -> list[Setting]:
    """The experiments of Figs. 4.3 and 4.4 for the chapter's parameters, in drawing order."""
    three, two = SOURCE_ROLES, SOURCE_ROLES[:2]
    out = [Setting("4.3", t, c, three, 0.3, "", "") for t in targets for c in confounders]
    if sex_target:
        out.append(Setting("4.3", sex_target, "sex", three, 0.5))
    if noise_target:
        out += [
            Setting("4.4", noise_target, "noise", two, 0.3, "X-ray", "noise vs no noise"),
            Setting("4.4", noise_target, "noise-levels", two, 0.3, "X-ray", "high vs low noise"),
        ]
    if ct_target:
        out += [
            Setting("4.4", ct_target, "ct-noise", two, 0.5, "CT", "noise vs no noise"),
            Setting("4.4", ct_target, "noise", two, 0.5, "CT", "high vs low noise"),
        ]
    return out


def sources_for(target: str, arch: str, natural: str | None = None, medical: str | None = None) -> dict[str, str]:
    """Source specs per role for one target; ``medical`` may hold ``{target}`` (replaced by the MedMNIST flag
    of a MedMNIST target)."""

    out = default_sources(target, arch)
    if natural:
        out["natural"] = natural
    if medical:
        t = data.parse_target(target)
        out["medical"] = medical.replace("{target}", t.arg) if t.kind == "medmnist" else medical
    return out


#: Numbers the thesis reports in the text of Sec. 4.3 and in Table 4.1 (published; never computed here).
PUBLISHED: dict[str, Any] = {
    "source": "Juodelyte (2024), Sec. 4.3 and Table 4.1 (ResNet50, ImageNet vs RadImageNet, 5 folds)",
    "ct_tag_ood_auc": {"start": 0.84, "imagenet": 0.02, "radimagenet": 0.22},
    "ct_denoising_ood_auc": {"imagenet": (0.70, 0.01), "radimagenet": (0.83, 0.60)},
    "sex_gap_mean_p_art_ge_0.1": 0.12,
    "sex_p_value_range": (0.008, 0.032),
    "mean_epochs": {"radimagenet": 141, "imagenet": 72},
    "table_4_1": pd.DataFrame(
        [
            ("Lung mass (NIH CXR14)", "T, D, N", "83/248", "90/10", "30/70", "512x512", 32),
            ("Lung mass (LIDC-IDRI)", "T, D, N", "1710/500", "80/20", "50/50", "362x362", 32),
            ("Atelectasis (NIH CXR14)", "Gender", "400/400", "85/15", "50/50", "256x256", 64),
        ],
        columns=["task", "confounder", "test/dev", "train/val %", "pos/neg %", "image size", "batch size"],
    ),
}


def chapter_finetune_config(
    pos_fraction: float, *, lr: float, epochs: int, patience: int, seed: int = 0, device: str = "auto"
) -> Any:
    """Fine-tuning of Sec. 4.2.2: Adam, early stopping on validation loss (on validation AUC for the balanced
    tasks), the lowest-loss epoch kept, 3.4.1 augmentation without flips, batch size 32 (Table 4.1)."""

    balanced = abs(float(pos_fraction) - 0.5) < 1e-9
    return train.FinetuneConfig(
        optimizer="adam",
        lr=float(lr),
        max_epochs=int(epochs),
        patience=int(patience),
        batch_size=32,
        monitor="val_auc" if balanced else "val_loss",
        select="val_loss",
        augment="ch3",
        hflip=False,
        seed=int(seed),
        device=device,
    )


def run_settings(
    settings: Sequence[Setting],
    *,
    arch: str,
    natural_source: str | None = None,
    medical_source: str | None = None,
    p_arts: Sequence[float] = P_ART_LEVELS,
    folds: int = 5,
    size: int = 28,
    n_dev: int = 250,
    n_test: int = 200,
    lr: float = 1e-5,
    epochs: int = 200,
    patience: int = 30,
    seed: int = 0,
    device: str = "auto",
    store: Any = None,
    profile: Any = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run :func:`robustness_experiment` for every setting; one tidy table with the setting's labels."""
    frames = []
    for st in settings:
        sources = sources_for(st.target, arch, natural_source, medical_source)
        ft = chapter_finetune_config(st.pos_fraction, lr=lr, epochs=epochs, patience=patience, seed=seed, device=device)
        df = robustness_experiment(
            st.target,
            st.confounder,
            {r: sources[r] for r in st.roles},
            p_arts=p_arts,
            folds=folds,
            size=size,
            n_dev=n_dev,
            n_test=n_test,
            pos_fraction=st.pos_fraction,
            finetune=ft,
            seed=seed,
            store=store,
            profile=profile,
            progress=progress,
        )
        frames.append(df.assign(figure=st.figure, setting=st.label, modality=st.modality, contrast=st.contrast))
    return pd.concat(frames, ignore_index=True)
