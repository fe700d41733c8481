"""Metrics against hand-worked examples."""

import numpy as np
import pytest
import torch

from data_prep import broaden, energy_grid
from model.metrics import (
    METRICS,
    accuracy_per_spectrum,
    baseline_metrics,
    evaluate,
    extract_levels,
    mean_spectrum,
    rebroaden,
    skill_score,
    wasserstein_per_spectrum,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Np = 4 points on [0, 4] eV: the report's dE = 4 / 4 = 1.
GRID4 = np.linspace(0.0, 4.0, 4)
T4 = np.array([[1.0, 2.0, 3.0, 2.0], [1.0, 2.0, 3.0, 2.0]])
P4 = np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 2.0]])


def _eval(p, t, names, grid=GRID4, sigma=0.5, ref=None, levels=None):
    return evaluate(p, t, levels, grid, sigma, ref, metrics=names)


def test_accuracy_rmse_mae_r2_by_hand():
    # First spectrum: sum dE (T-P)^2 = 4, sum dE T = 8 -> 1 - 2/8; RMSE 1; MAE 0.5;
    # SS_tot = 2 -> R^2 = 1 - 4/2 = -1. The second is perfect.
    m = _eval(P4, T4, ["accuracy", "accuracy_min", "accuracy_max", "rmse", "mae", "r2"])
    assert m == pytest.approx({"accuracy": (0.75 + 1) / 2, "accuracy_min": 0.75,
                               "accuracy_max": 1.0, "rmse": 0.5, "mae": 0.25, "r2": 0.0})
    np.testing.assert_allclose(accuracy_per_spectrum(P4, T4, 1.0), [0.75, 1.0])
    acc = accuracy_per_spectrum(torch.from_numpy(P4), torch.from_numpy(T4), 1.0)
    assert isinstance(acc, torch.Tensor)


def test_accuracy_uses_the_report_de():
    # Np = 300 on [-30, 0]: dE = 0.1 (not the grid step 30/299).
    t = np.zeros((1, 300))
    t[0, 100] = 10.0
    p = np.zeros((1, 300))
    m = _eval(p, t, ["accuracy"], grid=energy_grid(300))
    assert m["accuracy"] == pytest.approx(1 - np.sqrt(0.1 * 100) / (0.1 * 10))


