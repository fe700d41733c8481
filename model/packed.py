"""Packed trials: several runs trained as one batched computation on one device.

The report's CNN (221k parameters, batches of 90 matrices of 29x29) leaves a GPU almost idle.
A :class:`Pack` holds K runs (:class:`model.loop.Run`, each with its own :class:`Trainer`:
weights, AdamW state, learning rate and schedule, loss, targets, data order and Coulomb-matrix
randomisation) and trains their epochs together: every step stacks the members' weights
(``torch.stack``, differentiable, so each member's gradient flows back to its own parameters),
runs the convolutional trunk once under ``torch.func.vmap`` (one grouped convolution per layer
instead of K small ones), the output layer as one batched matrix product, then each member's
own loss on its own slice, one backward of their sum (member k's gradient is exactly that of its
own loss), and each member's own fused AdamW step.  Test evaluation, model selection, state
saving and the final validation metrics are each member's lone code (:class:`model.loop.Run`).

Same numbers as alone: a member draws its data order and Coulomb noise from its own generator in
the lone run's order, starts from the lone run's seeded weights, and keeps its own copy of
torch's global RNG (dropout) which is swapped in around its dropout and its state saves.  On the
CPU in float32 a packed member's per-epoch losses and final metrics equal a lone run's to
rounding (vmap's grouped convolutions sum in another order: the test states the tolerance).

Which runs can share a pack (:func:`pack_key`): the same device and bf16 decision, Np, batch
size, number of training molecules (so every step has the same batch size), network shape
(channels, convolutions per block, kernel, pooling, batch norm) and output layer (Np
intensities, or 16 levels for ``output_head="levels"``).  Everything else may differ per
member: sigma (its targets, and the width a levels head broadens with), loss, learning rate,
schedule, betas, weight decay, noise, seed, dropout, linear or softplus head, epochs and
patience.  A caller (``hpo.execution.packed``) keeps one pack per key.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import torch
from torch.func import functional_call, vmap

from data_prep import TrainingData, randomize_coulomb
from model.checkpoint import TrainingState
from model.config import TrainConfig
from model.device import resolve_device, use_amp
from model.errors import TrainingFailed
from model.loop import EpochReport, Run, TrainResult
from model.trainer import Trainer, check_data

__all__ = ["Pack", "PackKey", "pack_key", "train_packed"]

PackKey = tuple

#: TrainConfig fields that shape the batched computation: members of a pack agree on them.
SHAPE_FIELDS = ("n_points", "batch_size", "channels", "convs_per_block", "kernel_size",
                "pooling", "batch_norm")


def pack_key(config: TrainConfig, data: TrainingData) -> PackKey:
    """Runs with equal keys can share a pack (see the module docstring)."""
    device = resolve_device(config.device)
    # The output layer's size: the levels head's 16 rows cannot stack with Np rows.
    levels_head = config.output_head == "levels"
    return (str(device), use_amp(config, device), len(data.train_rows),
            *(getattr(config, f) for f in SHAPE_FIELDS), levels_head)


class Pack:
    """K runs trained together (see the module docstring). :meth:`start` adds a run (at any
    time: a freed slot is refilled between epochs), :meth:`train_epoch` trains one epoch of
    every member, :meth:`end_epoch` hands a member its epoch (test evaluation, ``on_epoch``),
    :meth:`remove` takes a finished member out."""

    def __init__(self) -> None:
        self.members: list[Run] = []
        self.key: PackKey | None = None
        self.arrays: dict = {}  # device-resident data, one copy per dataset
        self._rng: dict[int, Any] = {}  # id(run) -> its own global RNG state (dropout)
        self._template: torch.nn.Module | None = None

    def __len__(self) -> int:
        return len(self.members)

    def fits(self, config: TrainConfig, data: TrainingData) -> bool:
        return self.key is None or self.key == pack_key(config, data)

    def start(self, config: TrainConfig, data: TrainingData,
              on_epoch: Callable[[EpochReport], None] | None = None, *,
              state_path: str | Path | None = None, save_interval: float = 0.0,
              on_resume: Callable[[TrainingState], None] | None = None) -> Run:
        """A new member, seeded (or resumed) exactly as a lone run. A run that is over at once
        (resumed after its last epoch or its early stop) is returned without joining."""
        check_data(config, data)
        key = pack_key(config, data)
        if self.key is not None and key != self.key:
            raise ValueError(f"this run cannot share the pack: {key} != {self.key}")
        if not self.members:
            self.arrays = {k: v for k, v in self.arrays.items() if k[1] == key[0]}
        trainer = Trainer(config, data, arrays=self.arrays)
        run = Run(config, data, on_epoch, state_path=state_path, save_interval=save_interval,
                  on_resume=on_resume, trainer=trainer)
        if not run.done:
            self.key = key
            self.device = trainer.device
            self.amp = trainer.amp
            self._rng[id(run)] = _get_rng(trainer.device)  # after init/resume: the lone run's
            self.members.append(run)
            if self._template is None:
                self._template = copy.deepcopy(trainer.model).to("meta")
        return run

    def remove(self, run: Run) -> None:
        if run in self.members:
            self.members.remove(run)
            self._rng.pop(id(run), None)
        if not self.members:
            self.key, self._template = None, None

    @contextlib.contextmanager
    def own_rng(self, run: Run) -> Iterator[None]:
        """Torch's global RNG is ``run``'s inside (its dropout masks, its saved state)."""
        device = run.trainer.device
        if id(run) not in self._rng:
            yield
            return
        _set_rng(device, self._rng[id(run)])
        try:
            yield
        finally:
            self._rng[id(run)] = _get_rng(device)

    def end_epoch(self, run: Run, train_loss: float, seconds: float) -> EpochReport:
        """``run.end_epoch`` with the member's own RNG (its saved state is its own)."""
        with self.own_rng(run):
            return run.end_epoch(train_loss, seconds)

    # -- one epoch of every member ------------------------------------------------------------
    def train_epoch(self, max_batches: int | None = None) -> dict[Run, float | TrainingFailed]:
        """One epoch of every member: its mean training loss, or the ``TrainingFailed`` of a
        member whose loss stopped being finite (it took no further steps; the others go on)."""
        runs = list(self.members)
        if not runs:
            return {}
        xs, orders = [], []
        for run in runs:  # the lone run's order of draws: noise, then the permutation
            t, cfg = run.trainer, run.trainer.config
            t.epoch += 1
            if cfg.scheduled:
                t.set_lr(cfg.lr_at(t.epoch))
            t.model.train()
            with torch.no_grad():
                xs.append(randomize_coulomb(t.x_train, cfg.coulomb_noise, t.generator)
                          if cfg.coulomb_noise > 0 else t.x_train)
                orders.append(torch.randperm(t.n_train, generator=t.generator,
                                             device=t.device))
        n, bs = runs[0].trainer.n_train, runs[0].trainer.config.batch_size
        if max_batches is not None:
            n = min(n, max_batches * bs)
        cpu = self.device.type == "cpu"
        totals = [torch.zeros((), device=self.device) for _ in runs]
        failed: dict[int, TrainingFailed] = {}
        for s in range(0, n, bs):
            alive = [i for i in range(len(runs)) if i not in failed]
            if not alive:
                break
            idx = [orders[i][s : s + bs] for i in alive]
            losses = self._step([runs[i] for i in alive],
                                torch.stack([xs[i][j] for i, j in zip(alive, idx, strict=True)]),
                                [runs[i].trainer.y_train[j] for i, j in
                                 zip(alive, idx, strict=True)])
            for i, j, loss in zip(alive, idx, losses, strict=True):
                loss = loss * len(j)
                if cpu and not torch.isfinite(loss):  # free on the CPU: stop this member now
                    cfg = runs[i].trainer.config
                    failed[i] = TrainingFailed(runs[i].trainer.epoch, f"training loss is "
                                               f"{float(loss)} at batch {s // bs + 1} "
                                               f"(lr={cfg.lr:g})")
                totals[i] = totals[i] + loss
        out: dict[Run, float | TrainingFailed] = {}
        for i, run in enumerate(runs):
            mean = float(totals[i]) / n
            if i not in failed and not math.isfinite(mean):
                failed[i] = TrainingFailed(run.trainer.epoch, f"training loss is {mean} "
                                           f"(lr={run.trainer.config.lr:g})")
            out[run] = failed.get(i, mean)
        return out

    def _step(self, runs: list[Run], x: torch.Tensor,
              ys: list[torch.Tensor]) -> list[torch.Tensor]:
        """One optimiser step of ``runs`` on their batches ``x`` (K, B, 1, 29, 29); returns
        their losses (detached)."""
        assert self._template is not None
        models = [r.trainer.model for r in runs]
        trunk = [dict(m.features.named_parameters()) for m in models]
        buffers = [dict(m.features.named_buffers()) for m in models]
        params = {k: torch.stack([p[k] for p in trunk]) for k in trunk[0]}
        bufs = {k: torch.stack([b[k] for b in buffers]) for k in buffers[0]}
        features = cast(torch.nn.Module, self._template.features)

        def trunk_fn(p, b, xb):
            return functional_call(features, (p, b), (xb,))

        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp,
                            cache_enabled=False):
            h = vmap(trunk_fn)(params, bufs, x).flatten(2)  # (K, B, features)
        if bufs:  # batch norm's running statistics, updated on the stacked copies
            with torch.no_grad():
                for k, stacked in bufs.items():
                    for member, value in zip(buffers, stacked, strict=True):
                        member[k].copy_(value)
        rows = []
        for run, hk in zip(runs, h, strict=True):
            drop = run.trainer.model.dropout
            if drop is not None:
                with self.own_rng(run):
                    hk = drop(hk)
            rows.append(hk)
        h = torch.stack(rows) if any(m.dropout is not None for m in models) else h
        weight = torch.stack([m.head.weight for m in models])
        bias = torch.stack([m.head.bias for m in models])
        with torch.autocast(self.device.type, enabled=False):
            out = torch.baddbmm(bias.unsqueeze(1), h.float(), weight.transpose(1, 2))
        losses = []
        for run, values, y in zip(runs, out, ys, strict=True):
            pred = run.trainer.model.finish(values)  # the member's own head: softplus, levels
            losses.append(run.trainer.loss_fn(pred.float(), y))
        for run in runs:
            run.trainer.optimizer.zero_grad(set_to_none=True)
        torch.stack(losses).sum().backward()
        for run in runs:
            run.trainer.optimizer.step()
        return [loss.detach() for loss in losses]


