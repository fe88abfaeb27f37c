"""Chapter 3's claims on small hand-made tables whose verdict is known, Table 3.2's two AUC definitions, the
learning-rate note, and the released ImageNet network that opens the chapter."""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pandas as pd
import pytest

from cfct import claims, released, similarity
from cfct.chapters import resolve
from cfct.errors import ConfigError
from cfct.experiments import ch3

FOLDS = (0, 1, 2)


def _auc_table(natural_freeze=(0.90, 0.92, 0.91), medical_freeze=(0.80, 0.83, 0.81)) -> pd.DataFrame:
    rows = []
    for k in FOLDS:
        arms = (("natural", "freeze", natural_freeze[k]), ("medical", "freeze", medical_freeze[k]),
                ("natural", "no freeze", 0.88 + 0.01 * k), ("medical", "no freeze", 0.85),
                ("random init", "no freeze", 0.70 + 0.01 * k))
        for source, strategy, auc in arms:
            rows.append({"target": "breastmnist", "fold": k, "source": source, "strategy": strategy,
                         "test_auc": auc})
    return pd.DataFrame(rows)


def test_auc_claims_pair_by_fold_and_decide() -> None:
    table = _auc_table()
    data = ch3.claims_data(auc=table)
    # only breastmnist ran: the pneumonia claims have no data (ledger: "not run"), nothing is invented
    assert set(data) == {"ch3.natural-beats-medical-breast", "ch3.natural-beats-random-breast",
                         "ch3.medical-beats-random-breast", "ch3.freeze-beats-nofreeze-natural"}
    np.testing.assert_allclose(data["ch3.natural-beats-medical-breast"]["a"], [0.90, 0.92, 0.91])
    shuffled = ch3.claims_data(auc=table.sample(frac=1.0, random_state=1))
    for cid, arms in data.items():  # pairing is by (target, fold), not row order
        np.testing.assert_array_equal(shuffled[cid]["a"], arms["a"])
        np.testing.assert_array_equal(shuffled[cid]["b"], arms["b"])
    ev = ch3.claims_evidence(data, profile="quick", sources={"natural": "n", "medical": "m"})
    assert list(ev) == [c.id for c in claims.registry(3) if c.id in data]  # registry order
    assert ev["ch3.natural-beats-medical-breast"].verdict == "holds"
    assert ev["ch3.natural-beats-medical-breast"].n == (3,)
    assert ev["ch3.natural-beats-random-breast"].verdict == "holds"
    assert ev["ch3.natural-beats-medical-breast"].link == "03_hidden_representations.html#transfer-performance-3-5-1"
    assert ev["ch3.natural-beats-medical-breast"].sources == "natural: n; medical: m"
    # the medical source ahead on every fold: contradicted
    flipped = ch3.claims_data(auc=_auc_table((0.80, 0.83, 0.81), (0.90, 0.92, 0.91)))
    assert ch3.claims_evidence(flipped, profile="quick")["ch3.natural-beats-medical-breast"].verdict == "contradicted"


def test_auc_claims_refuse_mismatched_folds_and_two_folds_give_no_verdict() -> None:
    table = _auc_table()
    broken = table[~((table.source == "medical") & (table.strategy == "freeze") & (table.fold == 2))]
    with pytest.raises(ConfigError, match="only one arm"):
        ch3.claims_data(auc=broken)
    two = ch3.claims_data(auc=table[table.fold < 2])  # the smoke profile's two folds
    ev = ch3.claims_evidence(two, profile="smoke")["ch3.natural-beats-medical-breast"]
    assert ev.verdict == "inconclusive" and "too few replicates" in ev.reason
    with pytest.raises(ConfigError, match="ch3.natural-beats-medical-breast"):
        ch3.claims_evidence({"ch3.nope": {"a": [1], "b": [1]}}, profile="quick")


def _layer_table(values: dict[tuple[str, str], float], conv1: dict[tuple[str, str], float] | None = None,
                 targets=("breastmnist", "pneumoniamnist")) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for target in targets:
        for k in FOLDS:
            for (a, b), value in values.items():
                for layer in similarity.STAGES:
                    v = (conv1 or {}).get((a, b), value) if layer == "conv1" else value
                    for r in range(2):
                        rows.append({"target": target, "fold": k, "a": a, "b": b, "layer": layer, "measure": "cca",
                                     "repeat": r, "value": v + rng.normal(0, 0.005)})
    return pd.DataFrame(rows)