def test_negative_share_and_magnitude_by_hand():
    # L2-normalised: [-0.5, 0.5, 0.5, 0.5] and [-0.6, -0.8, 0, 0]
    p = np.array([[-1.0, 1.0, 1.0, 1.0], [-3.0, -4.0, 0.0, 0.0]])
    m = _eval(p, T4, ["negative_share", "negative_magnitude"])
    assert m["negative_share"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert m["negative_magnitude"] == pytest.approx((0.5 + 0.6 + 0.8) / 3)
    assert _eval(T4, T4, ["negative_magnitude"])["negative_magnitude"] == 0.0


def test_normalised_metrics_ignore_the_scale():
    names = ["accuracy", "rmse", "accuracy_normalised", "rmse_normalised", "mae_normalised",
             "r2_normalised"]
    m = _eval(2 * T4, T4, names)
    t = T4[0]
    assert m["accuracy"] == pytest.approx(1 - np.sqrt((t**2).sum()) / t.sum())
    assert m["rmse"] == pytest.approx(np.sqrt((t**2).mean()))
    assert m["accuracy_normalised"] == pytest.approx(1.0)
    assert m["rmse_normalised"] == pytest.approx(0.0, abs=1e-12)
    assert m["mae_normalised"] == pytest.approx(0.0, abs=1e-12)
    assert m["r2_normalised"] == pytest.approx(1.0)
    # Unit-norm spectra: [0.5, 0.5, 0.5, 0.5] vs [1, 0, 0, 0] -> RMSE_n sqrt((0.25 + 3 * 0.25) / 4)
    m = _eval(np.array([[1.0, 1.0, 1.0, 1.0]]), np.array([[3.0, 0.0, 0.0, 0.0]]),
              ["rmse_normalised", "mae_normalised"])
    assert m == pytest.approx({"rmse_normalised": 0.5, "mae_normalised": 0.5})


@pytest.mark.parametrize("sigma", [0.1, 0.5])
@pytest.mark.parametrize("shift", [0.3, 1.0, 2.5])
def test_wasserstein_of_a_shifted_gaussian_is_the_shift(sigma, shift):
    grid = energy_grid(300)
    t = broaden(np.array([[-15.0]]), sigma, 300)
    p = broaden(np.array([[-15.0 + shift]]), sigma, 300)
    m = _eval(p, t, ["wasserstein_eV"], grid=grid, sigma=sigma)
    assert m["wasserstein_eV"] == pytest.approx(shift, abs=2e-3)


def test_wasserstein_clips_negative_predictions_and_handles_empty_ones():
    step = 1.0
    t = np.array([[0.0, 1.0, 0.0, 0.0]])
    # Negative intensity is no mass: the prediction is the target.
    assert float(wasserstein_per_spectrum(np.array([[-5.0, 1.0, 0.0, -1.0]]), t, step)[0]) == 0
    # All mass moved two points to the right.
    assert float(wasserstein_per_spectrum(np.array([[0.0, 0.0, 0.0, 7.0]]), t, step)[0]) == 2
    # No positive intensity: counts as all mass beyond the grid's end (CDF 0 throughout).
    assert float(wasserstein_per_spectrum(np.zeros((1, 4)), t, step)[0]) == 3


def test_rebroadening_composes_gaussians():
    grid = energy_grid(300)
    levels = np.array([[-20.0, -17.5, -15.0, -14.6, -11.0]])
    narrow = broaden(levels, 0.3, 300)
    wide = broaden(levels, 0.5, 300)
    out = rebroaden(narrow, 0.3, 0.5, grid[1] - grid[0]).numpy()
    np.testing.assert_allclose(out, wide, atol=2e-3 * wide.max())
    assert rebroaden(torch.from_numpy(wide), 0.5, 0.5, 0.1) is not None
    with pytest.raises(ValueError, match="cannot be sharpened"):
        rebroaden(wide, 0.5, 0.3, 0.1)


def test_fair_accuracy_does_not_depend_on_sigma():
    # The same 0.4 eV shift: the plain accuracy punishes the narrow spectra far more; after
    # re-broadening to a common 0.5 eV both score the same.
    grid = energy_grid(300)
    levels = np.array([[-20.0, -16.0, -12.0]])
    scores = {}
    for sigma in (0.1, 0.3, 0.5):
        t = broaden(levels, sigma, 300)
        p = broaden(levels + 0.4, sigma, 300)
        scores[sigma] = _eval(p, t, ["accuracy", "fair_accuracy"], grid=grid, sigma=sigma,
                              ref=0.5)
    assert scores[0.1]["accuracy"] < scores[0.3]["accuracy"] < scores[0.5]["accuracy"] - 0.1
    assert scores[0.5]["fair_accuracy"] == pytest.approx(scores[0.5]["accuracy"])
    for sigma in (0.1, 0.3):
        assert scores[sigma]["fair_accuracy"] == pytest.approx(scores[0.5]["fair_accuracy"],
                                                               abs=2e-3)


@pytest.mark.parametrize("sigma", [0.1, 0.3, 0.5])
def test_levels_are_recovered_from_spectra(levels_dataset, sigma):
    levels = levels_dataset.levels[:40].astype(np.float64)
    grid = energy_grid(300)
    found = extract_levels(broaden(levels, sigma, 300), grid, sigma).numpy()
    assert np.abs(found - np.sort(levels, 1)).mean() < 0.01
    # A spectrum of levels all shifted by 0.2 eV: each level is off by 0.2 eV.
    m = evaluate(broaden(levels + 0.2, sigma, 300), broaden(levels, sigma, 300), levels, grid,
                 sigma, 0.5, metrics=["level_error_eV", "level_error_target_eV"])
    assert m["level_error_eV"] == pytest.approx(0.2, abs=0.01)
    assert m["level_error_target_eV"] < 0.01


def test_level_extraction_by_hand():
    grid = energy_grid(300)
    levels = np.array([[-25.0, -24.0, -21.0, -19.5, -18.0, -17.0, -16.0, -15.2, -14.0, -13.0,
                        -12.1, -11.0, -10.0, -9.0, -8.0, -5.0]])
    # Scale does not matter (spectra are taken to hold 16 unit areas).
    found = extract_levels(3 * broaden(levels, 0.3, 300), grid, 0.3).numpy()
    np.testing.assert_allclose(found, levels, atol=1e-3)


def test_full_evaluation_of_a_perfect_prediction(small_data):
    rows = small_data.validation_rows
    t = small_data.spectra[rows]
    m = evaluate(t, t, small_data.levels[rows], small_data.grid, 0.5, 0.5)
    assert list(m) == [k for k in METRICS if k != "skill"]  # skill only with a baseline
    for name in ("accuracy", "r2", "accuracy_normalised", "r2_normalised", "fair_accuracy"):
        assert m[name] == pytest.approx(1.0)
    for name in ("rmse", "mae", "negative_share", "wasserstein_eV", "rmse_normalised"):
        assert m[name] == pytest.approx(0.0, abs=1e-9)
    assert m["level_error_eV"] == m["level_error_target_eV"] < 0.05


def test_bad_input():
    with pytest.raises(ValueError, match="unknown metric 'acc'"):
        _eval(P4, T4, ["acc"])
    with pytest.raises(ValueError, match="cannot be sharpened"):
        _eval(P4, T4, ["fair_accuracy"], sigma=0.5, ref=0.3)
    with pytest.raises(ValueError, match="must both be"):
        _eval(P4[:, :3], T4, ["accuracy"])
    with pytest.raises(ValueError, match="grid"):
        _eval(P4, T4, ["accuracy"], grid=np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="needs the true levels"):
        _eval(P4, T4, ["level_error_eV"])


def test_scale_free_runs_are_judged_on_rescaled_predictions():
    """Cosine/Pearson fix no scale: a prediction of the right shape at a third of the target's
    scale is perfect once scaled, as the report judged such runs; otherwise it is not."""
    grid = np.linspace(-30.0, 0.0, 300)
    levels = np.array([np.linspace(-20.0, -10.0, 16), np.linspace(-18.0, -9.0, 16)])
    target = broaden(levels, 0.5, 300)
    raw = evaluate(target / 3.0, target, levels, grid, 0.5, metrics=["accuracy", "fair_accuracy"])
    fair = evaluate(target / 3.0, target, levels, grid, 0.5, scale_free=True,
                    metrics=["accuracy", "fair_accuracy", "accuracy_normalised"])
    assert raw["accuracy"] < 0.8 and raw["fair_accuracy"] < 0.8
    assert fair["accuracy"] == pytest.approx(1.0, abs=1e-6)
    assert fair["fair_accuracy"] == pytest.approx(1.0, abs=1e-6)
    assert fair["accuracy_normalised"] == pytest.approx(1.0, abs=1e-6)


# --- the mean-training-spectrum baseline and skill ----------------------------------------------

def _splits(data):
    return data.spectra[data.train_rows], data.spectra[data.validation_rows]


def test_mean_spectrum_is_the_mean_of_the_training_targets(small_data):
    train, _ = _splits(small_data)
    mean = mean_spectrum(train)
    assert isinstance(mean, np.ndarray) and mean.shape == (300,) and mean.dtype == train.dtype
    np.testing.assert_allclose(mean, np.mean(train.astype(np.float64), axis=0), rtol=1e-6)
    as_tensor = mean_spectrum(torch.from_numpy(train))
    assert isinstance(as_tensor, torch.Tensor) and as_tensor.dtype == torch.float32
    np.testing.assert_allclose(as_tensor.numpy(), mean, rtol=1e-6)
    # the mean of unit-area peaks keeps the 16 levels' area (tails beyond the window aside)
    assert float(mean.sum() * (small_data.grid[1] - small_data.grid[0])) == pytest.approx(
        16.0, abs=0.05)
    with pytest.raises(ValueError, match="must be \\(N, Np\\)"):
        mean_spectrum(train[:0])
    with pytest.raises(ValueError, match="must be \\(N, Np\\)"):
        mean_spectrum(train[0])


def test_baseline_metrics_are_evaluate_of_the_mean_spectrum(small_data):
    train, val = _splits(small_data)
    levels = small_data.levels[small_data.validation_rows]
    b = baseline_metrics(train, val, small_data.grid, 0.5, 0.5, levels=levels)
    assert set(b) == {"accuracy", "fair_accuracy", "rmse", "rmse_normalised",
                      "wasserstein_eV", "level_error_eV"}
    pred = np.repeat(mean_spectrum(train)[None], len(val), axis=0)
    full = evaluate(pred, val, levels, small_data.grid, 0.5, 0.5)
    for k, v in b.items():  # the single level fit broadcast equals N fits
        assert v == pytest.approx(full[k], rel=1e-5), k
    # the compressed GFN2-xTB levels: the mean already scores high, yet far from perfect
    assert 0.75 < b["accuracy"] < 0.95 and b["wasserstein_eV"] > 0.2
    assert "level_error_eV" not in baseline_metrics(train, val, small_data.grid, 0.5, 0.5)
    # a scale-free run's baseline is judged like its predictions: scaled to each target
    sf = baseline_metrics(train, val, small_data.grid, 0.5, 0.5, scale_free=True)
    scaled = evaluate(pred, val, None, small_data.grid, 0.5, 0.5, scale_free=True,
                      metrics=list(sf))
    assert sf == pytest.approx(scaled)
    assert sf["accuracy"] != pytest.approx(b["accuracy"])
    with pytest.raises(ValueError, match="do not match"):
        baseline_metrics(train, val[:, :200], small_data.grid, 0.5, 0.5)
    with pytest.raises(ValueError, match="one row per target"):
        baseline_metrics(train, val, small_data.grid, 0.5, 0.5, levels=levels[:3])


def test_skill_is_zero_for_the_baseline_and_one_for_a_perfect_prediction(small_data):
    train, val = _splits(small_data)
    grid = small_data.grid
    b = baseline_metrics(train, val, grid, 0.5, 0.5)
    mean = mean_spectrum(train)
    pred = np.repeat(mean[None], len(val), axis=0)
    for baseline in (b, mean):  # its metrics or its spectrum
        assert evaluate(pred, val, None, grid, 0.5, 0.5, metrics=["skill"],
                        baseline=baseline)["skill"] == pytest.approx(0.0, abs=1e-12)
        assert evaluate(val, val, None, grid, 0.5, 0.5, metrics=["skill"],
                        baseline=baseline)["skill"] == pytest.approx(1.0)
    # halfway between the baseline and the truth removes part of its error; the definition
    m = evaluate(0.5 * (pred + val), val, None, grid, 0.5, 0.5, baseline=b,
                 metrics=["fair_accuracy", "skill"])
    assert 0.0 < m["skill"] < 1.0
    assert m["skill"] == pytest.approx(1 - (1 - m["fair_accuracy"]) / (1 - b["fair_accuracy"]))
    # worse than the baseline: negative
    assert evaluate(np.zeros_like(val), val, None, grid, 0.5, 0.5, metrics=["skill"],
                    baseline=b)["skill"] < 0
    assert skill_score(0.9, 1.0) != skill_score(0.9, 1.0)  # nothing to remove: NaN


def test_skill_without_a_baseline_is_a_clear_error():
    with pytest.raises(ValueError, match="skill needs a baseline"):
        _eval(P4, T4, ["skill"])
    with pytest.raises(ValueError, match="baseline spectrum .* must be"):
        evaluate(P4, T4, None, GRID4, 0.5, metrics=["skill"], baseline=np.ones(3))
    with pytest.raises(ValueError, match="no fair_accuracy"):
        evaluate(P4, T4, None, GRID4, 0.5, metrics=["skill"], baseline={"accuracy": 0.5})
