"""The levels head (``output_head="levels"``): 16 levels broadened exactly as the targets are, on
real molecules; one trained model gives the spectrum at any sigma and Np."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from data_prep import broaden, energy_grid
from data_prep.spectra import gaussian_spectra
from model import SpectraCNN, TrainConfig, count_parameters, load_checkpoint, predict, train
from model.contract import LOSSES, N_LEVELS
from model.errors import ConfigError, DataError
from model.inference import predict_levels, predict_xyz, score_at_sigmas
from model.trainer import Trainer, mean_levels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**kw) -> TrainConfig:
    settings = dict(epochs=2, lr=1e-3, seed=3, device="cpu", num_threads=1, subset=600,
                    output_head="levels")
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def data(small_data):
    """600 real molecules at sigma 0.5, Np 300 (about 540 train, 30 test, 30 validation)."""
    return small_data


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A levels model trained 6 epochs with its checkpoint, each epoch's report kept."""
    reports: list = []
    folder = tmp_path_factory.mktemp("levels")
    result = train(_config(epochs=6, checkpoint_dir=folder), data, on_epoch=reports.append,
                   progress=False)
    return result, reports


def _peak_error(got, want) -> float:
    """The largest difference of each spectrum, relative to its peak."""
    got, want = (np.asarray(a.detach() if torch.is_tensor(a) else a, np.float64)
                 for a in (got, want))
    return float((np.abs(got - want).max(axis=1) / want.max(axis=1)).max())


# --- the broadening is the targets' ------------------------------------------------------------

def test_broadening_of_given_levels_equals_the_target_spectra(data):
    """data_prep's cached target spectra (windowed kernel) and the levels head's differentiable
    broadening of the same levels agree to float32 precision."""
    made = gaussian_spectra(torch.from_numpy(data.levels), data.sigma, data.n_points)
    assert made.dtype == torch.float32
    assert _peak_error(made, data.spectra) < 1e-6
    for sigma, n_points in [(0.1, 700), (0.3, 500)]:
        made = gaussian_spectra(torch.from_numpy(data.levels), sigma, n_points)
        assert _peak_error(made, broaden(data.levels, sigma, n_points)) < 1e-6


def test_the_network_makes_a_molecules_target_from_its_levels(data):
    """A levels head whose output layer is set to give molecule i's levels predicts exactly
    molecule i's target spectrum, at the training sigma and at any other."""
    net = SpectraCNN(300, output_head="levels").eval()
    with torch.no_grad():
        net.head.weight.zero_()
    x = torch.from_numpy(data.coulomb[:4]).unsqueeze(1)
    for i in (0, 7, 42):
        net.init_levels(data.levels[i])
        assert _peak_error(net(x), np.repeat(data.spectra[i : i + 1], 4, 0)) < 1e-6
        other = net.spectrum(x, sigma=0.1, n_points=500)
        assert _peak_error(other, np.repeat(broaden(data.levels[i : i + 1], 0.1, 500), 4, 0)) \
            < 1e-6
        np.testing.assert_allclose(net.levels(x)[0].detach(), np.sort(data.levels[i]),
                                   rtol=1e-6)


def test_gradients_of_the_broadening_are_exact():
    """float64 levels: the autograd gradient equals finite differences (no level is cut off)."""
    levels = torch.tensor([[-15.3, -14.9, -14.85, -11.0, -29.9, -0.2]], dtype=torch.float64,
                          requires_grad=True)
    assert torch.autograd.gradcheck(lambda lv: gaussian_spectra(lv, 0.3, 120), (levels,))


def test_levels_head_output_is_non_negative_and_integrates_like_a_target(data):
    trainer = Trainer(_config(), data)
    pred = trainer.predict(trainer.x_test).numpy()
    target = data.spectra[data.test_rows]
    assert pred.shape == target.shape and (pred >= 0).all()
    step = float(data.grid[1] - data.grid[0])
    # 16 unit-area peaks inside the window: the area of every target, and of every prediction
    np.testing.assert_allclose(pred.sum(1) * step, target.sum(1) * step, rtol=1e-3)
    np.testing.assert_allclose(pred.sum(1) * step, N_LEVELS, rtol=1e-3)
    # wild inputs cannot make a negative intensity either
    wild = trainer.model.eval()(torch.randn(64, 1, 29, 29) * 50)
    assert (wild >= 0).all() and torch.isfinite(wild).all()


def test_the_head_starts_at_the_mean_sorted_training_levels(data):
    trainer = Trainer(_config(), data)
    mean = np.sort(data.levels[data.train_rows].astype(np.float64), axis=1).mean(axis=0)
    np.testing.assert_allclose(trainer.model.head.bias.detach(), mean, rtol=1e-6)
    np.testing.assert_allclose(mean_levels(data), mean, rtol=1e-12)
    # the first predictions sit among the targets' peaks: within 0.5 eV of the mean levels
    start = trainer.model.eval().levels(trainer.x_test)
    assert (start - torch.from_numpy(mean).float()).abs().max() < 0.5
    assert (start.diff(dim=1) >= 0).all()  # ascending


