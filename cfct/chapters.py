"""The chapters of the book and their parameter schemas.

Each chapter is a jupytext MyST notebook under ``chapters/``; its ``parameters`` cell holds exactly the
parameters declared here (a test checks it), so ``cfct list`` and ``cfct run -p`` know them before running.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cfct.config import COMMON_PARAMS, Param, Profile
from cfct.errors import unknown_choice

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAPTER_DIR = REPO_ROOT / "chapters"


def check_target(spec: str) -> None:
    """Raise a ConfigError listing valid targets when ``spec`` is not one."""
    from cfct import data

    data.parse_target(spec)


def check_source(spec: str) -> None:
    """Raise a ConfigError listing valid kinds/architectures when ``spec`` is not a source spec."""
    from cfct import zoo

    zoo.parse_spec(spec)


def check_arch(name: str) -> None:
    from cfct import zoo

    if name not in zoo.ARCHITECTURES:
        raise unknown_choice("architecture", name, zoo.ARCHITECTURES)


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
        "medical source spec; {target} is replaced by the target (default: pretrained:<arch>:medmnist-lto:{target})",
        from_profile=lambda p: f"pretrained:{p.arch}:medmnist-lto:{{target}}",
    ),
    Param("arch", str, None, "architecture of the random-initialisation baseline", from_profile=lambda p: p.arch,
          check=check_arch),
    Param("image_size", int, None, "target image size (px)", from_profile=lambda p: p.image_size),
    Param("folds", int, None, "cross-validation folds (3.4.3)", from_profile=lambda p: p.folds),
    Param("epochs", int, None, "maximum fine-tuning epochs", from_profile=lambda p: p.finetune_epochs),
    Param("patience", int, None, "early-stopping patience (epochs)", from_profile=lambda p: p.patience),
    Param("lr", float, None, "Adam learning rate (thesis: 1e-5 at 224 px for 200 epochs)",
          from_profile=lambda p: 1e-5 if p.name == "paper" else 1e-3),
    Param("max_train_images", int, None, "cap on training images per fold (0: all)",
          from_profile=lambda p: p.max_train_images or 0),
    # <!-- ch3-helper: parameters below -->
)

# --------------------------------------------------------------------------------------------------
# Chapter 4 (ch4 helper owns this block)
_CH4: tuple[Param, ...] = ()

# --------------------------------------------------------------------------------------------------
# Chapter 5 (ch5 helper owns this block)
_CH5: tuple[Param, ...] = ()

# --------------------------------------------------------------------------------------------------
# Chapter 6 (ch6 helper owns this block)
_CH6: tuple[Param, ...] = ()

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


def available_chapters() -> list[Chapter]:
    """Chapters whose notebook exists in this checkout."""
    return [c for c in CHAPTERS.values() if c.notebook.exists()]


def get_chapter(name: str | int) -> Chapter:
    """A chapter by id, number (``3``, ``"03"``), or name without number (``"hidden_representations"``)."""
    text = str(name).strip().lower()
    for chapter in CHAPTERS.values():
        aliases = {chapter.id, str(chapter.number), f"{chapter.number:02d}", f"ch{chapter.number}",
                   chapter.id.split("_", 1)[1]}
        if text in aliases:
            return chapter
    raise unknown_choice("chapter", name, [f"{c.number} ({c.id})" for c in CHAPTERS.values()])