def _get_rng(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.cuda.get_rng_state(device)
    return torch.get_rng_state()


def _set_rng(device: torch.device, state: Any) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)


def train_packed(configs: list[TrainConfig], datas: list[TrainingData], *,
                 on_epoch: list[Callable[[EpochReport], None] | None] | None = None,
                 state_paths: list[str | Path | None] | None = None,
                 save_interval: float = 0.0) -> list[TrainResult | BaseException]:
    """Train these runs in one pack until each is over (all must share :func:`pack_key`): each
    one's :class:`TrainResult`, or what stopped it (``TrainingFailed``, or what its
    ``on_epoch`` raised). The sequential driver of tests and benchmarks; ``hpo.execution.packed``
    drives a pack whose slots are refilled with new trials."""
    pack = Pack()
    hooks = on_epoch or [None] * len(configs)
    paths = state_paths or [None] * len(configs)
    runs = [pack.start(c, d, h, state_path=p, save_interval=save_interval)
            for c, d, h, p in zip(configs, datas, hooks, paths, strict=True)]
    outcome: dict[int, TrainResult | BaseException] = {
        id(r): r.result() for r in runs if r.done}
    while pack.members:
        start = time.perf_counter()
        losses = pack.train_epoch()
        seconds = time.perf_counter() - start
        for run, loss in losses.items():
            try:
                if isinstance(loss, TrainingFailed):
                    raise loss
                pack.end_epoch(run, loss, seconds)
            except Exception as err:
                outcome[id(run)] = err
                pack.remove(run)
                continue
            if run.done:
                pack.remove(run)
                outcome[id(run)] = run.result()
    return [outcome[id(r)] for r in runs]
