"""The training loop on real (small) data: learning, reproducibility, failures, checkpoints."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import model
from data_prep import prepare
from model import TrainConfig, TrainingFailed, load_checkpoint, predict, train
from model.contract import SCALE_FREE_LOSSES

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**kw) -> TrainConfig:
    settings = dict(epochs=2, lr=1e-3, seed=3, device="cpu", num_threads=1)
    settings.update(kw)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def tiny_data(levels_dataset):
    """About 110 training molecules: enough to check the mechanics of a run."""
    return prepare(levels_dataset, sigma=0.5, n_points=300, subset=120)


@pytest.fixture(scope="module")
def short_run(small_data, tmp_path_factory):
    """Four epochs at lr 1e-3 with a checkpoint, each epoch's report kept."""
    reports = []
    ckpt = tmp_path_factory.mktemp("ckpt")
    result = train(_config(epochs=4, checkpoint_dir=ckpt), small_data, on_epoch=reports.append)
    return result, reports


@pytest.mark.slow
def test_training_lowers_the_test_loss(short_run):
    result, reports = short_run
    losses = [r.test_loss for r in reports]
    assert losses[-1] < 0.6 * losses[0]
    assert reports[-1].test_metrics["accuracy"] > reports[0].test_metrics["accuracy"]
    assert [r.train_loss for r in reports][-1] < reports[0].train_loss
    assert result.status == "completed" and len(result.history) == 4


def test_epoch_reports_and_result(short_run, small_data):
    result, reports = short_run
    assert [r.epoch for r in reports] == [1, 2, 3, 4]
    for r in reports:
        assert {"accuracy", "fair_accuracy", "wasserstein_eV"} <= set(r.test_metrics)
        assert r.seconds > 0
    assert result.history[0] == dataclasses.asdict(reports[0])
    json.dumps(result.history)  # JSON-friendly for the study's user attributes
    # The best epoch is the one of lowest test loss, and its weights are the ones evaluated.
    best = min(reports, key=lambda r: r.test_loss)
    assert result.best_epoch == best.epoch and result.best_test_loss == best.test_loss
    assert [r.best for r in reports].count(True) >= 1
    rows = small_data.validation_rows
    assert result.val_predictions.shape == (len(rows), 300)
    np.testing.assert_array_equal(result.val_index, small_data.index[rows])
    np.testing.assert_array_equal(result.val_targets, small_data.spectra[rows])
    assert set(model.metrics.METRICS) == set(result.metrics)
    assert 0.5 < result.metrics["accuracy"] < 1
    assert result.device == "cpu" and result.seconds_per_epoch > 0


def test_result_carries_the_baseline_and_skill(short_run, small_data):
    """The mean training spectrum, scored on test and validation once per run; skill (every
    epoch on test, and on validation) is the share of its error that the model removes."""
    from model.metrics import baseline_metrics

    result, reports = short_run
    d = small_data
    train_targets = d.spectra[d.train_rows]
    expected = {"test": baseline_metrics(train_targets, d.spectra[d.test_rows], d.grid, 0.5, 0.5),
                "validation": baseline_metrics(train_targets, d.spectra[d.validation_rows],
                                               d.grid, 0.5, 0.5,
                                               levels=d.levels[d.validation_rows])}
    assert set(result.baseline) == {"test", "validation"}
    for split, values in expected.items():
        assert result.baseline[split] == pytest.approx(values, rel=1e-6), split

    def skill(fair, split):
        return 1 - (1 - fair) / (1 - result.baseline[split]["fair_accuracy"])

    m = result.metrics
    assert m["skill"] == pytest.approx(skill(m["fair_accuracy"], "validation"))
    for r in reports:
        assert r.test_metrics["skill"] == pytest.approx(
            skill(r.test_metrics["fair_accuracy"], "test"))
    # the run learns beyond the mean spectrum: its skill grows epoch by epoch
    assert reports[-1].test_metrics["skill"] > reports[0].test_metrics["skill"]
    assert result.history[-1]["test_metrics"]["skill"] == reports[-1].test_metrics["skill"]


def test_packed_and_scale_free_runs_get_the_same_baseline(tiny_data):
    """A pack's member scores the same baseline as its lone run; a cosine run's baseline is
    judged on the mean spectrum scaled to each target, as its predictions are."""
    from model.metrics import baseline_metrics
    from model.packed import train_packed

    config = _config(epochs=1, amp="off")  # float32: bf16 (auto on AMX) rounds the two apart
    alone = train(config, tiny_data, progress=False)
    (packed,) = train_packed([config], [tiny_data])
    assert set(packed.baseline) == set(alone.baseline)
    for split, values in alone.baseline.items():
        assert packed.baseline[split] == pytest.approx(values), split
    assert packed.metrics["skill"] == pytest.approx(alone.metrics["skill"], rel=1e-4)
    cosine = train(_config(epochs=1, loss="cosine"), tiny_data, progress=False)
    d = tiny_data
    scaled = baseline_metrics(d.spectra[d.train_rows], d.spectra[d.test_rows], d.grid, 0.5, 0.5,
                              scale_free=True)
    assert cosine.baseline["test"] == pytest.approx(scaled, rel=1e-6)
    assert cosine.baseline["test"]["accuracy"] != pytest.approx(alone.baseline["test"]["accuracy"])


