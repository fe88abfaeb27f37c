"""Numbers published in the thesis, shown beside our own results for comparison only.

Everything here is typed in from the thesis text and labelled with its table; nothing computed by cfct
lives here.
"""

from __future__ import annotations

import dataclasses

import pandas as pd

# Table 3.2: mean AUC ± std (x100) over five folds, ResNet50, ImageNet vs RadImageNet vs random initialisation.
_TABLE_3_2 = {
    #              ImageNet NoFreeze, Freeze   RadImageNet NoFreeze, Freeze   Random NoFreeze
    "Thyroid": ((64.9, 7.2), (67.8, 6.2), (62.7, 9.1), (63.7, 5.1), (64.3, 7.8)),
    "Breast": ((94.3, 1.7), (95.1, 3.6), (91.0, 5.2), (89.4, 3.8), (85.2, 1.4)),
    "Chest": ((98.7, 0.5), (99.0, 0.3), (98.7, 0.3), (98.2, 0.3), (97.9, 0.6)),
    "Mammograms": ((75.4, 3.1), (77.3, 1.0), (74.3, 2.0), (70.4, 5.0), (68.3, 4.4)),
    "Knee": ((96.5, 0.7), (97.1, 1.3), (97.3, 0.7), (95.4, 0.7), (93.2, 1.6)),
    "ISIC": ((97.4, 0.3), (97.6, 0.3), (96.2, 0.4), (95.8, 0.3), (95.8, 0.3)),
    "Pcam-small": ((92.9, 1.5), (94.4, 0.6), (87.5, 1.5), (89.7, 0.8), (83.2, 1.1)),
}
_TABLE_3_2_COLUMNS = (
    ("natural (ImageNet)", "no freeze"),
    ("natural (ImageNet)", "freeze"),
    ("medical (RadImageNet)", "no freeze"),
    ("medical (RadImageNet)", "freeze"),
    ("random init", "no freeze"),
)
# The thesis's targets that correspond to the MedMNIST targets of this book (same source datasets,
# MedMNIST's 28-224 px versions): BreastMNIST is the breast ultrasound set [20], PneumoniaMNIST the pediatric
# chest X-rays [69].
THESIS_TARGET_OF = {"breastmnist": "Breast", "pneumoniamnist": "Chest"}


def table_3_2() -> pd.DataFrame:
    """Published Table 3.2 as a tidy frame: target, source, strategy, auc_mean, auc_std (AUC x 100)."""
    rows = []
    for target, cells in _TABLE_3_2.items():
        for (source, strategy), (mean, std) in zip(_TABLE_3_2_COLUMNS, cells):
            rows.append({"target": target, "source": source, "strategy": strategy, "auc_mean": mean,
                         "auc_std": std})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ Chapter 6
# Typed in once from the thesis (Tables 6.2-6.5 and the text of 6.5), only to be compared cell by cell with
# what cfct recomputes from the authors' published files (cfct.published, cfct.experiments.ch6.text_checks).

#: The rows of Tables 6.2-6.5, in the thesis's order (MedMNIST flags).
TARGETS_6: tuple[str, ...] = (
    "bloodmnist", "breastmnist", "dermamnist", "octmnist", "organamnist", "organcmnist", "organsmnist",
    "pathmnist", "pneumoniamnist", "retinamnist", "tissuemnist",
)
#: The columns of Tables 6.2 and 6.3 (Table 6.3 prints PARC, NCTI, LEEP, N-LEEP and Ours as 1 - S).
METHODS_6: tuple[str, ...] = ("logme", "parc", "sfda", "ncti", "leep", "nleep", "ours")
#: The thesis's short names of targets, sources and methods, as printed (for reading the typed text below).
NAMES_6: dict[str, str] = {
    "Blood": "bloodmnist", "Breast": "breastmnist", "Chest": "chestmnist", "Derma": "dermamnist",
    "OCT": "octmnist", "OrganA": "organamnist", "OrganC": "organcmnist", "OrganS": "organsmnist",
    "Path": "pathmnist", "Pneumonia": "pneumoniamnist", "Retina": "retinamnist", "Tissue": "tissuemnist",
    "ImageNet": "imagenet", "RadImageNet": "radimagenet", "MedMNIST": "medmnist",
    "LogME": "logme", "PARC": "parc", "SFDA": "sfda", "NCTI": "ncti", "LEEP": "leep", "NLEEP": "nleep",
    "Ours": "ours",
}