LAYER_VALUES = {
    ("natural", "natural_ft"): 0.75, ("natural", "natural_ft_freeze"): 0.85,  # natural-FT self: 0.8
    ("medical", "medical_ft"): 0.6, ("medical", "medical_ft_freeze"): 0.6,
    ("natural", "medical"): 0.5, ("natural_ft", "medical_ft"): 0.3, ("natural_ft_freeze", "medical_ft_freeze"): 0.3,
    ("random", "random2"): 0.45, ("natural_ft", "random"): 0.3, ("natural_ft_freeze", "random"): 0.3,
}


def test_layer_claims_from_hand_made_similarities() -> None:
    table = _layer_table(LAYER_VALUES, conv1={("natural_ft", "medical_ft"): 0.45,
                                              ("natural_ft_freeze", "medical_ft_freeze"): 0.45})
    arms = ch3.layer_arms(table)
    nat = arms[arms.arm == "natural - natural-FT"]
    assert len(nat) == 6 and nat.value.mean() == pytest.approx(0.8, abs=0.01)  # two strategies averaged
    data = ch3.claims_data(layers=table)
    assert data["ch3.natural-changes-less"]["a"].shape == (6,)  # 2 targets x 3 folds, paired
    ev = ch3.claims_evidence(data, profile="quick")
    assert ev["ch3.natural-changes-less"].verdict == "holds"
    assert ev["ch3.ft-pair-more-distinct"].verdict == "holds"  # 0.3 after < 0.5 before
    assert ev["ch3.ft-pair-below-random-pair"].verdict == "holds"
    assert ev["ch3.ft-pair-like-ft-vs-random-top"].verdict == "holds"  # 0.3 vs 0.3 in block4
    # conv1 of the FINE-TUNED pair (0.45) against two random initialisations (0.45), not the sources before
    assert ev["ch3.conv1-like-random"].verdict == "holds"
    far = ch3.claims_evidence(ch3.claims_data(layers=_layer_table(LAYER_VALUES)), profile="quick")
    assert far["ch3.conv1-like-random"].verdict == "contradicted"  # 0.3 vs 0.45: beyond the 0.05 margin
    assert far["ch3.conv1-like-random"].estimate == pytest.approx(-0.15, abs=0.01)
    with pytest.raises(ConfigError, match="no 'cka' rows"):
        ch3.layer_arms(table, "cka")


def test_prediction_gain_and_filter_claims() -> None:
    rows = []
    for target in ("breastmnist", "pneumoniamnist"):
        for k in FOLDS:
            rows.append({"target": target, "fold": k, "strategy": "-", "kind": "before fine-tuning",
                         "value": 0.5 + 0.01 * k})
            for strategy in ("no freeze", "freeze"):
                rows += [{"target": target, "fold": k, "strategy": strategy, "kind": "after fine-tuning",
                          "value": 0.9 + 0.01 * k},
                         {"target": target, "fold": k, "strategy": strategy, "kind": "independent mistakes",
                          "value": 0.7}]
    predictions = pd.DataFrame(rows)
    gains = pd.DataFrame([{"target": t, "fold": k, "source": s, "freeze": f, "layer": layer,
                           "similarity": 0.1 * i + 0.01 * j, "gain": 0.02 * i}
                          for i, (t, k, s, f) in enumerate((t, k, s, f) for t in ("b", "p") for k in FOLDS
                                                          for s in ("natural", "medical") for f in (False, True))
                          for j, layer in enumerate(similarity.STAGES)])
    bank = similarity.gabor_bank(7)[:20]
    noise = np.random.default_rng(0).normal(size=(20, 3, 7, 7))
    filters = ch3.filter_likeness_table({"natural (cifar10)": ("natural", np.repeat(bank[:, None], 3, axis=1)),
                                         "medical (x)": ("medical", noise)})
    data = ch3.claims_data(predictions=predictions, gains=gains, filters=filters)
    assert data["ch3.predictions-above-independent"]["a"].shape == (6,)  # strategies of a fold: one replicate
    assert data[ch3.GAIN_CLAIM]["x"].shape == (24,)  # one point per fine-tune, not per layer
    ev = ch3.claims_evidence(data, profile="quick")
    assert ev["ch3.predictions-above-independent"].verdict == "holds"
    assert ev["ch3.predictions-closer-after-ft"].verdict == "holds"
    assert ev[ch3.GAIN_CLAIM].verdict == "contradicted"  # gain rises with similarity: a strong association
    assert ev[ch3.FILTER_CLAIM].verdict == "holds" and ev[ch3.FILTER_CLAIM].n == (20, 20)
    summary = ch3.gabor_summary(filters).set_index("network").iloc[:, 0]
    assert summary["natural (cifar10)"] == pytest.approx(1.0, abs=0.05) and summary["medical (x)"] < 0.8


