"""Study definitions: the shipped studies and clear one-line errors for bad ones."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args, get_origin

import optuna
import pytest
from pydantic import ValidationError

from hpo.study.config import (
    SPACE_DEFAULTS,
    TRAIN_SECTION,
    ConfigError,
    build_sampler,
    load_study_config,
    setting_type,
    shipped_studies,
    space_fields,
    study_config_from_dict,
    worker_seed,
)
from model.config import TrainConfig


def says(**settings) -> str:
    """TrainConfig's own message for bad settings (the study error repeats it)."""
    with pytest.raises(ValidationError) as err:
        TrainConfig(**settings)
    return err.value.errors()[0]["msg"].removeprefix("Value error, ")


SHIPPED = {"demo", "paper-loss", "paper-sigma", "paper-np", "full-tpe", "sigma-pareto",
           "levels-vs-spectra", "architecture"}


def test_shipped_studies_load():
    assert SHIPPED <= set(shipped_studies())
    for name in shipped_studies():
        cfg = load_study_config(name)
        assert cfg.name == name
        assert cfg.n_trials is not None


def test_paper_studies_carry_the_reports_values():
    loss = load_study_config("paper-loss")
    assert loss.is_grid and loss.searched() == ["loss"]
    assert loss.space["loss"].values() == ["rmse", "smoothl1", "logcosh", "cosine", "pearson"]
    report = ("sigma", "n_points", "lr", "batch_size", "epochs", "seed", "output_head", "subset")
    assert {k: loss.fixed()[k] for k in report} == {
        "sigma": 0.5, "n_points": 300, "lr": 1e-4, "batch_size": 90, "epochs": 2500, "seed": 0,
        "output_head": "linear", "subset": None}
    # every other training setting is fixed at TrainConfig's default
    assert set(loss.fixed()) | {"loss"} == set(space_fields())
    for k in set(loss.fixed()) - set(report):
        assert loss.fixed()[k] == TrainConfig().model_dump()[k], k
    assert loss.n_trials == 5 and loss.pruner.name == "none"

    sigma = load_study_config("paper-sigma")
    assert sigma.space["sigma"].values() == [0.1, 0.3, 0.5]
    assert sigma.fixed()["loss"] == "rmse" and sigma.fixed()["n_points"] == 300
    assert sigma.reference_sigma_value == 0.5 and sigma.objectives == ("fair_accuracy",)

    np_ = load_study_config("paper-np")
    assert np_.space["n_points"].values() == [300, 500, 700] and np_.fixed()["sigma"] == 0.1
    assert np_.grid_size() == 3


def test_full_tpe_and_pareto():
    full = load_study_config("full-tpe")
    assert set(full.searched()) == {"sigma", "n_points", "loss", "lr"}
    lr = full.space["lr"]
    assert lr.kind == "range" and lr.log
    assert full.sampler.name == "tpe" and full.pruner.name == "hyperband"

    pareto = load_study_config("sigma-pareto")
    assert pareto.objectives == ("fair_accuracy", "sigma")
    assert pareto.directions == ("maximize", "minimize")
    assert pareto.sampler.name == "nsga2" and pareto.pruner.name == "none"
    assert pareto.reference_sigma_value == max(pareto.sigma_values()) == 0.5


def test_demo_is_small_and_sigma_fair():
    demo = load_study_config("demo")
    assert demo.storage is None  # the default: SQLite under runs/
    assert demo.fixed()["subset"] <= 3000 and demo.fixed()["epochs"] <= 10
    assert demo.objectives == ("fair_accuracy",) and demo.reference_sigma_value == 0.5


def test_overrides_and_round_trip():
    cfg = load_study_config("paper-sigma")
    small = cfg.override({"space.epochs": 3, "space.subset": 500, "budget.n_trials": 2,
                          "storage": "sqlite:///x.db"})
    assert small.fixed()["epochs"] == 3 and small.fixed()["subset"] == 500
    assert small.n_trials == 2 and small.storage == "sqlite:///x.db"
    assert study_config_from_dict(small.to_dict()) == small.model_copy(update={"source": None})
    # bare names find their section; keyword form; None puts the default back
    same = cfg.override(epochs=3, subset=500, n_trials=2, storage="sqlite:///x.db")
    assert same == small and cfg.override(epochs=3, subset=None).fixed()["subset"] is None
    assert small.override({"space.subset": None}).fixed()["subset"] is None
    assert cfg.override({"train.device": "cpu", "dataset": "d.npz"}).train.device == "cpu"
    assert cfg.override(dataset="d.npz").train.dataset == "d.npz"
    assert cfg.override({"sigma": [0.1, 0.2]}).reference_sigma_value == 0.5  # the file's
    assert cfg.source and small.source == cfg.source


