"""Broadened spectra of real levels, the exact formula, and the on-disk cache of prepare()."""

from __future__ import annotations

import math

import numpy as np
import pytest

import data_prep.training_data as training_data
from data_prep import DataError, broaden, energy_grid, load_qm9pack


def exact(levels, sigma, n_points, e_min=-30.0, e_max=0.0):
    """The dense formula in float64: sum_i exp(-(E - e_i)^2 / 2 sigma^2) / (sigma sqrt(2 pi))."""
    grid = np.linspace(e_min, e_max, n_points)
    x = (grid - np.asarray(levels, np.float64)[..., None]) / sigma
    g = np.nan_to_num(np.exp(-0.5 * x * x))
    return g.sum(-2) / (sigma * math.sqrt(2 * math.pi))


@pytest.fixture(scope="module")
def real_levels(levels_dataset):
    return levels_dataset.levels[:400]


@pytest.mark.parametrize("sigma, n_points", [(0.5, 300), (0.1, 700), (0.3, 500), (0.05, 300),
                                             (2.0, 300), (0.5, 1000)])
@pytest.mark.parametrize("method", ["windowed", "dense"])
def test_equal_to_the_exact_formula(real_levels, sigma, n_points, method):
    lv = real_levels.copy()
    lv[0, :3] = [-45.0, -31.0, -30.0]  # below the window: tails only
    lv[1, -1] = 0.2  # above it
    got = broaden(lv, sigma, n_points, method=method)
    want = exact(lv, sigma, n_points)
    assert got.shape == (len(lv), n_points) and got.dtype == np.float32
    # within 1e-6 of each spectrum's peak (both kernels reach about 2e-7)
    err = np.abs(got - want).max(axis=1) / want.max(axis=1)
    assert err.max() < 1e-6


def test_windowed_equals_dense(real_levels):
    for sigma, n_points in [(0.5, 300), (0.1, 700)]:
        w = broaden(real_levels, sigma, n_points)
        d = broaden(real_levels, sigma, n_points, method="dense")
        np.testing.assert_allclose(w, d, rtol=1e-6, atol=1e-6 * float(d.max()))


def test_unit_area_per_gaussian(real_levels):
    inside = real_levels[(real_levels.min(axis=1) > -26) & (real_levels.max(axis=1) < -4)]
    assert len(inside) > 100
    for sigma, n_points in [(0.5, 300), (0.3, 500), (0.1, 700)]:
        spectra = broaden(inside, sigma, n_points)
        step = 30.0 / (n_points - 1)  # the grid's spacing
        np.testing.assert_allclose(spectra.sum(axis=1) * step, 16.0, rtol=1e-4)
        # the report's dE = 30 / Np is (Np - 1) / Np of the spacing
        de = 30.0 / n_points
        np.testing.assert_allclose(spectra.sum(axis=1) * de, 16.0 * (n_points - 1) / n_points,
                                   rtol=1e-4)


def test_one_gaussian_peaks_at_its_level():
    grid = energy_grid(301)  # spacing 0.1 eV
    assert grid[0] == -30.0 and grid[-1] == 0.0
    level = grid[123]
    s = broaden(np.array([level]), 0.5, 301)
    assert s.argmax() == 123
    assert s.max() == pytest.approx(1 / (0.5 * math.sqrt(2 * math.pi)), rel=1e-6)
    np.testing.assert_allclose(s[123 - 5], s[123 + 5], rtol=1e-5)  # symmetric
    assert s[123 + 5] / s.max() == pytest.approx(math.exp(-0.5), rel=1e-5)  # one sigma away


def test_batch_shapes_and_missing_levels(real_levels):
    lv = real_levels[:12].reshape(3, 4, 16)
    s = broaden(lv, 0.5, 300)
    assert s.shape == (3, 4, 300)
    np.testing.assert_array_equal(s.reshape(12, 300), broaden(real_levels[:12], 0.5, 300))
    one = real_levels[0].copy()
    one[0] = np.nan  # contributes nothing
    np.testing.assert_allclose(broaden(one, 0.5, 300), broaden(real_levels[0, 1:], 0.5, 300),
                               atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(sigma=0.0, n_points=300), "sigma must be a positive number of eV, got 0.0"),
        (dict(sigma=-0.5, n_points=300), "sigma must be a positive number of eV, got -0.5"),
        (dict(sigma=float("nan"), n_points=300), "sigma must be a positive number"),
        (dict(sigma="0.5", n_points=300), "sigma must be a positive number"),
        (dict(sigma=0.5, n_points=1), "Np (number of grid points) must be an integer >= 2, got 1"),
        (dict(sigma=0.5, n_points=300.0), "must be an integer >= 2, got 300.0"),
        (dict(sigma=0.5, n_points=300, e_min=0.0, e_max=-30.0), "empty energy window"),
        (dict(sigma=0.5, n_points=300, e_min=-5.0, e_max=-5.0), "empty energy window"),
        (dict(sigma=0.5, n_points=300, e_max=float("inf")), "empty energy window"),
    ],
)
def test_bad_parameters_are_one_line_errors(kwargs, words):
    with pytest.raises(DataError) as err:
        broaden(np.array([-10.0]), **kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_numpy_scalars_are_accepted():
    a = broaden(np.array([-10.0]), np.float32(0.5), np.int64(300))
    np.testing.assert_array_equal(a, broaden(np.array([-10.0]), 0.5, 300))


def test_prepare_caches_spectra_per_dataset_sigma_and_np(levels_dataset, tmp_path, monkeypatch):
    calls = []
    real = training_data.broaden

    def counting(levels, sigma, n_points, *args, **kwargs):
        calls.append((sigma, n_points))
        return real(levels, sigma, n_points, *args, **kwargs)

    monkeypatch.setattr(training_data, "broaden", counting)
    ds = levels_dataset.subset(200)
    geoms = load_qm9pack()  # from the session's cache, not re-parsed into tmp_path

    def prepare(*args, **kwargs):
        return training_data.prepare(*args, cache_dir=tmp_path, geometries=geoms, **kwargs)

    first = prepare(ds, sigma=0.3, n_points=400)
    assert calls == [(0.3, 400)]
    files = sorted((tmp_path / "spectra").glob("*.npy"))
    assert len(files) == 1 and ds.fingerprint in files[0].name
    mtime = files[0].stat().st_mtime_ns

    second = prepare(ds, sigma=0.3, n_points=400)
    assert calls == [(0.3, 400)]  # loaded, not recomputed
    assert files[0].stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.spectra, first.spectra)
    np.testing.assert_array_equal(second.coulomb, first.coulomb)

    prepare(ds, sigma=0.3, n_points=401)
    prepare(ds, sigma=0.3000001, n_points=400)  # a different sigma
    prepare(levels_dataset.subset(100), sigma=0.3, n_points=400)
    assert len(calls) == 4 and len(list((tmp_path / "spectra").glob("*.npy"))) == 4


def test_training_data_fields(small_data):
    d = small_data
    n = len(d.index)
    assert d.coulomb.shape == (n, 29, 29) and d.spectra.shape == (n, 300)
    assert d.de == pytest.approx(0.1) and d.grid[0] == -30.0 and d.grid[-1] == 0.0
    np.testing.assert_allclose(d.spectra, broaden(d.levels, 0.5, 300), rtol=0, atol=0)
    rows = np.concatenate([d.train_rows, d.test_rows, d.validation_rows])
    assert sorted(rows.tolist()) == list(range(n))
