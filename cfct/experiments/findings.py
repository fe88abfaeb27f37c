"""A finding: one comparison of a run with the thesis, as data (estimate, verdict) and the sentence printed."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Finding:
    """One comparison with the thesis.

    Attributes
    ----------
    claim : str
        What the thesis reports (or the condition checked), in words.
    estimate : float
        The number the verdict is read from.
    agrees : bool or None
        Whether this run agrees with the thesis; None when the comparison cannot tell (a caveat).
    sentence : str
        The Markdown the chapter prints.
    """

    claim: str
    estimate: float
    agrees: bool | None
    sentence: str
