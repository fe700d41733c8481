"""bench/levels_quality.py's statistics, on constructed arrays and a small real sample."""

from __future__ import annotations

import numpy as np
import pytest

from bench import levels_quality as lq
from data_prep import load_levels
from model.contract import HARTREE_EV


def test_agreement_of_a_shifted_and_noisy_copy():
    rng = np.random.default_rng(0)
    ref = rng.normal(-10, 1, 1000)
    a = lq.Agreement.of(ref - 4.0, ref)
    assert a.n == 1000 and a.offset == pytest.approx(-4.0) and a.sd == pytest.approx(0, abs=1e-12)
    assert a.r == pytest.approx(1.0)
    noisy = lq.Agreement.of(ref + rng.normal(0.5, 1.0, 1000), ref)
    assert noisy.offset == pytest.approx(0.5, abs=0.1) and noisy.sd == pytest.approx(1.0, abs=0.1)
    assert noisy.r == pytest.approx(1 / np.sqrt(2), abs=0.05)
    with pytest.raises(ValueError):
        lq.Agreement.of(ref[:3], ref[:4])


def test_span_and_homo_of_ascending_levels():
    levels = np.tile(np.linspace(-20, -10, 16), (101, 1))
    levels[:, 0] -= np.arange(101) / 10  # spans 10.0 .. 20.0 eV
    span = lq.Span.of(levels)
    assert (span.median, span.p5, span.p95) == pytest.approx((15.0, 10.5, 19.5))
    assert (lq.homo(levels) == -10).all()
    with pytest.raises(ValueError):
        lq.homo(levels[:, :8])


def test_sample_is_seeded_and_drawn_from_the_dataset():
    index = np.arange(1000, 2000)
    a, b = lq.sample_index(index, 50, 3), lq.sample_index(index, 50, 3)
    assert (a == b).all() and len(np.unique(a)) == 50 and np.isin(a, index).all()
    assert not (a == lq.sample_index(index, 50, 4)).all()


def test_bundled_homo_sits_about_4_ev_below_qm9_b3lyp():
    ds = load_levels()
    rows = np.arange(0, len(ds.index), len(ds.index) // 300)
    qm9 = lq.qm9_homo_eV(ds.index[rows])
    # QM9 1 is not in the dataset (methane: 4 valence levels); QM9 54's HOMO is -0.3145 hartree.
    assert lq.qm9_homo_eV(np.array([54]))[0] == pytest.approx(-0.3145 * HARTREE_EV)
    a = lq.Agreement.of(lq.homo(ds.levels[rows]), qm9)
    assert -4.4 < a.offset < -3.8 and 0.1 < a.sd < 0.5 and a.r > 0.7


def test_a_rerun_keeps_the_hand_written_meaning(tmp_path):
    out = tmp_path / "levels_quality.md"
    assert lq.kept_write_up(out, "hint").startswith(lq.MARK)
    out.write_text("# t\n\n## What it means\n\nIPEA1 is closest.\n\n## Provenance\n\n- x\n")
    assert lq.kept_write_up(out, "hint") == "IPEA1 is closest."
