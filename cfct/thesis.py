"""Numbers published in the thesis, shown beside our own results for comparison only.

Everything here is typed in from the thesis text and labelled with its table; nothing computed by cfct
lives here.
"""

from __future__ import annotations

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
