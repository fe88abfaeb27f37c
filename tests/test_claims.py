"""Tests of cfct.claims: each verdict rule on hand-made inputs, the registry against the thesis text, the ledger."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cfct import claims
from cfct.errors import ConfigError

# the thesis text sits beside the data mirror on the build machines; CFCT_THESIS names it elsewhere
THESIS = Path(os.environ.get("CFCT_THESIS") or Path(os.environ.get("CFCT_MIRROR", "../shared/data")).parent
              / "thesis" / "000_43f54b618356cecf.txt")
N_NOISE = 200


# ---------------------------------------------------------------------------------------- paired difference
def test_paired_clear_effect_holds_and_opposite_contradicted() -> None:
    rng = np.random.default_rng(0)
    b = rng.normal(0.8, 0.05, 5)
    a = b + 0.05 + rng.normal(0, 0.005, 5)
    assert claims.paired_difference(a, b).verdict == "holds"
    assert claims.paired_difference(b, a).verdict == "contradicted"
    assert claims.paired_difference(b, a, direction="less").verdict == "holds"


def test_paired_interval_matches_scipy() -> None:
    a, b = np.array([0.9, 0.85, 0.93, 0.88]), np.array([0.8, 0.86, 0.85, 0.83])
    out = claims.paired_difference(a, b)
    ref = sps.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert out.p_value == pytest.approx(ref.pvalue)
    assert (out.ci_low, out.ci_high) == pytest.approx((ci.low, ci.high))
    assert out.estimate == pytest.approx(np.mean(a - b))


def test_paired_noise_inconclusive_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    verdicts = [claims.paired_difference(rng.normal(0, 1, 5), rng.normal(0, 1, 5)).verdict for _ in range(N_NOISE)]
    share = verdicts.count("inconclusive") / N_NOISE
    assert 0.90 <= share <= 0.99, share


def test_paired_reports_minimum_detectable_difference() -> None:
    out = claims.paired_difference([0.1, -0.1, 0.05, -0.02], [0, 0, 0, 0])
    assert out.verdict == "inconclusive"
    d = np.array([0.1, -0.1, 0.05, -0.02])
    se = d.std(ddof=1) / 2
    expected = (sps.t.ppf(0.975, 3) + sps.t.ppf(0.8, 3)) * se
    assert out.mdd == pytest.approx(expected)
    assert "would be detected" in out.reason


def test_too_few_replicates_refused() -> None:
    out = claims.paired_difference([0.9, 0.95], [0.1, 0.2])
    assert out.verdict == "inconclusive" and "too few replicates" in out.reason
    assert np.isnan(out.ci_low)
    out = claims.unpaired_difference([0.9, 0.95, 0.97, 0.99], [0.1, 0.2])
    assert "too few replicates" in out.reason and out.n == (4, 2)
    assert "too few" in claims.correlation([1, 2], [2, 3]).reason
    assert "too few" in claims.greater_than([5.0, 6.0], 0).reason


def test_equivalence_rule() -> None:
    same = claims.paired_difference([0.80, 0.81, 0.79, 0.80, 0.82], [0.80, 0.80, 0.80, 0.81, 0.81],
                                    direction="none", margin=0.05)
    assert same.verdict == "holds"
    apart = claims.paired_difference([0.9, 0.91, 0.92, 0.9], [0.8, 0.8, 0.81, 0.8], direction="none", margin=0.05)
    assert apart.verdict == "contradicted"
    with pytest.raises(ConfigError, match="margin"):
        claims.paired_difference([1, 2, 3], [1, 2, 3], direction="none")


# -------------------------------------------------------------------------------------- unpaired difference
def test_unpaired_rules() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(1.0, 0.1, 6), rng.normal(0.0, 0.1, 4)
    assert claims.unpaired_difference(a, b).verdict == "holds"
    assert claims.unpaired_difference(b, a).verdict == "contradicted"
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert claims.unpaired_difference(a, b).p_value == pytest.approx(ref.pvalue)
    verdicts = [claims.unpaired_difference(rng.normal(0, 1, 5), rng.normal(0, 1, 6)).verdict for _ in range(N_NOISE)]
    assert 0.90 <= verdicts.count("inconclusive") / N_NOISE <= 0.99


# ---------------------------------------------------------------------------------------------- correlation
def test_correlation_rules() -> None:
    x = np.arange(10.0)
    rng = np.random.default_rng(3)
    y = x + rng.normal(0, 0.5, 10)
    up = claims.correlation(x, y)
    assert up.verdict == "holds" and up.estimate == pytest.approx(sps.kendalltau(x, y).statistic)
    assert up.ci_low <= up.estimate <= up.ci_high
    assert claims.correlation(x, -y).verdict == "contradicted"
    assert claims.correlation(x, -y, direction="less").verdict == "holds"
    assert claims.correlation(x, y, method="spearman").estimate == pytest.approx(sps.spearmanr(x, y).statistic)
    assert claims.correlation(x, y, method="weighted_tau").estimate == pytest.approx(
        sps.weightedtau(x, y).statistic)


def test_correlation_tau_b_with_ties_matches_scipy() -> None:
    x = np.array([1, 1, 2, 3, 3, 4, 5.0])
    y = np.array([2, 1, 2, 3, 5, 5, 4.0])
    assert claims.correlation(x, y, n_resamples=200).estimate == pytest.approx(sps.kendalltau(x, y).statistic)


def test_correlation_noise_inconclusive_about_95_percent() -> None:
    rng = np.random.default_rng(4)
    verdicts = [
        claims.correlation(rng.normal(size=8), rng.normal(size=8), n_resamples=500, seed=i).verdict
        for i in range(N_NOISE)
    ]
    assert 0.90 <= verdicts.count("inconclusive") / N_NOISE <= 0.99


def test_correlation_constant_is_inconclusive() -> None:
    out = claims.correlation([1, 1, 1, 1], [1, 2, 3, 4])
    assert out.verdict == "inconclusive" and "constant" in out.reason


# --------------------------------------------------------------------------------------------- greater than
def test_greater_than_rules() -> None:
    assert claims.greater_than([0.61, 0.66, 0.64, 0.70], 0.5).verdict == "holds"
    low = claims.greater_than([0.31, 0.36, 0.34, 0.30], 0.5)
    assert low.verdict == "contradicted" and low.ci_high < 0.5 and low.estimate == pytest.approx(0.3275)
    assert claims.greater_than([0.31, 0.36, 0.34, 0.30], 0.5, direction="less").verdict == "holds"
    rng = np.random.default_rng(5)
    verdicts = [claims.greater_than(rng.normal(0.5, 0.1, 4), 0.5).verdict for _ in range(N_NOISE)]
    assert 0.90 <= verdicts.count("inconclusive") / N_NOISE <= 0.99


def test_bad_input_errors() -> None:
    with pytest.raises(ConfigError, match="equal lengths"):
        claims.paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ConfigError, match="NaN"):
        claims.greater_than([1, np.nan, 3])
    with pytest.raises(ConfigError, match="direction"):
        claims.greater_than([1, 2, 3], direction="up")
    with pytest.raises(ConfigError, match="correlation method"):
        claims.correlation([1, 2, 3], [1, 2, 3], method="cosine")


# ------------------------------------------------------------------------------------------------ registry
def _thesis_sections() -> set[str]:
    text = THESIS.read_text(encoding="utf-8")
    return set(re.findall(r"^\s*(\d\.\d+(?:\.\d+)?)\s+\S", text, flags=re.MULTILINE))


def test_registry_well_formed() -> None:
    found = claims.registry()
    ids = [c.id for c in found] + [u.id for u in claims.untestable()]
    assert len(ids) == len(set(ids))
    assert len(found) >= 30
    assert {c.chapter for c in found} >= {3, 4, 5, 6}
    for c in found:
        assert c.rule in claims.RULES and c.direction in claims.DIRECTIONS
        assert re.fullmatch(r"ch[3-7]\.[a-z0-9-]+", c.id), c.id
        assert c.quantity.startswith(f"ch{c.chapter}.")
        if c.published is not None:
            assert c.published.source
    quantities = [c.quantity for c in found]
    assert len(quantities) == len(set(quantities)), "two findings share a quantity key"


@pytest.mark.skipif(not THESIS.exists(), reason="thesis text not on this machine")
def test_registry_sections_exist_in_thesis() -> None:
    sections = _thesis_sections()
    for item in [*claims.registry(), *claims.untestable()]:
        assert item.section in sections, f"{item.id}: section {item.section} is not in the thesis"


@pytest.mark.skipif(not THESIS.exists(), reason="thesis text not on this machine")
def test_registry_quotes_are_the_thesis_words() -> None:
    text = re.sub(r"\\mathcal\{N\}\s*", "N", THESIS.read_text(encoding="utf-8"))  # the thesis's NLEEP
    flat = re.sub(r"[^a-z0-9]+", " ", text.lower())
    for item in [*claims.registry(), *claims.untestable()]:
        for piece in re.split(r"\.\.\.|\[[^\]]*\]", item.quote):  # elisions and editorial insertions
            words = re.sub(r"[^a-z0-9]+", " ", piece.lower()).strip()
            if len(words) > 12:
                assert words in flat, f"{item.id}: {piece!r} is not in the thesis text"


def test_evaluate_checks_data_keys_and_records_context() -> None:
    claim = claims.get_claim("ch4.tag-shortcut-ood-drop")
    ev = claims.evaluate(claim, {"a": [0.7, 0.72, 0.69], "b": [0.4, 0.45, 0.41]}, profile="quick",
                         sources=["pretrained:resnet18:cifar10", "ct"], link="04.html#tag")
    assert ev.verdict == "holds" and ev.profile == "quick" and ev.sources.endswith("ct")
    with pytest.raises(ConfigError, match="needs data keys"):
        claims.evaluate(claim, {"x": [1, 2, 3], "y": [1, 2, 3]})
    with pytest.raises(ConfigError, match="unknown claim"):
        claims.get_claim("ch4.no-such-finding")


# -------------------------------------------------------------------------------------------------- ledger
def test_ledger_rows_not_run_and_roundtrip(tmp_path: Path) -> None:
    ev = claims.evaluate("ch6.breast-beats-organs", {"a": [0.99, 0.86, 0.95, 0.97], "b": [0.98, 0.80, 0.87, 0.96]},
                         profile="quick", sources="published", link="06.html#size")
    path = claims.record([ev], chapter=6, profile="quick", root=tmp_path)
    back = claims.recorded("quick", root=tmp_path)
    assert back == [ev] and path.name == "ch6-quick.json"
    table = claims.ledger(back)
    assert list(table.columns) == list(claims.LEDGER_COLUMNS)
    assert len(table) == len(claims.registry())
    row = table.set_index("id").loc["ch6.breast-beats-organs"]
    assert row["verdict"] == ev.verdict and row["estimate"] == pytest.approx(ev.estimate)
    others = table[table["id"] != "ch6.breast-beats-organs"]
    assert set(others["verdict"]) == {"not run"} and others["estimate"].isna().all()
    text = claims.render_ledger(table, chapter=6)
    assert "ch6.breast-beats-organs" in text and "ch3." not in text
    assert f"{len(claims.registry(6))} findings" in text
    assert text.count("<tr>") == len(claims.registry(6)) + 1 and 'href="06.html#size"' in text
    with pytest.raises(ConfigError, match="not registered under chapter 3"):
        claims.record([ev], chapter=3, profile="quick", root=tmp_path)
    # a Chapter 7 conclusion is recorded by the chapter whose data it rests on
    ev7 = claims.evaluate("ch7.natural-more-vulnerable", {"a": [0.8, 0.82, 0.79], "b": [0.6, 0.62, 0.58]})
    claims.record([ev7], chapter=4, profile="quick", root=tmp_path)
    assert claims.ledger(claims.recorded("quick", root=tmp_path)).set_index("id").loc[
        "ch7.natural-more-vulnerable", "verdict"] == "holds"


def test_write_ledger_into_run_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = claims.ledger(chapter=5)
    assert claims.write_ledger(table) is None  # outside `cfct run`
    monkeypatch.setenv("CFCT_RUN_DIR", str(tmp_path))
    path = claims.write_ledger(table)
    back = pd.read_csv(path)
    assert path == tmp_path / "tables" / "claims_ledger.csv"
    assert list(back["id"]) == [c.id for c in claims.registry(5)] and "verdict" in back.columns
    with pytest.raises(ConfigError, match="not a ledger"):
        claims.write_ledger(table.drop(columns="verdict"))


def test_report_records_writes_and_renders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFCT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CFCT_RUN_DIR", str(tmp_path / "run"))
    ev = claims.evaluate("ch5.noise-artifact-mid-high", {"values": [0.8, 0.82, 0.79, 0.85]}, profile="smoke")
    text = claims.report([ev], chapter=5, profile="smoke")
    assert "ch5.noise-artifact-mid-high" in text and "<b>holds</b>" in text
    assert claims.recorded("smoke") == [ev]
    rows = pd.read_csv(tmp_path / "run" / "tables" / "claims_ledger.csv")
    assert set(rows["chapter"]) == {5} and (rows["verdict"] == "holds").sum() == 1


def test_claim_validation() -> None:
    base = {"id": "ch4.x", "chapter": 4, "section": "4.3", "figure": None, "quote": "q", "quantity": "ch4.q",
            "rule": "paired_difference", "direction": "greater"}
    assert claims.Claim(**base).rule == "paired_difference"
    with pytest.raises(ConfigError, match="must start with 'ch4.'"):
        claims.Claim(**{**base, "id": "ch3.x"})
    with pytest.raises(ConfigError, match="unknown rule"):
        claims.Claim(**{**base, "rule": "sign_of_difference"})
    with pytest.raises(ConfigError, match="margin"):
        claims.Claim(**{**base, "direction": "none"})
    with pytest.raises(ConfigError, match="compares 2"):
        claims.Claim(**{**base, "arms": ("a", "b", "c")})


def test_arms_from_table_pairs_by_key() -> None:
    table = pd.DataFrame({
        "fold": [0, 1, 2, 2, 1, 0], "source": ["n", "n", "n", "m", "m", "m"],
        "auc": [0.9, 0.8, 0.7, 0.65, 0.78, 0.85],
    })
    arms = claims.arms_from_table(table, value="auc", arm="source", a="n", b="m", pair_by="fold")
    np.testing.assert_allclose(arms["a"] - arms["b"], [0.05, 0.02, 0.05])  # rows in other orders still pair
    assert claims.evaluate("ch3.natural-beats-medical-breast", arms).n == (3,)
    with pytest.raises(ConfigError, match="only one arm"):
        claims.arms_from_table(table.iloc[:5], value="auc", arm="source", a="n", b="m", pair_by="fold")
    with pytest.raises(ConfigError, match="several rows"):
        claims.arms_from_table(pd.concat([table, table]), value="auc", arm="source", a="n", b="m", pair_by="fold")
    with pytest.raises(ConfigError, match="no rows"):
        claims.arms_from_table(table, value="auc", arm="source", a="n", b="imagenet", pair_by="fold")
    unpaired = claims.arms_from_table(table, value="auc", arm="source", a="n", b="m")
    assert len(unpaired["a"]) == len(unpaired["b"]) == 3
