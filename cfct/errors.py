"""Errors cfct raises for bad input: each names what was wrong and what would be valid."""

from __future__ import annotations

from collections.abc import Iterable


class CfctError(Exception):
    """Base class of every error cfct raises on purpose."""


class ConfigError(CfctError, ValueError):
    """An unknown or ill-typed parameter, chapter, target, source or architecture."""


class DataMissingError(CfctError, FileNotFoundError):
    """A file cfct needs is not on disk and cannot be downloaded (offline or failed)."""


class HashMismatchError(CfctError, ValueError):
    """A file on disk does not have the checksum it must have (corrupt or truncated)."""


class IncompatibleError(CfctError, ValueError):
    """Input that does not fit a model: image size, checkpoint keys, number of classes."""


def unknown_choice(kind: str, value: object, choices: Iterable[object]) -> ConfigError:
    """Build the error for a value outside a fixed set, listing the valid choices.

    Examples
    --------
    >>> str(unknown_choice("target", "kneemnist", ["breastmnist", "pneumoniamnist"]))
    "unknown target 'kneemnist'; valid choices: breastmnist, pneumoniamnist"
    """
    listed = ", ".join(str(c) for c in choices)
    return ConfigError(f"unknown {kind} {value!r}; valid choices: {listed}")
