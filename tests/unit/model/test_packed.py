"""Packed trials (model.packed): a member of a pack trains as it would alone, on real data."""

import numpy as np
import pytest

from data_prep import prepare
from model import TrainConfig, train
from model.loop import TrainResult
from model.packed import Pack, pack_key, train_packed

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: float32 on the CPU: vmap's grouped convolutions and batched output layer sum in another
#: order than a lone run's, so numbers agree to rounding, not bit for bit.
RTOL, ATOL = 1e-5, 1e-6
#: Predicted intensities (order 0.1-1) after the epochs: to 1e-4 absolute.
PRED_ATOL = 1e-4


def _config(**kw) -> TrainConfig:
    settings = dict(epochs=3, lr=1e-3, seed=3, device="cpu", num_threads=1, amp="off",
                    subset=200, channels=(8, 12), convs_per_block=2)
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def datas(levels_dataset):
    """About 180 training molecules at two sigmas (members learn different targets)."""
    return {s: prepare(levels_dataset, sigma=s, n_points=300, subset=200) for s in (0.5, 0.3)}


def _same(packed: TrainResult, alone: TrainResult, rtol: float = RTOL,
          atol: float = ATOL, loose: dict[str, float] | None = None) -> None:
    """``loose``: final metrics compared to their own relative tolerance."""
    loose = loose or {}
    assert isinstance(packed, TrainResult), packed
    assert len(packed.history) == len(alone.history)
    for p, a in zip(packed.history, alone.history, strict=True):
        assert p["epoch"] == a["epoch"]
        np.testing.assert_allclose(p["train_loss"], a["train_loss"], rtol=rtol, atol=atol)
        np.testing.assert_allclose(p["test_loss"], a["test_loss"], rtol=rtol, atol=atol)
        for name, value in a["test_metrics"].items():
            np.testing.assert_allclose(p["test_metrics"][name], value, rtol=rtol, atol=atol,
                                       err_msg=name)
    assert packed.best_epoch == alone.best_epoch and packed.status == alone.status
    for name, value in alone.metrics.items():
        np.testing.assert_allclose(packed.metrics[name], value, rtol=loose.get(name, rtol),
                                   atol=atol, err_msg=name)
    np.testing.assert_allclose(packed.val_predictions, alone.val_predictions,
                               rtol=1e-4, atol=PRED_ATOL)


@pytest.mark.slow
def test_members_of_a_pack_train_as_they_would_alone(datas):
    """Four members differing in sigma, loss, lr, schedule, seed, weight decay, noise, dropout
    and output head: each one's per-epoch losses, test metrics and final validation metrics
    equal its lone run's."""
    configs = [
        _config(),
        _config(sigma=0.3, loss="cosine", lr=3e-3, seed=7, lr_schedule="cosine",
                warmup_epochs=1),
        _config(loss="smoothl1", lr=5e-4, seed=1, weight_decay=0.01, coulomb_noise=0.5,
                dropout=0.2),
        _config(sigma=0.3, loss="wasserstein", seed=2, output_head="softplus", patience=1,
                epochs=4),
    ]
    data = [datas[c.sigma] for c in configs]
    assert len({pack_key(c, d) for c, d in zip(configs, data, strict=True)}) == 1
    packed = train_packed(configs, data)
    for c, d, p in zip(configs, data, packed, strict=True):
        _same(p, train(c, d, progress=False))


def test_batch_norm_members(datas):
    """Batch norm's backward runs through vmap's own rule: its gradients differ from a lone
    run's by rounding (2e-7 relative), which Adam's normalised steps amplify in the near-zero
    gradients of the bias-free convolutions. So with batch norm a member follows its lone run
    closely (losses to 1e-3, accuracy to 1e-2 after three epochs), not to rounding; discrete
    metrics (level error, shares of points) may move more."""
    configs = [_config(batch_norm=True), _config(batch_norm=True, seed=5, lr=2e-3, epochs=2)]
    packed = train_packed(configs, [datas[0.5]] * 2)
    for c, p in zip(configs, packed, strict=True):
        alone = train(c, datas[0.5], progress=False)
        assert isinstance(p, TrainResult)
        for key in ("train_loss", "test_loss"):
            np.testing.assert_allclose([h[key] for h in p.history],
                                       [h[key] for h in alone.history], rtol=1e-3)
        np.testing.assert_allclose(p.metrics["accuracy"], alone.metrics["accuracy"], rtol=1e-2)


@pytest.mark.slow
def test_a_finished_member_leaves_and_a_new_run_takes_its_slot(datas):
    """A (2 epochs) finishes while B (4) goes on; C starts in the freed slot between epochs
    with fresh, seeded weights: all three equal their lone runs."""
    a, b, c = _config(epochs=2), _config(epochs=4, seed=4), _config(sigma=0.3, seed=9)
    pack = Pack()
    runs = {"a": pack.start(a, datas[0.5]), "b": pack.start(b, datas[0.5])}
    results: dict[str, TrainResult] = {}
    sizes = []
    while pack.members:
        sizes.append(len(pack))
        for run, loss in pack.train_epoch().items():
            assert isinstance(loss, float)
            pack.end_epoch(run, loss, 0.0)
            if run.done:
                pack.remove(run)
                name = next(k for k, r in runs.items() if r is run)
                results[name] = run.result()
                if name == "a":
                    runs["c"] = pack.start(c, datas[0.3])
    assert sizes == [2, 2, 2, 2, 1]
    for name, config in zip("abc", (a, b, c), strict=True):
        _same(results[name], train(config, datas[config.sigma], progress=False))


def test_incompatible_runs_do_not_share_a_pack(datas, levels_dataset):
    pack = Pack()
    pack.start(_config(), datas[0.5])
    assert not pack.fits(_config(batch_size=45), datas[0.5])
    assert not pack.fits(_config(channels=(8, 8)), datas[0.5])
    assert not pack.fits(_config(output_head="levels"), datas[0.5])  # 16 outputs, not Np
    assert pack.fits(_config(output_head="softplus"), datas[0.5])
    assert pack.fits(_config(sigma=0.3, loss="mae", dropout=0.1), datas[0.3])
    np200 = prepare(levels_dataset, sigma=0.5, n_points=200, subset=200)
    with pytest.raises(ValueError, match="cannot share the pack"):
        pack.start(_config(n_points=200), np200)


def test_levels_members_train_as_they_would_alone(datas):
    """Levels heads pack together (each broadening at its own sigma, with its own loss): each
    member equals its lone run to rounding, and its spectra are never negative."""
    configs = [_config(output_head="levels"),
               _config(output_head="levels", sigma=0.3, loss="wasserstein", lr=3e-3, seed=5,
                       dropout=0.1),
               _config(output_head="levels", loss="cosine", seed=9, epochs=2)]
    data = [datas[c.sigma] for c in configs]
    assert len({pack_key(c, d) for c, d in zip(configs, data, strict=True)}) == 1
    assert pack_key(_config(), datas[0.5]) != pack_key(configs[0], datas[0.5])
    packed = train_packed(configs, data)
    for c, d, p in zip(configs, data, packed, strict=True):
        # level_error_eV fits 16 Gaussians to each spectrum, accepting or rejecting each
        # Levenberg-Marquardt step: the predictions' rounding moves it by up to 1.4e-4.
        _same(p, train(c, d, progress=False), loose={"level_error_eV": 1e-3})
        assert p.metrics["negative_share"] == 0.0
