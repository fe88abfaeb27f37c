"""The published results of the thesis's transferability study (Chapter 6), loaded and re-analysed.

The files are the authors' public ``results/`` and ``finetuned_AUCs/`` folders (GitHub
DovileDo/transferability-in-medical-imaging, pinned commit :data:`COMMIT`, MIT licence). They are read from
the mirror (``$CFCT_MIRROR/published/transferability-in-medical-imaging/``) or the data directory when present,
otherwise downloaded with ``pooch`` from the pinned raw URL and checked against the SHA-256 in :data:`SHA256`
(:func:`cfct.paths.fetch_file`).

Functions return tidy pandas tables (sources x targets) and re-derive the thesis's Tables 6.2-6.5 from them;
the numbers printed in the thesis are kept in ``PRINTED_*`` constants, labelled as published, only to compare.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cfct import paths, stats, thesis
from cfct import transferability as tr
from cfct.errors import unknown_choice

REPO = "DovileDo/transferability-in-medical-imaging"
COMMIT = "7e308c4998e98d5781fbac5cdde2fa7c0002977d"
RELDIR = "published/transferability-in-medical-imaging"
URL = f"https://raw.githubusercontent.com/{REPO}/{COMMIT}/{{path}}"

_SHA256_LINES = """
005a9354cbedc260467c1e6445245a18a437bce2cd748601e8374c490d07c428  finetuned_AUCs/fined_blood.csv
a8fd004f6da7be7faefc624e575798bf77fe60107b553c8393d67269b942a6a8  finetuned_AUCs/fined_blood_imnet.csv
b91228a566c67e5b0283d43a8fc4f77f0d1be01bdb488c1fb9d5c8f1fbee4c4e  finetuned_AUCs/fined_breast.csv
2b7155a5c181d44fcfb5296a76094817c37b2148b7ed2fe67b056b23a59461e9  finetuned_AUCs/fined_breast_imnet.csv
b34cec2848dd70d1d058094ca88fd28b3727963d9268cc962875708273d1357b  finetuned_AUCs/fined_chest.csv
0791f80d018e537460730aee327087087aa918e016510c4a76e6b5e3f67affca  finetuned_AUCs/fined_derma.csv
0c2dcc33f059a4873c9434cc84c0ff9691677364635fdee791f4d72b2d2ac410  finetuned_AUCs/fined_derma_imnet.csv
5ee237600988882c8a934cbdf9f9192db515b360a768d5be00d65f5fd8cdc4fb  finetuned_AUCs/fined_oct.csv
52a793c35e0599f96f7a41fa52b70590d69902296b27f107e4f7585f0c8fd005  finetuned_AUCs/fined_oct_imnet.csv
1234e00607965bdb83563bbf3dbfacdcb072d71306ce6058fc004e98d49a3fc9  finetuned_AUCs/fined_organa.csv
2dd475e2714e3046bf682c0c639906cc6fd8d21f818258a5c1cdbc87a284103e  finetuned_AUCs/fined_organa_imnet.csv
85bb54c210830cbeb2d8653f50982f198783edef629bcecaf14e2589fce6351d  finetuned_AUCs/fined_organc.csv
96c9d5dae97c0c48d54eea151fbdfdea0947012e0adca77c4f42111812ef6dcb  finetuned_AUCs/fined_organc_imnet.csv
fb39a784316c49ea7664846b368294343e49e89d6ab0267f1e2f5c80e44cf164  finetuned_AUCs/fined_organs.csv
bfe851505ae00eb87729ab601544445f8e905751196e3964fb6c3ee25544c4ba  finetuned_AUCs/fined_organs_imnet.csv
625011cd671168ea554a6f937692edc433806c4c289e88fddb25f5aee83988ca  finetuned_AUCs/fined_path.csv
5b2748e735ec7d069d2b36f509ba0d48b7046f8668c39cacccc9a035eef46ee2  finetuned_AUCs/fined_path_imnet.csv
37cf4978db9c9e223c7523e74ef01e005ee848b2101409a2b458bd1f97f90ebf  finetuned_AUCs/fined_pneumonia.csv
09523732abaf8d7ce7b53f6a7f733fb8bdbb201634ef46716fdc2b23992ec9dc  finetuned_AUCs/fined_pneumonia_imnet.csv
e9ef72b3dd392f4565c481418578ff45342abc9af34325d6e85324bf501d7a80  finetuned_AUCs/fined_retina.csv
967c02e191fbbd4494929b8a2df13344fe898239b503ec6e7f03eddcb0a91b99  finetuned_AUCs/fined_retina_imnet.csv
cc14dd22ef4df607a8945bf78c7caf3149b7709ce54b857d5a4a694bc39dddd5  finetuned_AUCs/fined_tissue.csv
7619307ed2fac68a47043b1442d9f244bd86944fb26545940dc10f66af6a0a46  finetuned_AUCs/fined_tissue_imnet.csv
c1c6934383b0f9efa2931806fd89d3f2739d6630caeae5c9f6fd78177c04cf8c  results/AUCs_dataset.csv
5cea1c4244e62e50fd9fc434660827f83eddcbae0bbb7593327cc15063cfd643  results/AUCs_model.csv
9a3c46f654827207a2a22d9ef069fb07b4f70090c22bbf0e5fe2b34acb395c4c  results/fu_dataset.csv
457711cc7f85a66641ec609bff3a1fe4417af73b7f7d119b19dcdec8e2e2c91a  results/fu_model.csv
58853fd1e52d324d0b94b53e7a24d048c5586b375b2bc4f2591007fa7a3ede73  results/ktau_dataset_rank.csv
3ebdd44b1ba6a4539206f93790383fa743e75e72fbf4b8f438bf157f32ae00a5  results/ktau_model_rank.csv
cf6c4deace60bc731336b6e7d1d76d473bcaf65fca5e2dd6675fb66ebf0744da  results/leep_dataset.csv
769843dfd5e0875424e2911a03c6d85ff99d75101d8d8d0d3a7f426462fa0ea3  results/leep_model.csv
049bf22d17046262fcc7f7d0114752d6d6c4074c4e8dcbee35e47a681edbccff  results/logme_dataset.csv
07b4d3470cda9b5d1c49537c7a7f929484d195afaa77d1e5192e14850b1866f7  results/logme_model.csv
cec5f657011d7e05bdc709bda1585cdffe08df7e23ce4e59b89808bd45caebae  results/lp_dataset.csv
ec8ad3c3f662af441d4d907199b4b18b1c011aff172f80006ddc084db850b7ee  results/lp_model.csv
578787fb6950b73cb292d0eca9b73f633b296cc5f941bd14e43bcb011fdcf128  results/ncti_dataset.csv
71ab11a2bcc0beeb82a4a726f8ec46fe5f04970730c41a1c54802009447bf285  results/ncti_model.csv
9af8a7c10e15356689cacf7e6fd6994ed61cc483f2c53989a76c01a332fdff20  results/nleep_dataset.csv
7f9f5e0672db524fbb691830f3d6bbbb3b0a4836d321d6a58ddf571ee454bd3c  results/nleep_model.csv
fd74c90f32e941210e5f65a5b9a7add5f78a3da46a561a9e1c067f0426ca74ba  results/parc_dataset.csv
d3fbee0c0a43a11b237a4ed761144234caeef0594364464ca197fa3ab97bcafb  results/parc_model.csv
624770f8b881301c3ec702adc01f63113f9e8b225854eb2e6fd9eec5b021672d  results/sfda_dataset.csv
9780975cb978ba9b85166b9879cbd32a192a503e0954394df28dea7af79d1193  results/sfda_model.csv
"""
#: SHA-256 of every published file at :data:`COMMIT` (from the mirror's MANIFEST.md).
SHA256: dict[str, str] = {path: h for h, path in (line.split() for line in
_SHA256_LINES.strip().splitlines())}

SCENARIOS = ("dataset", "model")
METRICS = ("logme", "leep", "nleep", "parc", "sfda", "ncti", "lp", "fu")
#: Targets of Tables 6.2-6.5 (ChestMNIST is multi-label and not a target).
TARGETS: tuple[str, ...] = (
    "bloodmnist",
    "breastmnist",
    "dermamnist",
    "octmnist",
    "organamnist",
    "organcmnist",
    "organsmnist",
    "pathmnist",
    "pneumoniamnist",
    "retinamnist",
    "tissuemnist",
)
#: Source datasets of the dataset scenario, sorted by training-set size as in Figure 6.4 (smallest first).
SOURCE_SIZES: dict[str, int] = {
    "breastmnist": 546,
    "retinamnist": 1080,
    "pneumoniamnist": 4708,
    "dermamnist": 7007,
    "bloodmnist": 11959,
    "organsmnist": 13932,
    "organcmnist": 13000,
    "pathmnist": 89996,
    "organamnist": 34581,
    "octmnist": 97477,
    "tissuemnist": 165466,
    "chestmnist": 78468,
    "imagenet": 1281167,
    "radimagenet": 1350000,
}
# leave-target-out MedMNIST: the union of the 12 training sets minus the target's (at most their sum)
SOURCE_SIZES["medmnist"] = sum(SOURCE_SIZES[f] for f in SOURCE_SIZES if f.endswith("mnist"))


def fetch(path: str) -> Path:
    """Local path of one published file (``results/...`` or ``finetuned_AUCs/...``), downloading it if needed.

    Looks in the mirror, then the data directory; else downloads from the pinned raw GitHub URL with ``pooch``
    into ``$CFCT_DATA/published/...``.

    Raises
    ------
    KeyError (ConfigError)
        ``path`` is not one of the published files.
    DataMissingError
        The file is not on disk and cannot be downloaded (offline): the message names the file, the folders
        searched and the URL.
    HashMismatchError
        The file on disk or downloaded does not have the published SHA-256.
    """
    if path not in SHA256:
        raise unknown_choice("published file", path, sorted(SHA256))
    return paths.fetch_file(f"{RELDIR}/{path}", SHA256[path], URL.format(path=path))


def _check_scenario(scenario: str) -> None:
    if scenario not in SCENARIOS:
        raise unknown_choice("scenario", scenario, SCENARIOS)


def scores(metric: str, scenario: str = "dataset") -> pd.DataFrame:
    """Published transferability scores: rows = sources (or architectures), columns = targets."""
    _check_scenario(scenario)
    if metric not in METRICS:
        raise unknown_choice("metric", metric, METRICS)
    df = pd.read_csv(fetch(f"results/{metric}_{scenario}.csv"), index_col=0)
    return df.set_index("source")[list(TARGETS)]


def aucs(scenario: str = "dataset") -> pd.DataFrame:
    """Published ground-truth test AUC (0-1) of each source fine-tuned on each target (Tables 6.4, 6.5).

    The model file stores AUC x 100; it is returned on the same 0-1 scale as the dataset file.
    """
    _check_scenario(scenario)
    df = pd.read_csv(fetch(f"results/AUCs_{scenario}.csv"), index_col=0).set_index("source")
    return df / 100.0 if scenario == "model" else df


def published_ranks(scenario: str = "dataset") -> pd.DataFrame:
    """The published per-target ranks of the methods (``ktau_<scenario>_rank.csv``), columns in METHODS
    order."""
    _check_scenario(scenario)
    df = pd.read_csv(fetch(f"results/ktau_{scenario}_rank.csv"), sep=";", index_col=0).set_index("target")
    return df.rename(columns={"our": "ours"})[list(_METHODS)].astype(float)


_METHODS = ("logme", "parc", "sfda", "ncti", "leep", "nleep", "ours")
_SHORT = {t: t.removesuffix("mnist") for t in TARGETS + ("chestmnist",)}


def finetune_log(target: str, scenario: str = "dataset") -> pd.DataFrame:
    """The hyper-parameter search log of one target (one row per fine-tuning run of 6.4.2)."""
    _check_scenario(scenario)
    if target not in _SHORT or (scenario == "model" and target == "chestmnist"):
        raise unknown_choice("target", target, TARGETS)
    suffix = "_imnet" if scenario == "model" else ""
    return pd.read_csv(fetch(f"finetuned_AUCs/fined_{_SHORT[target]}{suffix}.csv"))


def select_runs(log: pd.DataFrame, *, by: str = "source_flag", rule: str = "val_loss") -> pd.DataFrame:
    """The selection rule of 6.4.2: per source, the run with the lowest validation loss.

    ``rule="val_auc"`` picks the highest validation AUC instead (for comparison only).
    """
    if rule not in ("val_loss", "val_auc"):
        raise unknown_choice("selection rule", rule, ("val_loss", "val_auc"))
    idx = log.groupby(by)[rule].idxmin() if rule == "val_loss" else log.groupby(by)[rule].idxmax()
    return log.loc[idx].set_index(by)


def ground_truth_from_logs(scenario: str = "dataset", *, rule: str = "val_loss") -> pd.DataFrame:
    """Ground-truth AUC re-derived from the search logs with 6.4.2's rule (sources x targets, 0-1).

    In the model scenario, ResNet18's ImageNet runs are the ``imagenet`` source of the dataset logs (the
    architecture logs hold the other eight networks).
    """
    truth = aucs(scenario)
    out = pd.DataFrame(index=truth.index, columns=truth.columns, dtype=float)
    for t in truth.columns:
        sel = select_runs(finetune_log(t, scenario), rule=rule)["test_auc"]
        if scenario == "model" and "resnet" not in sel.index:
            sel.loc["resnet"] = select_runs(finetune_log(t, "dataset"), rule=rule)["test_auc"]["imagenet"]
        for s in truth.index:
            if s != t:
                out.loc[s, t] = float(sel.get(s, np.nan))
    return out


def method_scores(scenario: str = "dataset", *, transformed: bool = True) -> dict[str, pd.DataFrame]:
    """Scores of the seven methods as the thesis ranked them (sources x targets).

    ``ours`` is built from the published S_LP and S_FU by :func:`cfct.transferability.transferability_score`
    (Eq. 6.6; Eq. 6.8 in the model scenario); in the model scenario PARC, NCTI, LEEP and N-LEEP are reversed
    (1 - S), as in Table 6.3. ``transformed=False`` gives the model scenario's scores before those reversals
    (what 6.5.2 reports as "predominantly negative"); it changes nothing in the dataset scenario.
    """
    out = {m: scores(m, scenario) for m in ("logme", "parc", "sfda", "ncti", "leep", "nleep")}
    if scenario == "model" and transformed:
        for m in tr.MODEL_REVERSED:
            out[m] = 1 - out[m]
    out["ours"] = ours(scenario, reverse=scenario == "model" and transformed)
    return {m: out[m] for m in _METHODS}


def ours(scenario: str = "dataset", terms: str = "both", *, reverse: bool | None = None) -> pd.DataFrame:
    """The thesis metric from the published S_LP / S_FU terms; ``terms`` = both / lp / fu (ablation, Fig.
    6.6). ``reverse`` (default: in the model scenario) applies Eq. 6.8's reversal of the normalised terms."""
    lp, fu = scores("lp", scenario), scores("fu", scenario)
    combine_as = "model" if (scenario == "model" if reverse is None else reverse) else "dataset"
    return pd.DataFrame(
        {
            t: tr.transferability_score(lp[t].to_dict(), fu[t].to_dict(), scenario=combine_as, terms=terms)
            for t in TARGETS
        }
    ).loc[lp.index]