def test_checkpoint_reproduces_the_validation_predictions(short_run, small_data):
    result, _ = short_run
    net, meta = load_checkpoint(result.checkpoint_path, n_points=300)
    assert meta["n_points"] == 300 and meta["sigma"] == 0.5
    assert meta["epoch"] == result.best_epoch
    assert meta["fingerprint"] == small_data.fingerprint
    np.testing.assert_allclose(meta["grid"], small_data.grid)
    pred = predict(net, small_data.coulomb[small_data.validation_rows])
    np.testing.assert_allclose(pred, result.val_predictions, rtol=1e-5, atol=1e-5)


def test_checkpoint_from_another_np(short_run, tmp_path):
    result, _ = short_run
    with pytest.raises(ValueError, match="trained for Np=300 points, not Np=500"):
        load_checkpoint(result.checkpoint_path, n_points=500)
    bad = tmp_path / "bad.pt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a specopt checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_same_seed_same_run_on_cpu(tiny_data):
    def strip(history):
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    a = train(_config(seed=11), tiny_data)
    b = train(_config(seed=11), tiny_data)
    c = train(_config(seed=12), tiny_data)
    assert strip(a.history) == strip(b.history)
    np.testing.assert_array_equal(a.val_predictions, b.val_predictions)
    assert strip(a.history) != strip(c.history)


def test_nan_in_the_data_fails_the_run(tiny_data):
    spectra = tiny_data.spectra.copy()
    spectra[tiny_data.train_rows[0], 10] = np.nan
    bad = dataclasses.replace(tiny_data, spectra=spectra)
    with pytest.raises(TrainingFailed, match="epoch 1: training loss is nan") as err:
        train(_config(), bad)
    assert err.value.epoch == 1 and "nan" in err.value.reason


def test_absurd_learning_rate_fails_the_run(tiny_data):
    with pytest.raises(TrainingFailed, match=r"lr=1e\+30"):
        train(_config(lr=1e30, epochs=3), tiny_data)


def test_early_stopping(tiny_data):
    # lr so small that nothing changes: the test loss never improves after epoch 1.
    result = train(_config(lr=1e-30, epochs=10, patience=2), tiny_data)
    assert result.status == "early_stopped"
    assert result.best_epoch == 1 and len(result.history) == 3


def test_callback_exceptions_propagate(tiny_data):
    class Pruned(Exception):
        pass

    def on_epoch(report):
        raise Pruned(report.epoch)

    with pytest.raises(Pruned):
        train(_config(), tiny_data, on_epoch=on_epoch)


@pytest.mark.parametrize(("loss", "head", "amp"), [("cosine", "linear", "off"),
                                                   ("sid", "softplus", "off"),
                                                   ("wasserstein", "linear", "bf16")])
def test_other_losses_heads_and_bf16_train(tiny_data, loss, head, amp):
    result = train(_config(loss=loss, output_head=head, amp=amp, epochs=1),
                   tiny_data)
    assert np.isfinite(result.best_test_loss)
    if head == "softplus":
        assert (result.val_predictions >= 0).all() and result.metrics["negative_share"] == 0
    # A scale-free loss is judged on predictions scaled to the target; the others as they are.
    m = result.metrics
    if loss in SCALE_FREE_LOSSES:
        assert m["accuracy"] == pytest.approx(m["accuracy_normalised"], abs=1e-9)
    else:
        assert m["accuracy"] != pytest.approx(m["accuracy_normalised"], abs=1e-6)


def test_data_that_do_not_match_the_config(small_data):
    with pytest.raises(ValueError, match="prepared for sigma=0.5 eV, Np=300.*sigma=0.3"):
        train(_config(sigma=0.3), small_data)
    with pytest.raises(ValueError, match="Np=500"):
        train(_config(n_points=500), small_data)


def test_train_prepares_data_itself(levels_dataset, tmp_path):
    path = tmp_path / "levels.npz"
    levels_dataset.save(path)
    result = train(_config(epochs=1, dataset=path, subset=100, sigma=0.3, n_points=200,
                           reference_sigma=0.5))
    expected = prepare(path, sigma=0.3, n_points=200, subset=100)
    assert result.val_predictions.shape == (len(expected.validation_rows), 200)


@pytest.mark.parametrize(("kw", "match"), [
    ({"loss": "l2"}, "unknown loss 'l2'"),
    ({"sigma": 0}, "sigma must be a positive"),
    ({"n_points": 1}, "at least 2"),
    ({"lr": -1}, "greater than 0"),
    ({"sigma": 0.7, "reference_sigma": 0.5}, "below sigma"),
    ({"device": "gpu"}, "device must be"),
    ({"output_head": "relu"}, "unknown output_head"),
    ({"e_min": 0, "e_max": -30}, "empty energy window"),
    ({"batchsize": 10}, "Extra inputs"),
])
def test_config_validation(kw, match):
    with pytest.raises(ValidationError, match=match):
        TrainConfig(**kw)