@pytest.mark.parametrize("changes, message", [
    ({"colour": 3}, "override 'colour': not a study key"),
    ({"bogus.x": 3}, "override 'bogus.x': unknown key 'bogus'"),
    ({"space.epochs": 0}, "space.epochs: " + says(epochs=0)),
    ({"budget.n_trial": 2}, "unknown key 'n_trial' in [budget]"),
    ({"storage.x": 1}, "'storage' is not a table"),
])
def test_bad_overrides_name_the_key(changes, message):
    with pytest.raises(ConfigError) as err:
        load_study_config("demo").override(changes)
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_space_is_derived_from_train_config():
    fields = set(space_fields())
    assert fields == set(TrainConfig.model_fields) - set(TRAIN_SECTION) - {
        "reference_sigma", "checkpoint_dir"}
    cfg = study_config_from_dict(BASE)
    assert set(cfg.space) == fields and not cfg.searched()
    for name in fields - set(SPACE_DEFAULTS):  # TrainConfig's own defaults
        assert cfg.fixed()[name] == getattr(TrainConfig(), name), name
    assert cfg.fixed()["epochs"] == 2500  # a study's trials: the report's epochs
    # TrainConfig's checks apply, its own messages name the field
    for name, bad in (("huber_delta", [1.0, -1.0]), ("output_head", "relu")):
        with pytest.raises(ConfigError) as err:
            study_config_from_dict({**BASE, "space": {name: bad}})
        wrong = bad[-1] if isinstance(bad, list) else bad
        assert f"space.{name}: {says(**{name: wrong})}" in str(err.value)
    with pytest.raises(ConfigError, match=r"space.device: .*\[train\]"):
        study_config_from_dict({**BASE, "space": {"device": "cpu"}})
    with pytest.raises(ConfigError, match=r"unknown key 'epochs' in \[train\]"):
        study_config_from_dict({**BASE, "train": {"epochs": 5}})
    with pytest.raises(ConfigError, match=r"space.epochs: .*number.*True"):
        study_config_from_dict({**BASE, "space": {"epochs": True}})


def test_setting_type_is_the_field_type_without_none():
    """The one reading of a field's type (the space's checks and the CLI options use it)."""
    assert setting_type("subset") is int and setting_type("reference_sigma") is float
    assert setting_type("checkpoint_dir") is Path and setting_type("dataset") is str
    assert setting_type("sigma") is float and setting_type("batch_norm") is bool
    assert get_origin(setting_type("channels")) is tuple
    assert get_origin(setting_type("loss")) is Literal and "rmse" in get_args(setting_type("loss"))


def test_train_section_is_validated_by_train_config():
    cfg = study_config_from_dict({**BASE, "train": {"amp": True, "dataset": "x.npz",
                                                    "eval_batch_size": 64}})
    assert cfg.train.amp == "bf16" and cfg.train.dataset == "x.npz"
    kw = cfg.override(device="cpu").train_settings(cfg.fixed(), checkpoint_dir="/tmp/c")
    tc = TrainConfig(**kw)
    assert tc.eval_batch_size == 64 and tc.device == "cpu" and tc.epochs == 2500
    assert tc.reference_sigma == cfg.reference_sigma_value and str(tc.dataset) == "x.npz"
    with pytest.raises(ConfigError, match=r"t.toml: train: empty energy window"):
        study_config_from_dict({**BASE, "train": {"e_min": 0, "e_max": -1}}, "t.toml")
    with pytest.raises(ConfigError) as err:
        study_config_from_dict({**BASE, "train": {"num_threads": 0}})
    assert "train.num_threads: " + says(num_threads=0) in str(err.value)