def tau_table(scenario: str = "dataset", *, transformed: bool = True) -> pd.DataFrame:
    """tau_w of each method (columns) on each target (rows) from the published files (Tables 6.2 / 6.3);
    ``transformed=False``: the model scenario's methods before the 1 - S reversals."""
    return stats.tau_table(method_scores(scenario, transformed=transformed), aucs(scenario)[list(TARGETS)],
                           TARGETS)


def ablation_taus() -> pd.DataFrame:
    """tau_w of S_LP alone, S_FU alone and their product per target (Figure 6.6; columns lp, fu, ours)."""
    truth = aucs("dataset")[list(TARGETS)]
    return pd.DataFrame({
        name: stats.tau_table({name: ours("dataset", terms=terms)}, truth, TARGETS)[name]
        for name, terms in (("lp", "lp"), ("fu", "fu"), ("ours", "both"))
    })


# ------------------------------------------------------------------ numbers as printed in the thesis
# Typed in once, in cfct.thesis; these names are kept for the chapter's exercises and older callers.
#: Thesis Table 6.2 as printed (published tau_w; NaN = "-"), rows in TARGETS order, columns in METHODS order.
PRINTED_TABLE_6_2 = thesis.table_6_2()[0]
#: Thesis Table 6.3 as printed (published tau_w, with 1-S for PARC, NCTI, LEEP, N-LEEP and Ours).
PRINTED_TABLE_6_3 = thesis.table_6_3()[0]
#: Average ranks printed in the last rows of Tables 6.2 and 6.3.
PRINTED_AVG_RANKS = {"dataset": thesis.table_6_2()[2], "model": thesis.table_6_3()[2]}
_TEXT = {p.key: p.value for p in thesis.TEXT_6_5}
#: Friedman p-value and Nemenyi CD printed in 6.5.2 (dataset scenario, 11 targets, 7 methods).
PRINTED_FRIEDMAN_P = float(_TEXT["dataset.friedman_p"])
PRINTED_CD = float(_TEXT["dataset.cd"])


