"""The experiment layer on small hand-made tables whose right answer is known: summaries and verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cfct import stats
from cfct.errors import ConfigError
from cfct.experiments import ch4, ch5, transfer


def test_fold_summary_known_numbers() -> None:
    table = pd.DataFrame({"source": ["a", "a", "a", "b"], "auc": [0.6, 0.7, 0.8, 0.9], "acc": [1, 2, 3, np.nan]})
    out = stats.fold_summary(table, ["auc", "acc"], ["source"])
    a = out[(out.source == "a") & (out.metric == "auc")].iloc[0]
    half = sps.t.ppf(0.975, 2) * 0.1 / np.sqrt(3)
    assert (a["mean"], a["std"], a["n"]) == (pytest.approx(0.7), pytest.approx(0.1), 3)
    assert (a["ci_low"], a["ci_high"]) == (pytest.approx(0.7 - half), pytest.approx(0.7 + half))
    b = out[out.source == "b"]
    assert list(b.metric) == ["auc"]  # the NaN accuracy leaves no value: left out
    assert (b["std"].iloc[0], b["ci_low"].iloc[0]) == (0.0, pytest.approx(0.9))
    with pytest.raises(ConfigError, match="no column"):
        stats.fold_summary(table, ["auc"], ["target"])


def test_summarize_auc_is_table_3_2() -> None:
    table = pd.DataFrame({"target": "t", "source": ["natural", "natural"], "strategy": "freeze",
                          "test_auc": [0.9, 0.8]})
    row = transfer.summarize_auc(table).iloc[0]
    assert (row.auc_mean, row.auc_std, row.folds) == (pytest.approx(85.0), pytest.approx(7.0710678), 2)
    assert transfer.format_table(transfer.summarize_auc(table)).iloc[0, 0] == "85.0 ± 7.1"


def _summary(values: dict[tuple[str, str, float, str], float]) -> pd.DataFrame:
    return pd.DataFrame([{"setting": s, "source": r, "p_art": p, "metric": m, "mean": v}
                         for (s, r, p, m), v in values.items()])


def test_source_robustness_verdict_and_learned_shortcuts() -> None:
    values = {}
    # tag: the natural source falls from 0.9 to 0.3, the medical one to 0.7 (medical ahead, shortcut learned);
    # sex: both stay at 0.8 / 0.75 (natural ahead, no shortcut).
    for s, nat, med in (("tag", (0.9, 0.3), (0.9, 0.7)), ("sex", (0.8, 0.8), (0.75, 0.75))):
        for r, (lo, hi) in (("natural", nat), ("medical", med)):
            values[(s, r, 0.0, "ood_auc")], values[(s, r, 1.0, "ood_auc")] = lo, hi
            values[(s, r, 1.0, "iid_auc")] = 0.9
    lines, verdict, caveat = ch4.source_robustness(_summary(values), 0.0, 1.0)
    assert len(lines) == 2 and "the **medical** source holds up better (difference 0.40)" in lines[0]
    assert verdict.estimate == 0.5 and verdict.agrees is False and "1 of 2" in verdict.sentence
    assert caveat.estimate == 1 and "in: tag;" in caveat.sentence
    values[("sex", "medical", 1.0, "ood_auc")] = 0.85
    _, verdict, _ = ch4.source_robustness(_summary(values), 0.0, 1.0)
    assert verdict.agrees is True and "**agrees**" in verdict.sentence


@pytest.mark.parametrize(("change", "recall", "expected"), [
    (0.02, 0.0, "flat, recall near 0 (the imbalance artifact)"),
    (-0.05, 0.4, "flat with non-zero recall (insensitive)"),
    (-0.3, 0.4, "falls by 0.30 (takes the shortcut)"),
    (0.2, 0.4, "rises by 0.20 (no shortcut)"),
])
def test_random_init_diagnosis(change: float, recall: float, expected: str) -> None:
    assert ch4.random_init_diagnosis(change, recall) == expected


def test_noise_findings() -> None:
    index = pd.MultiIndex.from_tuples([("X-ray", "noise vs no noise"), ("X-ray", "high vs low noise"),
                                       ("CT", "noise vs no noise"), ("CT", "high vs low noise")],
                                      names=["modality", "contrast"])
    drop = pd.DataFrame({"natural": [-0.4, -0.1, -0.5, 0.0], "medical": [-0.35, -0.1, -0.2, 0.0]}, index=index)
    xray, ct, milder = ch4.noise_findings(drop)
    assert xray.agrees is True and xray.estimate == pytest.approx(0.05)
    assert ct.agrees is True and ct.estimate == pytest.approx(0.3)
    assert milder.agrees is True and milder.estimate == pytest.approx(0.05 / 0.3625)
    quiet = ch4.noise_findings(drop * 0.1)
    assert quiet[0].agrees is False and quiet[-1].agrees is None and "not learned" in quiet[-1].sentence


def test_chapter_5_comparisons() -> None:
    robust = pd.DataFrame({"target": ["t", "t", "u"], "source": ["natural", "medical", "natural"],
                           "ood_auc_mean_degraded": [0.6, 0.7, 0.5]})
    (only,) = ch5.source_comparison(robust, "natural", "medical")  # u has no medical row
    assert only.estimate == pytest.approx(-0.1) and "the medical source is the more robust here" in only.sentence
    table = pd.DataFrame({"target": "t", "source": ["a", "a", "b"], "iid_auc": [0.5, 0.7, 0.5],
                          "ood_auc": [0.5, 0.6, 0.4]})
    (collapsed,) = ch5.collapsed_runs(table)
    assert collapsed.estimate == 0.5 and "1 of 2 fine-tunes" in collapsed.sentence