def test_tuple_fields_fixed_by_a_list_chosen_by_a_list_of_lists():
    fixed = study_config_from_dict({**BASE, "space": {"betas": [0.8, 0.99]}})
    assert fixed.fixed()["betas"] == (0.8, 0.99) and not fixed.searched()
    with pytest.raises(ConfigError) as err:
        study_config_from_dict({**BASE, "space": {"betas": [1.5, 0.99]}})
    assert "space.betas: " + says(betas=(1.5, 0.99)) in str(err.value)
    grid = study_config_from_dict({"name": "g", "sampler": {"name": "grid"}, "pruner": {
        "name": "none"}, "space": {"betas": [[0.9, 0.999], [0.8, 0.99]], "sigma": [0.3, 0.5]}})
    assert grid.space["betas"].choices == ((0.9, 0.999), (0.8, 0.99)) and grid.grid_size() == 4
    assert study_config_from_dict(grid.to_dict()) == grid
    study = optuna.create_study(sampler=build_sampler(grid))
    seen = []

    def objective(trial):
        params = grid.suggest(trial)
        TrainConfig(**grid.train_settings(params))  # a valid training configuration
        seen.append((params["betas"], params["sigma"]))
        return 0.0

    study.optimize(objective, n_trials=10)  # the grid stops it after its 4 points
    assert sorted(seen) == sorted((b, s) for b in ((0.9, 0.999), (0.8, 0.99)) for s in (0.3, 0.5))
    assert {t.params["betas"] for t in study.trials} == {"[0.9, 0.999]", "[0.8, 0.99]"}


def test_grid_seed_is_shared_other_seeds_differ():
    grid = load_study_config("paper-loss")
    a, b = build_sampler(grid, 0), build_sampler(grid, 3)
    assert a._all_grids == b._all_grids  # every worker orders the grid alike
    tpe = load_study_config("demo")
    assert build_sampler(tpe, 0)._rng.rng.randint(1 << 30) != \
        build_sampler(tpe, 1)._rng.rng.randint(1 << 30)


def _first_proposals(cfg, worker_index: int, n: int = 3) -> list[dict]:
    """The first ``n`` parameter sets a worker's sampler proposes (random start-up draws)."""
    study = optuna.create_study(sampler=build_sampler(cfg, worker_index),
                                direction=cfg.directions[0])
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(cfg.suggest(trial))
        study.tell(trial, 0.0)
    return out


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_worker_seeds_of_neighbouring_study_seeds_do_not_overlap(sampler):
    # seed + index made worker 1 of seed 0 propose exactly what worker 0 of seed 1 proposed
    seed0 = load_study_config("demo").override({"sampler": {"name": sampler, "seed": 0}})
    seed1 = seed0.override({"sampler": {"name": sampler, "seed": 1}})
    assert _first_proposals(seed0, 1) != _first_proposals(seed1, 0)
    assert _first_proposals(seed0, 0) != _first_proposals(seed0, 1)
    assert _first_proposals(seed0, 1) == _first_proposals(seed0, 1)  # reproducible
    assert worker_seed(0, 1) != worker_seed(1, 0)
    assert worker_seed(-1, 0) == worker_seed(-1, 0) != worker_seed(1, 0)


BASE = {"name": "t", "budget": {"n_trials": 3}}


@pytest.mark.parametrize("change, message", [
    ({"sampler": {"name": "bogus"}}, "sampler.name: 'bogus' is not allowed"),
    ({"pruner": {"name": "bogus"}}, "pruner.name: 'bogus' is not allowed"),
    ({"space": {"loss": ["rmse", "nope"]}}, "space.loss: " + says(loss="nope")),
    ({"space": {"lr": {"low": 1e-2, "high": 1e-4, "log": True}}}, "space.lr: empty range"),
    ({"space": {"lr": {"low": -1.0, "high": 1e-4}}}, "space.lr: " + says(lr=-1.0)),
    ({"space": {"lr": {"low": 1e-4, "high": 1e-2, "lg": True}}}, "unknown range key(s) ['lg']"),
    ({"space": {"sigma": 0}}, "space.sigma: " + says(sigma=0)),
    ({"space": {"n_points": [300, 300]}}, "space.n_points: duplicate choices"),
    ({"space": {"batch_size": 1.5}}, "space.batch_size: " + says(batch_size=1.5)),
    ({"space": {"subset": 5}}, "space.subset: " + says(subset=5)),
    ({"space": {"colour": "red"}}, "space.colour: unknown parameter"),
    ({"space": {"loss": {"low": 1, "high": 2}}}, "space.loss: a range needs a numeric"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"budget": {"n_trial": 3}}, "unknown key 'n_trial' in [budget]"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials: must be between 1"),
    ({"budget": {}}, "budget: give n_trials or timeout"),
    ({"sampler": {"name": "grid"}, "space": {"lr": {"low": 1e-4, "high": 1e-2}}},
     "a grid study needs choice lists"),
    ({"sampler": {"name": "tpe", "options": {"n_startup": 3}}}, "sampler.options:"),
    ({"pruner": {"name": "median", "options": {"warmup": 3}}}, "pruner.options:"),
    ({"objectives": ["fair_accuracy", "sigma"], "space": {"sigma": [0.1, 0.5]}},
     "Optuna cannot prune multi-objective"),
    ({"objectives": ["fair_accuracy", "sigma"], "pruner": {"name": "none"}},
     "'sigma' is fixed in the space"),
    ({"objectives": ["fair_accuracy", "rmse"], "directions": ["maximize"],
      "pruner": {"name": "none"}}, "directions: 1 given for 2 objectives"),
    ({"objectives": ["happiness"]}, "unknown objective 'happiness'"),
    ({"reference_sigma": 0.3, "space": {"sigma": [0.1, 0.5]}}, "below the widest sigma"),
    ({"heartbeat": {"interval": 5, "grace": 5}}, "heartbeat: grace (5 s) must exceed"),
    ({"name": "a b"}, "name: 'a b'"),
    ({"train": {"device": "tpu"}}, "train.device: " + says(device="tpu")),
])
def test_bad_definitions_give_one_line_errors(change, message):
    data = {**BASE, **change}
    with pytest.raises(ConfigError) as err:
        study_config_from_dict(data, source="studies/t.toml")
    text = str(err.value)
    assert text.startswith("studies/t.toml: ") and "\n" not in text
    assert message in text, text


