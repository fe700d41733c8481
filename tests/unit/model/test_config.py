"""TrainConfig: field constraints and their messages, the learning-rate schedules, the fields a
study may search; importable without torch."""

import math
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest
from pydantic import ValidationError

from model.config import NETWORK_FIELDS, TrainConfig, validation_message
from model.contract import LOSSES, LR_SCHEDULES, OUTPUT_HEADS, POOLINGS


def test_importable_without_torch():
    code = "import model.config, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[3])


def test_choices_come_from_the_contract():
    fields = TrainConfig.model_fields
    for name, choices in (("loss", LOSSES), ("output_head", OUTPUT_HEADS),
                          ("pooling", POOLINGS), ("lr_schedule", LR_SCHEDULES)):
        assert typing.get_args(fields[name].annotation) == choices


def _plain(annotation) -> bool:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in (int, float, bool, str, Path, type(None)) or origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_plain(a) for a in args)
    if origin is tuple:
        return all(a in (int, float, Ellipsis) for a in args)
    return False


def test_every_field_is_described_and_plainly_typed():
    """hpo builds study parameters and CLI options from the fields: no hidden structure."""
    for name, info in TrainConfig.model_fields.items():
        assert info.description, name
        assert _plain(info.annotation), (name, info.annotation)


def test_searchable_fields():
    searchable = TrainConfig.searchable_fields()
    # the network's arguments are searchable but the window (which every trial shares)
    network = set(NETWORK_FIELDS) - {"e_min", "e_max"}
    assert network | {"lr", "weight_decay", "lr_schedule", "warmup_epochs", "loss", "sigma",
                      "batch_size", "epochs", "seed"} <= set(searchable)
    assert not {"device", "amp", "compile", "num_threads", "eval_batch_size", "checkpoint_dir",
                "dataset", "reference_sigma"} & set(searchable)
    assert list(searchable) == [n for n in TrainConfig.model_fields if n in searchable]


def test_network_kwargs_of_the_defaults_are_the_reports():
    assert TrainConfig().network_kwargs() == {
        "n_points": 300, "output_head": "linear", "channels": [22, 47, 42],
        "convs_per_block": 3, "kernel_size": 3, "pooling": "max", "batch_norm": False,
        "dropout": 0.0, "sigma": 0.5, "e_min": -30.0, "e_max": 0.0}
    c = TrainConfig(channels=[8, 16], weight_decay=1e-4, lr_schedule="cosine")
    assert c.channels == (8, 16) and c.weight_decay == 1e-4


@pytest.mark.parametrize(("kw", "match"), [
    ({"sigma": float("inf")}, "sigma must be a finite number"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"subset": 5}, "subset must be at least 20, got 5"),
    ({"coulomb_noise": -1}, "coulomb_noise must be at least 0"),
    ({"weight_decay": -0.1}, "weight_decay must be at least 0"),
    ({"lr_schedule": "linear"}, "unknown lr_schedule 'linear'"),
    ({"warmup_epochs": 5, "epochs": 5}, "warmup_epochs 5 must be below epochs 5"),
    ({"betas": (0.9, 1.0)}, r"betas must lie in \[0, 1\)"),
    ({"kernel_size": 31}, "kernel_size must be at most 29"),
])
def test_constraint_messages_name_the_field(kw, match):
    with pytest.raises(ValidationError, match=match):
        TrainConfig(**kw)


def _lrs(**kw) -> list[float]:
    c = TrainConfig(lr=1.0, **kw)
    return [c.lr_at(e) for e in range(1, c.epochs + 1)]


def test_constant_schedule():
    assert _lrs(epochs=4) == [1.0] * 4
    assert not TrainConfig().scheduled


def test_cosine_schedule():
    lrs = _lrs(epochs=10, lr_schedule="cosine")
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.5)  # epoch 6: half way
    assert lrs[9] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert all(a > b > 0 for a, b in zip(lrs, lrs[1:], strict=False))


def test_step_schedule():
    assert _lrs(epochs=8, lr_schedule="step") == pytest.approx(
        [1, 1, 1, 1, 0.1, 0.1, 0.01, 0.01])


def test_warmup_then_schedule():
    lrs = _lrs(epochs=10, lr_schedule="cosine", warmup_epochs=2)
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert _lrs(epochs=3, warmup_epochs=1) == pytest.approx([0.5, 1, 1])
    assert TrainConfig(warmup_epochs=1).scheduled


# --- numbers the physics or the machine cannot take (issue 20) ----------------------------------

