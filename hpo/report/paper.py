"""The seed report's published numbers (Smeds 2019, "Hyperparameter optimisation for deep
learning of spectroscopy", section 3, Tables 2-5; validation set, 2500 epochs on the whole
dataset), written once: the report of a paper study shows them beside its own.

A study is a paper study when its name is one of :data:`PAPER_STUDIES` (the shipped
``studies/paper-*.toml``); a row of its results is compared with the published row of the same
loss, sigma and Np, judged the same way (cosine and Pearson on normalised predictions, as the
report did and as :mod:`hpo.report.tables` does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The column of the results table (and the figures' marker name) holding the published numbers.
LABEL = "report (2019)"
SOURCE = "Smeds 2019, section 3"

#: The shipped paper studies and the table of the report each reproduces.
PAPER_STUDIES: dict[str, str] = {
    "paper-loss": "Table 2", "paper-sigma": "Table 3", "paper-np": "Table 4",
}


@dataclass(frozen=True)
class Published:
    """One published result: accuracy in %, RMSE / MAE / R^2 as printed."""

    loss: str
    sigma: float
    n_points: int
    accuracy: float
    rmse: float
    mae: float
    r2: float
    source: str
    normalised: bool = False  # judged on normalised predictions (the table's subindex n)


#: Tables 2-4 (section 3.1). Table 2 also prints the normalised scores of RMSE, SmoothL1 and
#: LogCosh (94.8 / 94.7 / 94.8 %, the same accuracies); the raw ones are what our table shows.
PUBLISHED: tuple[Published, ...] = (
    Published("rmse", 0.5, 300, 94.8, 0.209, 0.111, 0.948, "Table 2"),
    Published("smoothl1", 0.5, 300, 94.7, 0.210, 0.112, 0.948, "Table 2"),
    Published("logcosh", 0.5, 300, 94.8, 0.208, 0.110, 0.948, "Table 2"),
    Published("cosine", 0.5, 300, 94.7, 0.010, 0.005, 0.949, "Table 2", normalised=True),
    Published("pearson", 0.5, 300, 76.3, 0.044, 0.036, 0.419, "Table 2", normalised=True),
    Published("rmse", 0.3, 300, 90.6, 0.404, 0.221, 0.826, "Table 3"),
    Published("rmse", 0.1, 300, 74.1, 1.08, 0.591, -0.0993, "Tables 3 and 4"),
    Published("rmse", 0.1, 500, 74.2, 1.08, 0.592, -0.105, "Table 4"),
    Published("rmse", 0.1, 700, 74.1, 1.09, 0.595, -0.1069, "Table 4"),
)

#: Table 5 (section 3.2): share of negative predicted points (%) per loss, sigma 0.5, Np 300.
PUBLISHED_NEGATIVE: dict[str, float] = {
    "rmse": 30.4, "smoothl1": 21.4, "logcosh": 30.9, "cosine": 25.7, "pearson": 65.6,
}


def is_paper_study(study_name: str) -> bool:
    return study_name in PAPER_STUDIES


def published(loss: Any, sigma: Any, n_points: Any) -> Published | None:
    """The published result of this loss, sigma and Np, if the report has one."""
    try:
        s, n = float(sigma), int(n_points)
    except (TypeError, ValueError):
        return None
    for p in PUBLISHED:
        if p.loss == str(loss) and abs(p.sigma - s) < 1e-9 and p.n_points == n:
            return p
    return None


def published_negative(loss: Any, sigma: Any, n_points: Any) -> float | None:
    """Table 5's negative share (%) for this loss at the report's sigma 0.5 and Np 300."""
    try:
        same = abs(float(sigma) - 0.5) < 1e-9 and int(n_points) == 300
    except (TypeError, ValueError):
        return None
    return PUBLISHED_NEGATIVE.get(str(loss)) if same else None
