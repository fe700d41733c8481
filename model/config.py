"""``TrainConfig``: everything one training run needs, validated (pydantic).

Defaults are the report's: Adam with lr 1e-4 and betas (0.9, 0.999), batch 90, RMSE loss,
sigma 0.5 eV, Np 300 on [-30, 0] eV. The report trained for 2500 epochs; the default here is 50,
enough for a first look (set ``epochs=2500`` to reproduce it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from model.contract import E_MAX, E_MIN, LOSSES, OUTPUT_HEADS

DEFAULT_REFERENCE_SIGMA = 0.5


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Data: which spectra to learn (must match the prepared dataset).
    sigma: float = Field(0.5, description="Gaussian broadening of the target spectra, eV.")
    n_points: int = Field(300, description="Np: points of the energy grid.")
    e_min: float = Field(E_MIN, description="Low end of the energy window, eV.")
    e_max: float = Field(E_MAX, description="High end of the energy window, eV.")
    subset: int | None = Field(None, description="Only this many molecules (all when None).")
    dataset: Path | None = Field(None, description="Levels dataset file (bundled when None).")
    coulomb_noise: float = Field(
        1.0, ge=0, description="Std of the row-norm noise of the randomised Coulomb matrices "
        "(0: plain sorted matrices, no augmentation).")

    # Model and loss.
    output_head: Literal["linear", "softplus"] = Field(
        "linear", description="'softplus' makes predicted intensities non-negative.")
    loss: str = Field("rmse", description=f"Training loss: one of {', '.join(LOSSES)}.")
    huber_delta: float = Field(1.0, gt=0, description="Delta of the huber loss.")

    # Optimisation.
    lr: float = Field(1e-4, gt=0, description="Adam learning rate.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam betas.")
    batch_size: int = Field(90, ge=1, description="Molecules per optimiser step.")
    epochs: int = Field(50, ge=1, description="Maximum epochs (the report: 2500).")
    patience: int | None = Field(
        None, ge=1, description="Stop after this many epochs without a lower test loss "
        "(None: never, as the report, which ran all its epochs).")
    seed: int = Field(0, ge=0, description="Seeds weights, shuffling and Coulomb noise.")

    # Scoring.
    reference_sigma: float | None = Field(
        None, gt=0, description="Width (eV) that fair_accuracy re-broadens to, >= sigma; "
        "compare runs at one value. Default: max(0.5, sigma).")

    # Where and how fast.
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda' or "
                        "'cuda:N'.")
    amp: Literal["auto", "bf16", "off"] = Field(
        "auto", description="bf16 autocast of the convolutions (the output layer stays "
        "float32): 'auto' uses it on CUDA and on CPUs with AMX.")
    compile: bool = Field(False, description="torch.compile the model for training steps "
                          "(slower on the CPU here: 2,300 vs 3,350 samples/s).")
    num_threads: int | None = Field(None, ge=1, description="CPU threads (all cores when None).")
    eval_batch_size: int | None = Field(
        None, ge=1, description="Molecules per evaluation batch (default: 256 on the CPU, "
        "where it stays in cache, 8192 on CUDA).")
    checkpoint_dir: Path | None = Field(
        None, description="Write the best model to checkpoint_dir/checkpoint.pt.")

    @field_validator("sigma", "e_min", "e_max", "reference_sigma", "lr", "huber_delta")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("sigma")
    @classmethod
    def _positive_sigma(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"sigma must be a positive width in eV, got {v}")
        return v

    @field_validator("n_points")
    @classmethod
    def _n_points(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"Np (n_points) must be at least 2, got {v}")
        return v

    @field_validator("subset")
    @classmethod
    def _subset(cls, v: int | None) -> int | None:
        if v is not None and v < 20:
            raise ValueError(f"subset must be at least 20 molecules, got {v}")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        if v not in LOSSES:
            raise ValueError(f"unknown loss {v!r}; choose one of: {', '.join(LOSSES)}")
        return v

    @field_validator("output_head", mode="before")
    @classmethod
    def _head(cls, v):
        if v not in OUTPUT_HEADS:
            raise ValueError(f"unknown output_head {v!r}; choose one of: {', '.join(OUTPUT_HEADS)}")
        return v

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, v):
        if isinstance(v, bool):  # amp=True / False read naturally in TOML and Python.
            return "bf16" if v else "off"
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"Adam betas must lie in [0, 1), got {v}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {v!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if not self.e_max > self.e_min:
            raise ValueError(f"empty energy window: e_min {self.e_min} >= e_max {self.e_max}")
        if self.reference_sigma is None:
            self.reference_sigma = max(DEFAULT_REFERENCE_SIGMA, self.sigma)
        if self.reference_sigma < self.sigma:
            raise ValueError(
                f"reference_sigma {self.reference_sigma} is below sigma {self.sigma}: fair "
                "accuracy re-broadens to reference_sigma, which must be >= every sigma compared")
        return self

    @property
    def de(self) -> float:
        """The report's grid spacing dE = (e_max - e_min) / Np, eV."""
        return (self.e_max - self.e_min) / self.n_points
