"""Profiles and chapter parameters: what a run of the book computes, validated before anything runs.

Three profiles fix the scale of every chapter:

- ``smoke``: tests and CI; each chapter executes in a minute or two on 2 CPU cores, on real data cut small.
- ``quick`` (default): 2 CPU cores, real data, 28 px MedMNIST / 32 px CIFAR-10, subsets and few epochs; the
  whole book builds in at most 20 minutes from an empty cache.
- ``paper``: the thesis protocol (224 px, ResNet50, 200 epochs with patience 30, five folds); needs a GPU and,
  for ``imagenet:`` sources, internet.

Each chapter declares a schema of :class:`Param` (see :mod:`cfct.chapters`). A parameter whose value is
``None`` takes the profile's value; an explicit value always wins. The environment variable ``CFCT_PROFILE``,
when set, overrides the ``profile`` parameter (the test suite uses it to run every chapter at ``smoke``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cfct.errors import ConfigError, unknown_choice


@dataclasses.dataclass(frozen=True)
class Profile:
    """The scale of a run; chapters read their defaults from it."""

    name: str
    image_size: int  # target images, px
    natural_size: int  # natural source (CIFAR-10 / ImageNet), px
    arch: str  # architecture of the sources compared in Chapters 3-5
    pretrain_epochs: int
    pretrain_max_images: int | None  # cap on source images for pre-training (None: all)
    pretrain_batch_size: int
    finetune_epochs: int  # maximum epochs of a fine-tune
    patience: int  # early-stopping patience (epochs)
    folds: int  # cross-validation folds (3.4.3)
    max_train_images: int | None  # cap on target training images per fold (None: all)
    batch_size: int
    device: str = "auto"
    pretrain_image_size: int | None = None  # pre-training image size (None: natural_size / image_size)
    pretrain_lr: float | None = None  # pre-training Adam learning rate (None: cfct.sources.PRETRAIN_LR)

    @property
    def pretrain(self) -> PretrainSettings:
        """The profile's pre-training settings (what sources and pre-training read)."""
        return PretrainSettings.from_profile(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        image_size=28,
        natural_size=32,
        arch="resnet18",
        pretrain_epochs=1,
        pretrain_max_images=600,
        pretrain_batch_size=128,
        finetune_epochs=2,
        patience=1,
        folds=2,
        max_train_images=160,
        batch_size=64,
    ),
    "quick": Profile(
        name="quick",
        image_size=28,
        natural_size=32,
        arch="resnet18",
        pretrain_epochs=2,  # 2 passes over 3,000 images: a quarter of the earlier 4 x 6,000 (issue 12: book budget)
        pretrain_max_images=3000,
        pretrain_batch_size=128,
        finetune_epochs=10,
        patience=3,
        folds=3,
        max_train_images=500,
        batch_size=64,
    ),
    "paper": Profile(
        name="paper",
        image_size=224,
        natural_size=224,
        arch="resnet50",
        pretrain_epochs=90,
        pretrain_max_images=None,
        pretrain_batch_size=256,
        finetune_epochs=200,
        patience=30,
        folds=5,
        max_train_images=None,
        batch_size=32,
    ),
}
DEFAULT_PROFILE = "quick"


def get_profile(name: str) -> Profile:
    """The profile called ``name``; an unknown name lists the valid ones."""
    if not isinstance(name, str) or name not in PROFILES:
        raise unknown_choice("profile", name, PROFILES)
    return PROFILES[name]


@dataclasses.dataclass(frozen=True)
class PretrainSettings:
    """The pre-training fields of a profile: all that :func:`cfct.sources.pretrain_settings` reads.

    Lower layers (sources, training) take this instead of a whole :class:`Profile`; obtain it once with
    ``profile.pretrain`` or :func:`as_pretrain`.
    """

    image_size: int  # target images, px (pre-training size of non-natural sources)
    natural_size: int  # natural source (CIFAR-10 / ImageNet), px
    epochs: int
    max_images: int | None  # cap on source images (None: all)
    batch_size: int
    pretrain_image_size: int | None = None  # overrides both sizes when set
    lr: float | None = None  # None: cfct.sources.PRETRAIN_LR

    @classmethod
    def from_profile(cls, profile: Profile) -> PretrainSettings:
        """The pre-training settings of ``profile``."""
        return cls(image_size=profile.image_size, natural_size=profile.natural_size,
                   epochs=profile.pretrain_epochs, max_images=profile.pretrain_max_images,
                   batch_size=profile.pretrain_batch_size, pretrain_image_size=profile.pretrain_image_size,
                   lr=profile.pretrain_lr)


def as_pretrain(settings: PretrainSettings | Profile | str | None) -> PretrainSettings:
    """:class:`PretrainSettings` given themselves, a profile, its name, or None (as :func:`as_profile`)."""
    if isinstance(settings, PretrainSettings):
        return settings
    return PretrainSettings.from_profile(as_profile(settings))