@pytest.mark.parametrize(("kw", "words"), [
    ({"n_points": 10**8}, "n_points must be at most"),
    ({"sigma": 1e9}, "sigma must be at most"),
    ({"sigma": 1e-300}, "sigma must be a positive number (at least"),
    ({"sigma": 8.0, "e_min": -5.0}, "wider than the energy window"),
    ({"e_min": -1e308, "e_max": 1e308}, "e_min must be at least"),
    ({"e_max": 1e308}, "e_max must be at most"),
    ({"seed": 2**70}, "seed must be at most"),
    ({"epochs": 10**12}, "epochs must be at most"),
    ({"patience": 10**30}, "patience must be at most"),
    ({"batch_size": 10**30}, "batch_size must be at most"),
    ({"eval_batch_size": 10**30}, "eval_batch_size must be at most"),
    ({"subset": 10**30}, "subset must be at most"),
    ({"channels": (22, 10**6)}, "channels must all be between 1 and"),
    ({"convs_per_block": 10**6}, "convs_per_block must be at most"),
    ({"num_threads": 10**9}, "num_threads must be at most"),
    ({"lr": 1e300}, "lr must be at most"),
    ({"weight_decay": 1e308}, "weight_decay must be at most"),
    ({"coulomb_noise": 1e308}, "coulomb_noise must be at most"),
    ({"huber_delta": 1e308}, "huber_delta must be at most"),
    ({"n_points": 300.5}, "n_points"),
    ({"n_points": float("nan")}, "n_points"),
    ({"epochs": float("inf")}, "epochs"),
])
def test_numbers_beyond_physics_or_machine_are_refused(kw, words):
    with pytest.raises(ValidationError) as err:
        TrainConfig(**kw)
    assert words in str(err.value) and "\n" not in err.value.errors()[0]["msg"]


def test_every_numeric_field_has_an_upper_bound():
    """No number reaches the allocator unchecked: each int or float field (and each entry of a
    tuple of them) is bounded above, on its Field or by a validator."""
    import annotated_types

    from hpo.study.config import setting_type

    for name, info in TrainConfig.model_fields.items():
        base = setting_type(name)
        numeric = base in (int, float) or typing.get_origin(base) is tuple
        if not numeric or base is bool:
            continue
        bounded = any(isinstance(m, annotated_types.Le | annotated_types.Lt)
                      for m in info.metadata)
        assert bounded or name in {"channels", "betas"}, name
    with pytest.raises(ValidationError):
        TrainConfig(channels=(10**9,))


_UNDER_A_LIMIT = """
import resource, sys
limit = {limit}
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from pydantic import ValidationError
from model.config import TrainConfig
TrainConfig(subset=5000)  # the quick default fits
try:
    TrainConfig(**{kw})
except ValidationError as err:
    print(err.errors()[0]["msg"])
    sys.exit(0)
sys.exit("accepted")
"""


@pytest.mark.parametrize("kw", [
    {"subset": 100_000, "n_points": 9000},  # the arrays: 100k spectra of 9000 points
    {"subset": 1000, "channels": (2048, 2048, 2048, 2048), "convs_per_block": 16},  # network
    {"subset": 100_000, "batch_size": 100_000, "channels": (512, 512)},  # one batch's layers
])
def test_settings_needing_more_memory_than_the_machine_allows_are_refused(kw):
    """The estimate of the memory a setting needs is checked against what this process may
    use (here a real address-space limit, RLIMIT_AS, of 1.5 GiB), before anything is made."""
    code = _UNDER_A_LIMIT.format(limit=3 * 2**29, kw=kw)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=Path(__file__).parents[3])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "memory" in r.stdout and "GB" in r.stdout and "Traceback" not in r.stdout


def _error(**kw) -> ValidationError:
    with pytest.raises(ValidationError) as err:
        TrainConfig(**kw)
    return err.value


def test_validation_message_is_one_line_naming_each_setting():
    """The one formatter of pydantic errors (the CLI's line, a study file's)."""
    two = _error(sigma=0, colour="red", betas=(0.9,))
    line = validation_message(two, "t.toml")
    assert line.startswith("t.toml: sigma: sigma must be") and "\n" not in line
    assert "; unknown key 'colour'" in line and "; betas.1: required" in line
    assert validation_message(two, first=True).startswith("sigma: ")
    assert ";" not in validation_message(two, first=True)
    assert validation_message(_error(e_min=0, e_max=-1)).startswith("empty energy window")