def text_6_5_values() -> dict[str, float | int | bool | tuple[str, ...]]:
    """Everything the text of 6.5 states that the published files can decide, recomputed from them.

    Keys are those of :data:`cfct.thesis.TEXT_6_5`; per-target and per-source keys are given for every target or
    source, so a printed number about any of them finds its recomputed value. AUCs on the 0-1 scale under
    ``auc.<target>.<source>``, x 100 under ``auc100.<target>.<source>``; training-set sizes from
    ``medmnist.INFO`` under ``medmnist_train.<target>``. Names are MedMNIST flags, source names of the published
    files (``imagenet``, ``radimagenet``, ``medmnist`` = leave-target-out) or method names
    (:data:`cfct.transferability.METHODS`). Ranks are those of :func:`cfct.stats.rank_methods` (SFDA's "-"
    ranked last, as the thesis does); the critical difference is the textbook Nemenyi value for 7 methods
    (:func:`cfct.stats.nemenyi_cd`).
    """
    auc_d = aucs("dataset")[list(TARGETS)]
    auc_m = aucs("model")[list(TARGETS)]
    out: dict[str, float | int | bool | tuple[str, ...]] = {}
    for t in TARGETS:
        for s in auc_d.index:
            if np.isfinite(auc_d.loc[s, t]):
                out[f"auc.{t}.{s}"] = float(auc_d.loc[s, t])
                out[f"auc100.{t}.{s}"] = float(100 * auc_d.loc[s, t])
    # 6.5.1: size (training-set sizes from MedMNIST's own metadata), similarity, diversity, medical vs ImageNet
    import medmnist  # noqa: PLC0415  (only this check needs MedMNIST's metadata)

    for t in TARGETS:
        out[f"medmnist_train.{t}"] = int(medmnist.INFO[t]["n_samples"]["train"])
    pair = [t for t in TARGETS if t not in ("breastmnist", "organsmnist")]
    won = [t for t in pair if auc_d.loc["breastmnist", t] > auc_d.loc["organsmnist", t]]
    out |= {"breast_vs_organs.wins": len(won), "breast_vs_organs.targets": len(pair),
            "breast_vs_organs.named_wins": tuple(won)}
    pneu = auc_d["pneumoniamnist"].dropna()
    out["pneumonia.beat_chest"] = tuple(pneu.index[pneu > pneu["chestmnist"]])
    out["pneumonia.best_source"] = (str(pneu.idxmax()),)
    lto = [t for t in TARGETS if auc_d.loc["medmnist", t] > auc_d.loc["radimagenet", t]]
    out |= {"lto_vs_radimagenet.wins": len(lto), "lto_vs_radimagenet.targets": len(TARGETS),
            "lto_vs_radimagenet.won": tuple(lto)}
    med = [t for t in TARGETS if auc_d[t].drop("imagenet").max() > auc_d.loc["imagenet", t]]
    out |= {"medical_vs_imagenet.wins": len(med), "medical_vs_imagenet.won": tuple(med)}
    # 6.5.2, dataset scenario (Table 6.2)
    taus_d = tau_table("dataset")
    ranks_d = stats.rank_methods(taus_d)
    avg_d = stats.average_ranks(ranks_d)
    out["dataset.positive_everywhere"] = tuple(m for m in taus_d.columns if (taus_d[m] > 0).all())
    sf = scores("sfda", "dataset")
    out["sfda.uniform_one"] = tuple(t for t in TARGETS if np.allclose(sf[t].dropna(), 1.0, rtol=0, atol=1e-12))
    out["sfda.octmnist.below_one"] = tuple(sf.index[sf["octmnist"] < 1.0])
    for s in sf.index:
        out[f"sfda.octmnist.{s}"] = float(sf.loc[s, "octmnist"])
    out["dataset.ours_best"] = int((ranks_d["ours"] == 1).sum())
    out["dataset.ours_second"] = int((ranks_d["ours"] == 2).sum())
    for t in TARGETS:
        out[f"ours_minus_nleep.{t}"] = float(taus_d.loc[t, "ours"] - taus_d.loc[t, "nleep"])
    out["dataset.ours_not_best"] = tuple(ranks_d.index[ranks_d["ours"] > 1])
    out["dataset.friedman_p"] = stats.friedman_test(ranks_d)[1]
    cd = stats.nemenyi_cd(len(_METHODS), len(TARGETS))
    out["dataset.cd"] = cd
    out["dataset.within_cd_of_ours"] = tuple(
        m for m in avg_d.sort_values().index if m != "ours" and avg_d[m] - avg_d["ours"] <= cd)
    abl = ablation_taus()
    out["ablation.fu_helps"] = tuple(abl.index[abl["ours"] > abl["lp"]])
    three = taus_d[["logme", "sfda", "ncti"]].fillna(-np.inf).max(axis=1)
    out["ablation.slp_beats_three"] = int((abl["lp"] > three).sum())
    # 6.5.2, model scenario (Table 6.3 and the scores before the 1 - S reversals)
    raw = tau_table("model", transformed=False)
    out["model.positive_everywhere"] = tuple(m for m in raw.columns if (raw[m] > 0).all())
    out["model.mostly_negative"] = tuple(m for m in raw.columns if (raw[m] < 0).sum() > len(raw) / 2)
    taus_m = tau_table("model")
    ranks_m = stats.rank_methods(taus_m)
    out["model.ours_best"] = int((ranks_m["ours"] == 1).sum())
    out["model.ours_negative"] = tuple(taus_m.index[taus_m["ours"] < 0])
    for t in TARGETS:
        out[f"model.auc_range.{t}"] = float(auc_m[t].max() - auc_m[t].min())
    out["model.friedman_not_rejected"] = bool(stats.friedman_test(ranks_m)[1] >= 0.05)
    return out


def _minutes(text) -> float:
    """'1.9min' / '45.0s' / '1.2h' (the radT Duration column) -> minutes."""
    value = str(text).strip()
    for unit, factor in (("min", 1.0), ("h", 60.0), ("s", 1 / 60), ("d", 1440.0)):
        if value.endswith(unit):
            try:
                return float(value[: -len(unit)]) * factor
            except ValueError:
                return float("nan")
    return float("nan")


def search_cost(scenario: str = "dataset") -> pd.DataFrame:
    """What the published ground truth cost: per target, fine-tuning runs, mean epochs run (``stopped_at``)
    and total GPU hours of the logged runs (the ``Duration`` column)."""
    rows = {}
    for t in TARGETS:
        log = finetune_log(t, scenario)
        rows[t] = {"runs": len(log), "mean_epochs": float(log["stopped_at"].mean()),
                   "gpu_hours": float(np.nansum([_minutes(d) for d in log["Duration"]]) / 60)}
    return pd.DataFrame(rows).T