def test_evidence_sentence_and_table_come_from_the_evidence() -> None:
    data = ch3.claims_data(auc=_auc_table())
    ev = ch3.claims_evidence(data, profile="quick")
    e = ev["ch3.natural-beats-medical-breast"]
    text = ch3.evidence_sentence(e)
    assert "**holds**" in text and f"{e.estimate:.3g}" in text and f"{e.ci_low:.3g}" in text and "n = 3" in text
    table = ch3.evidence_table(ev, data)
    assert table.loc["ch3.natural-beats-medical-breast", "arm means"] == "0.910 vs 0.813"
    assert table.loc["ch3.natural-beats-medical-breast", "estimate of"] == "(natural) − (medical)"
    assert table.loc["ch3.natural-beats-medical-breast", "verdict"] == "holds"
    assert ch3.evidence_markdown(ev).splitlines()[0].startswith("* `ch3.natural-beats-medical-breast`")


def test_keras_auc_column_and_comparison_with_table_3_2() -> None:
    from cfct import thesis

    labels = np.array([0, 0, 1, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.2, 0.8], [0.4, 0.6]])

    def run(fold: int, source: str, strategy: str) -> types.SimpleNamespace:
        result = types.SimpleNamespace(metrics={"test_auc": 0.5 + 0.1 * fold}, test_labels=labels[:, None],
                                       test_probs=probs)
        return types.SimpleNamespace(target="breastmnist", fold=fold, source=source, strategy=strategy, result=result)

    runs = [run(k, "natural", "freeze") for k in (0, 1)] + [run(0, "random init", "no freeze")]
    table = ch3.auc_definitions(runs)
    from cfct import stats
    assert table.keras_auc.iloc[0] == pytest.approx(stats.keras_auc(labels, probs))
    out = ch3.table_3_2_comparison(table, thesis.table_3_2(), thesis.THESIS_TARGET_OF)
    row = out.loc[("breastmnist", "natural", "freeze")]
    assert row[ch3.AUC_COLUMNS["test_auc"]] == "55.0 ± 7.1"
    assert row[ch3.AUC_COLUMNS["published"]] == "95.1 ± 3.6 (Breast)"
    assert out.loc[("breastmnist", "random init", "no freeze"), ch3.AUC_COLUMNS["published"]] == "85.2 ± 1.4 (Breast)"


def test_training_note_is_computed_from_the_config() -> None:
    note = ch3.training_note(resolve("3", profile="quick", lr=0.003, epochs=7))
    assert "lr 0.003 for at most 7 epochs" in note and "lr 1e-05 for at most 200 epochs" in note
    assert "The higher learning rate" in note
    assert "higher" not in ch3.training_note(resolve("3", profile="paper"))


@pytest.fixture(scope="module")
def lite0():
    spec = ch3.NATURAL_RELEASED
    if importlib.util.find_spec(released.RELEASED[spec].module) is None:
        pytest.skip(f"{released.RELEASED[spec].pip_command} (pinned in the lock file)")
    return released.load_released(spec)


def test_natural_network_recognises_chelsea(lite0) -> None:
    from skimage import data

    top = ch3.imagenet_top_classes(data.chelsea(), model=lite0)
    assert list(top["rank"]) == [1, 2, 3] and top.probability.is_monotonic_decreasing
    assert top.class_index.iloc[0] in range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert "cat" in top.class_name.iloc[0] or top.class_name.iloc[0] == "tabby"
    coffee = ch3.imagenet_top_classes(data.coffee(), model=lite0, top=1)
    assert coffee.class_index.iloc[0] in (967, 504)  # espresso, coffee mug
    with pytest.raises(ConfigError, match="uint8 RGB"):
        ch3.imagenet_top_classes(data.camera(), model=lite0)
    with pytest.raises(ConfigError, match="imagenet:efficientnet_lite0"):
        ch3.imagenet_top_classes(data.chelsea(), spec="ct:astra-resnet152", model=lite0)


def test_released_note_reads_the_registry() -> None:
    note = ch3.released_note()
    source = released.RELEASED[ch3.NATURAL_RELEASED]
    assert source.trained_on in note and source.licence in note and source.provenance in note


def test_random_baselines_are_new_networks_for_every_target_and_fold() -> None:
    seeds = [s for t in ("breastmnist", "medmnist:pneumoniamnist") for k in FOLDS for s in ch3.random_seeds(t, k)]
    assert len(set(seeds)) == len(seeds) == 12
    assert ch3.random_seeds("breastmnist", 1) == ch3.random_seeds("medmnist:breastmnist", 1)  # by name, stable
    assert ch3.random_seeds("breastmnist", 0, seed=1) != ch3.random_seeds("breastmnist", 0, seed=0)
