"""The chapters of the book and their parameter schemas.

Each chapter is a jupytext MyST notebook under ``chapters/``; its ``parameters`` cell holds exactly the
parameters declared here (a test checks it), so ``cfct list`` and ``cfct run -p`` know them before running.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cfct import data, shortcuts, sources, zoo
from cfct.config import (
    COMMON_PARAMS,
    DEFAULT_PROFILE,
    ChapterConfig,
    Param,
    Profile,
    by_profile,
    get_profile,
)
from cfct.errors import ConfigError, unknown_choice

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAPTER_DIR = REPO_ROOT / "chapters"


def check_target(spec: str) -> None:
    """Raise a ConfigError listing valid targets when ``spec`` is not one."""
    data.parse_target(spec)


def check_source(spec: str) -> None:
    """Raise a ConfigError listing valid kinds/architectures when ``spec`` is not a source spec."""
    sources.parse_spec(spec)


def check_arch(name: str) -> None:
    """Raise a ConfigError listing the registered architectures when ``name`` is not one."""
    if name not in zoo.architectures():
        raise unknown_choice("architecture", name, zoo.architectures())


def _natural(profile: Profile) -> str:
    return f"pretrained:{profile.arch}:cifar10"


@dataclasses.dataclass(frozen=True)
class Chapter:
    """One chapter: id (file stem), number, title and parameter schema (common parameters first)."""

    id: str
    number: int
    title: str
    params: tuple[Param, ...]

    @property
    def notebook(self) -> Path:
        return CHAPTER_DIR / f"{self.id}.md"

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}


# --------------------------------------------------------------------------------------------------
# Chapter 3 (coordinator: 3.5.1 parameters; ch3 helper may append its own below the marker)
_CH3 = (
    Param(
        "targets",
        str,
        "breastmnist,pneumoniamnist",
        "target datasets (medmnist flags or csv:<folder>)",
        many=True,
        check=check_target,
    ),
    Param(
        "natural_source",
        str,
        None,
        "natural source spec; with internet: imagenet:resnet50 (default: pretrained:<arch>:cifar10)",
        from_profile=_natural,
        check=check_source,
    ),
    Param(
        "medical_source",
        str,
        None,
        "medical source spec; {target} is replaced by the target (default: pretrained:<arch>:medical-lto:{target}, "
        "every local medical set except the target)",
        from_profile=lambda p: f"pretrained:{p.arch}:medical-lto:{{target}}",
    ),
    Param("arch", str, None, "architecture of the random-initialisation baseline", from_profile=lambda p: p.arch,
          check=check_arch),
    Param("image_size", int, None, "target image size (px)", from_profile=lambda p: p.image_size),
    Param("folds", int, None, "cross-validation folds (3.4.3)", from_profile=lambda p: p.folds),
    # quick: 5 epochs on at most 250 images per fold keep the 3.5.1 matrix (2 targets x 3 folds x 5 runs, 30
    # fine-tunes) at about 5 minutes on 2 idle CPU cores (8 epochs on 300 images took 9.5; issue 13: a chapter at
    # quick under 10 minutes).
    Param("epochs", int, None, "maximum fine-tuning epochs", from_profile=by_profile(smoke=2, quick=5, paper=200)),
    Param("patience", int, None, "early-stopping patience (epochs)", from_profile=lambda p: p.patience),
    Param("lr", float, None, "Adam learning rate (thesis: 1e-5 at 224 px for 200 epochs)",
          from_profile=by_profile(smoke=1e-3, quick=1e-3, paper=1e-5)),
    Param("max_train_images", int, None, "cap on training images per fold (0: all)",
          from_profile=by_profile(smoke=160, quick=250, paper=0)),
)

# --------------------------------------------------------------------------------------------------
# Fine-tuning of the p_art sweeps of Chapters 4 and 5 (Sec. 4.2.2, 5.1.2)
_SWEEP_TRAINING: tuple[Param, ...] = (
    Param("epochs", int, None, "maximum fine-tuning epochs (thesis: 200)",
          from_profile=by_profile(smoke=1, quick=3, paper=200)),
    Param("patience", int, None, "early-stopping patience (thesis: 30)",
          from_profile=by_profile(smoke=1, quick=3, paper=30)),
    Param("lr", float, None, "Adam learning rate (thesis: 1e-5 for up to 200 epochs)",
          from_profile=by_profile(smoke=1e-3, quick=1e-3, paper=1e-5)),
)


# --------------------------------------------------------------------------------------------------
# Chapter 4 (ch4 helper owns this block)
def _check_p_art(value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"p_art levels must lie in [0, 1]; got {value}")


def _check_ct_n0(value: float) -> None:
    if not value > 0:
        raise ConfigError(f"ct_n0 must be > 0; got {value}")


def _check_confounder(name: str) -> None:
    if shortcuts.get_confounder(name).kind != "image":
        raise unknown_choice("image confounder", name, [k for k, c in shortcuts.CONFOUNDERS.items()
                                                        if c.kind == "image"])


_CH4: tuple[Param, ...] = (
    Param("targets", str, None, "targets of the tag and denoising experiments (Fig. 4.3 left, middle)",
          many=True, check=check_target,
          from_profile=by_profile(smoke="pneumoniamnist", quick="pneumoniamnist", paper="pneumoniamnist,breastmnist")),
    Param("confounders", str, "tag,denoising", "synthetic confounders of Fig. 4.3 (tag, denoising, ...)",
          many=True, check=_check_confounder),
    Param("noise_target", str, "pneumoniamnist", "X-ray target of Fig. 4.4 (noise; high vs low noise)",
          check=check_target),
    Param("ct_target", str, "csv:iqothnccd-lung-ct", "CT target of Fig. 4.4 (projection vs image noise)",
          check=check_target),
    Param("sex_target", str, "csv:nih-cxr14-sample", "target with a 'sex' column (patient-sex confounder)",
          check=check_target),
    Param("natural_source", str, None, "natural source spec (with internet: imagenet:resnet50)",
          from_profile=_natural, check=check_source),
    Param("medical_source", str, None,
          "medical source spec; {target} -> the target (default: pretrained:<arch>:medical-lto:{target}, every "
          "local medical set except the target)"),
    Param("arch", str, None, "architecture of the random-initialisation baseline",
          from_profile=lambda p: p.arch, check=check_arch),
    Param("p_arts", float, None, "correlation levels p_art (4.2.2)", many=True,
          check=_check_p_art,
          from_profile=by_profile(smoke="0,1", quick="0,1", paper="0,0.1,0.2,0.5,0.8,1")),
    Param("image_size", int, None, "target image size (px)", from_profile=lambda p: p.image_size),
    Param("folds", int, None, "folds (thesis: 5): replicates with their own development draw and disjoint, "
          "patient-/group-disjoint test sets", from_profile=by_profile(smoke=1, quick=3, paper=5)),
    Param("n_dev", int, None, "development set size, train + val (Table 4.1: 248-500)",
          from_profile=by_profile(smoke=40, quick=100, paper=400)),
    Param("n_test", int, None, "test set size (Table 4.1: 83-1710)",
          from_profile=by_profile(smoke=40, quick=100, paper=400)),
    Param("ct_n0", float, shortcuts.THESIS_N0,
          "photons per detector bin of the CT projection-domain noise (thesis: 2e7; LoDoPaB-CT low dose: 4096)",
          check=_check_ct_n0),
    *_SWEEP_TRAINING,
)

# --------------------------------------------------------------------------------------------------
# Chapter 5 (ch5 helper owns this block)
def _check_fraction(name: str) -> Any:
    def check(value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name} must lie in [0, 1]; got {value}")

    return check


def _check_positive(name: str) -> Any:
    def check(value: float) -> None:
        if not value > 0:
            raise ConfigError(f"{name} must be > 0; got {value}")

    return check


_CH5: tuple[Param, ...] = (
    Param("ct_target", str, "csv:iqothnccd-lung-ct",
          "CT target with projection-domain photon noise (the thesis's LoDoPaB-CT role)", check=check_target),
    Param("denoise_target", str, "breastmnist",
          "target with NLM denoising (the thesis's KneeMRI role; any csv:<MRI folder> works)",
          check=check_target),
    Param("natural_source", str, None, "natural source spec (with internet: imagenet:resnet50)",
          from_profile=_natural, check=check_source),
    Param("medical_source", str, None,
          "medical source spec (default: leave-target-out MedMNIST, PneumoniaMNIST offline)",
          from_profile=lambda p: f"pretrained:{p.arch}:medmnist-lto:breastmnist", check=check_source),
    Param("arch", str, None, "architecture of the random-initialisation baseline",
          from_profile=lambda p: p.arch, check=check_arch),
    # quick: the clean and the fully degraded level with 3 folds each (the claims' replicates) instead of six
    # levels with one fold: the same number of fine-tunes
    Param("p_arts", float, None, "shares p_art of positive training images with the artifact (5.1.2: degradation)",
          many=True, check=_check_fraction("p_art"),
          from_profile=by_profile(smoke="0,1", quick="0,1", paper="0,0.1,0.2,0.5,0.8,1")),
    Param("image_size", int, None, "target image size (px)", from_profile=lambda p: p.image_size),
    Param("folds", int, None, "train/val splits of the development set, each with its own seed; one test set "
          "(thesis: 5)", from_profile=by_profile(smoke=1, quick=3, paper=5)),
    Param("n_dev", int, None, "development set size, train + val (thesis: 375 + 125)",
          from_profile=by_profile(smoke=40, quick=100, paper=500)),
    Param("n_test", int, None, "test set size, capped at what a target's test pool holds (thesis: ~1000)",
          from_profile=by_profile(smoke=40, quick=100, paper=1000)),
    *_SWEEP_TRAINING,
    Param("priority_images", int, None, "clean test images each learning priority is averaged over",
          from_profile=by_profile(smoke=32, quick=64, paper=500)),
    Param("lowpass_cutoff", float, 0.5, "low-pass cutoff of the natural-source edit (normalised frequency)",
          check=_check_fraction("lowpass_cutoff")),
    Param("nlm_strength", float, 2.0, "NLM filter strength h / (0.8 sigma)",
          check=_check_positive("nlm_strength")),
    Param("ct_n0", float, 4096.0, "photons per detector bin of the CT noise (LoDoPaB-CT low dose: 4096)",
          check=_check_positive("ct_n0")),
)

# --------------------------------------------------------------------------------------------------
# Chapter 6 (ch6 helper owns this block)
# Offline zoo: natural (CIFAR-10 and a size variant), leave-target-out MedMNIST (shared with Chapter 3), another
# MedMNIST dataset at two sizes, random initialisation. With internet add imagenet:{arch} and checkpoint: sources.
_CH6_SOURCES = ("random:{arch},pretrained:{arch}:cifar10,pretrained:{arch}:cifar10@1000,"
                "pretrained:{arch}:medmnist-lto:{target},pretrained:{arch}:medmnist:{other}@1000,"
                "pretrained:{arch}:medmnist:{other}@300")
# The released sources (cfct.released): real ImageNet and CT-trained weights. Their fine-tunes (the ground truth)
# cost more than the quick profile's budget, so quick/smoke score them only; paper adds them to the candidates.
_ZOO = "imagenet:efficientnet_lite0,ct:astra-resnet152"
_ZOO_ARCHS = "efficientnet_lite0,efficientnet_lite1,efficientnet_lite2"
_CH6: tuple[Param, ...] = (
    Param("targets", str, None, "MedMNIST target flags (6.4.1)", many=True, check=check_target,

          from_profile=by_profile(
              smoke="breastmnist",
              quick="breastmnist,pneumoniamnist",
              paper="breastmnist,pneumoniamnist")),
    Param("sources", str, None,
          "candidate sources of the dataset scenario; {target}, {other} (the next target) and {arch} are "
          "filled in per target", many=True,
          from_profile=by_profile(
              smoke="random:{arch},pretrained:{arch}:cifar10@300,"
                    "pretrained:{arch}:medmnist-lto:{target},pretrained:{arch}:medmnist:{other}@300",
              quick=_CH6_SOURCES,
              paper=_CH6_SOURCES + "," + _ZOO)),
    Param("archs", str, None, "architectures of the model scenario", many=True, check=check_arch,
          from_profile=by_profile(
              smoke="resnet18,mobilenetv3_small,shufflenetv2_x0_5",
              quick="resnet18,mobilenetv3_small,shufflenetv2_x0_5,mnasnet1_0",
              paper="resnet18,densenet121,efficientnetv2_s,mobilenetv3_small,googlenet,"
                    "mnasnet1_0,vgg11,convnext_tiny,shufflenetv2_x0_5," + _ZOO_ARCHS)),
    Param("model_source", str, None, "source of the model scenario, {arch} filled in (thesis: imagenet:{arch})",

          from_profile=by_profile(
              smoke="pretrained:{arch}:cifar10@300",
              quick="pretrained:{arch}:cifar10@1000",
              paper="imagenet:{arch}")),
    Param("image_size", int, None, "target image size (px)", from_profile=lambda p: p.image_size),
    Param("train_per_class", int, None, "target training images per class (6.4.1: 100)",
          from_profile=by_profile(smoke=20, quick=100, paper=100)),
    Param("val_per_class", int, None, "target validation images per class (6.4.1: 25)",
          from_profile=by_profile(smoke=10, quick=25, paper=25)),
    Param("grid_lr", float, None, "SGD learning rates of the grid (6.4.2)", many=True,
          from_profile=by_profile(smoke="0.01", quick="0.01", paper="1.0,0.1,0.01,0.001,0.0001,0.00001")),
    Param("grid_weight_decay", float, None, "weight decays of the grid", many=True,
          from_profile=by_profile(smoke="0.0", quick="0.0", paper="0.001,0.0001,0.00001,0.000001,0.0")),
    Param("grid_momentum", float, None, "SGD momenta of the grid", many=True,
          from_profile=by_profile(smoke="0.9", quick="0.9", paper="0.9,0.0")),
    Param("grid_batch_size", int, None, "batch sizes of the grid (0: the target's pair in Table 6.1)",
          many=True, from_profile=by_profile(smoke="32", quick="32", paper="0")),
    Param("epochs", int, None, "maximum fine-tuning epochs (6.4.2: 400)",
          from_profile=by_profile(smoke=2, quick=8, paper=400)),
    Param("patience", int, None, "early-stopping patience on validation AUC (6.4.2: 50)",
          from_profile=by_profile(smoke=1, quick=3, paper=50)),
    Param("augment", str, None, "fine-tuning augmentation: ch6 = the 6.4.2 policy (about 20 ms per image on CPU), "
          "ch3 = light shifts/rotations/flips", choices=("none", "ch3", "ch6"),
          from_profile=by_profile(smoke="ch3", quick="ch3", paper="ch6")),
    Param("fu_batches", int, 6, "batches of the S_FU backward pass (thesis study: 6; Eq. 6.4: 1)"),
    Param("zoo", str, None, "released pre-trained sources (cfct.released) scored beside the dataset scenario's "
          "candidates; fine-tuned only where they are also in sources", many=True, check=check_source,
          from_profile=by_profile(smoke=_ZOO, quick=_ZOO, paper=_ZOO)),
    Param("zoo_archs", str, None, "architectures of the released ImageNet weights scored as a model scenario "
          "(imagenet:{arch}); fine-tuned only where they are also in archs", many=True, check=check_arch,
          from_profile=by_profile(smoke=_ZOO_ARCHS, quick=_ZOO_ARCHS, paper=_ZOO_ARCHS)),
)

# --------------------------------------------------------------------------------------------------
CHAPTERS: dict[str, Chapter] = {
    c.id: c
    for c in (
        Chapter("03_hidden_representations", 3, "Hidden representations after natural vs medical pre-training",
                COMMON_PARAMS + _CH3),
        Chapter("04_shortcut_transfer", 4, "Shortcut transfer: MICCAT and confounders", COMMON_PARAMS + _CH4),
        Chapter("05_frequency_shortcuts", 5, "Frequency shortcuts and source-data editing", COMMON_PARAMS + _CH5),
        Chapter("06_transferability", 6, "Transferability estimation for source selection", COMMON_PARAMS + _CH6),
    )
}


def get_chapter(name: str | int) -> Chapter:
    """A chapter by id, number (``3``, ``"03"``), or name without number (``"hidden_representations"``)."""
    text = str(name).strip().lower()
    for chapter in CHAPTERS.values():
        aliases = {chapter.id, str(chapter.number), f"{chapter.number:02d}", f"ch{chapter.number}",
                   chapter.id.split("_", 1)[1]}
        if text in aliases:
            return chapter
    raise unknown_choice("chapter", str(name), [f"{c.number} ({c.id})" for c in CHAPTERS.values()])


def resolve(chapter: str, **params: Any) -> ChapterConfig:
    """Validate a chapter's parameters and fill in the profile's values.

    Parameters
    ----------
    chapter : str
        Chapter id or alias (``"3"``, ``"03_hidden_representations"``, ...).
    **params
        Parameter values, typically every variable of the notebook's ``parameters`` cell.

    Raises
    ------
    ConfigError
        Unknown chapter or parameter (listing the valid ones), wrong type, unknown choice, target or source.
    """
    spec = get_chapter(chapter)
    schema = {p.name: p for p in spec.params}
    unknown = sorted(set(params) - set(schema))
    if unknown:
        raise ConfigError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for chapter {spec.id!r}; "
            f"valid parameters: {', '.join(schema)}"
        )
    profile_name = os.environ.get("CFCT_PROFILE") or params.get("profile") or DEFAULT_PROFILE
    profile = get_profile(profile_name)
    values: dict[str, Any] = {}
    for name, param in schema.items():
        if name == "profile":
            continue
        values[name] = param.validate(params.get(name, param.default), profile)
    return ChapterConfig(spec.id, values, profile)


def from_namespace(chapter: str, namespace: Mapping[str, Any]) -> ChapterConfig:
    """:func:`resolve` with the chapter's parameters picked by name from a namespace.

    A notebook calls ``from_namespace("3", globals())`` right after its ``parameters`` cell, so papermill's
    injected values and the cell's defaults are validated together.
    """
    names = [p.name for p in get_chapter(chapter).params]
    missing = [n for n in names if n not in namespace]
    if missing:
        raise ConfigError(f"the parameters cell of chapter {chapter!r} lacks {', '.join(missing)}")
    return resolve(chapter, **{n: namespace[n] for n in names})
