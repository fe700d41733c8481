"""The report's CNN: exact parameter counts, shapes, initialisation, output heads."""

import math

import pytest
import torch

from model import SpectraCNN, count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(("n_points", "expected"), [(300, 221_529), (500, 297_329),
                                                     (700, 373_129)])
def test_parameter_counts_match_the_report(n_points, expected):
    assert count_parameters(SpectraCNN(n_points)) == expected


def test_layers_and_output_shape():
    model = SpectraCNN(300)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [22] * 3 + [47] * 3 + [42] * 3
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert (model.head.in_features, model.head.out_features) == (378, 300)
    x = torch.randn(5, 1, 29, 29)
    assert model(x).shape == (5, 300)
    assert model(x[:, 0]).shape == (5, 300)  # (N, 29, 29) also accepted


def test_xavier_uniform_weights_and_zero_biases():
    model = SpectraCNN(300)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            assert m.weight.abs().max() <= bound
            assert m.weight.abs().max() > 0.9 * bound  # uniform: the extremes are reached
            assert torch.all(m.bias == 0)


def test_softplus_head_is_never_negative():
    torch.manual_seed(0)
    linear, soft = SpectraCNN(300), SpectraCNN(300, output_head="softplus")
    soft.load_state_dict(linear.state_dict())
    x = torch.randn(64, 1, 29, 29) * 20
    out_linear, out_soft = linear(x), soft(x)
    assert (out_linear < 0).any()
    assert (out_soft >= 0).all()
    torch.testing.assert_close(out_soft, torch.nn.functional.softplus(out_linear))


def test_output_layer_stays_float32_under_bf16_autocast():
    model = SpectraCNN(300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(4, 1, 29, 29))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("bad", [1, 0, 300.0, "300"])
def test_bad_n_points(bad):
    with pytest.raises(ValueError, match="n_points"):
        SpectraCNN(bad)


def test_unknown_output_head():
    with pytest.raises(ValueError, match="output_head"):
        SpectraCNN(300, output_head="relu")