def test_missing_levels_are_left_out_of_the_start_or_refused(data):
    levels = data.levels.copy()
    levels[data.train_rows[:5], 3] = np.nan  # five molecules miss a level (sorted last)
    partial = dataclasses.replace(data, levels=levels)
    got = mean_levels(partial)
    assert np.isfinite(got).all()
    last = np.sort(levels[data.train_rows], 1)[:, -1]  # the five NaNs sort last
    np.testing.assert_allclose(got[-1], last[~np.isnan(last)].astype(np.float64).mean(),
                               rtol=1e-6)
    levels[data.train_rows, 0] = np.nan  # no training molecule has a 16th level
    with pytest.raises(DataError, match="no training molecule has level 16"):
        Trainer(_config(), dataclasses.replace(data, levels=levels))
    with pytest.raises(DataError, match="16 finite mean levels"):
        SpectraCNN(300, output_head="levels").init_levels([np.nan] * 16)


# --- training -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_levels_model_learns(trained, data):
    result, reports = trained
    start = Trainer(_config(), data)  # the same seed: the model before its first step
    before = start.test_epoch()[0]
    losses = [r.test_loss for r in reports]
    assert min(losses) < 0.7 * before, (before, losses)  # measured: 0.199 -> 0.101
    assert [r.train_loss for r in reports][-1] < reports[0].train_loss
    assert result.metrics["negative_share"] == 0.0
    # the levels themselves moved towards the true ones
    start = start.model.eval()
    x = torch.from_numpy(data.coulomb[data.validation_rows]).unsqueeze(1)
    true = np.sort(data.levels[data.validation_rows], 1)
    net, _ = load_checkpoint(result.checkpoint_path)
    before = np.abs(start.levels(x).detach().numpy() - true).mean()
    after = np.abs(predict_levels(net, data.coulomb[data.validation_rows]) - true).mean()
    assert after < before


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.slow
def test_every_loss_fits_a_batch_through_the_levels(data, loss):
    """Forty steps on one batch of 32 real molecules: every loss's value falls below 0.6 of
    its start (measured: 0.13 to 0.50), so its gradient reaches the levels."""
    trainer = Trainer(_config(loss=loss), data)
    x, y = trainer.x_train[:32], trainer.y_train[:32]
    losses = [float(trainer._eager_step(x, y)) for _ in range(40)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.6 * losses[0], (loss, losses[0], losses[-1])


def test_the_reports_default_network_is_unchanged():
    net = SpectraCNN(300)
    assert count_parameters(net) == 221_529 and net.head.out_features == 300
    assert TrainConfig().output_head == "linear"
    levels = SpectraCNN(300, output_head="levels")
    assert levels.head.out_features == N_LEVELS
    assert count_parameters(levels) == 221_529 - 378 * 300 - 300 + 378 * 16 + 16
    # the linear head's spectrum is its output layer's values, untouched
    x = torch.randn(3, 1, 29, 29)
    torch.testing.assert_close(net(x), net.head(net.features(x).flatten(1)))


# --- other sigma and Np from one model ----------------------------------------------------------

def test_a_saved_levels_model_predicts_at_another_sigma_and_np(trained, data):
    result, _ = trained
    net, meta = load_checkpoint(result.checkpoint_path, n_points=500)  # any Np: levels
    assert net.predicts_levels and meta["sigma"] == 0.5 and meta["n_points"] == 300
    x = data.coulomb[data.validation_rows]
    own = predict(net, x)
    np.testing.assert_allclose(own, result.val_predictions, rtol=1e-5, atol=1e-6)
    found = predict_levels(net, x)
    assert (np.diff(found, axis=1) >= 0).all()
    for sigma, n_points in [(0.1, 500), (0.3, 300), (0.5, 700)]:
        got = predict(net, x, sigma=sigma, n_points=n_points)
        assert got.shape == (len(x), n_points) and (got >= 0).all()
        assert _peak_error(got, broaden(found, sigma, n_points)) < 1e-6


def test_predict_xyz_at_another_sigma_and_np(trained, data, tmp_path):
    from data_prep import load_qm9pack
    from data_prep.qm9 import SYMBOLS

    result, _ = trained
    geoms = load_qm9pack()
    row = int(geoms.rows_for(data.index[data.train_rows[:1]])[0])
    n = int(geoms.n_atoms[row])
    lines = [str(n), "a training molecule"] + [
        f"{SYMBOLS[int(z)]} {x!r} {y!r} {w!r}"
        for z, (x, y, w) in zip(geoms.Z[row, :n], geoms.R[row, :n].tolist(), strict=True)]
    xyz = tmp_path / "mol.xyz"
    xyz.write_text("\n".join(lines) + "\n")
    own = predict_xyz(result.checkpoint_path, [xyz])
    assert own.spectra.shape == (1, 300) and own.meta["sigma"] == 0.5
    sharp = predict_xyz(result.checkpoint_path, [xyz], sigma=0.1, n_points=600)
    assert sharp.spectra.shape == (1, 600)
    np.testing.assert_array_equal(sharp.grid, energy_grid(600))
    assert sharp.meta["sigma"] == 0.1 and sharp.meta["trained_sigma"] == 0.5
    assert sharp.meta["n_points"] == 600 and sharp.meta["trained_n_points"] == 300
    net, _ = load_checkpoint(result.checkpoint_path)
    want = broaden(predict_levels(net, data.coulomb[data.train_rows[:1]]), 0.1, 600)
    assert _peak_error(sharp.spectra, want) < 1e-6
    # the spectrum at the sharper width has the same area and a higher peak
    np.testing.assert_allclose(sharp.spectra.sum() * 30 / 599, own.spectra.sum() * 30 / 299,
                               rtol=1e-3)
    assert sharp.spectra.max() > own.spectra.max()


@pytest.mark.slow
def test_spectrum_heads_predict_only_their_own_sigma_and_np(data, tmp_path):
    result = train(_config(output_head="softplus", epochs=1, checkpoint_dir=tmp_path), data,
                   progress=False)
    net, _ = load_checkpoint(result.checkpoint_path)
    x = data.coulomb[data.validation_rows]
    np.testing.assert_array_equal(predict(net, x, sigma=0.5, n_points=300), predict(net, x))
    with pytest.raises(ConfigError, match="sigma 0.5 eV, Np 300 only"):
        predict(net, x, sigma=0.1)
    with pytest.raises(ConfigError, match="output_head='levels' gives any sigma"):
        predict(net, x, n_points=500)
    with pytest.raises(ConfigError, match="needs a model that predicts levels"):
        predict_levels(net, x)
    with pytest.raises(ConfigError, match="Np 300 only"):
        predict_xyz(result.checkpoint_path, [tmp_path / "never-read.xyz"], sigma=0.3)
    with pytest.raises(DataError, match="trained for Np=300"):
        load_checkpoint(result.checkpoint_path, n_points=500)
    with pytest.raises(ConfigError, match="sigma 0.5 eV, Np 300 only"):
        score_at_sigmas(net, data, (0.5, 0.1))


def test_checkpoints_from_before_the_network_knew_its_sigma(trained, data, tmp_path):
    """An older checkpoint's ``network`` has no sigma or window: the checkpoint's own."""
    result, _ = trained
    payload = torch.load(result.checkpoint_path, weights_only=True)
    for key in ("sigma", "e_min", "e_max"):
        del payload["network"][key]
    payload["sigma"] = 0.3  # as if trained at 0.3: the rebuilt network broadens with it
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    net, _ = load_checkpoint(old)
    assert net.sigma == 0.3 and (net.e_min, net.e_max) == (-30.0, 0.0)
    x = data.coulomb[data.validation_rows]
    np.testing.assert_allclose(predict(net, x), predict(net, x, sigma=0.3), rtol=1e-6)


# --- scores at several sigma from one training --------------------------------------------------

def test_score_at_sigmas(trained, data):
    result, _ = trained
    net, _ = load_checkpoint(result.checkpoint_path)
    scores = score_at_sigmas(net, data)
    assert list(scores) == [0.1, 0.3, 0.5]
    # at the training sigma: the run's own validation metrics (targets made the same way)
    for name in ("accuracy", "fair_accuracy", "wasserstein_eV", "rmse"):
        assert scores[0.5][name] == pytest.approx(result.metrics[name], rel=1e-5, abs=1e-6)
    # one set of levels: the same level error and, re-broadened to 0.5 eV, nearly the same
    # fair accuracy at every sigma (the grid's discretisation of the re-broadening differs)
    direct = {s: m["predicted_level_error_eV"] for s, m in scores.items()}
    assert len(set(direct.values())) == 1 and 0 < direct[0.5] < 2
    fair = [m["fair_accuracy"] for m in scores.values()]
    assert max(fair) - min(fair) < 0.01
    # plain accuracy punishes narrow peaks: it falls with sigma; W1 hardly moves
    acc = [m["accuracy"] for m in scores.values()]
    assert acc[0] < acc[1] < acc[2]
    w1 = [m["wasserstein_eV"] for m in scores.values()]
    assert max(w1) - min(w1) < 0.05
    assert all(m["negative_share"] == 0 for m in scores.values())
    test = score_at_sigmas(net, data, (0.3,), split="test", n_points=500)
    assert list(test) == [0.3] and test[0.3] != scores[0.3]
    with pytest.raises(ConfigError, match="split must be"):
        score_at_sigmas(net, data, split="train")


@pytest.mark.parametrize("head", ["levels", "linear"])
@pytest.mark.parametrize(("kw", "match"), [
    ({"sigma": float("nan")}, "sigma must be a positive number of eV, got nan"),
    ({"sigma": 0.0}, "sigma must be a positive number of eV, got 0.0"),
    ({"n_points": 1}, "Np \\(number of grid points\\) must be an integer >= 2, got 1"),
])
def test_impossible_grids_are_refused_by_every_head(head, kw, match):
    net = SpectraCNN(300, head)
    with pytest.raises(DataError, match=match):
        net.spectrum(torch.zeros(1, 29, 29), **kw)
