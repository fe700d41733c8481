"""The report's CNN (Ghosh et al. 2019): three blocks of three 3x3 convolutions, then a linear
layer to the Np spectrum points; its widths, depth, kernels, pooling, batch norm and dropout are
knobs of an architecture search (fields of ``TrainConfig``, whose defaults are the report's).
Its output head is a knob too: the report's linear Np intensities, non-negative (softplus) ones,
or the 16 levels broadened into the spectrum (``output_head="levels"``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from data_prep.spectra import check_grid, gaussian_spectra
from model.config import NETWORK_FIELDS, TrainConfig
from model.contract import MATRIX_SIZE, N_LEVELS
from model.errors import ConfigError, DataError

_DEFAULT = {name: TrainConfig.model_fields[name].default for name in NETWORK_FIELDS}


class SpectraCNN(nn.Module):
    """Coulomb matrix (N, 1, 29, 29) -> spectrum (N, Np).

    Each of the ``len(channels)`` blocks is ``convs_per_block`` x [Conv2d k x k, padding k // 2,
    (BatchNorm2d,) ReLU] then a 2x2 max or average pooling: 29 -> 14 -> 7 -> 3 -> 1. With max
    pooling a block's last ReLU runs after the pooling, on a quarter of the values: ReLU is
    monotone, so max(relu(x)) = relu(max(x)) and the outputs and gradients are the same bit for
    bit, and a CPU step is 2-4 % faster (``bench/train_speed.py --anatomy``). The
    flattened features (the report: 42 * 3 * 3 = 378) go through dropout (when > 0) to the
    output layer. With batch norm the convolutions have no bias (the norm's shift replaces it).
    Weights are Xavier-uniform, biases zero.

    Output heads:

    - ``"linear"`` (the report): Linear(features, Np), no output activation.
    - ``"softplus"``: the same followed by a softplus, so intensities cannot be negative.
    - ``"levels"``: Linear(features, 16) gives the 16 levels (eV; :meth:`levels` sorts them
      ascending), and the spectrum is made from them analytically, by
      ``data_prep.spectra.gaussian_spectra``: unit-area Gaussians of width ``sigma`` on the
      grid of ``n_points`` over [e_min, e_max], the formula the target spectra are made with.
      So its spectra are never negative, hold exactly 16 peaks, and one trained model gives the
      spectrum at any sigma and Np (:meth:`spectrum`). The output layer's bias starts at the
      mean sorted training levels (:meth:`init_levels`, called by the trainer): a Gaussian gives
      a level no gradient beyond a few sigma from every target peak, so a level that started far
      off (at 0 eV, say) would never move; from the mean levels every predicted level starts
      among the targets' peaks (the features are small at initialisation: the Xavier-uniform
      weights move them about 0.1 eV). The same reason makes a narrow training sigma a poor
      one: trained at 0.1 eV a levels model reached 89.1 % fair accuracy where one trained at
      0.5 eV reached 92.8 %, and that one predicts 0.1 eV spectra as well (2,000 molecules, 15
      epochs, lr 1e-3). No auxiliary loss on the levels themselves: an L1 term on the sorted
      levels (weight 0.1) added 0.2 points at 0.5 eV and 1 point at 0.1 eV in the same test,
      too little for a second target and its weight.

    ``sigma``, ``e_min`` and ``e_max`` say which spectrum ``forward`` makes (the levels head
    broadens with them; the other heads only know their one grid).

    The arguments are checked by ``TrainConfig``'s rules (strictly: Np must be an int); a bad
    one raises pydantic's ``ValidationError``, a ``ValueError`` naming it.

    In bf16 autocast the convolutional trunk runs in bf16 but the output layer (and the levels
    head's broadening) stays in float32: the spectrum is what the losses and metrics see, and
    bf16's 8-bit mantissa would add about 0.4% relative noise to every intensity.
    """

    def __init__(self, n_points: int, output_head: str = _DEFAULT["output_head"], *,
                 channels: Sequence[int] = _DEFAULT["channels"],
                 convs_per_block: int = _DEFAULT["convs_per_block"],
                 kernel_size: int = _DEFAULT["kernel_size"],
                 pooling: str = _DEFAULT["pooling"],
                 batch_norm: bool = _DEFAULT["batch_norm"],
                 dropout: float = _DEFAULT["dropout"],
                 sigma: float = _DEFAULT["sigma"],
                 e_min: float = _DEFAULT["e_min"],
                 e_max: float = _DEFAULT["e_max"]) -> None:
        super().__init__()
        spec = TrainConfig.model_validate(dict(
            n_points=n_points, output_head=output_head,
            channels=tuple(channels) if isinstance(channels, Sequence) else channels,
            convs_per_block=convs_per_block, kernel_size=kernel_size, pooling=pooling,
            batch_norm=batch_norm, dropout=dropout, sigma=sigma, e_min=e_min, e_max=e_max),
            strict=True)
        self.n_points = spec.n_points
        self.output_head = spec.output_head
        self.channels = spec.channels
        self.sigma, self.e_min, self.e_max = spec.sigma, spec.e_min, spec.e_max
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
            if spec.pooling == "max":  # see the class docstring: ReLU after the max, not before
                layers[-2:] = layers[-1], layers[-2]
            side //= 2
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(spec.dropout) if spec.dropout > 0 else None
        outputs = N_LEVELS if self.predicts_levels else spec.n_points
        self.head = nn.Linear(width * side * side, outputs)
        self.reset_parameters()

    @property
    def predicts_levels(self) -> bool:
        """Whether the output layer gives the 16 levels (``output_head="levels"``)."""
        return self.output_head == "levels"

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    @torch.no_grad()
    def init_levels(self, mean_levels) -> None:
        """Start the levels head at ``mean_levels`` (16 eV, the mean sorted training levels):
        its output layer's bias (see the class docstring for why)."""
        self._need_levels("init_levels")
        mean = torch.as_tensor(mean_levels, dtype=torch.float32).flatten()
        if mean.shape != (N_LEVELS,) or not bool(torch.isfinite(mean).all()):
            raise DataError(f"the levels head starts at {N_LEVELS} finite mean levels, got "
                            f"{mean.tolist()}")
        self.head.bias.copy_(mean.to(self.head.bias.device))

    def _need_levels(self, what: str) -> None:
        if not self.predicts_levels:
            raise ConfigError(f"{what} needs a model that predicts levels (output_head="
                              f"'levels'); this one has the {self.output_head!r} head")

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The flattened features of (N, 1, 29, 29) or (N, 29, 29) matrices, after dropout."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        h = self.features(x).flatten(1)
        return self.dropout(h) if self.dropout is not None else h

    def head_values(self, h: torch.Tensor) -> torch.Tensor:
        """The output layer of the features, in float32 (outside autocast)."""
        with torch.autocast(h.device.type, enabled=False):
            return self.head(h.float())

    def finish(self, out: torch.Tensor, sigma: float | None = None,
               n_points: int | None = None) -> torch.Tensor:
        """The spectrum from the output layer's values ``out`` (.., Np or 16): as they are
        (linear), their softplus, or the levels broadened at ``sigma`` / ``n_points`` (default:
        the network's). ``model.packed`` computes ``out`` for several members at once."""
        if sigma is not None or n_points is not None:  # asked for: a grid that can exist?
            check_grid(self.sigma if sigma is None else sigma,
                       self.n_points if n_points is None else n_points, self.e_min, self.e_max)
        if self.predicts_levels:
            sigma = self.sigma if sigma is None else sigma
            n_points = self.n_points if n_points is None else n_points
            with torch.autocast(out.device.type, enabled=False):
                return gaussian_spectra(out.float(), sigma, n_points, self.e_min, self.e_max)
        self._check_grid(sigma, n_points)
        return F.softplus(out) if self.output_head == "softplus" else out

    def _check_grid(self, sigma: float | None, n_points: int | None) -> None:
        """A spectrum head knows only the sigma and Np it was trained for."""
        other_sigma = sigma is not None and abs(sigma - self.sigma) > 1e-9 * self.sigma
        if other_sigma or (n_points is not None and n_points != self.n_points):
            raise ConfigError(
                f"this model predicts the spectrum at sigma {self.sigma:g} eV, Np "
                f"{self.n_points} only (its {self.output_head!r} head outputs the grid "
                f"points); asked for sigma {sigma if sigma is not None else self.sigma:g}, Np "
                f"{n_points or self.n_points}. A model trained with output_head='levels' "
                "gives any sigma and Np")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.finish(self.head_values(self.trunk(x)))

    def spectrum(self, x: torch.Tensor, sigma: float | None = None,
                 n_points: int | None = None) -> torch.Tensor:
        """Spectra of the matrices ``x`` at ``sigma`` eV on ``n_points`` over the network's
        window (default: its own). Only a levels head can change them (a spectrum head raises
        ``ConfigError`` for another sigma or Np)."""
        return self.finish(self.head_values(self.trunk(x)), sigma, n_points)

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 16) predicted levels of the matrices ``x``, eV, ascending (levels head only)."""
        self._need_levels("levels()")
        return torch.sort(self.head_values(self.trunk(x)), dim=-1).values


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