def test_defaults_infer_directions():
    cfg = study_config_from_dict({**BASE, "objectives": ["wasserstein_eV", "accuracy"],
                                  "pruner": {"name": "none"}})
    assert cfg.directions == ("minimize", "maximize")


def test_files_names_and_toml_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown study 'nope'.*demo"):
        load_study_config("nope")
    with pytest.raises(ConfigError, match="study file not found"):
        load_study_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load_study_config(bad)
    ok = tmp_path / "mine.toml"
    ok.write_text('[budget]\nn_trials = 2\n[space]\nsigma = [0.1, 0.2]\n')
    cfg = load_study_config(ok)
    assert cfg.name == "mine" and cfg.reference_sigma_value == 0.2


def test_network_channels_are_a_choice_of_tuples():
    """A tuple field of the network, searchable because TrainConfig has it."""
    cfg = study_config_from_dict({**BASE, "space": {
        "channels": [[22, 47, 42], [32, 64, 64]], "convs_per_block": [2, 3]}})
    assert cfg.searched() == ["channels", "convs_per_block"]
    assert cfg.space["channels"].choices == ((22, 47, 42), (32, 64, 64))
    one = study_config_from_dict({**BASE, "space": {"channels": [16, 32]}})
    assert one.fixed()["channels"] == (16, 32)
    assert study_config_from_dict(cfg.to_dict()) == cfg
    study = optuna.create_study(sampler=build_sampler(cfg))
    trial = study.ask()
    params = cfg.suggest(trial)
    assert params["channels"] in cfg.space["channels"].choices
    assert TrainConfig(**cfg.train_settings(params)).channels == params["channels"]


@pytest.mark.slow
def test_every_shape_the_architecture_study_can_pick_builds_a_network():
    """Each combination of its searched shape fields is a valid network (the 4-block widths
    reach one pixel), with the levels head and MAE fixed."""
    import itertools

    import torch

    from model import SpectraCNN

    cfg = load_study_config("architecture")
    assert cfg.fixed()["output_head"] == "levels" and cfg.fixed()["loss"] == "mae"
    shape = ("channels", "convs_per_block", "kernel_size", "pooling", "batch_norm", "dropout")
    assert set(shape) <= set(cfg.searched())
    x = torch.randn(2, 1, 29, 29)
    for values in itertools.product(*(cfg.space[k].choices for k in shape)):
        net = SpectraCNN(300, "levels", **dict(zip(shape, values, strict=True))).eval()
        assert net(x).shape == (2, 300), values