# Table 6.2 (dataset transferability): tau_w (rank) per cell; None = "-" (SFDA on the binary targets).
_TABLE_6_2 = {
    "bloodmnist": ((0.11, 6), (0.30, 4), (0.30, 5), (0.07, 7), (0.48, 3), (0.75, 2), (0.78, 1)),
    "breastmnist": ((0.22, 3), (0.20, 5), (None, 7), (-0.15, 6), (0.26, 2), (0.21, 4), (0.44, 1)),
    "dermamnist": ((0.52, 2), (0.34, 4), (-0.27, 7), (0.19, 6), (0.23, 5), (0.44, 3), (0.70, 1)),
    "octmnist": ((0.26, 5), (0.34, 3), (0.19, 7), (0.27, 4), (0.52, 1), (0.23, 6), (0.45, 2)),
    "organamnist": ((0.26, 4), (0.27, 3), (-0.00, 6), (-0.26, 7), (0.18, 5), (0.32, 2), (0.57, 1)),
    "organcmnist": ((0.47, 2), (0.50, 1), (0.43, 5), (0.46, 4), (0.40, 6), (0.47, 3), (0.11, 7)),
    "organsmnist": ((0.12, 6), (0.17, 5), (0.66, 1), (0.31, 2), (0.24, 3), (0.10, 7), (0.22, 4)),
    "pathmnist": ((0.51, 5), (0.54, 4), (0.38, 7), (0.40, 6), (0.56, 3), (0.57, 2), (0.62, 1)),
    "pneumoniamnist": ((0.31, 3), (0.12, 5), (None, 7), (-0.37, 6), (0.22, 4), (0.31, 2), (0.61, 1)),
    "retinamnist": ((0.33, 6), (0.50, 3), (0.27, 7), (0.47, 4), (0.34, 5), (0.55, 2), (0.60, 1)),
    "tissuemnist": ((0.58, 3), (-0.01, 7), (0.46, 5), (0.62, 2), (0.42, 6), (0.58, 4), (0.65, 1)),
}
_AVG_RANKS_6_2 = (4.00, 4.00, 5.82, 4.91, 3.91, 3.45, 1.91)

# Table 6.3 (model transferability, ImageNet architectures): LogME, 1-PARC, SFDA, 1-NCTI, 1-LEEP, 1-NLEEP, 1-Ours.
_TABLE_6_3 = {
    "bloodmnist": ((-0.20, 7), (-0.01, 6), (0.28, 4), (0.32, 3), (0.48, 1), (0.35, 2), (-0.00, 5)),
    "breastmnist": ((-0.23, 7), (-0.18, 6), (0.40, 2), (0.69, 1), (0.22, 3), (0.17, 5), (0.22, 4)),
    "dermamnist": ((-0.15, 7), (0.46, 1), (0.23, 4), (-0.01, 6), (0.45, 2), (0.38, 3), (0.19, 5)),
    "octmnist": ((0.26, 5), (0.51, 2), (0.16, 6), (0.38, 4), (0.44, 3), (0.66, 1), (0.11, 7)),
    "organamnist": ((0.36, 5), (0.60, 2), (0.33, 6), (-0.00, 7), (0.53, 3), (0.52, 4), (0.70, 1)),
    "organcmnist": ((0.29, 1), (0.09, 5), (0.12, 3), (0.01, 7), (0.10, 4), (0.04, 6), (0.19, 2)),
    "organsmnist": ((0.39, 2), (0.21, 4), (0.04, 5), (-0.14, 7), (0.35, 3), (-0.06, 6), (0.42, 1)),
    "pathmnist": ((-0.50, 5), (-0.75, 7), (0.09, 2), (-0.39, 4), (0.14, 1), (-0.51, 6), (-0.30, 3)),
    "pneumoniamnist": ((-0.08, 7), (0.28, 3), (0.16, 5), (0.29, 2), (0.25, 4), (0.12, 6), (0.32, 1)),
    "retinamnist": ((0.29, 3), (-0.18, 7), (0.40, 2), (0.09, 4), (-0.09, 5), (-0.12, 6), (0.70, 1)),
    "tissuemnist": ((-0.03, 5), (0.21, 2), (-0.15, 7), (-0.15, 6), (0.19, 3), (-0.01, 4), (0.32, 1)),
}
_AVG_RANKS_6_3 = (4.91, 4.09, 3.91, 4.64, 2.91, 4.73, 2.82)

