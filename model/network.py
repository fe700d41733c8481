"""The report's CNN (Ghosh et al. 2019): three blocks of three 3x3 convolutions, then a linear
layer to the Np spectrum points; its widths, depth, kernels, pooling, batch norm and dropout are
knobs of an architecture search (fields of ``TrainConfig``, whose defaults are the report's)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from model.config import NETWORK_FIELDS, TrainConfig
from model.contract import MATRIX_SIZE

_DEFAULT = {name: TrainConfig.model_fields[name].default for name in NETWORK_FIELDS}


class SpectraCNN(nn.Module):
    """Coulomb matrix (N, 1, 29, 29) -> spectrum (N, Np).

    Each of the ``len(channels)`` blocks is ``convs_per_block`` x [Conv2d k x k, padding k // 2,
    (BatchNorm2d,) ReLU] then a 2x2 max or average pooling: 29 -> 14 -> 7 -> 3 -> 1. The
    flattened features (the report: 42 * 3 * 3 = 378) go through dropout (when > 0) to
    Linear(features, Np). ``output_head="softplus"`` adds a softplus after that layer, so
    predicted intensities cannot be negative; "linear" (the report) has no output activation.
    With batch norm the convolutions have no bias (the norm's shift replaces it). Weights are
    Xavier-uniform, biases zero.

    The arguments are checked by ``TrainConfig``'s rules (strictly: Np must be an int); a bad
    one raises pydantic's ``ValidationError``, a ``ValueError`` naming it.

    In bf16 autocast the convolutional trunk runs in bf16 but the output layer stays in float32:
    the spectrum is what the losses and metrics see, and bf16's 8-bit mantissa would add about
    0.4% relative noise to every intensity.
    """

    def __init__(self, n_points: int, output_head: str = _DEFAULT["output_head"], *,
                 channels: Sequence[int] = _DEFAULT["channels"],
                 convs_per_block: int = _DEFAULT["convs_per_block"],
                 kernel_size: int = _DEFAULT["kernel_size"],
                 pooling: str = _DEFAULT["pooling"],
                 batch_norm: bool = _DEFAULT["batch_norm"],
                 dropout: float = _DEFAULT["dropout"]) -> None:
        super().__init__()
        spec = TrainConfig.model_validate(dict(
            n_points=n_points, output_head=output_head,
            channels=tuple(channels) if isinstance(channels, Sequence) else channels,
            convs_per_block=convs_per_block, kernel_size=kernel_size, pooling=pooling,
            batch_norm=batch_norm, dropout=dropout), strict=True)
        self.n_points = spec.n_points
        self.output_head = spec.output_head
        self.channels = spec.channels
        pool = nn.MaxPool2d if spec.pooling == "max" else nn.AvgPool2d
        layers: list[nn.Module] = []
        width, side = 1, MATRIX_SIZE
        for filters in spec.channels:
            for _ in range(spec.convs_per_block):
                layers.append(nn.Conv2d(width, filters, spec.kernel_size,
                                        padding=spec.kernel_size // 2, bias=not spec.batch_norm))
                if spec.batch_norm:
                    layers.append(nn.BatchNorm2d(filters))
                layers.append(nn.ReLU(inplace=True))
                width = filters
            layers.append(pool(2))
            side //= 2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else None
        self.head = nn.Linear(width * side * side, spec.n_points)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        h = self.features(x).flatten(1)
        if self.dropout is not None:
            h = self.dropout(h)
        with torch.autocast(h.device.type, enabled=False):
            out = self.head(h.float())
        return F.softplus(out) if self.output_head == "softplus" else out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
