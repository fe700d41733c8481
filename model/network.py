"""The report's CNN (Ghosh et al. 2019): three blocks of three 3x3 convolutions, then a linear
layer to the Np spectrum points."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from model.contract import MATRIX_SIZE, OUTPUT_HEADS

FILTERS = (22, 47, 42)


class SpectraCNN(nn.Module):
    """Coulomb matrix (N, 1, 29, 29) -> spectrum (N, Np).

    Each block is 3 x [Conv2d 3x3, padding 1, ReLU] then MaxPool2d(2): 29 -> 14 -> 7 -> 3, and the
    flattened 42 * 3 * 3 = 378 features feed Linear(378, Np). ``output_head="softplus"`` adds a
    softplus after that layer, so predicted intensities cannot be negative; "linear" (the report)
    has no output activation. Weights are Xavier-uniform, biases zero.

    In bf16 autocast the convolutional trunk runs in bf16 but the output layer stays in float32:
    the spectrum is what the losses and metrics see, and bf16's 8-bit mantissa would add about
    0.4% relative noise to every intensity.
    """

    def __init__(self, n_points: int, output_head: str = "linear") -> None:
        super().__init__()
        if not isinstance(n_points, int) or isinstance(n_points, bool) or n_points < 2:
            raise ValueError(f"n_points (Np) must be an integer >= 2, got {n_points!r}")
        if output_head not in OUTPUT_HEADS:
            raise ValueError(f"unknown output_head {output_head!r}; choose one of {OUTPUT_HEADS}")
        self.n_points = n_points
        self.output_head = output_head
        layers: list[nn.Module] = []
        channels = 1
        for filters in FILTERS:
            for _ in range(3):
                layers += [nn.Conv2d(channels, filters, 3, padding=1), nn.ReLU(inplace=True)]
                channels = filters
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = MATRIX_SIZE
        for _ in FILTERS:
            side //= 2
        self.head = nn.Linear(channels * side * side, n_points)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight, generator=generator)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(1)
        h = self.features(x).flatten(1)
        with torch.autocast(h.device.type, enabled=False):
            out = self.head(h.float())
        return F.softplus(out) if self.output_head == "softplus" else out


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