# Table 6.4: test AUC x 100 of each source (rows) fine-tuned on each target (columns, TARGETS_6 order); None =
# the blank cell of a source on its own dataset. "MedMNIST" is leave-target-out MedMNIST.
_TABLE_6_4 = {
    "imagenet": (99.85, 88.51, 89.46, 92.58, 99.04, 98.09, 95.58, 98.97, 98.35, 86.41, 84.49),
    "radimagenet": (99.56, 83.50, 87.35, 96.93, 98.84, 98.12, 95.38, 98.55, 98.24, 78.39, 82.94),
    "medmnist": (99.72, 85.28, 88.34, 95.19, 98.45, 98.34, 95.05, 98.28, 98.45, 80.04, 84.06),
    "bloodmnist": (None, 76.42, 85.14, 89.63, 98.59, 98.06, 95.10, 96.66, 87.48, 69.15, 79.53),
    "breastmnist": (99.29, None, 86.25, 88.38, 98.62, 98.35, 95.46, 96.50, 93.23, 70.44, 80.10),
    "chestmnist": (99.38, 86.49, 87.57, 94.22, 98.35, 98.23, 95.65, 96.98, 93.25, 78.61, 80.93),
    "dermamnist": (99.18, 85.55, None, 87.25, 98.58, 98.20, 95.27, 97.66, 85.42, 71.12, 80.96),
    "octmnist": (98.90, 83.21, 87.92, None, 98.32, 98.00, 94.40, 97.97, 93.89, 69.93, 80.42),
    "organamnist": (99.47, 79.89, 85.71, 95.91, None, 98.76, 95.72, 97.48, 93.25, 66.21, 80.57),
    "organcmnist": (99.37, 84.54, 84.96, 93.28, 98.18, None, 96.18, 95.64, 88.49, 70.35, 79.99),
    "organsmnist": (98.95, 80.47, 84.40, 86.91, 98.67, 98.09, None, 94.32, 88.73, 71.45, 76.52),
    "pathmnist": (99.57, 86.70, 86.78, 91.79, 98.11, 97.32, 95.11, None, 93.07, 72.85, 79.98),
    "pneumoniamnist": (99.23, 79.80, 85.22, 89.42, 98.28, 97.80, 95.12, 94.98, None, 69.27, 77.76),
    "retinamnist": (99.19, 80.58, 86.03, 87.60, 98.51, 98.06, 95.71, 97.06, 89.90, None, 79.02),
    "tissuemnist": (99.44, 83.46, 88.07, 93.20, 98.80, 98.28, 96.21, 98.75, 92.94, 78.05, None),
}
# Table 6.5: test AUC x 100 of nine ImageNet architectures (rows as in the published AUCs_model.csv).
_TABLE_6_5 = {
    "densenet": (99.90, 90.14, 87.70, 98.18, 99.05, 98.64, 95.51, 99.02, 98.73, 87.81, 84.34),
    "efficientnet": (99.92, 88.60, 91.15, 99.03, 99.29, 98.56, 95.60, 98.74, 97.94, 87.22, 84.21),
    "googlenet": (99.77, 88.18, 88.78, 96.44, 99.15, 98.39, 95.64, 99.37, 98.94, 83.42, 84.21),
    "mnasnet": (99.53, 85.86, 77.09, 93.79, 95.88, 94.13, 90.06, 98.78, 89.21, 80.85, 78.31),
    "mobilenet": (99.82, 88.72, 89.44, 94.64, 98.86, 98.74, 94.39, 99.30, 97.90, 84.21, 83.69),
    "vgg": (99.69, 86.34, 90.30, 98.03, 99.30, 98.93, 96.44, 98.88, 98.43, 87.73, 85.09),
    "convnext": (99.91, 91.58, 92.93, 98.86, 99.27, 98.87, 96.38, 99.47, 97.97, 87.55, 85.30),
    "shufflenet": (99.74, 84.82, 89.15, 97.17, 98.94, 98.65, 96.02, 99.37, 98.05, 80.52, 83.65),
    "resnet": (99.85, 88.51, 89.46, 92.58, 99.04, 98.09, 95.58, 98.97, 98.35, 86.41, 84.49),
}


