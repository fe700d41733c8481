"""Study definitions: the shipped studies and clear one-line errors for bad ones."""

from __future__ import annotations

import pytest

from hpo.config import (
    ConfigError,
    build_sampler,
    load_study_config,
    shipped_studies,
    study_config_from_dict,
)

SHIPPED = {"demo", "paper-loss", "paper-sigma", "paper-np", "full-tpe", "sigma-pareto"}


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
    assert loss.fixed() | {"subset": None} == {
        "sigma": 0.5, "n_points": 300, "lr": 1e-4, "batch_size": 90, "epochs": 2500, "seed": 0,
        "output_head": "linear", "subset": None}
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
    small = cfg.with_overrides(epochs=3, subset=500, n_trials=2, storage="sqlite:///x.db")
    assert small.fixed()["epochs"] == 3 and small.fixed()["subset"] == 500
    assert small.n_trials == 2 and small.storage == "sqlite:///x.db"
    assert study_config_from_dict(small.to_dict()) == small.model_copy(update={"source": None})


def test_grid_seed_is_shared_other_seeds_differ():
    grid = load_study_config("paper-loss")
    a, b = build_sampler(grid, 0), build_sampler(grid, 3)
    assert a._all_grids == b._all_grids  # every worker orders the grid alike
    tpe = load_study_config("demo")
    assert build_sampler(tpe, 0)._rng.rng.randint(1 << 30) != \
        build_sampler(tpe, 1)._rng.rng.randint(1 << 30)


BASE = {"name": "t", "budget": {"n_trials": 3}}


@pytest.mark.parametrize("change, message", [
    ({"sampler": {"name": "bogus"}}, "sampler.name: 'bogus' is not allowed"),
    ({"pruner": {"name": "bogus"}}, "pruner.name: 'bogus' is not allowed"),
    ({"space": {"loss": ["rmse", "nope"]}}, "space.loss: expected one of rmse"),
    ({"space": {"lr": {"low": 1e-2, "high": 1e-4, "log": True}}}, "space.lr: empty range"),
    ({"space": {"lr": {"low": -1.0, "high": 1e-4}}}, "space.lr: expected"),
    ({"space": {"lr": {"low": 1e-4, "high": 1e-2, "lg": True}}}, "unknown range key(s) ['lg']"),
    ({"space": {"sigma": 0}}, "space.sigma: expected Gaussian broadening"),
    ({"space": {"n_points": [300, 300]}}, "space.n_points: duplicate choices"),
    ({"space": {"batch_size": 1.5}}, "space.batch_size: expected"),
    ({"space": {"subset": 5}}, "space.subset: expected"),
    ({"space": {"colour": "red"}}, "space.colour: unknown parameter"),
    ({"space": {"loss": {"low": 1, "high": 2}}}, "space.loss: a range needs a numeric"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"budget": {"n_trial": 3}}, "unknown key 'n_trial' in [budget]"),
    ({"budget": {"n_trials": 0}}, "budget.n_trials: must be >= 1"),
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
    ({"train": {"device": "tpu"}}, "train.device: expected auto, cpu, cuda"),
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
    with pytest.raises(ConfigError, match="unknown study 'nope': shipped studies are .*demo"):
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