def as_profile(profile: Profile | str | None) -> Profile:
    """A :class:`Profile` given itself, its name, or None ($CFCT_PROFILE, else the default profile)."""
    if isinstance(profile, Profile):
        return profile
    return get_profile(profile or os.environ.get("CFCT_PROFILE") or DEFAULT_PROFILE)


def by_profile(*, smoke: Any, quick: Any, paper: Any) -> Callable[[Profile], Any]:
    """A parameter default per profile, each value written once: ``by_profile(smoke=1, quick=4, paper=200)``."""
    values = {"smoke": smoke, "quick": quick, "paper": paper}
    return lambda profile: values[profile.name]


_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool"}


@dataclasses.dataclass(frozen=True)
class Param:
    """One chapter parameter.

    Parameters
    ----------
    name : str
        Name in the notebook's ``parameters`` cell.
    type : type
        ``str``, ``int``, ``float`` or ``bool``; with ``many=True`` the value is a tuple of these, written as a
        comma-separated string in the notebook and on the command line.
    default : object
        Default; ``None`` means "the profile's value", read by ``from_profile``.
    help : str
        One line for ``cfct list``.
    choices : tuple, optional
        Fixed valid values (each item, for ``many``).
    many : bool
        Comma-separated list parameter.
    from_profile : callable, optional
        ``Profile -> value`` used when the value is None.
    check : callable, optional
        Called on each (item) value; raises :class:`ConfigError` for an invalid one (targets, source specs).
    """

    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple[Any, ...] | None = None
    many: bool = False
    from_profile: Callable[[Profile], Any] | None = None
    check: Callable[[Any], Any] | None = None

    def describe_type(self) -> str:
        base = _TYPE_NAMES[self.type]
        return f"list[{base}] (comma-separated)" if self.many else base

    def parse_text(self, text: str) -> Any:
        """Convert a command-line string (``-p name=text``) to this parameter's type."""
        if self.many:
            return text
        if self.type is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes"):
                return True
            if lowered in ("0", "false", "no"):
                return False
            raise ConfigError(f"parameter {self.name!r} expects a bool (true/false), got {text!r}")
        if text.strip().lower() == "none" and self.default is None:
            return None
        try:
            return self.type(text)
        except ValueError:
            raise ConfigError(
                f"parameter {self.name!r} expects {self.describe_type()}, got {text!r}"
            ) from None

    def _check_item(self, value: Any) -> Any:
        expected = self.type
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(
                f"parameter {self.name!r} expects {self.describe_type()}, got {type(value).__name__} {value!r}"
            )
        if self.choices is not None and value not in self.choices:
            raise unknown_choice(f"value for {self.name!r}", value, self.choices)
        if self.check is not None:
            self.check(value)
        return value

    def validate(self, value: Any, profile: Profile) -> Any:
        """The validated value (profile default filled in, lists as tuples)."""
        if value is None:
            if self.from_profile is not None:
                value = self.from_profile(profile)
            elif self.default is None:
                return None
            else:
                value = self.default
        if self.many:
            if isinstance(value, str):
                items = [v.strip() for v in value.split(",") if v.strip()]
                try:
                    value = tuple(self.type(v) if self.type is not str else v for v in items)
                except ValueError:
                    raise ConfigError(
                        f"parameter {self.name!r} expects {self.describe_type()}, got {value!r}"
                    ) from None
            elif isinstance(value, (list, tuple)):
                value = tuple(value)
            else:
                raise ConfigError(
                    f"parameter {self.name!r} expects {self.describe_type()}, got {type(value).__name__}"
                )
            if not value:
                raise ConfigError(f"parameter {self.name!r} needs at least one value")
            return tuple(self._check_item(v) for v in value)
        return self._check_item(value)


COMMON_PARAMS: tuple[Param, ...] = (
    Param("profile", str, DEFAULT_PROFILE, "scale of the run: smoke, quick or paper", tuple(PROFILES)),
    Param("seed", int, 0, "seed of splits, subsampling, initialisation and augmentation"),
    Param("device", str, "auto", "auto (cuda, then mps, then cpu), cuda, mps or cpu", ("auto", "cuda", "mps", "cpu")),
)


class ChapterConfig(Mapping[str, Any]):
    """Validated, read-only parameters of one chapter run; values are also attributes (``cfg.targets``)."""

    def __init__(self, chapter: str, values: dict[str, Any], profile: Profile) -> None:
        self._chapter = chapter
        self._values = dict(values)
        self._profile = profile

    @property
    def chapter(self) -> str:
        return self._chapter

    @property
    def profile(self) -> Profile:
        return self._profile

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"chapter {self._chapter!r} has no parameter {name!r}") from None

    def __getitem__(self, key: str) -> Any:
        if key == "profile":
            return self._profile.name
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of every parameter (profile by name)."""
        out = dict(self._values)
        out["profile"] = self._profile.name
        return out

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"ChapterConfig({self._chapter!r}: {items})"