def _grid(rows: dict, pick: int | None) -> pd.DataFrame:
    """A typed table as a DataFrame (rows x TARGETS_6 or METHODS_6 columns), None -> NaN."""
    def cell(v):
        v = v if pick is None else v[pick]
        return float("nan") if v is None else float(v)

    cols = METHODS_6 if pick is not None else TARGETS_6
    index = pd.Index(list(rows), name="target" if pick is not None else "source")
    return pd.DataFrame([[cell(v) for v in row] for row in rows.values()], index=index, columns=list(cols))


def table_6_2() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Printed Table 6.2: tau_w (targets x methods, NaN = "-"), the rank in parentheses, the average-rank row."""
    return _grid(_TABLE_6_2, 0), _grid(_TABLE_6_2, 1), pd.Series(_AVG_RANKS_6_2, index=list(METHODS_6))


def table_6_3() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """Printed Table 6.3 (model scenario; PARC, NCTI, LEEP, N-LEEP and Ours as 1 - S), as :func:`table_6_2`."""
    return _grid(_TABLE_6_3, 0), _grid(_TABLE_6_3, 1), pd.Series(_AVG_RANKS_6_3, index=list(METHODS_6))


def table_6_4() -> pd.DataFrame:
    """Printed Table 6.4: test AUC x 100, sources (rows) x targets (columns); NaN = a source on itself."""
    return _grid(_TABLE_6_4, None)


def table_6_5() -> pd.DataFrame:
    """Printed Table 6.5: test AUC x 100, ImageNet architectures (rows) x targets (columns)."""
    return _grid(_TABLE_6_5, None)


@dataclasses.dataclass(frozen=True)
class Printed:
    """One number, count or list of names printed in the thesis's text, as printed.

    Attributes
    ----------
    key : str
        What cfct recomputes for it (:func:`cfct.published.text_6_5_values` returns the same keys).
    section : str
        Where it is printed (``"6.5.1"``).
    text : str
        The thesis's words around it, short.
    value : float, int, bool or tuple of str
        The printed value: a number, a count, a yes/no statement, or names (MedMNIST flags, sources,
        methods; see :data:`NAMES_6`).
    decimals : int or None
        Digits printed after the decimal point (numbers); None for counts, statements and names.
    compare : str
        Names only: ``"equal"`` (the printed names are the whole set) or ``"subset"`` (the text names some of
        them, e.g. "Breast outperforms OrganS in Blood, Derma, ...": each must be in the recomputed set).
    """

    key: str
    section: str
    text: str
    value: float | int | bool | tuple[str, ...]
    decimals: int | None = None
    compare: str = "equal"


def _names(*short: str) -> tuple[str, ...]:
    return tuple(NAMES_6[s] for s in short)


#: The numbers of the text of 6.5 that the published files can check (Tables 6.2-6.5 are above).
TEXT_6_5: tuple[Printed, ...] = (
    Printed("medmnist_train.breastmnist", "6.5.1", "the Breast dataset, containing only 546 training images", 546),
    Printed("medmnist_train.organsmnist", "6.5.1", "the much larger OrganS dataset, which has 13,932 training "
            "images", 13932),
    Printed("breast_vs_organs.wins", "6.5.1", "Breast ... outperforms the much larger OrganS dataset ... in 7 "
            "out of 9 target datasets", 7),
    Printed("breast_vs_organs.targets", "6.5.1", "in 7 out of 9 target datasets (excluding Breast and OrganS "
            "as targets)", 9),
    Printed("breast_vs_organs.named_wins", "6.5.1", "Breast outperforms OrganS in Blood, Derma, OCT, Pneumonia, "
            "Path, and Tissue", _names("Blood", "Derma", "OCT", "Pneumonia", "Path", "Tissue"), compare="subset"),
    Printed("auc.organcmnist.breastmnist", "6.5.1", "AUC scores of 0.984 [Breast] versus 0.981 [OrganS] for "
            "OrganC", 0.984, 3),
    Printed("auc.organcmnist.organsmnist", "6.5.1", "AUC scores of 0.984 [Breast] versus 0.981 [OrganS] for "
            "OrganC", 0.981, 3),
    Printed("auc.organamnist.breastmnist", "6.5.1", "0.986 [Breast] versus 0.987 [OrganS] for OrganA", 0.986, 3),
    Printed("auc.organamnist.organsmnist", "6.5.1", "0.986 [Breast] versus 0.987 [OrganS] for OrganA", 0.987, 3),
    Printed("pneumonia.beat_chest", "6.5.1", "the Chest does not achieve the best performance on the Pneumonia "
            "target. Instead, RadImageNet, ImageNet, and leave-target-out MedMNIST pretraining outperform it",
            _names("RadImageNet", "ImageNet", "MedMNIST"), compare="subset"),
    Printed("auc100.pneumoniamnist.radimagenet", "6.5.1", "achieving AUC scores of 98.24 [RadImageNet]", 98.24, 2),
    Printed("auc100.pneumoniamnist.imagenet", "6.5.1", "98.35 [ImageNet]", 98.35, 2),
    Printed("auc100.pneumoniamnist.medmnist", "6.5.1", "and 98.45 [leave-target-out MedMNIST]", 98.45, 2),
    Printed("pneumonia.best_source", "6.5.1", "the leave-target-out MedMNIST dataset ... achieves the best "
            "performance [on Pneumonia]", _names("MedMNIST")),
    Printed("lto_vs_radimagenet.wins", "6.5.1", "Leave-target-out MedMNIST outperforms RadImageNet in 7 out of "
            "11 target datasets", 7),
    Printed("lto_vs_radimagenet.targets", "6.5.1", "in 7 out of 11 target datasets", 11),
    Printed("lto_vs_radimagenet.won", "6.5.1", "(Blood, Breast, Derma, OrganC, Pneumonia, Retina, and Tissue)",
            _names("Blood", "Breast", "Derma", "OrganC", "Pneumonia", "Retina", "Tissue")),
    Printed("medical_vs_imagenet.wins", "6.5.1", "medical-specific source datasets outperform it in 4 out of 11 "
            "target tasks", 4),
    Printed("medical_vs_imagenet.won", "6.5.1", "(Pneumonia, OrganC, OrganS, and OCT)",
            _names("Pneumonia", "OrganC", "OrganS", "OCT")),
    Printed("auc100.octmnist.radimagenet", "6.5.1", "in the OCT target, RadImageNet outperforms ImageNet ... "
            "(AUC score of 96.93 versus 92.58)", 96.93, 2),
    Printed("auc100.octmnist.imagenet", "6.5.1", "(AUC score of 96.93 versus 92.58)", 92.58, 2),
    Printed("dataset.positive_everywhere", "6.5.2", "Our proposed method, along with LEEP and NLEEP, are the only "
            "methods to consistently show a positive rank correlation", _names("LEEP", "NLEEP", "Ours")),
    Printed("sfda.uniform_one", "6.5.2", "On the Breast and Pneumonia targets, SFDA assigns a uniform "
            "transferability score of 1.0 to all source datasets", _names("Breast", "Pneumonia")),
    Printed("sfda.octmnist.below_one", "6.5.2", "for the multiclass OCT target, SFDA ... predicting 1.0 for nearly "
            "all source datasets, with only a minor adjustment to 0.99 for the Blood dataset", _names("Blood")),
    Printed("sfda.octmnist.bloodmnist", "6.5.2", "a minor adjustment to 0.99 for the Blood dataset", 0.99, 2),
    Printed("dataset.ours_best", "6.5.2", "achieves the highest rank correlation ... on eight target datasets", 8),
    Printed("dataset.ours_second", "6.5.2", "and ranks second-best on one additional target", 1),
    Printed("ours_minus_nleep.pneumoniamnist", "6.5.2", "Our method outperforms NLEEP by 0.40 ... on Pneumonia",
            0.40, 2),
    Printed("ours_minus_nleep.organamnist", "6.5.2", "by ... 0.25 ... on ... OrganA", 0.25, 2),
    Printed("ours_minus_nleep.dermamnist", "6.5.2", "by ... 0.24 ... on ... Derma", 0.24, 2),
    Printed("ours_minus_nleep.octmnist", "6.5.2", "by ... 0.21 ... on ... OCT", 0.21, 2),
    Printed("ours_minus_nleep.tissuemnist", "6.5.2", "by ... 0.20 ... on ... Tissue", 0.20, 2),
    Printed("ours_minus_nleep.organsmnist", "6.5.2", "by ... and 0.12 ... on ... OrganS", 0.12, 2),
    Printed("dataset.ours_not_best", "6.5.2", "our method shows a substantial performance gap on the OCT, OrganC, "
            "and OrganS targets compared to the best-performing transferability metric", _names("OCT", "OrganC",
                                                                                               "OrganS")),
    Printed("dataset.friedman_p", "6.5.2", "The Friedman test rejects the null hypothesis ... with a p-value = "
            "0.002", 0.002, 3),
    Printed("dataset.cd", "6.5.2", "the critical difference (CD) for 11 datasets and seven methods is calculated "
            "as 2.792", 2.792, 3),
    Printed("dataset.within_cd_of_ours", "6.5.2", "the ranks of NLEEP, LEEP, LogME, and PARC fall within the "
            "critical difference threshold", _names("NLEEP", "LEEP", "LogME", "PARC")),
    Printed("ablation.fu_helps", "6.5.2", "the feature update term often enhances the overall transferability "
            "estimation, particularly in targets such as Blood, Breast, Derma, OrganA, Path, Pneumonia, and Tissue",
            _names("Blood", "Breast", "Derma", "OrganA", "Path", "Pneumonia", "Tissue"), compare="subset"),
    Printed("ablation.slp_beats_three", "6.5.2", "the feature quality term alone outperforms LogME, SFDA, and "
            "NCTI in seven targets", 7),
    Printed("model.positive_everywhere", "6.5.2", "In this scenario, none of the evaluated transferability "
            "metrics demonstrate a positive rank correlation across all target datasets", ()),
    Printed("model.mostly_negative", "6.5.2", "PARC, NCTI, LEEP, NLEEP, and our proposed method predominantly "
            "have negative rank correlations", _names("PARC", "NCTI", "LEEP", "NLEEP", "Ours")),
    Printed("model.ours_best", "6.5.2", "Our method outperforms other models on five target datasets", 5),
    Printed("model.ours_negative", "6.5.2", "For targets where our method's ... predictions are negatively "
            "correlated ... Blood ... Path", _names("Blood", "Path")),
    Printed("model.auc_range.bloodmnist", "6.5.2", "AUC differences of only 0.004 for Blood", 0.004, 3),
    Printed("model.auc_range.pathmnist", "6.5.2", "and 0.007 for Path", 0.007, 3),
    Printed("model.friedman_not_rejected", "6.5.2", "the Friedman test fails to reject the null hypothesis", True),
)

#: Numbers of 6.5's text that neither the published files nor MedMNIST's metadata can check, and why (listed on
#: the page, not compared).
TEXT_6_5_UNCHECKED: tuple[tuple[str, str, str], ...] = (
    ("6.5.1", "leave-target-out MedMNIST has fewer classes (between 57 and 66, depending on the target)",
     "a property of the authors' pre-training label space, not in the published results"),
    ("6.5.1", "compared to RadImageNet (165 classes)", "a property of RadImageNet, not in the published results"),
)
