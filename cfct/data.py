"""Targets, sources, splits and transforms: the data every chapter passes around (thesis 3.4, 6.4).

Everything is an :class:`ImageSet` (uint8 NHWC images + labels + optional groups/meta), produced from a spec
string so that a chapter parameter names its data:

* targets (:func:`load_target`): ``medmnist:<flag>`` (any 2D MedMNIST flag; a bare ``<flag>`` is a shorthand)
  and ``csv:<folder>`` (a folder of images with ``labels.csv``);
* pre-training sources (:func:`load_dataset`): additionally ``cifar10``, ``medmnist-lto:<target>``
  (leave-target-out MedMNIST, 6.4.1), ``medical-lto:<target>`` (leave-target-out over every local medical set:
  MedMNIST flags and the :data:`MEDICAL_CSV_SOURCES`; the target may be a flag or a ``csv:`` folder) and
  ``imagefolder:<path>``; any spec may end in ``@<n>`` for a seeded, stratified subsample of n images.

MedMNIST files are read from ``$CFCT_MIRROR/medmnist`` then ``$CFCT_DATA/medmnist``, downloaded into
``$CFCT_DATA/medmnist`` when online, and always MD5-checked against ``medmnist.INFO`` before use.
Decoded image folders (CIFAR-10 JPEGs, csv folders, ImageFolder roots) are cached as uint8 ``.npz`` under
``$CFCT_DATA/cache`` so the second load takes well under a second.

Transforms work on whole float batches (``(B, 3, H, W)`` tensors on any device): :func:`to_tensor`,
:func:`resize`, :func:`normalize` and :class:`BatchAugment`, whose policies ``'ch3'`` (3.4.1, Keras
ImageDataGenerator settings) and ``'ch6'`` (6.4.2) replace per-sample PIL transforms in a DataLoader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from cfct import paths
from cfct.errors import ConfigError, DataMissingError, IncompatibleError, unknown_choice

__all__ = [
    "ImageSet",
    "TargetSpec",
    "TARGETS",
    "SIZES",
    "NORMALIZATION",
    "AUGMENT_POLICIES",
    "parse_target",
    "validate_target",
    "parse_dataset",
    "MEDICAL_CSV_SOURCES",
    "budget_shares",
    "medical_lto_composition",
    "dataset_composition",
    "dataset_licence",
    "medmnist_file",
    "load_target",
    "load_dataset",
    "available_targets",
    "subsample_per_class",
    "stratified_subsample",
    "cv_splits",
    "to_tensor",
    "resize",
    "normalize",
    "adjust_sharpness",
    "BatchAugment",
    "reference_transform",
]

_CACHE_VERSION = 1
SIZES: tuple[int, ...] = (28, 64, 128, 224)
NATURAL_SOURCES: tuple[str, ...] = ("cifar10",)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# Above this many files an ImageFolder must be cut with '@n': everything is decoded into memory (see
# load_dataset), and a 1.3M-image RadImageNet/ImageNet copy would not fit at 224 px.
MAX_EAGER_IMAGES = 300_000
_TASKS = {
    "binary-class": "binary",
    "multi-class": "multi-class",
    "ordinal-regression": "ordinal-regression",
    "multi-label, binary-class": "multi-label",
}


def _medmnist_info() -> dict[str, dict[str, Any]]:
    import medmnist  # imported lazily: nothing runs at cfct import time

    return medmnist.INFO


# The 2D flags of medmnist.INFO (3.0.2), spelled out: importing cfct must not import medmnist (seconds);
# tests/test_data.py checks this tuple against medmnist.INFO.
TARGETS: tuple[str, ...] = (
    "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist",
    "breastmnist", "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist",
)  # fmt: skip
"""Every 2D MedMNIST flag (targets ``medmnist:<flag>``)."""


def _flags_2d() -> tuple[str, ...]:
    return TARGETS


def _flags_3d() -> tuple[str, ...]:
    return (
        "organmnist3d",
        "nodulemnist3d",
        "adrenalmnist3d",
        "fracturemnist3d",
        "vesselmnist3d",
        "synapsemnist3d",
    )


# ----------------------------------------------------------------------------------------------- ImageSet
@dataclasses.dataclass
class ImageSet:
    """In-memory images with labels: the unit every chapter passes around.

    Attributes
    ----------
    images : np.ndarray
        uint8, ``(N, H, W, C)`` with ``C`` in {1, 3}.
    labels : np.ndarray
        int64 ``(N,)`` for binary / multi-class / ordinal-regression; int64 ``(N, K)`` 0/1 for multi-label.
    task : str
        ``'binary'``, ``'multi-class'``, ``'ordinal-regression'`` (treated as multi-class) or
        ``'multi-label'``.
    class_names : tuple of str
    name : str
        The spec that produced it, e.g. ``'medmnist:breastmnist@28:train'``. Give edited variants a new name.
    groups : np.ndarray of str, optional
        Patient id (or near-duplicate group) per image; splits keep groups disjoint.
    meta : pandas.DataFrame, optional
        Extra per-image columns (sex, age, source flag, ...), row-aligned with ``images``.
    index : np.ndarray, optional
        Positions of these images in the set called ``name`` (None = all of it, in order).
    """

    images: np.ndarray
    labels: np.ndarray
    task: str
    class_names: tuple[str, ...]
    name: str
    groups: np.ndarray | None = None
    meta: pd.DataFrame | None = None
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise IncompatibleError(
                f"ImageSet images must be (N, H, W, C) with C in (1, 3); got {self.images.shape}"
            )
        if self.images.dtype != np.uint8:
            raise IncompatibleError(f"ImageSet images must be uint8; got {self.images.dtype}")
        if len(self.labels) != len(self.images):
            raise IncompatibleError(f"{len(self.images)} images but {len(self.labels)} labels")
        if self.task not in _TASKS.values():
            raise unknown_choice("task", self.task, sorted(set(_TASKS.values())))
        self.class_names = tuple(self.class_names)

    @property
    def n_classes(self) -> int:
        """Number of classes (label columns for multi-label)."""
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        return self.task == "multi-label"

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        return (
            f"ImageSet({self.name!r}, n={len(self)}, shape={self.images.shape[1:]}, task={self.task!r}, "
            f"classes={self.n_classes})"
        )

    def class_counts(self) -> np.ndarray:
        """Images per class (positives per label column for multi-label)."""
        if self.multi_label:
            return self.labels.sum(axis=0).astype(np.int64)
        return np.bincount(self.labels, minlength=self.n_classes)

    def subset(self, idx: np.ndarray | Sequence[int]) -> ImageSet:
        """The images at positions ``idx`` (integer indices or a boolean mask), keeping name, provenance."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64)
        base = np.arange(len(self)) if self.index is None else self.index
        return ImageSet(
            images=self.images[idx],
            labels=self.labels[idx],
            task=self.task,
            class_names=self.class_names,
            name=self.name,
            groups=None if self.groups is None else self.groups[idx],
            meta=None if self.meta is None else self.meta.iloc[idx].reset_index(drop=True),
            index=base[idx],
        )

    def fingerprint(self) -> str:
        """Cheap content hash: name, index set, shape, labels and a strided sample of pixels (16 hex)."""
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(str((self.images.shape, self.task, self.class_names)).encode())
        if self.index is not None:
            h.update(np.ascontiguousarray(self.index, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        flat = self.images.reshape(-1)
        step = max(1, flat.size // 65536)
        h.update(np.ascontiguousarray(flat[::step]).tobytes())
        return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------- specs
@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """A parsed dataset spec: ``kind`` in {'medmnist', 'csv', 'cifar10', 'medmnist-lto', 'medical-lto',
    'imagefolder'}."""

    kind: str
    arg: str  # flag, folder path, the medmnist-lto target flag, or the medical-lto target spec
    n: int | None = None  # '@n' subsample size

    @property
    def spec(self) -> str:
        base = self.kind if self.kind == "cifar10" else f"{self.kind}:{self.arg}"
        return base if self.n is None else f"{base}@{self.n}"


_SPEC_KINDS = ("medmnist", "csv", "cifar10", "medmnist-lto", "medical-lto", "imagefolder")


def _split_n(spec: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"(.+)@(\d+)", spec.strip())
    if not m:
        return spec.strip(), None
    n = int(m.group(2))
    if n <= 0:
        raise ConfigError(f"subsample size in {spec!r} must be positive")
    return m.group(1), n


def _check_flag(flag: str) -> str:
    flag = flag.strip().lower()
    if flag in _flags_3d():
        raise ConfigError(
            f"MedMNIST flag {flag!r} is 3D (volumes); cfct handles 2D images only. "
            f"Valid 2D flags: {', '.join(_flags_2d())}"
        )
    if flag not in _flags_2d():
        raise unknown_choice("MedMNIST flag", flag, _flags_2d())
    return flag


def _parse(spec: str, allowed: Sequence[str]) -> TargetSpec:
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"a dataset spec must be a non-empty string; got {spec!r}")
    body, n = _split_n(spec)
    kind, sep, arg = body.partition(":")
    kind = kind.strip().lower()
    if not sep:  # no colon: a bare flag or 'cifar10'
        if kind in NATURAL_SOURCES:
            kind, arg = "cifar10", ""
        elif kind in _flags_2d() or kind in _flags_3d():
            kind, arg = "medmnist", kind
        else:
            flags = ", ".join(_flags_2d())
            raise ConfigError(
                f"unknown dataset spec {spec!r}; valid choices: "
                + ", ".join(f"{k}:..." for k in allowed if k != "cifar10")
                + (", cifar10" if "cifar10" in allowed else "")
                + f", or a MedMNIST flag ({flags})"
            )
    if kind not in allowed:
        raise unknown_choice("dataset kind", kind, allowed)
    if kind == "medmnist":
        arg = _check_flag(arg)
    elif kind == "medmnist-lto":
        arg = _check_flag(arg.removeprefix("medmnist:"))
    elif kind == "medical-lto":
        if not arg.strip():
            raise ConfigError(f"{spec!r}: medical-lto: needs a target, e.g. 'medical-lto:breastmnist' or "
                              "'medical-lto:csv:nih-cxr14-sample'")
        arg = _parse(arg, ("medmnist", "csv")).spec  # canonical target spec (medmnist:<flag> or csv:<folder>)
    elif kind in ("csv", "imagefolder"):
        if not arg.strip():
            raise ConfigError(f"{kind}: needs a folder, e.g. '{kind}:nih-cxr14-sample'")
        arg = arg.strip()
    return TargetSpec(kind, arg, n)


def parse_target(spec: str) -> TargetSpec:
    """Parse a target spec: ``'medmnist:<flag>'`` (or a bare flag) or ``'csv:<folder>'``, optional ``@n``.

    Raises
    ------
    ConfigError
        Unknown kind or flag (the message lists valid choices); 3D flags are refused.
    """
    return _parse(spec, ("medmnist", "csv"))


def parse_dataset(spec: str) -> TargetSpec:
    """Parse a pre-training dataset spec (targets plus ``cifar10``, ``medmnist-lto:``, ``medical-lto:``,
    ``imagefolder:``)."""
    return _parse(spec, _SPEC_KINDS)


def _resolve_folder(arg: str, kind: str) -> Path:
    p = Path(arg).expanduser()
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [r / arg for r in paths.search_dirs()] + [Path.cwd() / arg]
    for c in candidates:
        if c.is_dir():
            return c.resolve()
    raise DataMissingError(
        f"{kind} folder {arg!r} not found; looked in: "
        + ", ".join(str(c) for c in candidates)
        + ". Relative names are resolved against $CFCT_MIRROR, then $CFCT_DATA, then the cwd."
    )


def validate_target(spec: str) -> str:
    """Check a target spec early; return its canonical form (``'BreastMNIST'`` -> ``'medmnist:breastmnist'``).

    A csv folder must exist and hold ``labels.csv``; a MedMNIST flag must be a known 2D flag (the file itself
    is checked when loading, since it may be downloadable).
    """
    t = parse_target(spec)
    if t.kind == "csv":
        folder = _resolve_folder(t.arg, "csv")
        if not (folder / "labels.csv").is_file():
            raise DataMissingError(
                f"csv target folder {folder} has no labels.csv (columns filename,label[,...])"
            )
    return t.spec


# ----------------------------------------------------------------------------------------------- MedMNIST
def _size_flag(size: int) -> str:
    return "" if size == 28 else f"_{size}"


def _check_size(size: int) -> int:
    if size not in SIZES:
        raise unknown_choice("MedMNIST image size", size, SIZES)
    return int(size)


def medmnist_file(flag: str, size: int) -> tuple[str, str, str]:
    """(file name, MD5, URL) of a MedMNIST flag at a size, from ``medmnist.INFO`` (``MD5``/``MD5_64``/...)."""
    flag, size = _check_flag(flag), _check_size(size)
    info = _medmnist_info()[flag]
    sf = _size_flag(size)
    return f"{flag}{sf}.npz", info[f"MD5{sf}"], info[f"url{sf}"]


def _locate_medmnist(flag: str, size: int) -> Path:
    """Verified path of a MedMNIST npz: mirror, then data dir, else downloaded (MD5-pinned) when online."""
    fname, md5, url = medmnist_file(flag, size)
    return paths.fetch_file(f"medmnist/{fname}", md5, url, algo="md5")


def _load_medmnist(flag: str, size: int, split: str) -> ImageSet:
    splits = ("train", "val", "test", "all")
    if split not in splits:
        raise unknown_choice("split", split, splits)
    path = _locate_medmnist(flag, size)
    import medmnist

    info = _medmnist_info()[flag]
    cls = getattr(medmnist, info["python_class"])
    imgs, labels = [], []
    for s in ("train", "val", "test") if split == "all" else (split,):
        # Read through medmnist's own class (download=False: the file is already verified on disk).
        d = cls(split=s, root=str(path.parent), size=size, download=False)
        imgs.append(np.asarray(d.imgs))
        labels.append(np.asarray(d.labels))
    images = np.concatenate(imgs)
    if images.ndim == 3:
        images = images[..., None]
    task = _TASKS[info["task"]]
    y = np.concatenate(labels).astype(np.int64)
    if task != "multi-label":
        y = y.reshape(-1)
    names = tuple(info["label"][str(i)] for i in range(len(info["label"])))
    return ImageSet(
        images=np.ascontiguousarray(images, dtype=np.uint8),
        labels=y,
        task=task,
        class_names=names,
        name=f"medmnist:{flag}@{size}:{split}",
    )


# ----------------------------------------------------------------------------------------------- folders
def _decode(path: Path, size: int | None, grey: bool | None) -> np.ndarray:
    """Decode one image to uint8 HWC RGB (or HW1 grey), resized to size x size without cropping."""
    from PIL import Image

    with Image.open(path) as im:
        if size is not None and im.format == "JPEG":
            im.draft(
                "RGB" if not grey else "L", (size, size)
            )  # JPEG DCT scaling: much faster decode of big slices
        im = im.convert("L" if grey else "RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR, reducing_gap=None)
        a = np.asarray(im, dtype=np.uint8)
    return a[..., None] if a.ndim == 2 else a


def _decode_many(files: Sequence[Path], size: int | None, desc: str) -> np.ndarray:
    """Decode files in parallel threads (PIL releases the GIL), with tqdm; grey if every image is grey."""
    from tqdm.auto import tqdm

    def one(p: Path) -> np.ndarray:
        return _decode(p, size, grey=False)

    workers = min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        out = list(tqdm(pool.map(one, files, chunksize=64), total=len(files), desc=desc, unit="img"))
    shapes = {a.shape for a in out}
    if len(shapes) > 1:
        raise IncompatibleError(
            f"images in {desc} have different sizes {sorted(shapes)[:4]}; pass a size to resize"
        )
    images = np.stack(out) if out else np.zeros((0, size or 1, size or 1, 3), np.uint8)
    # Grey scans saved as RGB (R=G=B, e.g. NIH PNGs) are stored with one channel, as MedMNIST's grey flags.
    if images.size and (images[..., 0:1] == images[..., 1:]).all():
        images = np.ascontiguousarray(images[..., :1])
    return images


def _cache_file(kind: str, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps({**key, "v": _CACHE_VERSION}, sort_keys=True).encode()).hexdigest()[
        :16
    ]
    return paths.cache_dir("cache") / f"{kind}-{digest}.npz"


def _cached_images(cache: Path, files: Sequence[Path], size: int | None, desc: str) -> np.ndarray:
    if cache.is_file():
        try:
            with np.load(cache) as z:
                images = z["images"]
            if len(images) == len(files):
                return images
        except (OSError, ValueError, KeyError):
            pass  # a broken cache file is rebuilt below
    images = _decode_many(files, size, desc)
    tmp = cache.with_name(cache.stem + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images)
    os.replace(tmp, cache)
    return images


def _group_value(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return str(v)


def _csv_files(folder: Path, names: Sequence[str], csv: Path) -> list[Path]:
    """The image files named by ``labels.csv``, each checked to lie inside ``folder``.

    A row may only name a file inside the folder: ``..`` segments, absolute paths and symlinks whose target
    lies outside are refused before any file is opened (a row ``../../etc/passwd`` would otherwise be read).
    """
    root = folder.resolve()
    files = []
    for row, name in enumerate(names, start=2):  # line 1 of labels.csv is the header
        path = (root / name).resolve()
        if Path(name).is_absolute() or not path.is_relative_to(root):
            raise ConfigError(
                f"{csv} line {row}: filename {name!r} resolves to {path}, outside the folder {root}; "
                "labels.csv may only name files inside its own folder"
            )
        files.append(root / name)
    return files


def _load_csv(arg: str, size: int, split: str) -> ImageSet:
    """A folder with ``labels.csv`` (``filename,label[,patient_id,sex,group,...]``)."""
    folder = _resolve_folder(arg, "csv")
    csv = folder / "labels.csv"
    if not csv.is_file():
        raise DataMissingError(f"csv target folder {folder} has no labels.csv (columns filename,label[,...])")
    df = pd.read_csv(csv)
    missing = {"filename", "label"} - set(df.columns)
    if missing:
        raise ConfigError(
            f"{csv} lacks column(s) {sorted(missing)}; it needs filename,label[,patient_id,group,...]"
        )
    has_split = "split" in df.columns
    valid = ("all", "train", "val", "test") if has_split else ("all",)
    if split not in valid:
        raise ConfigError(
            f"csv targets have no official {split!r} split (labels.csv has no 'split' column); "
            f"valid choices: {', '.join(valid)}; draw splits with cfct.data.cv_splits"
        )
    if not isinstance(size, int | np.integer) or size <= 0:
        raise ConfigError(f"image size must be a positive int; got {size!r}")
    files = _csv_files(folder, df["filename"].astype(str).tolist(), csv)
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise DataMissingError(f"{len(absent)} image(s) listed in {csv} are missing, e.g. {absent[0]}")
    cache = _cache_file(
        "csv",
        {"folder": str(folder), "size": int(size), "labels": hashlib.sha256(csv.read_bytes()).hexdigest()},
    )
    images = _cached_images(cache, files, int(size), f"decode {folder.name}@{size}")
    raw = df["label"]
    if pd.api.types.is_integer_dtype(raw):
        values = np.sort(raw.unique())
        class_names = tuple(str(v) for v in values)
    else:
        values = np.array(sorted(raw.astype(str).unique()))
        raw = raw.astype(str)
        class_names = tuple(values)
    labels = np.searchsorted(values, raw.to_numpy()).astype(np.int64)
    gcol = "patient_id" if "patient_id" in df.columns else ("group" if "group" in df.columns else None)
    groups = None
    if gcol is not None:
        # Images without a group (e.g. IQ-OTH/NCCD slices outside any near-duplicate group) form their own.
        groups = np.array(
            [
                (f"{gcol}:{g}" if (g := _group_value(v)) is not None else f"image:{fn}")
                for v, fn in zip(df[gcol], df["filename"], strict=True)
            ],
            dtype=object,
        )
    meta = df.drop(columns=["label"]).reset_index(drop=True)
    ds = ImageSet(
        images=images,
        labels=labels,
        task="binary" if len(class_names) == 2 else "multi-class",
        class_names=class_names,
        name=f"csv:{arg}@{size}:all",
        groups=groups,
        meta=meta,
    )
    if split != "all":
        ds = ds.subset(np.flatnonzero(df["split"].astype(str).to_numpy() == split))
        ds.name, ds.index = f"csv:{arg}@{size}:{split}", None
    return ds


def _list_image_folder(root: Path) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataMissingError(
            f"image folder {root} has no class sub-folders (expected <root>/<class>/<image>)"
        )
    files, labels = [], []
    for i, c in enumerate(classes):
        for dirpath, _, names in os.walk(root / c, followlinks=True):
            for n in sorted(names):
                if n.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(Path(dirpath) / n)
                    labels.append(i)
    if not files:
        raise DataMissingError(
            f"image folder {root} holds no images with extensions {', '.join(IMAGE_EXTENSIONS)}"
        )
    return files, np.asarray(labels, dtype=np.int64), tuple(classes)


def _load_image_folder(root: Path, size: int | None, name: str, n: int | None, seed: int) -> ImageSet:
    """An ImageFolder root decoded into memory (cached); with ``n``, only a stratified n are decoded."""
    files, labels, classes = _list_image_folder(root)
    idx = None
    if n is not None and n < len(files):
        idx = stratified_subsample(labels, n, seed)
        files, labels = [files[i] for i in idx], labels[idx]
    elif len(files) > MAX_EAGER_IMAGES:
        raise ConfigError(
            f"image folder {root} holds {len(files)} images (> {MAX_EAGER_IMAGES}); cfct decodes "
            f"image folders into memory, so cut it with '@<n>', e.g. 'imagefolder:{root}@100000'"
        )
    listing = hashlib.sha256("\n".join(str(f.relative_to(root)) for f in files).encode()).hexdigest()
    cache = _cache_file("folder", {"root": str(root), "size": size, "files": listing})
    images = _cached_images(cache, files, size, f"decode {root.name}" + (f"@{size}" if size else ""))
    return ImageSet(
        images=images,
        labels=labels,
        task="binary" if len(classes) == 2 else "multi-class",
        class_names=classes,
        name=name,
        index=idx,
    )


# ----------------------------------------------------------------------------------------------- CIFAR-10
def _load_cifar10(split: str, n: int | None = None, seed: int = 0) -> ImageSet:
    """CIFAR-10 at native 32 px: the official release (torchvision) if present or online, else the JPEGs.

    With ``n``, the seeded stratified subsample of n that ``subset(stratified_subsample(labels, n, seed))``
    of the whole split would give; from the JPEGs only those n are decoded (labels come from the listing).
    """
    splits = ("train", "test", "all")
    if split not in splits:
        raise unknown_choice("CIFAR-10 split", split, splits)
    if n is not None and split == "all":  # the two listings' labels are not at hand: decode both, then cut
        ds = _load_cifar10("all")
        return ds.subset(stratified_subsample(ds.labels, n, seed)) if n < len(ds) else ds
    if split == "all":
        a, b = _load_cifar10("train"), _load_cifar10("test")
        return ImageSet(
            np.concatenate([a.images, b.images]),
            np.concatenate([a.labels, b.labels]),
            "multi-class",
            CIFAR10_CLASSES,
            name="cifar10@32:all",
        )
    name = f"cifar10@32:{split}"
    root = paths.data_dir() / "cifar10"
    official = root / "cifar-10-batches-py"
    if official.is_dir() or not paths.is_offline():
        from torchvision.datasets import CIFAR10

        try:
            d = CIFAR10(str(root), train=split == "train", download=not official.is_dir())
            ds = ImageSet(
                np.ascontiguousarray(d.data, dtype=np.uint8),
                np.asarray(d.targets, dtype=np.int64),
                "multi-class",
                CIFAR10_CLASSES,
                name=name,
            )
            return ds.subset(stratified_subsample(ds.labels, n, seed)) if n is not None and n < len(ds) else ds
        except Exception as e:  # fall through to the JPEG copy; say why if that is missing too
            reason = f"torchvision CIFAR10 failed: {e}"
    else:
        reason = "offline, so torchvision cannot download the official release"
    jpeg = paths.find_file(f"cifar10-jpeg/{split}")
    if jpeg is None:
        raise DataMissingError(
            f"CIFAR-10 not found ({reason}); searched {official} and "
            + ", ".join(str(r / "cifar10-jpeg" / split) for r in paths.search_dirs())
            + "; connect to the internet (torchvision downloads it) or provide an image-folder "
            "copy at $CFCT_MIRROR/cifar10-jpeg/{train,test}/<class>/*.jpg"
        )
    ds = _load_image_folder(jpeg, None, name, n, seed)
    if ds.class_names != CIFAR10_CLASSES:
        raise IncompatibleError(f"{jpeg} classes {ds.class_names} are not CIFAR-10's {CIFAR10_CLASSES}")
    return ds


# ----------------------------------------------------------------------------------------------- LTO
def _lto_flags(target: str, size: int) -> tuple[list[str], list[str]]:
    """(flags usable for leave-target-out at this size, flags skipped with reasons)."""
    used, skipped = [], []
    online = not paths.is_offline()
    info = _medmnist_info()
    for flag in _flags_2d():
        if flag == target:
            continue
        if _TASKS[info[flag]["task"]] == "multi-label":
            skipped.append(f"{flag} (multi-label)")
            continue
        fname = medmnist_file(flag, size)[0]
        if any((d / fname).is_file() for d in paths.search_dirs("medmnist")) or online:
            used.append(flag)
        else:
            skipped.append(f"{flag} (not local)")
    return used, skipped


def _load_lto(target: str, size: int, split: str) -> ImageSet:
    """Leave-target-out MedMNIST (6.4.1): union of every other single-label 2D flag, classes kept distinct.

    ChestMNIST is left out: its 14 labels are multi-label, which one softmax pre-training head cannot take.
    """
    _check_size(size)
    used, skipped = _lto_flags(target, size)
    if not used:
        raise DataMissingError(
            f"medmnist-lto:{target} at {size} px: no other MedMNIST flag is available "
            f"(skipped: {', '.join(skipped)}); searched "
            + ", ".join(str(d) for d in paths.search_dirs("medmnist"))
        )
    parts = [_load_medmnist(f, size, split) for f in used]
    return _pretext_set(used, parts, f"medmnist-lto:{target}@{size}:{split}")


def _pretext_set(sources: Sequence[str], parts: Sequence[ImageSet], name: str) -> ImageSet:
    """One pretext task of (set, label) classes from several labelled sets (leave-target-out pre-training):
    class names ``<set>:<class>``, grey sets repeated to RGB when any set is RGB, the set of each image in
    ``meta['source']``."""
    rgb = any(p.images.shape[-1] == 3 for p in parts)
    images, labels, names, source_col = [], [], [], []
    for source, p in zip(sources, parts, strict=True):
        images.append(np.repeat(p.images, 3, axis=-1) if rgb and p.images.shape[-1] == 1 else p.images)
        labels.append(p.labels + len(names))
        names.extend(f"{source}:{c}" for c in p.class_names)
        source_col.extend([source] * len(p))
    return ImageSet(
        np.concatenate(images),
        np.concatenate(labels),
        "binary" if len(names) == 2 else "multi-class",
        tuple(names),
        name=name,
        meta=pd.DataFrame({"source": source_col}),
    )


MEDICAL_CSV_SOURCES: tuple[str, ...] = ("csv:nih-cxr14-sample", "csv:iqothnccd-lung-ct")
"""The local medical ``csv:`` folders (``$CFCT_MIRROR``) that ``medical-lto:`` pre-trains on besides MedMNIST:
1,000 NIH ChestX-ray14 radiographs (no finding / any finding) and 1,055 IQ-OTH/NCCD lung CT slices (normal /
lesion)."""


def budget_shares(sizes: Sequence[int], cap: int | None) -> list[int]:
    """How many images each set gives to a capped union: equal shares of ``cap``, a small set's unused share
    passed on equally to the larger ones (water-filling), so the total is ``min(cap, sum(sizes))``.

    Deterministic; where ``cap`` does not divide evenly, the first sets in the given order get one more.

    Examples
    --------
    >>> budget_shares([4708, 1000, 1055], 6000)
    [3945, 1000, 1055]
    >>> budget_shares([10, 10, 10], 7)
    [3, 2, 2]
    """
    sizes = [int(n) for n in sizes]
    if any(n < 0 for n in sizes):
        raise ConfigError(f"set sizes must be non-negative; got {sizes}")
    if cap is None or cap >= sum(sizes):
        return sizes
    if isinstance(cap, bool) or int(cap) < 0:
        raise ConfigError(f"cap must be None or a non-negative int; got {cap!r}")
    shares = [0] * len(sizes)
    left, open_sets = int(cap), list(range(len(sizes)))
    while left > 0 and open_sets:
        each, extra = divmod(left, len(open_sets))
        full = [i for i in open_sets if sizes[i] - shares[i] <= each]
        if not full:  # every open set takes its equal share; the remainder goes to the first ones
            for rank, i in enumerate(open_sets):
                shares[i] += each + (rank < extra)
            break
        for i in full:  # smaller sets take all they have; what they leave is shared again
            left -= sizes[i] - shares[i]
            shares[i] = sizes[i]
        open_sets = [i for i in open_sets if i not in full]
    return shares


def _same_folder(a: str, b: str) -> bool:
    try:
        return _resolve_folder(a, "csv") == _resolve_folder(b, "csv")
    except DataMissingError:
        return False


def medical_lto_composition(target: str, size: int) -> tuple[list[str], list[str]]:
    """The sets ``medical-lto:<target>`` pre-trains on at ``size`` px, and those skipped with the reason.

    Every local single-label 2D MedMNIST flag (as ``medmnist-lto:``) and every :data:`MEDICAL_CSV_SOURCES`
    folder found, except the target: a MedMNIST target leaves out its flag, a ``csv:`` target leaves out the
    medical folder it resolves to (by path, so ``csv:/abs/path/nih-cxr14-sample`` is the same set). Reads no
    images, so it can enter cache keys.

    Raises
    ------
    ConfigError
        The target is not a MedMNIST flag or a ``csv:`` folder (the message lists the valid flags).
    DataMissingError
        A ``csv:`` target folder that does not exist.
    """
    t = _parse(target, ("medmnist", "csv"))
    if t.n is not None:
        raise ConfigError(f"medical-lto target {target!r}: put '@<n>' after the whole spec, not the target")
    if t.kind == "csv":
        _resolve_folder(t.arg, "csv")  # an unknown target folder is an error, not 'nothing to leave out'
    _check_size(size)
    flags, skipped = _lto_flags(t.arg if t.kind == "medmnist" else "", size)
    used = [f"medmnist:{f}" for f in flags]
    if t.kind == "medmnist":
        skipped.append(f"medmnist:{t.arg} (the target)")
    for source in MEDICAL_CSV_SOURCES:
        folder = source.removeprefix("csv:")
        if t.kind == "csv" and _same_folder(folder, t.arg):
            skipped.append(f"{source} (the target)")
            continue
        try:
            _resolve_folder(folder, "csv")
        except DataMissingError:
            skipped.append(f"{source} (not local)")
            continue
        used.append(source)
    return used, skipped


def _load_medical_lto(target: str, size: int, split: str, seed: int, cap: int | None) -> ImageSet:
    """Leave-target-out over every local medical set: a multi-class pretext of (set x label) classes.

    Each set is cut to its :func:`budget_shares` share of ``cap`` by a seeded stratified subsample, so the
    union holds at most ``cap`` images (the profile's ``pretrain_max_images``) whatever the number of sets.
    ``csv:`` folders without a ``split`` column give all their images to the ``'train'`` split.
    """
    used, skipped = medical_lto_composition(target, size)
    if not used:
        raise DataMissingError(
            f"medical-lto:{target} at {size} px: no other medical set is available (skipped: {', '.join(skipped)})"
        )
    parts = []
    for source in used:
        kind, _, arg = source.partition(":")
        part_split = split
        if kind == "csv" and split == "train":
            labels_csv = _resolve_folder(arg, "csv") / "labels.csv"
            if "split" not in pd.read_csv(labels_csv, nrows=0).columns:
                part_split = "all"
        parts.append(_load_medmnist(arg, size, part_split) if kind == "medmnist" else _load_csv(arg, size, part_split))
    shares = budget_shares([len(p) for p in parts], cap)
    parts = [p.subset(stratified_subsample(p.labels, k, seed)) if k < len(p) else p
             for p, k in zip(parts, shares, strict=True)]
    capped = "" if cap is None else f"[cap={cap},seed={seed}]"
    return _pretext_set(used, parts, f"medical-lto:{target}@{size}:{split}{capped}")


def dataset_composition(spec: str, size: int) -> list[str]:
    """The individual sets a dataset spec is made of at ``size`` px (for provenance tables), reading no images.

    ``medmnist-lto:`` / ``medical-lto:`` -> every set they join (``medmnist:<flag>``, ``csv:<folder>``); any
    other spec -> itself without ``@n``.
    """
    t = parse_dataset(spec)
    if t.kind == "medical-lto":
        return medical_lto_composition(t.arg, size)[0]
    if t.kind == "medmnist-lto":
        return [f"medmnist:{f}" for f in _lto_flags(t.arg, _check_size(size))[0]]
    return [dataclasses.replace(t, n=None).spec]


def _manifest_licence(folder: Path | None) -> str | None:
    """The licence paragraph of a mirror folder's MANIFEST.md (its '## License' section, else the first
    sentence that mentions a licence), as the folder's curator wrote it."""
    manifest = folder / "MANIFEST.md" if folder is not None else None
    if manifest is None or not manifest.is_file():
        return None
    text = manifest.read_text(encoding="utf-8")
    section = re.search(r"^##+\s*Licen[cs]e\s*\n+(.+?)(?:\n\s*\n|\n#|\Z)", text, flags=re.M | re.S)
    if section:
        return " ".join(section.group(1).split())
    sentence = re.search(r"[^.\n]*licen[cs]e[^.\n]*\.", text, flags=re.I)
    return " ".join(sentence.group(0).split()) if sentence else None


def dataset_licence(spec: str) -> str:
    """The licence of one set (an element of :func:`dataset_composition`), from its own metadata.

    MedMNIST flags: ``medmnist.INFO[flag]['license']``; ``csv:`` and image folders and CIFAR-10's JPEG copy:
    the folder's MANIFEST.md (:func:`_manifest_licence`); ``'not stated'`` when there is none.
    """
    t = parse_dataset(spec)
    if t.kind == "medmnist":
        return f"{_medmnist_info()[t.arg]['license']} (MedMNIST v2)"
    if t.kind == "cifar10":
        found = paths.find_file("cifar10-jpeg")
        licence = _manifest_licence(found if found is not None and found.is_dir() else None)
        return licence or "CIFAR-10 (Krizhevsky 2009): no licence stated"
    if t.kind in ("csv", "imagefolder"):
        try:
            folder: Path | None = _resolve_folder(t.arg, t.kind)
        except DataMissingError:
            folder = None
        return _manifest_licence(folder) or "not stated"
    return "; ".join(f"{part}: {dataset_licence(part)}" for part in dataset_composition(spec, 28))


# --------------------------------------------------------------------------------------------- public loaders
def load_target(spec: str, split: str, size: int) -> ImageSet:
    """Load a target dataset split.

    Parameters
    ----------
    spec : str
        ``'medmnist:<flag>'`` / ``'<flag>'`` (any 2D MedMNIST flag) or ``'csv:<folder>'``; optional ``@n``.
    split : str
        ``'train'``, ``'val'``, ``'test'`` (MedMNIST's official splits) or ``'all'`` (the only one for csv
        folders without a ``split`` column; draw 3.4.3 splits with :func:`cv_splits`).
    size : int
        Image side in px: 28, 64, 128 or 224 for MedMNIST (the released files); any size for csv folders
        (images are resized without cropping, as 3.4.1).

    Raises
    ------
    ConfigError, DataMissingError, HashMismatchError
    """
    t = parse_target(spec)
    return _load(t, size, split, seed=0)


def load_dataset(spec: str, size: int, split: str = "train", seed: int = 0, max_images: int | None = None) -> ImageSet:
    """Load a pre-training source dataset (or any target) at ``size`` px.

    Specs: ``'cifar10'`` (natural source; 32 px native, resized when ``size != 32``), ``'medmnist:<flag>'``,
    ``'medmnist-lto:<target>'`` (every other available single-label 2D flag, labels offset, class names
    prefixed by flag), ``'medical-lto:<target>'`` (every other local medical set, MedMNIST and
    :data:`MEDICAL_CSV_SOURCES`, each cut to its :func:`budget_shares` share of ``max_images``; the target
    is a flag or a ``csv:`` folder), ``'csv:<folder>'``, ``'imagefolder:<path>'`` (a torchvision ImageFolder root; uses
    ``<path>/<split>`` when that sub-folder exists). Any spec may end in ``@<n>``: a seeded stratified
    subsample of n images (for image folders only those n are decoded).

    Image folders are decoded fully into memory and cached as uint8 npz (not lazy: every consumer gets a
    plain array); folders above ``MAX_EAGER_IMAGES`` files must be cut with ``@n``.

    A ``csv:`` folder without a ``split`` column has no official training split: as a pre-training source,
    its ``'train'`` split is all of its images.

    ``max_images`` caps the result (after ``@n``) at a seeded stratified subsample, exactly
    ``ds.subset(stratified_subsample(ds.labels, max_images, seed))``; for CIFAR-10's JPEGs and image folders
    only the kept images are decoded, so a 6,000-image source does not decode all 50,000 (pre-training's cap).
    """
    t = parse_dataset(spec)
    if max_images is not None and (
        isinstance(max_images, bool) or not isinstance(max_images, int | np.integer) or max_images < 1
    ):
        raise ConfigError(f"max_images must be None or a positive int; got {max_images!r}")
    if t.kind == "csv" and split == "train":
        labels_csv = _resolve_folder(t.arg, "csv") / "labels.csv"
        if labels_csv.is_file() and "split" not in pd.read_csv(labels_csv, nrows=0).columns:
            split = "all"
    ds = _load(t, size, split, seed, cap=None if max_images is None else int(max_images))
    if max_images is not None and len(ds) > max_images:
        ds = ds.subset(stratified_subsample(ds.labels, int(max_images), seed))
    return ds


def _load(t: TargetSpec, size: int, split: str, seed: int, cap: int | None = None) -> ImageSet:
    """Load a parsed spec; ``cap`` (no ``@n`` given) lets CIFAR-10 and image folders decode only a subsample."""
    if not isinstance(size, int | np.integer) or isinstance(size, bool) or size <= 0:
        raise ConfigError(f"image size must be a positive int; got {size!r}")
    size = int(size)
    if t.kind == "medmnist":
        ds = _load_medmnist(t.arg, _check_size(size), split)
    elif t.kind == "medmnist-lto":
        ds = _load_lto(t.arg, size, split)
    elif t.kind == "medical-lto":
        ds = _load_medical_lto(t.arg, size, split, seed, cap if t.n is None else None)
    elif t.kind == "csv":
        ds = _load_csv(t.arg, size, split)
    elif t.kind == "cifar10":
        # '@n' (or else the cap) is drawn from the labels before decoding: only the kept JPEGs are decoded
        ds = _load_cifar10(split, cap if t.n is None else t.n, seed)
        if t.n is not None and ds.index is not None:
            ds.name = f"{ds.name}[n={t.n},seed={seed}]"
        if size != ds.images.shape[1]:
            ds = dataclasses.replace(
                ds, images=resize(ds.images, size), name=ds.name.replace("@32:", f"@{size}:")
            )
        return ds
    else:  # imagefolder
        root = _resolve_folder(t.arg, "imagefolder")
        if (root / split).is_dir():
            root = root / split
        elif split not in ("train", "all"):
            subs = sorted(d.name for d in root.iterdir() if d.is_dir())
            raise ConfigError(
                f"image folder {root} has no {split!r} sub-folder; its sub-folders (classes, or splits): "
                f"{', '.join(subs[:20])}; use split='train' or 'all' to read the root itself"
            )
        ds = _load_image_folder(root, size, f"imagefolder:{root}@{size}", t.n if t.n is not None else cap, seed)
        if t.n is not None:
            ds.name = f"{ds.name}[n={t.n},seed={seed}]"
        return ds
    if t.n is not None:
        ds = _subsample_named(ds, t.n, seed)
    return ds


def _subsample_named(ds: ImageSet, n: int, seed: int) -> ImageSet:
    if n >= len(ds):
        return ds
    idx = stratified_subsample(ds.labels, n, seed)
    sub = ds.subset(idx)
    sub.name = f"{ds.name}[n={n},seed={seed}]"
    return sub


def available_targets() -> pd.DataFrame:
    """Which targets exist locally and which could be downloaded (for ``cfct list``).

    Returns
    -------
    pandas.DataFrame
        Columns ``target, size, task, channels, status, path``; status is ``'local'``, ``'downloadable'``
        (online) or ``'missing'`` (offline and not on disk). csv folders of the mirror/data dir are listed
        with size ``None`` (any size).
    """
    info = _medmnist_info()
    online = not paths.is_offline()
    rows = []
    for flag in _flags_2d():
        for size in SIZES:
            fname = medmnist_file(flag, size)[0]
            found = next((d / fname for d in paths.search_dirs("medmnist") if (d / fname).is_file()), None)
            status = "local" if found else ("downloadable" if online else "missing")
            rows.append(
                {
                    "target": f"medmnist:{flag}",
                    "size": size,
                    "task": _TASKS[info[flag]["task"]],
                    "channels": info[flag]["n_channels"],
                    "status": status,
                    "path": str(found) if found else info[flag][f"url{_size_flag(size)}"],
                }
            )
    for root in paths.search_dirs():
        if root.is_dir():
            for csv in sorted(root.glob("*/labels.csv")):
                rows.append(
                    {
                        "target": f"csv:{csv.parent.name}",
                        "size": None,
                        "task": "csv",
                        "channels": None,
                        "status": "local",
                        "path": str(csv.parent),
                    }
                )
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------- sampling
def stratified_subsample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of n, class proportions kept (largest remainder per class).

    Multi-label (2D) labels are sampled uniformly.
    """
    labels = np.asarray(labels)
    N = len(labels)
    if n >= N:
        return np.arange(N, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if labels.ndim != 1:
        return np.sort(rng.choice(N, size=n, replace=False)).astype(np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * n / N
    take = np.floor(quota).astype(int)
    rest = n - take.sum()
    order = np.argsort(-(quota - take), kind="stable")
    take[order[:rest]] += 1
    out = [
        rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
        for c, k in zip(classes, take, strict=True)
    ]
    return np.sort(np.concatenate(out)).astype(np.int64)


def _single_label(ds: ImageSet, fn: str) -> None:
    if ds.multi_label:
        raise IncompatibleError(
            f"{fn} needs single-label data; {ds.name!r} is multi-label ({ds.n_classes} label columns)"
        )


def subsample_per_class(ds: ImageSet, n_per_class: int, seed: int) -> ImageSet:
    """A seeded subsample of ``n_per_class`` images of every class (6.4.1: 100/class train, 25/class val).

    A class with fewer images contributes all of them, with a warning.
    """
    _single_label(ds, "subsample_per_class")
    if not isinstance(n_per_class, int | np.integer) or n_per_class <= 0:
        raise ConfigError(f"n_per_class must be a positive int; got {n_per_class!r}")
    rng = np.random.default_rng(seed)
    picked, short = [], []
    for c in range(ds.n_classes):
        members = np.flatnonzero(ds.labels == c)
        if len(members) < n_per_class:
            short.append(f"{ds.class_names[c]!r} ({len(members)})")
            picked.append(members)
        else:
            picked.append(rng.choice(members, size=n_per_class, replace=False))
    if short:
        warnings.warn(
            f"{ds.name}: fewer than {n_per_class} images in class(es) {', '.join(short)}; took all",
            stacklevel=2,
        )
    return ds.subset(np.sort(np.concatenate(picked)))


CV_SCHEMES = ("kfold", "repeated")


def _group_table(ds: ImageSet) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(group ids, group of each image, majority class of each group, images per group)."""
    groups = ds.groups if ds.groups is not None else np.arange(len(ds)).astype(str)
    gid, ginv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    if ds.multi_label:
        gclass = np.zeros(len(gid), dtype=np.int64)
    else:  # majority label per group
        table = np.zeros((len(gid), ds.n_classes), dtype=np.int64)
        np.add.at(table, (ginv, ds.labels), 1)
        gclass = table.argmax(1)
    return gid, ginv, gclass, np.bincount(ginv, minlength=len(gid))


def _take_groups(members: np.ndarray, gsize: np.ndarray, fraction: float, total: int) -> int:
    """How many of the (shuffled) ``members`` groups reach ``fraction`` of ``total`` images (at least 1)."""
    csum = np.cumsum(gsize[members])
    return max(1, int(np.searchsorted(csum, fraction * total, side="left")) + 1)


def _check_two_classes(ds: ImageSet, parts: tuple[np.ndarray, ...], seed: int, rep: int) -> None:
    if ds.multi_label:
        return
    for part, pname in zip(parts, ("train", "val", "test"), strict=True):
        present = np.unique(ds.labels[part])
        if len(present) < 2:
            raise IncompatibleError(
                f"cv_splits({ds.name!r}, seed={seed}) repetition {rep}: the {pname} split holds "
                f"{len(part)} image(s) of {len(present)} class(es) "
                f"{[ds.class_names[i] for i in present]}; "
                "every split needs at least two classes (use more data or larger fractions)"
            )


def cv_splits(
    ds: ImageSet,
    k: int,
    seed: int,
    test_fraction: float = 0.15,
    val_fraction: float = 0.05,
    *,
    scheme: str = "kfold",
    cover: bool = False,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """k train/val/test splits for cross-validation, 80/5/15 by default (thesis 3.4.3).

    Group-disjoint when ``ds.groups`` is set (the same patient never spans two splits of a fold), and
    stratified by class (a group counts with its majority label).

    ``scheme='kfold'`` (default): the test sets of the k folds are **disjoint**. The groups are dealt into
    ``P`` stratified parts (scikit-learn's ``StratifiedGroupKFold``, shuffled by ``seed``) and fold i tests on
    part i. The thesis asks for both "five-fold cross-validation" and a 15% test set, which a covering 5-fold
    split cannot give (its test sets are 20%). So ``P = max(k, round(1 / test_fraction))``: 7 parts of about
    14% at the default 15%, of which k are used, keeping the thesis's proportions; the test sets cover the data
    when ``k >= P``. ``cover=True`` forces ``P = k`` (classic k-fold: every image is tested once, the test
    share is 1/k). In both, validation takes ``val_fraction`` of all images from the rest (group-disjoint,
    stratified, seeded by ``(seed, fold)``) and training the remainder.

    ``scheme='repeated'``: the book's earlier protocol, k independent random 80/5/15 draws whose test sets
    may overlap (kept so earlier results can be reproduced).

    Parameters
    ----------
    ds : ImageSet
    k : int
        Number of folds (>= 2 with ``cover=True``; k = 1 tests on one part of about ``test_fraction``).
    seed : int
        Seeds the parts and the validation draws.
    test_fraction, val_fraction : float
        Target shares of the test and validation sets.
    scheme : {'kfold', 'repeated'}
    cover : bool
        ``kfold`` only: make the test sets cover the data (test share 1/k).

    Returns
    -------
    list of (train_idx, val_idx, test_idx), sorted int64 arrays.

    Raises
    ------
    IncompatibleError
        If a split of some fold would hold a single class.
    """
    if scheme not in CV_SCHEMES:
        raise unknown_choice("cross-validation scheme", scheme, CV_SCHEMES)
    if not isinstance(k, int | np.integer) or k <= 0:
        raise ConfigError(f"k must be a positive int; got {k!r}")
    if scheme == "kfold" and cover and k < 2:
        raise ConfigError(f"covering k-fold splits need k >= 2 (one fold cannot test on every image); got k={k}")
    if not (0 < test_fraction < 1 and 0 < val_fraction < 1 and test_fraction + val_fraction < 1):
        raise ConfigError(
            f"fractions must be in (0, 1) with test+val < 1; got {test_fraction}, {val_fraction}"
        )
    N = len(ds)
    gid, ginv, gclass, gsize = _group_table(ds)
    if scheme == "repeated":
        return _repeated_splits(ds, k, seed, test_fraction, val_fraction, ginv, gclass, gsize)
    from sklearn.model_selection import StratifiedGroupKFold  # scikit-learn is heavy; only this path needs it

    n_parts = int(k) if cover else max(int(k), int(round(1 / test_fraction)))
    if len(gid) < n_parts:
        raise IncompatibleError(f"cv_splits({ds.name!r}): {len(gid)} groups cannot fill {n_parts} test parts")
    splitter = StratifiedGroupKFold(n_splits=n_parts, shuffle=True, random_state=int(seed))
    with warnings.catch_warnings():  # a class rarer than n_parts is reported below as a one-class split
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        parts = [test for _, test in splitter.split(np.zeros(len(gid)), gclass, groups=np.arange(len(gid)))]
    out = []
    for fold in range(int(k)):
        rng = np.random.default_rng([seed, fold])
        split_of_group = np.zeros(len(gid), dtype=np.int8)  # 0 train, 1 val, 2 test
        split_of_group[parts[fold]] = 2
        for c in np.unique(gclass):
            rest = rng.permutation(np.flatnonzero((gclass == c) & (split_of_group != 2)))
            n_val = _take_groups(rest, gsize, val_fraction, gsize[gclass == c].sum()) if len(rest) >= 3 else 0
            n_val = min(n_val, max(len(rest) - 1, 0))
            split_of_group[rest[:n_val]] = 1
        s = split_of_group[ginv]
        out_parts = tuple(np.flatnonzero(s == j).astype(np.int64) for j in (0, 1, 2))
        _check_two_classes(ds, out_parts, seed, fold)
        out.append(out_parts)
    assert sum(len(p[2]) for p in out) <= N
    return out


def _repeated_splits(
    ds: ImageSet, k: int, seed: int, test_fraction: float, val_fraction: float,
    ginv: np.ndarray, gclass: np.ndarray, gsize: np.ndarray,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """k independent random train/val/test draws (``cv_splits(scheme='repeated')``)."""
    out = []
    for rep in range(k):
        rng = np.random.default_rng([seed, rep])
        split_of_group = np.zeros(len(gsize), dtype=np.int8)  # 0 train, 1 val, 2 test
        for c in np.unique(gclass):
            members = rng.permutation(np.flatnonzero(gclass == c))
            total = gsize[members].sum()
            n_test = _take_groups(members, gsize, test_fraction, total) if len(members) >= 3 else 0
            rest = members[n_test:]
            n_val = _take_groups(rest, gsize, val_fraction, total) if len(members) >= 3 else 0
            n_val = min(n_val, max(len(rest) - 1, 0))
            split_of_group[members[:n_test]] = 2
            split_of_group[rest[:n_val]] = 1
        s = split_of_group[ginv]
        parts = tuple(np.flatnonzero(s == j).astype(np.int64) for j in (0, 1, 2))
        _check_two_classes(ds, parts, seed, rep)
        out.append(parts)
    return out


# ----------------------------------------------------------------------------------------------- transforms
_SERIAL_NUMEL = 1 << 21  # CPU batches up to this many values are transformed single-threaded


@contextlib.contextmanager
def _serial_if_small(x: torch.Tensor | np.ndarray) -> Iterator[None]:
    """Run small CPU batch transforms on one thread, restoring the thread count after.

    OpenMP fork/join costs more than elementwise work on a 28 px batch, and on a shared (loaded) CPU every
    parallel op can stall for milliseconds (measured here, load 9 on 2 cores: 'ch3' on 28 px batches of 64 ran
    at 1.5k images/s with torch's 2 threads and 14k with 1).
    """
    threads = torch.get_num_threads()
    on_cpu = not isinstance(x, torch.Tensor) or x.device.type == "cpu"
    numel = x.numel() if isinstance(x, torch.Tensor) else x.size
    if threads == 1 or not on_cpu or numel > _SERIAL_NUMEL:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


NORMALIZATION: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}
"""Per-source normalisation of an image in [0, 1] (6.4.2): ``imagenet`` statistics for torchvision's ImageNet
weights; ``half`` (mean 0.5 / std 0.5, i.e. [-1, 1]) for cfct's own sources and, by their training, the released
EfficientNet-Lites; ``unit`` (unchanged [0, 1]) for Astra's CT encoder, which was trained on an HU window scaled
to [0, 1]. Which source takes which is decided in one place, :func:`cfct.sources.normalization`."""


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images -> float32 ``(N, 3, H, W)`` in [0, 1]; grey is repeated to 3 channels."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise IncompatibleError(f"to_tensor expects (N, H, W, C) with C in (1, 3); got {tuple(x.shape)}")
    scale = 255.0 if x.dtype == torch.uint8 else 1.0
    with _serial_if_small(x):
        x = x.permute(0, 3, 1, 2).to(torch.float32).div_(scale)
        return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x.contiguous()


def resize(images: np.ndarray | torch.Tensor, size: int, chunk: int = 4096) -> np.ndarray | torch.Tensor:
    """Batched resize to ``size x size`` without cropping (bilinear, antialiased when shrinking).

    uint8 NHWC numpy in -> uint8 NHWC numpy out; float ``(B, C, H, W)`` tensor in -> tensor out (same device).
    """
    if isinstance(images, torch.Tensor):
        if images.shape[-2:] == (size, size):
            return images
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if images.shape[1:3] == (size, size):
        return images
    out = np.empty((len(images), size, size, images.shape[-1]), dtype=np.uint8)
    for i in range(0, len(images), chunk):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + chunk])).permute(0, 3, 1, 2).float()
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[i : i + chunk] = y.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out


def normalize(x: torch.Tensor, name: str) -> torch.Tensor:
    """``(x - mean) / std`` per channel with the statistics ``NORMALIZATION[name]`` (6.4.2)."""
    if name not in NORMALIZATION:
        raise unknown_choice("normalization", name, NORMALIZATION)
    mean, std = (
        torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) for v in NORMALIZATION[name]
    )
    with _serial_if_small(x):
        return (x - mean) / std


AUGMENT_POLICIES = ("none", "ch3", "ch6")


def adjust_sharpness(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Batched PIL-style sharpness, equal to torchvision's ``adjust_sharpness`` but faster on CPU.

    PIL's smoothing kernel ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` is (3x3 box sum + 4 x centre) / 13; the
    box sum is computed separably from shifted slices (four adds), which on CPU is several times faster than
    torchvision's depthwise convolution or ``avg_pool2d``. Border pixels stay unchanged, as in PIL.
    """
    rows = x[..., :-2, :] + x[..., 1:-1, :] + x[..., 2:, :]
    box = rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = (box + 4 * x[..., 1:-1, 1:-1]) / 13
    return (factor * x + (1 - factor) * degenerate).clamp_(0, 1)


class BatchAugment(nn.Module):
    """Random augmentation of a whole float batch ``(B, C, H, W)`` in [0, 1], on any device.

    Policies
    --------
    ``'ch3'`` (3.4.1, Keras ``ImageDataGenerator``): rotation range 10 deg, width/height shift 0.1, shear 0.1
        (Keras gives shear in degrees, so 0.1 deg), zoom 0.1 (x and y zoom drawn independently in [0.9, 1.1]),
        fill mode 'nearest' (border replicate), horizontal flip unless the target is chest X-ray (``hflip``).
        Implemented as one batched ``affine_grid`` + ``grid_sample`` with the Keras matrix order
        rotation @ shift @ shear @ zoom (output -> input coordinates, about the image centre).
    ``'ch6'`` (6.4.2): horizontal flip p=0.5, random resized crop (scale 0.08-1, ratio 3/4-4/3), rotation
        within +-5 deg (zero fill), then each with p=0.5: sharpness (factor 2), autocontrast, equalize.
        Flip, crop and rotation are one ``grid_sample``; the colour ops are torchvision's batched kernels.
    ``'none'``: identity.

    Random parameters are drawn on the CPU from ``generator`` (or the module's own seeded one), so a seed
    gives the same augmentation on every device. In eval mode (``.eval()``) the module is the identity.

    Parameters
    ----------
    policy : str
    hflip : bool
        Random horizontal flips (False for chest X-ray targets in 'ch3').
    seed : int, optional
        Seed of the module's own generator, used when ``forward`` gets none.
    **params
        Override ranges: ``rotation, shift, shear, zoom`` (ch3);
        ``scale, ratio, degrees, sharpness, p`` (ch6).
    """

    CH3 = {"rotation": 10.0, "shift": 0.1, "shear": 0.1, "zoom": 0.1}
    CH6 = {"scale": (0.08, 1.0), "ratio": (3 / 4, 4 / 3), "degrees": 5.0, "sharpness": 2.0, "p": 0.5}

    def __init__(
        self, policy: str = "ch3", hflip: bool = True, seed: int | None = None, **params: Any
    ) -> None:
        super().__init__()
        if policy not in AUGMENT_POLICIES:
            raise unknown_choice("augmentation policy", policy, AUGMENT_POLICIES)
        defaults = self.CH3 if policy == "ch3" else self.CH6 if policy == "ch6" else {}
        unknown = set(params) - set(defaults)
        if unknown:
            raise unknown_choice(f"{policy} augmentation parameter", sorted(unknown)[0], list(defaults))
        self.policy, self.hflip = policy, bool(hflip)
        self.params = {**defaults, **params}
        self.generator = torch.Generator().manual_seed(
            seed if seed is not None else torch.initial_seed() % 2**63
        )

    def extra_repr(self) -> str:
        return f"policy={self.policy!r}, hflip={self.hflip}, params={self.params}"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.policy == "none" or not self.training:
            return x
        if x.ndim != 4:
            raise IncompatibleError(f"BatchAugment expects (B, C, H, W); got {tuple(x.shape)}")
        g = generator if generator is not None else self.generator
        if g.device.type != "cpu":
            raise ConfigError("BatchAugment draws its parameters on the CPU; pass a CPU torch.Generator")
        with _serial_if_small(x):
            return self._ch3(x, g) if self.policy == "ch3" else self._ch6(x, g)

    # Geometry: per-image 3x3 matrices on pixel coordinates centred on the image (x right, y down), mapping
    # output to input positions. They are built in NumPy from one block of uniforms per batch (a handful of
    # tiny torch ops per image would cost more than the resampling itself at 28 px).
    @staticmethod
    def _theta(m: np.ndarray, h: int, w: int, x: torch.Tensor) -> torch.Tensor:
        """Centred pixel-space matrices (B, 3, 3) -> ``affine_grid`` theta (B, 2, 3) on x's device/dtype."""
        s = np.diag([w / 2, h / 2, 1.0])
        s_inv = np.diag([2 / w, 2 / h, 1.0])
        # cast on the CPU first: MPS has no float64
        return torch.from_numpy((s_inv @ m @ s)[:, :2]).to(x.dtype).to(x.device)

    @staticmethod
    def _grid(theta: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``F.affine_grid(theta, (B, C, h, w), align_corners=False)`` by broadcasting.

        Several times faster on CPU than affine_grid's batched matmul over a homogeneous base grid.
        """
        xs = (torch.arange(w, dtype=theta.dtype, device=theta.device) * 2 + 1) / w - 1
        ys = (torch.arange(h, dtype=theta.dtype, device=theta.device) * 2 + 1) / h - 1
        t = theta[:, :, :, None, None]  # (B, 2, 3, 1, 1)
        grid = (
            t[:, :, 0] * xs.view(1, 1, 1, w) + t[:, :, 1] * ys.view(1, 1, h, 1) + t[:, :, 2]
        )  # (B, 2, h, w)
        return grid.permute(0, 2, 3, 1)

    @staticmethod
    def _rotation(angle: np.ndarray) -> np.ndarray:
        m = np.repeat(np.eye(3)[None], len(angle), axis=0)
        c, s = np.cos(angle), np.sin(angle)
        m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = c, -s, s, c
        return m

    def _ch3(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.params
        u = torch.rand(b, 7, generator=g, dtype=torch.float64).numpy()

        def span(col: int, r: float) -> np.ndarray:  # uniform in [-r, r]
            return (2 * u[:, col] - 1) * r

        eye = np.repeat(np.eye(3)[None], b, axis=0)
        shift, shear, zoom, flip = eye.copy(), eye.copy(), eye.copy(), eye.copy()
        shift[:, 0, 2], shift[:, 1, 2] = span(1, p["shift"]) * w, span(2, p["shift"]) * h
        sh = np.deg2rad(span(3, p["shear"]))
        shear[:, 0, 1], shear[:, 1, 1] = -np.sin(sh), np.cos(sh)
        zoom[:, 0, 0], zoom[:, 1, 1] = 1 + span(4, p["zoom"]), 1 + span(5, p["zoom"])
        if self.hflip:
            flip[:, 0, 0] = np.where(u[:, 6] < 0.5, -1.0, 1.0)
        # Keras order: rotation @ shift @ shear @ zoom; the flip comes after the affine warp in Keras, so its
        # output->input matrix is applied first (rightmost).
        m = self._rotation(np.deg2rad(span(0, p["rotation"]))) @ shift @ shear @ zoom @ flip
        grid = self._grid(self._theta(m, h, w, x), h, w)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def _ch6(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        b, _, h, w = x.shape
        p = self.params
        tries = 10
        u = torch.rand(b, 2 * tries + 7, generator=g, dtype=torch.float64).numpy()
        # Random resized crop box: torchvision's rule vectorised (10 tries, else the central square crop).
        lo, hi = p["scale"]
        area = (lo + (hi - lo) * u[:, :tries]) * (h * w)
        lr0, lr1 = math.log(p["ratio"][0]), math.log(p["ratio"][1])
        ratio = np.exp(lr0 + (lr1 - lr0) * u[:, tries : 2 * tries])
        cw, ch = np.round(np.sqrt(area * ratio)), np.round(np.sqrt(area / ratio))
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = ok.argmax(1)
        rows = np.arange(b)
        side = float(min(h, w))
        cw = np.where(ok.any(1), cw[rows, first], side)
        ch = np.where(ok.any(1), ch[rows, first], side)
        v = u[:, 2 * tries :]
        x0, y0 = np.floor(v[:, 0] * (w - cw + 1)), np.floor(v[:, 1] * (h - ch + 1))
        eye = np.repeat(np.eye(3)[None], b, axis=0)
        crop, flip = eye.copy(), eye.copy()
        crop[:, 0, 0], crop[:, 1, 1] = cw / w, ch / h
        crop[:, 0, 2], crop[:, 1, 2] = x0 + cw / 2 - w / 2, y0 + ch / 2 - h / 2  # crop centre
        flip[:, 0, 0] = np.where(v[:, 2] < 0.5, -1.0, 1.0)
        rot = self._rotation(np.deg2rad((2 * v[:, 3] - 1) * p["degrees"]))
        do_sharp, do_auto, do_eq = (torch.from_numpy(v[:, k] < p["p"]) for k in (4, 5, 6))
        # Pipeline flip -> crop -> rotate; output->input: rotate, then crop window, then flip. Rotation fills
        # with zeros (torchvision's default), so positions rotated outside the crop window are masked.
        theta_rot = self._theta(rot, h, w, x)
        theta_all = self._theta(flip @ crop @ rot, h, w, x)
        rotated = self._grid(theta_rot, h, w)
        inside = ((rotated[..., 0].abs() <= 1) & (rotated[..., 1].abs() <= 1)).unsqueeze(1)
        grid = self._grid(theta_all, h, w)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        out = out.mul_(inside).clamp_(0, 1)
        # Colour ops with p each, batched: computed for the chosen images only.
        for mask, op in (
            (do_sharp, lambda t: adjust_sharpness(t, p["sharpness"])),
            (do_auto, TF.autocontrast),
            (do_eq, TF.equalize),
        ):
            if mask.all():
                out = op(out)
            elif mask.any():
                idx = torch.nonzero(mask).squeeze(1).to(x.device)
                out = out.index_copy(0, idx, op(out.index_select(0, idx)))
        return out


def reference_transform(policy: str, hflip: bool = True, size: int | None = None):
    """The per-sample torchvision (PIL) pipeline equivalent to :class:`BatchAugment` (benchmark baseline).

    Returns a ``torchvision.transforms.Compose`` from a PIL image to a float tensor in [0, 1]. ``'ch3'`` uses
    ``RandomAffine`` (no 'nearest' fill mode in torchvision: borders are filled with 0).
    """
    from torchvision import transforms as T

    if policy not in AUGMENT_POLICIES:
        raise unknown_choice("augmentation policy", policy, AUGMENT_POLICIES)
    ops: list[Any] = []
    if policy == "ch3":
        ops = [T.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), shear=0.1)]
        if hflip:
            ops.append(T.RandomHorizontalFlip())
    elif policy == "ch6":
        if size is None:
            raise ConfigError("reference_transform('ch6') needs the output size for RandomResizedCrop")
        ops = [
            T.RandomHorizontalFlip(),
            T.RandomResizedCrop(size),
            T.RandomRotation(5),
            T.RandomAdjustSharpness(2.0),
            T.RandomAutocontrast(),
            T.RandomEqualize(),
        ]
    return T.Compose([*ops, T.ToTensor()])