@pytest.mark.parametrize("change, key", [
    ({"budget": {"n_trials": 10**24}}, "budget.n_trials"),
    ({"budget": {"n_trials": 2.5}}, "budget.n_trials"),
    ({"budget": {"timeout": float("inf")}}, "budget.timeout"),
    ({"budget": {"timeout": 1e300}}, "budget.timeout"),
    ({"heartbeat": {"grace": 10**17}}, "heartbeat"),
    ({"heartbeat": {"interval": 10**12, "grace": 10**13}}, "heartbeat"),
    ({"heartbeat": {"interval": float("nan")}}, "heartbeat.interval"),
    ({"heartbeat": {"max_retry": 10**20}}, "heartbeat"),
    ({"heartbeat": {"max_retry": -1}}, "heartbeat"),
    ({"resume": {"save_interval": 1e300}}, "resume.save_interval"),
    ({"resume": {"save_interval": float("nan")}}, "resume.save_interval"),
    # pydantic's lax mode read true as 1
    ({"budget": {"n_trials": True}}, "budget.n_trials"),
    ({"heartbeat": {"interval": True}}, "heartbeat.interval"),
    ({"train": {"num_threads": True}}, "num_threads"),
])
def test_budget_heartbeat_and_resume_numbers_are_bounded(change, key):
    """Numbers a worker would pass to a timer, a date or a database column (1e17 s of grace
    overflows a datetime; 1e24 trials an SQL integer) are refused when the file is read."""
    with pytest.raises(ConfigError) as err:
        study_config_from_dict({**BASE, **change}, source="studies/t.toml")
    text = str(err.value)
    assert text.startswith("studies/t.toml: ") and key in text and "\n" not in text


@pytest.mark.parametrize("options", [{"n_startup_trials": "x"}, {"n_startup_trials": [1]}])
def test_a_sampler_option_of_the_wrong_type_is_refused_when_the_file_is_read(options):
    """TPE accepts such an option when built and fails only when it first proposes: in a
    worker every trial failed with a traceback."""
    with pytest.raises(ConfigError) as err:
        study_config_from_dict({**BASE, "sampler": {"name": "tpe", "options": options},
                                "space": {"loss": ["rmse", "mae"]}}, source="studies/t.toml")
    assert "sampler.options" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("bad", [3, [3], [[1]], {"a": 1}, 1.5])
def test_objectives_of_the_wrong_type_are_one_config_error(bad):
    """``objectives = 3`` in a study file raised TypeError (a traceback) before."""
    with pytest.raises(ConfigError, match="objectives") as err:
        study_config_from_dict({**BASE, "objectives": bad})
    assert "\n" not in str(err.value)


def _error(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        study_config_from_dict(data, source="t.toml")
    return str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"space": {"loss": "rmes"}}, "space.loss: unknown loss 'rmes' (did you mean 'rmse'?)"),
    ({"space": {"epohcs": 3}}, "space.epohcs: unknown parameter (did you mean 'epochs'?)"),
    ({"budgt": {"n_trials": 3}}, "unknown key 'budgt' (did you mean 'budget'?)"),
    ({"budget": {"n_trails": 3}}, "unknown key 'n_trails' in [budget] (did you mean 'n_trials'?)"),
    ({"train": {"devcie": "cpu"}}, "unknown key 'devcie' in [train] (did you mean 'device'?)"),
    ({"sampler": {"name": "tpee"}}, "sampler.name: 'tpee' is not allowed (did you mean 'tpe'?)"),
    ({"objectives": ["fair_acuracy"]}, "unknown objective 'fair_acuracy' (did you mean "
                                       "'fair_accuracy'?)"),
    ({"space": {"output_head": "level"}}, "(did you mean 'levels'?)"),
])
def test_a_typo_in_a_study_file_suggests_the_closest_name(change, message):
    assert message in _error({**BASE, **change})


def test_a_name_far_from_any_suggests_none():
    assert "did you mean" not in _error({**BASE, "space": {"loss": "zzzz"}})
    assert "did you mean" not in _error({**BASE, "qqqqqq": 1})


@pytest.mark.parametrize("change, messages", [
    ({"sampler": {"name": "tpee"}, "budget": {"n_trials": -3}},
     ["sampler.name: 'tpee'", "budget.n_trials: must be between 1"]),
    ({"budgt": {"n_trials": 3}, "heartbeat": {"max_retry": "x"}},
     ["unknown key 'budgt'", "heartbeat.max_retry"]),
    ({"space": {"loss": "rmes", "epohcs": 3, "lr": -1.0}},
     ["space.loss: unknown loss 'rmes'", "space.epohcs: unknown parameter", "space.lr: "]),
    ({"train": {"device": "tpu", "num_threads": 0}},
     ["train.device: ", "train.num_threads: num_threads must be at least 1"]),
])
def test_every_bad_value_of_a_study_file_is_reported(change, messages):
    """All of them, in one line joined by '; ' (it said only the first)."""
    text = _error({**BASE, **change})
    assert "\n" not in text
    for message in messages:
        assert message in text, (message, text)