def test_config_defaults_are_the_reports():
    c = TrainConfig()
    assert (c.lr, c.betas, c.batch_size, c.loss, c.sigma, c.n_points) == (
        1e-4, (0.9, 0.999), 90, "rmse", 0.5, 300)
    assert c.reference_sigma == 0.5 and TrainConfig(sigma=0.8).reference_sigma == 0.8
    assert TrainConfig(amp=True).amp == "bf16" and TrainConfig(amp=False).amp == "off"


def test_cuda_requested_without_cuda(tiny_data):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        train(_config(device="cuda"), tiny_data)


def test_amp_choice():
    from model.device import cpu_has_amx, use_amp

    cpu = torch.device("cpu")
    assert use_amp(TrainConfig(amp="off"), cpu) is False
    assert use_amp(TrainConfig(amp="bf16"), cpu) is True
    assert use_amp(TrainConfig(amp="auto"), cpu) is cpu_has_amx()
    assert use_amp(TrainConfig(amp="auto"), torch.device("cuda")) is True


# --- network and optimiser knobs -----------------------------------------------------------------

def test_schedule_sets_the_lr_of_every_epoch(tiny_data):
    from model import Trainer

    config = _config(epochs=6, lr_schedule="cosine", warmup_epochs=2)
    trainer = Trainer(config, tiny_data)
    seen = []
    for _ in range(config.epochs):
        trainer.train_epoch(max_batches=1)
        seen.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen == [config.lr_at(e) for e in range(1, 7)]
    assert seen[:3] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3]) and seen[-1] < seen[2]


def test_a_schedule_changes_the_run(tiny_data):
    a = train(_config(epochs=3), tiny_data)
    b = train(_config(epochs=3, lr_schedule="step"), tiny_data)  # epoch 3 at 0.1 lr
    for h, k in zip(a.history, b.history, strict=True):
        same = (h["train_loss"], h["test_loss"]) == (k["train_loss"], k["test_loss"])
        assert same == (h["epoch"] < 3)


def test_default_optimiser_takes_adams_steps(tiny_data):
    """AdamW without weight decay is the report's Adam, step for step."""
    from model import Trainer

    trainer, reference = Trainer(_config(), tiny_data), Trainer(_config(), tiny_data)
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    reference.optimizer = torch.optim.Adam(reference.model.parameters(), lr=1e-3,
                                           betas=(0.9, 0.999), fused=True)
    for t in (trainer, reference):
        t.train_epoch(max_batches=3)
    for (name, a), b in zip(trainer.model.state_dict().items(),
                            reference.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    fresh = Trainer(_config(), tiny_data)
    assert not torch.equal(trainer.model.head.weight, fresh.model.head.weight)


def test_weight_decay_is_decoupled(tiny_data):
    """AdamW: with a zero gradient, a step only shrinks the weights by lr * weight_decay."""
    from model import Trainer

    trainer = Trainer(_config(weight_decay=0.5), tiny_data)
    group = trainer.optimizer.param_groups[0]
    assert group["weight_decay"] == 0.5
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    for p in trainer.model.parameters():
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k] * (1 - 1e-3 * 0.5))


def test_non_default_network_round_trips_through_the_checkpoint(tiny_data, tmp_path):
    knobs = dict(channels=(8, 16), convs_per_block=2, kernel_size=5, pooling="avg",
                 batch_norm=True, dropout=0.2)
    result = train(_config(epochs=2, checkpoint_dir=tmp_path, **knobs), tiny_data)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # atomic: no temp file
    net, meta = load_checkpoint(result.checkpoint_path, n_points=300)
    assert meta["network"] == {**knobs, "channels": [8, 16], "n_points": 300,
                               "output_head": "linear", "sigma": 0.5, "e_min": -30.0,
                               "e_max": 0.0}
    assert net.channels == (8, 16) and net.dropout.p == 0.2 and not net.training
    assert model.count_parameters(net) == model.count_parameters(
        model.SpectraCNN(300, **knobs))
    pred = predict(net, tiny_data.coulomb[tiny_data.validation_rows])
    np.testing.assert_allclose(pred, result.val_predictions, rtol=1e-5, atol=1e-5)


def test_checkpoint_without_network_entry_is_the_reports_network(short_run, tmp_path):
    """Checkpoints written before the network knobs existed still load."""
    result, _ = short_run
    payload = torch.load(result.checkpoint_path, weights_only=True)
    del payload["network"]
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    net, _ = load_checkpoint(old)
    assert model.count_parameters(net) == 221_529


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (graph capture)")
def test_cuda_graph_trains_at_the_scheduled_lr(tiny_data):
    """The captured step reads the lr tensor: at lr 0 the weights do not move."""
    from model import Trainer

    trainer = Trainer(_config(device="cuda", lr_schedule="cosine", batch_size=16,
                              epochs=4), tiny_data)
    trainer.train_epoch()
    assert trainer._graph is not None
    assert torch.is_tensor(trainer.optimizer.param_groups[0]["lr"])
    trainer.set_lr(0.0)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.config = trainer.config.model_copy(update={"lr_schedule": "constant"})
    trainer.train_epoch()
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
