"""The published Chapter 6 benchmark, reproduced from the authors' files (Tables 6.2-6.5, 6.5.2)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from cfct import paths, published, stats
from cfct.errors import ConfigError, DataMissingError, HashMismatchError


@pytest.fixture(scope="module")
def taus_dataset() -> pd.DataFrame:
    return published.tau_table("dataset")


@pytest.fixture(scope="module")
def taus_model() -> pd.DataFrame:
    return published.tau_table("model")


def test_table_6_2_every_cell(taus_dataset):
    printed = published.PRINTED_TABLE_6_2
    assert (taus_dataset.isna() == printed.isna()).all().all()  # SFDA's "-" on Breast and Pneumonia
    diff = (taus_dataset.round(2) - printed).abs().fillna(0)
    assert diff.to_numpy().max() == 0, diff


def test_table_6_3_every_cell(taus_model):
    diff = (taus_model.round(2) - published.PRINTED_TABLE_6_3).abs()
    assert diff.to_numpy().max() == 0, diff


def test_table_6_2_ranks_friedman_and_cd(taus_dataset):
    ranks = stats.rank_methods(taus_dataset)
    pd.testing.assert_frame_equal(ranks, published.published_ranks("dataset"), check_names=False)
    avg = stats.average_ranks(ranks).round(2)
    pd.testing.assert_series_equal(avg, published.PRINTED_AVG_RANKS["dataset"], check_names=False)
    _, p = stats.friedman_test(ranks)
    assert round(p, 3) == published.PRINTED_FRIEDMAN_P
    # the printed CD uses the studentized-range quantile of 8 groups (see cfct.stats.nemenyi_cd)
    assert round(stats.nemenyi_cd(7, 11, q_groups=8), 3) == published.PRINTED_CD
    assert round(stats.nemenyi_cd(7, 11), 3) == 2.716


def test_table_6_3_ranks_follow_the_printed_cells_not_the_rank_file(taus_model):
    ranks = stats.rank_methods(taus_model)
    file_ranks = published.published_ranks("model")
    differ = sorted(ranks.index[(ranks != file_ranks).any(axis=1)])
    # the printed cells of Derma and Tissue match the taus; the rank file (and the printed average row) do not
    assert differ == ["dermamnist", "tissuemnist"]
    assert ranks.loc["dermamnist"].tolist() == [7, 1, 4, 6, 2, 3, 5]
    assert ranks.loc["tissuemnist"].tolist() == [5, 2, 7, 6, 3, 4, 1]
    avg_file = stats.average_ranks(file_ranks).round(2)
    pd.testing.assert_series_equal(avg_file, published.PRINTED_AVG_RANKS["model"], check_names=False)
    _, p = stats.friedman_test(ranks)
    assert p > 0.05  # "the Friedman test fails to reject the null hypothesis"


def test_ground_truth_rederived_from_logs_matches_every_cell():
    for scenario, n_cells in (("dataset", 168), ("model", 99)):
        derived = published.ground_truth_from_logs(scenario)
        truth = published.aucs(scenario)
        both = derived.notna() & truth.notna()
        assert int(both.sum().sum()) == n_cells
        assert np.allclose(derived[both], truth[both], atol=1e-12, rtol=0, equal_nan=True)


def test_table_6_4_values_and_self_source_missing():
    auc = published.aucs("dataset")
    assert round(100 * auc.loc["radimagenet", "octmnist"], 2) == 96.93
    assert round(100 * auc.loc["imagenet", "octmnist"], 2) == 92.58
    for t in published.TARGETS:
        assert np.isnan(auc.loc[t, t])
    assert round(100 * published.aucs("model").loc["convnext", "dermamnist"], 2) == 92.93  # Table 6.5


def test_ablation_terms_from_published_scores():
    lp = published.ours("dataset", terms="lp")
    assert lp.min().min() == 0 and lp.max().max() == 1  # Eq. 6.5 per target
    both = published.ours("dataset")
    fu = published.ours("dataset", terms="fu")
    assert np.allclose(both, lp * fu, equal_nan=True)


def test_unknown_names_list_choices():
    with pytest.raises(ConfigError, match="valid choices"):
        published.scores("gbc")
    with pytest.raises(ConfigError, match="dataset, model"):
        published.aucs("models")


def test_hash_mismatch_and_missing_offline(tmp_path, monkeypatch, mirror):
    rel = "results/lp_dataset.csv"
    bad = tmp_path / "mirror" / published.RELDIR / "results"
    bad.mkdir(parents=True)
    shutil.copy(mirror / published.RELDIR / rel, bad / "lp_dataset.csv")
    with open(bad / "lp_dataset.csv", "a") as fh:
        fh.write("tampered\n")
    monkeypatch.setenv("CFCT_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("CFCT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("CFCT_OFFLINE", "1")
    paths.is_offline.cache_clear()
    try:
        with pytest.raises(HashMismatchError, match="SHA-256"):
            published.fetch(rel)
        with pytest.raises(DataMissingError) as err:
            published.fetch("results/leep_dataset.csv")
        msg = str(err.value)
        assert "leep_dataset.csv" in msg and "raw.githubusercontent.com" in msg and str(tmp_path) in msg
    finally:
        paths.is_offline.cache_clear()


@pytest.fixture(scope="module")
def recomputation():
    from cfct.experiments import ch6

    return ch6.recomputed_tables(), published.text_6_5_values()


def test_text_checks_find_exactly_the_known_mismatches(recomputation):
    from cfct.experiments import ch6

    tables, values = recomputation
    checks = ch6.text_checks(recomputed=tables, values=values)
    summary = ch6.text_check_summary(checks)
    assert summary["compared"].to_dict() == {
        "Table 6.2 tau_w": 77, "Table 6.2 ranks": 77, "Table 6.2 average rank": 7, "Table 6.3 tau_w": 77,
        "Table 6.3 ranks": 77, "Table 6.3 average rank": 7, "Table 6.4 AUC x 100": 165, "Table 6.5 AUC x 100": 99,
        "text of 6.5.1": 21, "text of 6.5.2": 25}
    bad = checks[~checks["match"]]
    found = sorted(zip(bad["check"], bad["where"], bad["item"].str[:24]))
    assert found == sorted([
        # Pneumonia: LogME 0.3113 > NLEEP 0.3074, both printed 0.31 with NLEEP ranked above LogME
        ("Table 6.2 ranks", "Pneumonia", "LogME"), ("Table 6.2 ranks", "Pneumonia", "NLEEP"),
        # the average-rank row of Table 6.3 follows the published rank file, not the table's own cells
        ("Table 6.3 average rank", "Avg. rank", "SFDA"), ("Table 6.3 average rank", "Avg. rank", "NLEEP"),
        ("text of 6.5.1", "6.5.1", "AUC scores of 0.984 [Bre"),  # 0.98345 (Table 6.4: 98.35)
        ("text of 6.5.2", "6.5.2", "Our proposed method, alo"),  # LogME is positive on every target too
        ("text of 6.5.2", "6.5.2", "a minor adjustment to 0."),  # 1 - 3e-10, truncated
        ("text of 6.5.2", "6.5.2", "Our method outperforms N"),  # Pneumonia: 0.30, not 0.40
        ("text of 6.5.2", "6.5.2", "by ... 0.25 ... on ... O"),
        ("text of 6.5.2", "6.5.2", "by ... 0.24 ... on ... D"),
        ("text of 6.5.2", "6.5.2", "by ... 0.21 ... on ... O"),
        ("text of 6.5.2", "6.5.2", "by ... 0.20 ... on ... T"),  # 0.07
        ("text of 6.5.2", "6.5.2", "the critical difference "),  # 2.716 with 7 groups
        ("text of 6.5.2", "6.5.2", "PARC, NCTI, LEEP, NLEEP,"),  # LogME is mostly negative too
    ])


def test_text_checks_report_an_altered_printed_number(recomputation):
    """A printed value changed by one unit of its last digit, anywhere, shows up as a mismatch with both values."""
    import dataclasses

    from cfct import thesis
    from cfct.experiments import ch6

    tables, values = recomputation
    printed = ch6.printed_tables()
    t64, digits = printed["Table 6.4 AUC x 100"]
    altered = t64.copy()
    altered.loc["radimagenet", "octmnist"] = 96.94  # printed: 96.93
    text = [dataclasses.replace(p, value=0.003) if p.key == "dataset.friedman_p" else p for p in thesis.TEXT_6_5]
    checks = ch6.text_checks({**printed, "Table 6.4 AUC x 100": (altered, digits)}, text, recomputed=tables,
                             values=values)
    row = checks[(checks["check"] == "Table 6.4 AUC x 100") & ~checks["match"]]
    assert row[["where", "item", "printed", "recomputed"]].values.tolist() == [
        ["RadImageNet", "OCT", "96.94", "96.9283"]]
    row = checks[checks["item"].str.startswith("The Friedman test rejects") & ~checks["match"]]
    assert row[["printed", "recomputed"]].values.tolist() == [["0.003", "0.00202"]]
    assert any("96.94" in s and "96.9283" in s for s in ch6.text_check_sentences(checks))
