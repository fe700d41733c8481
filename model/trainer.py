"""One training run's state: the network, AdamW and the data, all on the training device.

The whole dataset lives on the training device (under 1 GB for all of QM9). Every epoch the
training matrices are re-randomised there, shuffled with a seeded generator and cut into
batches by indexing, so no batch goes through the host. On CUDA the training step (gather the
batch, forward, loss, backward, AdamW) is captured once as a CUDA graph and replayed: with batches
of 90 tiny matrices, launching the ~100 kernels of a step one by one would cost more than
running them.

Learning-rate schedules (``TrainConfig.lr_schedule``, ``warmup_epochs``) set the rate before each
epoch (``TrainConfig.lr_at``). On CUDA a scheduled rate lives in a device tensor that the fused,
capturable AdamW reads, and is updated in place, so the captured graph trains at each epoch's
rate; a constant rate stays a Python float, as it always was. The epoch loop is
:func:`model.loop.train`.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import torch

from data_prep import TrainingData, randomize_coulomb
from model.config import TrainConfig
from model.contract import EPOCH_METRICS, MATRIX_SIZE, SCALE_FREE_LOSSES
from model.device import keep_freed_memory, resolve_device, set_threads, use_amp
from model.errors import DataError, TrainingFailed
from model.losses import get_loss
from model.metrics import evaluate
from model.network import SpectraCNN


def check_data(config: TrainConfig, data: TrainingData) -> None:
    """The prepared data must be what the config describes."""
    same = (math.isclose(data.sigma, config.sigma, rel_tol=1e-9) and data.n_points ==
            config.n_points and math.isclose(data.e_min, config.e_min) and
            math.isclose(data.e_max, config.e_max))
    if not same:
        raise DataError(
            f"the data were prepared for sigma={data.sigma:g} eV, Np={data.n_points}, window "
            f"[{data.e_min:g}, {data.e_max:g}] eV, but the config asks for sigma="
            f"{config.sigma:g}, Np={config.n_points}, [{config.e_min:g}, {config.e_max:g}]: "
            "call data_prep.prepare with the config's values")
    square = (MATRIX_SIZE, MATRIX_SIZE)
    if data.spectra.shape[1:] != (config.n_points,) or data.coulomb.shape[1:] != square:
        raise DataError(f"spectra {data.spectra.shape} / Coulomb matrices "
                         f"{data.coulomb.shape} do not match Np={config.n_points}")
    for name, rows in (("training", data.train_rows), ("test", data.test_rows),
                       ("validation", data.validation_rows)):
        if len(rows) == 0:
            raise DataError(f"the data have no {name} molecules (use a larger subset)")


def mean_levels(data: TrainingData) -> np.ndarray:
    """(16,) the training molecules' sorted levels averaged level by level (eV): where a levels
    head starts (``SpectraCNN.init_levels``). Missing (NaN) levels, which an imported dataset
    may have, sort last and are left out of their level's mean."""
    levels = np.sort(np.asarray(data.levels[data.train_rows], np.float64), axis=1)
    counts = np.isfinite(levels).sum(axis=0)
    if not counts.all():
        raise DataError(f"no training molecule has level {int(np.argmin(counts)) + 1} of "
                        f"{levels.shape[1]}: a levels head cannot start there")
    return np.nanmean(levels, axis=0)


