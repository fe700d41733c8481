"""The README's worked examples, ``docs/examples/*.xyz`` (real QM9 geometries): toluene is inside
the training domain of every model the README trains (``specopt demo``: the demo study's 2,000
molecules; a bare ``specopt train``: 5,000; the tests' 200), benzene is outside every one
(15 occupied valence levels, one fewer than the 16 a model predicts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


def _demo_subset() -> int:
    import hpo

    return int(hpo.load_study_config("demo").fixed()["subset"])


def _quick_subset() -> int:
    from hpo.cli.train import QUICK

    return int(QUICK["subset"])


def _reasons(name: str, domain: dict) -> list[str]:
    from data_prep import coulomb_matrix, read_xyz
    from model.inference import domain_reasons

    _, Z, R = read_xyz(EXAMPLES / name, any_molecule=True)
    Z = Z.astype(int)
    norm = float(np.linalg.norm(coulomb_matrix(Z, R).astype(np.float64)))
    return domain_reasons(Z, norm, domain, R)


@pytest.mark.slow
@pytest.mark.parametrize("subset", [200, "demo", "train"])
def test_toluene_is_inside_the_domain_benzene_outside(levels_dataset, subset):
    from data_prep import prepare
    from model.checkpoint import training_domain

    n = {"demo": _demo_subset, "train": _quick_subset}.get(subset, lambda: subset)()
    data = prepare(levels_dataset, sigma=0.5, n_points=300, subset=n, progress=False)
    domain = training_domain(data)  # what a checkpoint of this data records
    assert _reasons("toluene.xyz", domain) == []
    benzene = _reasons("benzene.xyz", domain)
    assert len(benzene) == 1, benzene
    assert all(w in benzene[0] for w in ("30 valence electrons", "15 occupied valence levels",
                                         "16 highest occupied levels")), benzene


def test_the_examples_are_the_molecules_they_say():
    from data_prep import read_xyz
    from data_prep.qm9 import formula

    for name, want in (("toluene.xyz", "C7H8"), ("benzene.xyz", "C6H6")):
        _, Z, _ = read_xyz(EXAMPLES / name)  # a QM9 molecule: read without any_molecule
        assert formula(Z) == want
        assert want in (EXAMPLES / name).read_text().splitlines()[1]
