"""The experiment layer on small hand-made tables whose right answer is known: summaries and verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cfct import stats, thesis
from cfct import transferability as tr
from cfct.errors import ConfigError
from cfct.experiments import ch3, ch4, ch5, ch6, transfer


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


def test_layer_claims_rules() -> None:
    rows = []
    for a, b, value in (("natural", "natural_ft", 0.8), ("medical", "medical_ft", 0.6),
                        ("natural", "medical", 0.5), ("natural_ft", "medical_ft", 0.4),
                        ("natural_ft_freeze", "medical_ft_freeze", 0.45), ("random", "random2", 0.3)):
        for layer in ch3.STAGES:
            rows.append({"target": "t", "fold": 0, "a": a, "b": b, "layer": layer, "measure": "cca",
                         "value": value})
    claims = ch3.layer_claims(pd.DataFrame(rows)).set_index("thesis reports")["this run agrees"]
    assert claims.iloc[0] and claims.iloc[1] and claims.iloc[2]
    assert not claims.iloc[3]  # random pair (0.3) is not above fine-tuned natural vs medical (0.4)
    assert not claims.iloc[4]  # conv1: natural-medical 0.5 vs random 0.3 differ by 0.2 >= CLOSE


# ------------------------------------------------------------------------------------------------ Chapter 6
def _bench(n_targets: int = 4) -> ch6.BenchmarkTables:
    """A hand-made benchmark: 4 targets, 5 sources; AUC rises with size on every target except the last."""
    targets = [f"t{i}" for i in range(n_targets)]
    sources = ["breastmnist", "organsmnist", "medmnist", "radimagenet", "imagenet"]
    sizes = pd.DataFrame({t: [546, 13932, 500_000, 1_350_000, 1_281_167] for t in targets}, index=sources,
                         dtype=float)
    auc = pd.DataFrame({t: [0.80, 0.81, 0.83, 0.82, 0.84] for t in targets}, index=sources)
    auc.iloc[:, -1] = [0.84, 0.83, 0.82, 0.80, 0.81]  # AUC falls with size: tau = -1 on the last target
    auc.loc["breastmnist", "t0"] = np.nan  # a source on itself has no AUC
    methods = ["logme", "parc", "sfda", "ncti", "leep", "nleep", "ours"]
    base = np.array([0.1, 0.2, np.nan, 0.0, 0.3, 0.4, 0.6])
    taus = pd.DataFrame([base + 0.01 * i for i in range(n_targets)], index=targets, columns=methods)
    abl = pd.DataFrame({"lp": taus["ours"] - 0.1, "fu": 0.0, "ours": taus["ours"]})
    return ch6.BenchmarkTables(auc=auc, sizes=sizes, taus_dataset=taus, taus_model=taus * 0.5,
                               taus_model_raw=-taus.fillna(0.0), ablation=abl)


def test_ch6_claims_data_known_values() -> None:
    data = ch6.claims_data(_bench())
    # size vs AUC: tau-b over the sources with an AUC (t0 lacks Breast); -1 on t3
    size = data["ch6.size-not-predictive"]["values"]
    assert size[-1] == pytest.approx(-1.0)
    assert size[0] == pytest.approx(sps.kendalltau([13932, 500_000, 1_350_000, 1_281_167],
                                                   [0.81, 0.83, 0.82, 0.84]).statistic)
    assert size[1] == pytest.approx(0.6)  # 2 discordant pairs of 10: RadImageNet, the largest, is below two
    # Breast vs OrganS over the targets where both have an AUC (t0 lacks Breast)
    assert data["ch6.breast-beats-organs"]["a"].tolist() == [0.80, 0.80, 0.84]
    assert data["ch6.breast-beats-organs"]["b"].tolist() == [0.81, 0.81, 0.83]
    # SFDA's undefined tau counts as 0, in both its comparisons and in the mean of NCTI and SFDA
    assert data["ch6.ours-beats-sfda-dataset"]["b"].tolist() == [0.0] * 4
    assert data["ch6.simple-beat-sophisticated"]["b"] == pytest.approx([(0.0 + 0.01 * i) / 2 for i in range(4)])
    assert data["ch6.simple-beat-sophisticated"]["a"] == pytest.approx([0.35 + 0.01 * i for i in range(4)])
    assert data["ch6.model-scores-negative"]["values"] == pytest.approx(
        [-(0.2 + 0.0 + 0.3 + 0.4 + 0.6 + 5 * 0.01 * i) / 5 for i in range(4)])
    assert data["ch6.feature-update-helps"]["a"] - data["ch6.feature-update-helps"]["b"] == pytest.approx([0.1] * 4)
    assert "ch6.live-ours-positive" not in data


def test_ch6_claims_evidence_verdicts() -> None:
    live_taus = pd.DataFrame({"target": ["breastmnist", "pneumoniamnist"], "seed": [0, 0], "ours": [0.5, 0.4]})
    data = ch6.claims_data(_bench(), live_taus=live_taus)
    ev = {e.claim_id: e for e in ch6.claims_evidence(data, profile="smoke", live_sources="live")}
    assert list(ev)[:2] == ["ch6.size-not-predictive", "ch6.breast-beats-organs"]
    assert ev["ch6.ours-positive-all-targets"].verdict == "holds"
    assert ev["ch6.model-scores-negative"].verdict == "holds"  # direction "less" than 0
    assert ev["ch6.feature-update-helps"].verdict == "holds"  # a - b = 0.1 on every target
    # size vs AUC: three targets at ~+0.8 and one at -1, so the interval contains 0 and reaches past the margin
    assert ev["ch6.size-not-predictive"].verdict == "inconclusive"
    assert ev["ch6.live-ours-positive"].verdict == "inconclusive"
    assert "too few replicates" in ev["ch6.live-ours-positive"].reason  # two (target, seed) replicates
    assert ev["ch6.live-ours-positive"].sources == "live"
    assert ev["ch6.ours-beats-nleep"].sources.startswith("published files of DovileDo/")
    sentence = ch6.verdict_sentence(ev["ch6.live-ours-positive"])
    assert "**inconclusive**" in sentence and "n = 2" in sentence
    with pytest.raises(ValueError, match="no Chapter 6 claim"):
        ch6.claims_evidence({"ch3.natural-beats-medical-breast": {"a": [1], "b": [0]}})


def test_ch6_compare_value_and_table() -> None:
    assert ch6.compare_value(0.31, 0.3149, 2) and not ch6.compare_value(0.31, 0.3151, 2)
    assert ch6.compare_value(-0.0, -0.004, 2)  # "-0.00" as printed
    assert ch6.compare_value(float("nan"), float("nan"), 2) and not ch6.compare_value(0.1, float("nan"), 2)
    assert ch6.compare_value(3, 3) and not ch6.compare_value(3, 2.5)  # ranks: exact
    assert ch6.compare_value(("a", "b"), ("b", "a")) and not ch6.compare_value(("a",), ("a", "b"))
    assert ch6.compare_value(("a",), ("a", "b"), compare="subset")
    assert ch6.compare_value(True, np.bool_(True)) and not ch6.compare_value(True, False)
    with pytest.raises(TypeError, match="names compare with names"):
        ch6.compare_value(("a",), 1.0)
    printed = pd.DataFrame({"logme": [0.11, 0.22], "ours": [0.78, np.nan]}, index=["bloodmnist", "breastmnist"])
    recomputed = pd.DataFrame({"logme": [0.1149, 0.2140], "ours": [0.7801, np.nan], "x": [0, 0]},
                              index=["bloodmnist", "breastmnist"])
    table = ch6.compare_table("Table X", printed, recomputed, decimals=2)
    assert len(table) == 4 and table["match"].sum() == 3
    bad = table[~table["match"]].iloc[0]
    assert (bad["where"], bad["item"], bad["printed"], bad["recomputed"]) == ("Breast", "LogME", "0.22", "0.2140")
    assert bad["note"] == "off by one in the last digit"
    with pytest.raises(ValueError, match="no recomputed value"):
        ch6.compare_table("Table X", printed.assign(nleep=0.1), recomputed, decimals=2)


def test_ch6_compare_text_and_sentences() -> None:
    items = [thesis.Printed("p", "6.5.2", "p-value = 0.002", 0.002, 3),
             thesis.Printed("sfda", "6.5.2", "0.99 for Blood", 0.99, 2),
             thesis.Printed("best", "6.5.2", "on eight target datasets", 8),
             thesis.Printed("names", "6.5.1", "such as Blood", ("bloodmnist",), compare="subset")]
    values = {"p": 0.0024, "sfda": 0.9999999997, "best": 7, "names": ("bloodmnist", "dermamnist")}
    table = ch6.compare_text(items, values)
    assert table["match"].tolist() == [True, False, False, True]
    assert table.loc[1, "note"].startswith("agrees if 0.9999999997 is truncated")
    assert (table.loc[2, "printed"], table.loc[2, "recomputed"]) == ("8", "7")
    sentences = ch6.text_check_sentences(table)
    assert sentences == [
        "**text of 6.5.2**: 2 of 3 printed numbers differ from the published files (6.5.2 / 0.99 for Blood: "
        "printed 0.99, recomputed 1.0000 (agrees if 0.9999999997 is truncated instead of rounded); 6.5.2 / on "
        "eight target datasets: printed 8, recomputed 7).",
        "**text of 6.5.1**: all 1 printed numbers agree with the published files."]
    summary = ch6.text_check_summary(table)
    assert summary.loc["text of 6.5.2"].tolist() == [3, 1, 2]
    with pytest.raises(KeyError, match="no recomputed value"):
        ch6.compare_text(items, {})


def test_ch6_zoo_candidates_and_picks() -> None:
    from cfct import chapters

    cfg = chapters.resolve("06_transferability", profile="smoke", zoo="ct:astra-resnet152",
                           zoo_archs="efficientnet_lite0,efficientnet_lite1")
    allc, tuned = ch6.zoo_candidates(cfg, "breastmnist", "dataset")
    assert allc[-1] == "ct:astra-resnet152" and "ct:astra-resnet152" not in tuned and allc[:-1] == tuned
    allm, tunedm = ch6.zoo_candidates(cfg, "breastmnist", "model")
    assert allm == ["imagenet:efficientnet_lite0", "imagenet:efficientnet_lite1"] and tunedm == []
    paper = chapters.resolve("06_transferability", profile="paper")
    assert set(paper.zoo) <= set(ch6.zoo_candidates(paper, "breastmnist", "dataset")[1])  # fine-tuned at paper
    table = pd.DataFrame({m: [0.1, 0.3, 0.2] for m in tr.METHODS}, index=["a", "ct", "b"])
    table["leep"] = [0.3, 0.1, 0.2]
    picks = ch6.zoo_picks(table, ["ct", "missing"])
    assert picks.loc["ours", "pick"] == "ct" and picks.loc["ours", "rank of ct"] == 1
    assert picks.loc["leep", "pick"] == "a" and picks.loc["leep", "rank of ct"] == 3
    assert "rank of missing" not in picks.columns
    assert ch6.source_label("ct:astra-resnet152") == "CT (astra-resnet152)"


def test_ch6_live_tables_one_row_per_target_and_seed() -> None:
    taus = pd.DataFrame({"ours": [0.5, 0.4], "leep": [0.1, 0.2]}, index=["breastmnist", "pneumoniamnist"])
    truth = pd.DataFrame({"breastmnist": [0.8, np.nan], "pneumoniamnist": [0.9, 0.7]}, index=["s1", "s2"])
    res = ch6.LiveResult("dataset", {}, {}, truth, taus, {}, {})
    t, g = ch6.live_tables({0: res, 1: res})
    assert t[["target", "seed", "ours"]].values.tolist() == [
        ["breastmnist", 0, 0.5], ["pneumoniamnist", 0, 0.4], ["breastmnist", 1, 0.5], ["pneumoniamnist", 1, 0.4]]
    assert len(g) == 6 and set(g.columns) == {"source", "target", "test_auc", "seed"}  # the NaN cell is dropped
    values = ch6.claims_data(_bench(), live_taus=t)["ch6.live-ours-positive"]["values"]
    assert values.tolist() == [0.5, 0.4, 0.5, 0.4]