class Trainer:
    """The state of one run: model, optimiser, device-resident data. ``train`` drives it; the
    speed benchmark times ``train_epoch`` on its own."""

    def __init__(self, config: TrainConfig, data: TrainingData,
                 arrays: dict | None = None) -> None:
        """``arrays``: a cache of device-resident data shared by trainers (packed trials of the
        same data keep one copy on the device)."""
        check_data(config, data)
        self.config, self.data = config, data
        self.device = resolve_device(config.device)
        if self.device.type == "cpu":
            set_threads(config.num_threads)  # busy cores: fewer
            keep_freed_memory()
        else:
            torch.backends.cudnn.benchmark = True
        self.amp = use_amp(config, self.device)
        torch.manual_seed(config.seed)
        self.model = SpectraCNN(**config.network_kwargs()).to(self.device)
        if self.model.predicts_levels:
            self.model.init_levels(mean_levels(data))
        self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.loss_fn = get_loss(config.loss, huber_delta=config.huber_delta, de=data.de)
        cuda = self.device.type == "cuda"
        # AdamW with weight_decay 0 takes exactly Adam's steps (the report's optimiser). A
        # scheduled lr on CUDA is a device tensor, which the captured graph reads (see above).
        lr: float | torch.Tensor = config.lr_at(1)
        if cuda and config.scheduled:
            lr = torch.tensor(lr, device=self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, betas=config.betas,
            weight_decay=config.weight_decay, fused=True, capturable=cuda)
        self.step_model = torch.compile(self.model) if config.compile else self.model

        def put(rows, what):
            return torch.from_numpy(np.ascontiguousarray(what[rows])).to(self.device)

        key = (id(data), str(self.device))
        if arrays is None or key not in arrays:
            tensors = (put(data.train_rows, data.coulomb).unsqueeze(1),
                       put(data.train_rows, data.spectra),
                       put(data.test_rows, data.coulomb).unsqueeze(1),
                       put(data.test_rows, data.spectra),
                       put(data.validation_rows, data.coulomb).unsqueeze(1),
                       put(data.validation_rows, data.spectra))
            if arrays is not None:
                arrays[key] = (data, tensors)  # data kept: its id stays unique
        else:
            tensors = arrays[key][1]
        (self.x_train, self.y_train, self.x_test, self.y_test, self.x_val,
         self.y_val) = tensors
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        self.epoch = 0
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_failed = False

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    def set_lr(self, lr: float) -> None:
        """The learning rate of the next steps (in place when it is a tensor: a captured CUDA
        graph reads it)."""
        for group in self.optimizer.param_groups:
            if torch.is_tensor(group["lr"]):
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr

    def _autocast(self):
        # Caching must be off for CUDA-graph capture; it saves nothing here anyway.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp,
                              cache_enabled=False)

    def _forward_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            pred = self.step_model(x.contiguous(memory_format=torch.channels_last))
        return self.loss_fn(pred.float(), y)

    def _eager_step(self, x, y) -> torch.Tensor:
        loss = self._forward_loss(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    # -- CUDA graph of one full-size training step -------------------------------------------
    def _capture(self) -> None:
        bs = self.config.batch_size
        self._x_epoch = torch.empty_like(self.x_train)
        self._x_epoch.copy_(self.x_train)
        self._idx = torch.arange(bs, device=self.device)
        self._loss_sum = torch.zeros((), device=self.device)
        initial = copy.deepcopy(self.model.state_dict())
        # A resumed run has an optimiser state to keep; a fresh one has none yet (zeroed below).
        initial_opt = {p: {k: v.clone() for k, v in st.items() if torch.is_tensor(v)}
                       for p, st in self.optimizer.state.items()}
        try:
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up (cuDNN autotuning, optimiser state)
                for _ in range(3):
                    self._eager_step(self._x_epoch[self._idx], self.y_train[self._idx])
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            self.optimizer.zero_grad(set_to_none=True)
            with torch.cuda.graph(graph):
                loss = self._forward_loss(self._x_epoch[self._idx], self.y_train[self._idx])
                loss.backward()
                self.optimizer.step()
                self._loss_sum.add_(loss.detach() * bs)
        finally:
            # Undo the warm-up steps in place, captured or not (a graph holds these tensors):
            # the run starts from the seeded (or resumed) weights and optimiser either way.
            torch.cuda.synchronize(self.device)
            with torch.no_grad():
                for name, value in self.model.state_dict().items():
                    value.copy_(initial[name])
                for param, state in self.optimizer.state.items():
                    for key, value in state.items():
                        if not torch.is_tensor(value):
                            continue
                        saved = initial_opt.get(param, {}).get(key)
                        if saved is None:
                            value.zero_()
                        else:
                            value.copy_(saved)
                self._loss_sum.zero_()
        self._graph = graph

    def _use_graph(self) -> bool:
        if self.device.type != "cuda" or self._graph_failed:
            return False
        if self._graph is None and self.n_train >= self.config.batch_size:
            try:
                self._capture()
            except Exception as err:  # an unsupported op: fall back to eager steps
                warnings.warn(f"CUDA graph capture failed, training eagerly: {err}",
                              stacklevel=2)
                self._graph_failed = True
                self._graph = None
                self.optimizer.zero_grad(set_to_none=True)
        return self._graph is not None

    # -- saving and restoring ----------------------------------------------------------------
    def get_state(self) -> dict:
        """Everything that decides the next epochs: weights, AdamW state, the generator of the
        shuffling and Coulomb noise, torch's global CPU RNG (dropout on the CPU), the CUDA RNG
        (dropout on CUDA) and the epoch (the learning-rate schedule's position). Tensors are
        copied to the CPU."""
        def cpu(x):
            if torch.is_tensor(x):
                return x.detach().cpu().clone()
            if isinstance(x, dict):
                return {k: cpu(v) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return type(x)(cpu(v) for v in x)
            return x

        opt = self.optimizer.state_dict()
        opt = {"state": cpu(opt["state"]),
               "param_groups": [{k: (float(v) if torch.is_tensor(v) else v)
                                 for k, v in g.items()} for g in opt["param_groups"]]}
        return {
            "epoch": self.epoch,
            "model": cpu(self.model.state_dict()),
            "optimizer": opt,
            "generator": self.generator.get_state(),
            "device_type": self.device.type,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state(self.device) if self.device.type == "cuda"
                         else None),
        }

    def set_state(self, state: dict) -> None:
        """Continue from :meth:`get_state`'s result (on this or another device). The generator
        and the CUDA RNG are restored when both runs are on the same kind of device; across
        kinds (a CPU state continued on CUDA) the generator is seeded with (seed, epoch): the
        run continues, not bit for bit."""
        self.model.load_state_dict(state["model"])
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr  # a device tensor stays that tensor (a CUDA graph reads it)
        self.epoch = int(state["epoch"])
        self.set_lr(self.config.lr_at(max(self.epoch, 1)))
        if state.get("device_type", "cpu") == self.device.type:
            self.generator.set_state(state["generator"])
        else:
            self.generator.manual_seed(self.config.seed * 1_000_003 + self.epoch)
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng") is not None:  # same kind
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)

    # -- epochs ---------------------------------------------------------------------------------
    def train_epoch(self, max_batches: int | None = None) -> float:
        """One pass over the (re-randomised, shuffled) training set; returns the mean loss.
        ``max_batches`` stops early (for speed measurements)."""
        self.epoch += 1
        if self.config.scheduled:
            self.set_lr(self.config.lr_at(self.epoch))
        self.model.train()
        cfg, n, bs = self.config, self.n_train, self.config.batch_size
        with torch.no_grad():
            x = (randomize_coulomb(self.x_train, cfg.coulomb_noise, self.generator)
                 if cfg.coulomb_noise > 0 else self.x_train)
            order = torch.randperm(n, generator=self.generator, device=self.device)
        if max_batches is not None:
            n = min(n, max_batches * bs)
        full = n - n % bs
        if self._use_graph() and self._graph is not None:
            graph = self._graph
            self._x_epoch.copy_(x)
            self._loss_sum.zero_()
            for s in range(0, full, bs):
                self._idx.copy_(order[s : s + bs])
                graph.replay()
            total = self._loss_sum.clone()
            if full < n:
                rest = order[full:n]
                total += self._eager_step(x[rest], self.y_train[rest]) * (n - full)
                self.optimizer.zero_grad(set_to_none=True)
            mean = float(total) / n
        else:
            total, cpu = torch.zeros((), device=self.device), self.device.type == "cpu"
            for s in range(0, n, bs):
                idx = order[s : s + bs]
                loss = self._eager_step(x[idx], self.y_train[idx]) * len(idx)
                if cpu and not torch.isfinite(loss):  # a free check on the CPU: stop at once
                    raise TrainingFailed(self.epoch, f"training loss is {float(loss)} at "
                                         f"batch {s // bs + 1} (lr={cfg.lr:g})")
                total = total + loss
            mean = float(total) / n
        if not math.isfinite(mean):
            raise TrainingFailed(self.epoch, f"training loss is {mean} (lr={cfg.lr:g})")
        return mean

    @torch.inference_mode()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """float32 predictions of (N, 1, 29, 29) matrices, in large batches."""
        self.model.eval()
        bs = self.config.eval_batch_size or (256 if self.device.type == "cpu" else 8192)
        out = [self.model(x[s : s + bs].contiguous(memory_format=torch.channels_last)).float()
               for s in range(0, len(x), bs)]
        return torch.cat(out)

    def test_epoch(self) -> tuple[float, dict[str, float]]:
        pred = self.predict(self.x_test)
        loss = float(self.loss_fn(pred, self.y_test))
        if not math.isfinite(loss):
            raise TrainingFailed(self.epoch, f"test loss is {loss} (lr={self.config.lr:g})")
        metrics = evaluate(pred, self.y_test, None, self.data.grid, self.config.sigma,
                           self.config.reference_sigma, metrics=EPOCH_METRICS,
                           scale_free=self.config.loss in SCALE_FREE_LOSSES)
        return loss, metrics

