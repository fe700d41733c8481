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


# --- the architecture-search knobs ---------------------------------------------------------------

def test_knobs_change_the_parameter_count_as_computed_by_hand():
    net = SpectraCNN(100, channels=(8, 16), convs_per_block=2, kernel_size=5, pooling="avg",
                     batch_norm=True)
    # Batch norm: convolutions without bias, each followed by a norm of 2 x channels parameters.
    block1 = (1 * 8 * 5 * 5 + 2 * 8) + (8 * 8 * 5 * 5 + 2 * 8)
    block2 = (8 * 16 * 5 * 5 + 2 * 16) + (16 * 16 * 5 * 5 + 2 * 16)
    head = (16 * 7 * 7) * 100 + 100  # two poolings: 29 -> 14 -> 7
    assert count_parameters(net) == block1 + block2 + head == 89_996
    # One block of one convolution, with bias, no norm: 29 -> 14.
    net = SpectraCNN(50, channels=(10,), convs_per_block=1)
    assert count_parameters(net) == (1 * 10 * 9 + 10) + (10 * 14 * 14) * 50 + 50 == 98_150


def test_knobs_build_the_stated_layers():
    net = SpectraCNN(100, channels=(8, 16), convs_per_block=2, kernel_size=5, pooling="avg",
                     batch_norm=True, dropout=0.25)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 16, 16]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) and c.bias is None
               for c in convs)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["AvgPool2d"] + \
        ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["AvgPool2d"]
    assert isinstance(net.dropout, torch.nn.Dropout) and net.dropout.p == 0.25
    assert net.head.in_features == 16 * 7 * 7
    assert net(torch.randn(3, 1, 29, 29)).shape == (3, 100)
    # The report's network has neither norm nor dropout, and max pooling.
    plain = SpectraCNN(300)
    assert plain.dropout is None
    assert not any(isinstance(m, torch.nn.BatchNorm2d | torch.nn.AvgPool2d)
                   for m in plain.modules())


def test_avg_pooling_is_used():
    """Same weights, max vs avg pooling: the outputs differ, and avg equals a hand-made trunk."""
    torch.manual_seed(1)
    mx = SpectraCNN(20, channels=(4,), convs_per_block=1)
    avg = SpectraCNN(20, channels=(4,), convs_per_block=1, pooling="avg")
    avg.load_state_dict(mx.state_dict())
    x = torch.randn(2, 1, 29, 29)
    conv = torch.relu(mx.features[0](x))
    expected = avg.head(torch.nn.functional.avg_pool2d(conv, 2).flatten(1))
    torch.testing.assert_close(avg(x), expected)
    assert not torch.allclose(mx(x), avg(x))


def test_four_blocks_reach_one_pixel():
    net = SpectraCNN(30, channels=(4, 4, 4, 4), convs_per_block=1)
    assert net.head.in_features == 4  # 29 -> 14 -> 7 -> 3 -> 1
    assert net(torch.randn(2, 29, 29)).shape == (2, 30)


def test_dropout_only_in_training_mode():
    torch.manual_seed(0)
    net = SpectraCNN(50, dropout=0.5)
    x = torch.randn(4, 1, 29, 29)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    torch.testing.assert_close(net(x), net(x))


def test_batch_norm_tracks_statistics_in_training():
    net = SpectraCNN(50, channels=(6,), convs_per_block=1, batch_norm=True)
    norm = net.features[1]
    net.train()
    net(torch.randn(8, 1, 29, 29) * 3 + 2)
    assert int(norm.num_batches_tracked) == 1 and not torch.all(norm.running_mean == 0)


@pytest.mark.parametrize(("kw", "match"), [
    ({"channels": ()}, "channels needs at least 1 entry"),
    ({"channels": (4, 4, 4, 4, 4)}, "channels takes at most 4 entries"),
    ({"channels": (4, 0)}, "channels must all be at least 1"),
    ({"kernel_size": 4}, "kernel_size must be odd"),
    ({"convs_per_block": 0}, "convs_per_block must be at least 1"),
    ({"pooling": "min"}, "unknown pooling 'min'"),
    ({"dropout": 1.0}, "dropout must be below 1"),
    ({"sigma": 0}, "sigma must be a positive number"),
    ({"e_min": 0.0}, "empty energy window"),
])
def test_bad_knobs(kw, match):
    with pytest.raises(ValueError, match=match):
        SpectraCNN(300, **kw)


# --- the block's last ReLU after the max pooling (the same network, less work) -----------------

def _report_order(net: SpectraCNN, x: torch.Tensor) -> torch.Tensor:
    """The report's order written out: every convolution (and norm) then its ReLU, then the
    pooling. ``net`` supplies only the weights."""
    F = torch.nn.functional
    convs = [m for m in net.features if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.features if isinstance(m, torch.nn.BatchNorm2d)]
    per_block = len(convs) // len(net.channels)
    h = x
    for i, conv in enumerate(convs):
        h = conv(h)
        if norms:
            h = norms[i](h)
        h = F.relu(h)
        if (i + 1) % per_block == 0:
            h = F.max_pool2d(h, 2)
    return net.head(h.flatten(1))


@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_relu_after_max_pooling_changes_no_output_and_no_gradient(batch_norm, layout):
    torch.manual_seed(3)
    net = SpectraCNN(300, batch_norm=batch_norm).to(memory_format=layout)
    x = (torch.randn(16, 1, 29, 29) * 10).contiguous(memory_format=layout)
    grads = []
    for forward in (net, lambda x: _report_order(net, x)):
        net.zero_grad()
        out = forward(x)
        out.square().mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
        if len(grads) == 1:
            first = out.detach()
    assert torch.equal(first, out.detach())
    for a, b in zip(*grads, strict=True):
        assert torch.equal(a, b)


def test_each_block_pools_before_its_last_relu_only_for_max_pooling():
    kinds = [type(m).__name__ for m in SpectraCNN(300, channels=(4, 4), convs_per_block=2).features]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "MaxPool2d", "ReLU"] * 2
    avg = SpectraCNN(300, channels=(4,), convs_per_block=1, pooling="avg").features
    assert [type(m).__name__ for m in avg] == ["Conv2d", "ReLU", "AvgPool2d"]  # not monotone
