"""The experiment layer on small hand-made tables whose right answer is known: summaries and verdicts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cfct import claims, stats, thesis
from cfct import transferability as tr
from cfct.errors import ConfigError
from cfct.experiments import ch4, ch5, ch6, transfer


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


def test_source_robustness_numbers_and_learned_shortcuts() -> None:
    values = {}
    # tag: the natural source falls from 0.9 to 0.3, the medical one to 0.7 (shortcut learned);
    # sex: both stay at 0.8 / 0.75 (no shortcut).
    for s, nat, med in (("tag", (0.9, 0.3), (0.9, 0.7)), ("sex", (0.8, 0.8), (0.75, 0.75))):
        for r, (lo, hi) in (("natural", nat), ("medical", med)):
            values[(s, r, 0.0, "ood_auc")], values[(s, r, 1.0, "ood_auc")] = lo, hi
            values[(s, r, 1.0, "iid_auc")] = 0.9
    lines, learned = ch4.source_robustness(_summary(values), 0.0, 1.0)
    assert len(lines) == 2 and "medical minus natural o.o.d. AUC is +0.40" in lines[0]
    assert "is -0.05" in lines[1] and learned == ["tag"]
    assert not any(w in " ".join(lines) for w in ("agree", "holds", "better"))  # numbers, no verdict


# Chapter 4's claims on hand-made per-fold tables -------------------------------------------------------------
_SETTINGS = (  # figure, modality, contrast, target, confounder, sources
    ("4.3", "X-ray", "", "xr", "tag", ("natural", "medical", "random")),
    ("4.3", "X-ray", "", "xr", "denoising", ("natural", "medical", "random")),
    ("4.3", "X-ray", "", "nih", "sex", ("natural", "medical", "random")),
    ("4.3", "CT", "", "ct", "tag", ("natural", "medical", "random")),
    ("4.3", "CT", "", "ct", "denoising", ("natural", "medical")),
    ("4.4", "X-ray", "noise vs no noise", "xr", "noise", ("natural", "medical")),
    ("4.4", "X-ray", "high vs low noise", "xr", "noise-levels", ("natural", "medical")),
)


def _fold_table(folds: int = 3, seed: int = 0) -> pd.DataFrame:
    """The thesis's picture, by construction: at p_art = 1 the natural source's o.o.d. AUC falls to ~0.3 and the
    medical one's to ~0.7; random init falls like natural on CT and stays flat on X-ray; i.i.d. AUC ~0.85 for
    both pre-trained sources (rising with p_art); two-level noise drops less; medical stops later."""
    rng = np.random.default_rng(seed)
    rows = []
    for fig, mod, contrast, target, conf, sources in _SETTINGS:
        for fold in range(folds):
            for p in (0.0, 1.0):
                for src in sources:
                    ood = 0.85
                    if p == 1.0:
                        mild = 0.5 if contrast == "high vs low noise" else 1.0
                        ood = {"natural": 0.85 - 0.55 * mild, "medical": 0.85 - 0.15 * mild,
                               "random": 0.3 if mod == "CT" else 0.85}[src]
                    rows.append({"figure": fig, "modality": mod, "contrast": contrast, "target": target,
                                 "confounder": conf, "source": src, "p_art": p, "fold": fold,
                                 "ood_auc": ood + rng.normal(0, 0.01),
                                 "iid_auc": 0.8 + 0.1 * p + rng.normal(0, 0.005),
                                 "best_epoch": {"natural": 3, "medical": 6, "random": 4}[src] + rng.integers(0, 2)})
    return pd.DataFrame(rows)


def test_claims_evidence_clear_effects_hold() -> None:
    ev = ch4.claims_evidence(_fold_table(), profile="test", min_replicates=3)
    holds = {"ch4.iid-comparable", "ch4.ood-falls-with-part", "ch4.iid-rises-with-part", "ch4.tag-shortcut-ood-drop",
             "ch4.denoise-shortcut-ood-drop", "ch4.sex-gap-significant", "ch4.ct-tag-ood-drop",
             "ch4.ct-denoise-ood-drop", "ch4.ct-random-degrades-like-natural", "ch4.xray-noise-relied-on",
             "ch4.two-level-noise-smaller-drop", "ch4.medical-trains-longer", "ch7.natural-more-vulnerable"}
    assert {k for k, e in ev.items() if e.verdict == "holds"} == holds
    # the medical source is 0.4 ahead under the X-ray noise: "similar reliance" is contradicted, not held
    assert ev["ch4.xray-noise-similar-reliance"].verdict == "contradicted"
    assert ev["ch4.tag-shortcut-ood-drop"].estimate == pytest.approx(0.4, abs=0.02)
    assert ev["ch4.tag-shortcut-ood-drop"].n == (3,)  # one pair per fold, not per row
    assert ev["ch7.natural-more-vulnerable"].n == (9,)  # (target, fold): xr, nih and ct folds
    assert ev["ch4.ood-falls-with-part"].n == (18,) and ev["ch4.ood-falls-with-part"].estimate < -0.5
    assert ev["ch4.ct-random-degrades-like-natural"].estimate == pytest.approx(0.0, abs=0.03)
    assert all(e.profile == "test" for e in ev.values())
    assert "ch4.ct-noise-medical-robust" not in ev  # untestable here (projection noise below 8-bit quantisation)
    # the sentences the chapter prints are built from the Evidence, verdict included
    tag = ev["ch4.tag-shortcut-ood-drop"]
    sentence = ch4.evidence_sentence(tag)
    assert "**holds**" in sentence and f"medical minus natural: {tag.estimate:+.3f} [95 % CI" in sentence
    assert "n = 3" in sentence


def test_claims_evidence_pairs_by_fold_not_row_order() -> None:
    table = _fold_table()
    a = ch4.claims_evidence(table)
    b = ch4.claims_evidence(table.sample(frac=1.0, random_state=1))
    for k in a:
        assert a[k].estimate == pytest.approx(b[k].estimate) and a[k].verdict == b[k].verdict, k


def test_claims_evidence_no_effect_is_not_held() -> None:
    table = _fold_table()
    pre = table["source"].isin(["natural", "medical"])
    table.loc[pre & (table["p_art"] == 1.0), "ood_auc"] = 0.6 + np.random.default_rng(3).normal(0, 0.05, (pre & (
        table["p_art"] == 1.0)).sum())
    ev = ch4.claims_evidence(table)
    assert ev["ch4.tag-shortcut-ood-drop"].verdict == "inconclusive"


def test_claims_evidence_mismatched_or_too_few_replicates() -> None:
    table = _fold_table()
    gone = (table["confounder"] == "tag") & (table["modality"] == "X-ray") & (table["source"] == "medical") & (
        table["fold"] == 2)
    with pytest.raises(ConfigError, match="only one arm"):
        ch4.claims_evidence(table[~gone])
    with pytest.raises(ConfigError, match="needs 3"):
        ch4.claims_evidence(_fold_table(folds=2), min_replicates=3)
    few = ch4.claims_evidence(_fold_table(folds=2))
    assert few["ch4.tag-shortcut-ood-drop"].verdict == "inconclusive" and "too few" in few[
        "ch4.tag-shortcut-ood-drop"].reason
    # 2 folds x 3 settings = 6 points per p_art level, but only 2 replicates: no correlation verdict
    assert "ch4.ood-falls-with-part" not in few and "ch4.ood-falls-with-part" in ch4.claims_data(_fold_table(2))
    with pytest.raises(ConfigError, match="needs columns"):
        ch4.claims_evidence(table.drop(columns="fold"))


def _ch5_table(drop_fold: int | None = None) -> pd.DataFrame:
    """Fine-tunes of two targets: medical keeps its o.o.d. AUC when degraded, natural loses 0.3; i.i.d. equal."""
    rng = np.random.default_rng(0)
    ood = {"natural": 0.6, "medical": 0.9, "random": 0.7, "natural edited": 0.92, "medical edited": 0.65}
    rows = []
    for target in ("ct", "dn"):
        for fold in range(4):
            for source, degraded in ood.items():
                if source == "natural" and fold == drop_fold:
                    continue
                for p_art in (0.0, 1.0):
                    noise = rng.normal(0, 0.005)
                    spread = 0.1 * (fold % 2) if source == "random" else 0.0
                    rows.append({"target": target, "source": source, "p_art": p_art, "fold": fold,
                                 "ood_auc": (0.9 if p_art == 0 else degraded) + noise + spread,
                                 "iid_auc": 0.9 + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


def test_chapter_5_claims_evidence_known_verdicts() -> None:
    table = _ch5_table()
    rob = ch5.fold_robustness(table).set_index(["target", "source", "fold"])
    assert rob.loc[("ct", "medical", 0), "ood_drop"] == pytest.approx(0.0, abs=0.02)
    assert rob.loc[("ct", "natural", 0), "ood_drop"] == pytest.approx(0.3, abs=0.02)
    ev = ch5.claims_evidence(table, ct_target="ct", denoise_target="dn", profile="smoke")
    assert list(ev) == [c.id for c in claims.registry(5) if c.id in ev]  # registry order
    assert ev["ch5.natural-prone-noise-shortcut"].verdict == "holds"
    assert ev["ch5.natural-prone-noise-shortcut"].estimate == pytest.approx(0.3, abs=0.01)
    assert ev["ch5.natural-prone-noise-shortcut"].n == (4,)
    assert ev["ch5.iid-competitive"].verdict == "holds" and ev["ch5.iid-competitive"].n == (8,)
    assert ev["ch5.random-unstable"].verdict == "holds"  # random alternates 0.1 between folds
    assert ev["ch5.whitened-medical-picks-up-shortcut"].verdict == "holds"
    assert ev["ch5.lowpass-natural-more-robust"].verdict == "holds"
    assert ev["ch5.lowpass-natural-noninferior-to-medical"].verdict == "holds"
    # swapping the sources' roles turns the clear effect into a contradiction
    swapped = table.replace({"source": {"natural": "medical", "medical": "natural"}})
    assert ch5.claims_evidence(swapped, ct_target="ct", denoise_target="dn")[
        "ch5.natural-prone-denoise-shortcut"].verdict == "contradicted"
    # no edited sources (an imagenet: natural source): their claims are left to the ledger as not run
    plain = ch5.claims_evidence(table[~table.source.str.endswith("edited")], ct_target="ct", denoise_target="dn")
    assert "ch5.lowpass-natural-more-robust" not in plain and "ch5.natural-prone-noise-shortcut" in plain
    # one fold: too few replicates, no verdict; the note says so
    one = ch5.claims_evidence(table[table.fold == 0], ct_target="ct", denoise_target="dn")
    assert one["ch5.natural-prone-noise-shortcut"].verdict == "inconclusive"
    assert "too few" in one["ch5.natural-prone-noise-shortcut"].reason
    assert one["ch5.random-unstable"].n == (0, 0)
    assert "fewer than 3 replicates" in ch5.replicate_note(one) and "at least 3" in ch5.replicate_note(
        {k: v for k, v in ev.items() if min(v.n) >= 3})
    line = ch5.evidence_sentence(ev["ch5.natural-prone-noise-shortcut"])
    assert "**holds**" in line and "medical - natural = +0.3" in line and "95% CI" in line


def test_chapter_5_collapsed_runs() -> None:
    table = pd.DataFrame({"target": "t", "source": ["a", "a", "b"], "iid_auc": [0.5, 0.7, 0.5],
                          "ood_auc": [0.5, 0.6, 0.4]})
    (collapsed,) = ch5.collapsed_runs(table)
    assert collapsed.share == 0.5 and "1 of 2 fine-tunes" in collapsed.sentence
    assert ch5.collapsed_runs(table[table["iid_auc"] > 0.5]) == []


def test_chapter_5_claims_evidence_pairs_by_key_not_row_order() -> None:
    table = _ch5_table()
    shuffled = table.sample(frac=1.0, random_state=1)
    a = ch5.claims_evidence(table, ct_target="ct", denoise_target="dn")["ch5.natural-prone-noise-shortcut"]
    b = ch5.claims_evidence(shuffled, ct_target="ct", denoise_target="dn")["ch5.natural-prone-noise-shortcut"]
    assert a.estimate == pytest.approx(b.estimate) and a.ci_low == pytest.approx(b.ci_low)
    with pytest.raises(ConfigError, match="only one arm"):
        ch5.claims_evidence(_ch5_table(drop_fold=2), ct_target="ct", denoise_target="dn")


def test_chapter_5_priority_claims() -> None:
    k = np.arange(8)
    low, high = np.exp(-k / 2.0), np.exp(-(k - 6.0) ** 2)
    rows, tuned, art = [], [], []
    for fold in range(3):
        for source, curve in (("natural", high), ("medical", low), ("medical edited", high), ("natural edited", low)):
            psd = curve * (1 + 0.01 * fold) + 1e-3 * (fold + 1)
            rows.append(pd.DataFrame({"target": "ct", "source": source, "fold": fold, "k": k, "psd": psd}))
            for p_art in (0.0, 1.0):  # fine-tuning keeps the shape, pushes a little power up
                tuned.append(pd.DataFrame({"target": "ct", "source": source, "fold": fold, "p_art": p_art, "k": k,
                                           "psd": psd * (1 + k / 7)}))
        art.append(pd.DataFrame({"target": "ct", "fold": fold, "k": k, "psd": high + 1e-3,
                                 "mid_high_fraction": 0.9 + 0.01 * fold}))
    pretrained, artifacts = pd.concat(rows), pd.concat(art)
    pri = ch5.fold_priorities(pretrained, artifacts, pd.concat(tuned))
    nat = pri[(pri.source == "natural") & (pri.fold == 0)].iloc[0]
    assert nat.centroid_pretrained > 0.7 and nat.overlap > 0.9 and nat.similarity_own > nat.similarity_other
    table = _ch5_table()
    table = table[table.target == "ct"]
    table = table[table.fold < 3]
    ev = ch5.claims_evidence(table, ct_target="ct", denoise_target="dn", priorities=pri, artifacts=artifacts)
    for cid in ("ch5.natural-priority-higher-frequency", "ch5.natural-overlaps-artifact",
                "ch5.whitened-priority-higher", "ch5.priority-stable-after-ft", "ch5.priority-peak-shifts-up",
                "ch5.noise-artifact-mid-high"):
        assert ev[cid].verdict == "holds", (cid, ev[cid])
    assert ev["ch5.lowpass-priority-like-medical"].verdict == "holds"  # same curve as medical: within 0.05
    assert "ch5.denoise-artifact-mid-high" not in ev  # no artifact rows for the NLM target
    assert ev["ch5.overlap-predicts-shortcut"].n == (12,)
    assert set(ev) <= {c.id for c in claims.registry(5)}


def test_chapter_5_variant_sentence() -> None:
    from cfct.spectral import VariantComparison

    small = VariantComparison(0.01, 0.30, 0.31, 0.01, 0.02)
    large = VariantComparison(0.05, 0.30, 0.20, -0.10, 0.02)
    assert "change little (every" in ch5.variant_sentence({"CT": small})
    text = ch5.variant_sentence({"CT": small, "NLM": large})
    assert "not a detail" in text and "axis in NLM." in text and "0.300 -> 0.200" in text
    with pytest.raises(ConfigError, match="tolerances"):
        ch5.variant_sentence({"a": small, "b": VariantComparison(0.0, 0.3, 0.3, 0.0, 0.05)})


def test_chapter_5_quick_profile_gives_every_claim_three_replicates() -> None:
    """The quick profile's folds and degradations, through the chapter's tables, give each arm >= 3 replicates."""
    from cfct.chapters import resolve

    cfg = resolve("5", profile="quick")
    rng = np.random.default_rng(1)
    roles = ["natural", "medical", "random", ch5.LOWPASS_ROLE, ch5.WHITENED_ROLE]
    targets = [cfg.ct_target, cfg.denoise_target]
    table = pd.DataFrame([{"target": t, "source": s, "p_art": p, "fold": f, "ood_auc": rng.uniform(0.5, 1),
                           "iid_auc": rng.uniform(0.5, 1)}
                          for t in targets for s in roles for p in cfg.p_arts for f in range(cfg.folds)])
    k = np.arange(cfg.image_size // 2)
    pre = pd.concat([pd.DataFrame({"target": t, "source": s, "fold": f, "k": k, "psd": rng.uniform(1, 2, len(k))})
                     for t in targets for s in roles for f in range(cfg.folds)])
    tuned = pd.concat([pd.DataFrame({"target": t, "source": s, "fold": f, "p_art": p, "k": k,
                                     "psd": rng.uniform(1, 2, len(k))})
                       for t in targets for s in roles for p in cfg.p_arts for f in range(cfg.folds)])
    art = pd.concat([pd.DataFrame({"target": t, "fold": f, "k": k, "psd": rng.uniform(1, 2, len(k)),
                                   "mid_high_fraction": 0.6}) for t in targets for f in range(cfg.folds)])
    ev = ch5.claims_evidence(table, ct_target=cfg.ct_target, denoise_target=cfg.denoise_target,
                             priorities=ch5.fold_priorities(pre, art, tuned), artifacts=art, profile="quick")
    assert set(ev) == {c.id for c in claims.registry(5)}
    assert min(min(e.n) for e in ev.values()) >= 3, {i: e.n for i, e in ev.items()}
    assert ch5.replicate_note(ev).startswith("Every one of the 16 verdicts")


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
