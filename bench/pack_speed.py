"""Packed trials: trial-epochs per hour for K = 1, 2, 4, 8, 16, 32 trials in one pack, side by
side with a lone run (``model.Trainer``, the path of ``specopt worker`` without ``--pack``; on
CUDA it replays a captured CUDA graph).

    python -m bench.pack_speed                          # full set, CPU (+ CUDA when present)
    python -m bench.pack_speed --devices cuda --max-batches 100
    python -m bench.pack_speed --smoke                  # a quick run: 1,000 molecules, K 1,2

Each row builds fresh members (the report's network and batch 90; members differ in seed and
learning rate, as trials of a study do, and share the device-resident data), runs one warm-up
epoch, then times training epochs (with ``--max-batches k``: partial epochs of k and 2k batches,
extrapolated to the full epoch as ``bench/train_speed.py`` does) and one test evaluation per
member (what each epoch of a trial adds). Trial-epochs per hour = K x 3600 / (training seconds
of the pack's epoch + K x test seconds). The last column compares with the lone run. The issue's
goal on one H100: the best K at 8x the lone run, the whole dataset on the GPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from bench.train_speed import add_speed_options, synthetic_data
from data_prep import load_levels, prepare
from model.config import TrainConfig
from model.device import cpu_model_name
from model.packed import Pack
from model.trainer import Trainer

LRS = (1e-4, 3e-4, 1e-3, 3e-5)


def _config(i: int, device: str, amp: str, threads: int | None) -> TrainConfig:
    return TrainConfig(device=device, amp=amp, num_threads=threads, epochs=1000, seed=i,
                       lr=LRS[i % len(LRS)])


def _epoch_seconds(train_epoch, n_train: int, bs: int, epochs: int,
                   max_batches: int | None) -> tuple[float, bool]:
    """Seconds of one full training epoch (measured, or extrapolated from partial ones)."""
    if max_batches is not None and max_batches * bs >= n_train:
        max_batches = None

    def timed(batches):
        start = time.perf_counter()
        train_epoch(batches)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed(max_batches)  # warm-up (oneDNN primitives, cuDNN autotuning, CUDA graph capture)
    if max_batches is None:
        return float(np.median([timed(None) for _ in range(epochs)])), False
    t1 = float(np.median([timed(max_batches) for _ in range(epochs)]))
    t2 = float(np.median([timed(2 * max_batches) for _ in range(epochs)]))
    per_batch = (t2 - t1) / max_batches
    return max(0.0, t1 - per_batch * max_batches) + per_batch * n_train / bs, True


def _test_seconds(trainer: Trainer) -> float:
    start = time.perf_counter()
    trainer.test_epoch()
    return time.perf_counter() - start


def measure_lone(data, device, amp, threads, epochs, max_batches) -> dict:
    trainer = Trainer(_config(0, device, amp, threads), data)
    s, approx = _epoch_seconds(trainer.train_epoch, trainer.n_train, 90, epochs, max_batches)
    test = _test_seconds(trainer)
    return {"k": "lone", "device": str(trainer.device), "amp": trainer.amp, "s_epoch": s,
            "test_s": test, "approx": approx, "per_hour": 3600 / (s + test)}


def measure_pack(k: int, data, device, amp, threads, epochs, max_batches) -> dict:
    pack = Pack()
    runs = [pack.start(_config(i, device, amp, threads), data) for i in range(k)]
    s, approx = _epoch_seconds(pack.train_epoch, runs[0].trainer.n_train, 90, epochs,
                               max_batches)
    test = float(np.mean([_test_seconds(r.trainer) for r in runs]))
    return {"k": k, "device": str(pack.device), "amp": pack.amp, "s_epoch": s, "test_s": test,
            "approx": approx, "per_hour": k * 3600 / (s + k * test)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="levels .npz (default: the bundled dataset)")
    ap.add_argument("--size", default="full", help="molecules: a number or 'full'")
    ap.add_argument("--packs", default="1,2,4,8,16,32", help="K values (comma-separated)")
    add_speed_options(ap, amp_help="auto, off or bf16")
    ap.add_argument("--smoke", action="store_true",
                    help="a quick check that everything runs: 1,000 molecules, K 1,2, "
                    "2 batches (numbers meaningless)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.size, args.packs, args.max_batches = "1000", "1,2", 2

    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
               if args.devices == "auto" else args.devices.split(","))
    n = None if args.size == "full" else int(args.size)
    if args.synthetic:
        data, source = synthetic_data(n or 118_000), "synthetic"
    else:
        try:
            data = prepare(load_levels(args.dataset), sigma=0.5, n_points=300, subset=n)
        except ValueError as err:
            sys.exit(f"{err}\n(use --dataset PATH, or --synthetic to time random data)")
        source = f"{args.dataset or 'bundled dataset'}"
    print(f"torch {torch.__version__}; CPU: {cpu_model_name()}, {os.cpu_count()} cores", end="")
    if torch.cuda.is_available():
        print(f"; GPU: {torch.cuda.get_device_name()}", end="")
    print(f"\ndata: {source}, {len(data.train_rows):,} training molecules; batch 90, Np 300\n")

    rows = []
    for device in devices:
        rows.append(measure_lone(data, device, args.amp, args.threads, args.epochs,
                                 args.max_batches))
        for k in (int(x) for x in args.packs.split(",")):
            try:
                rows.append(measure_pack(k, data, device, args.amp, args.threads, args.epochs,
                                         args.max_batches))
            except torch.OutOfMemoryError:
                print(f"  K={k} on {device}: out of memory", file=sys.stderr)
                break
            r = rows[-1]
            print(f"  measured {device} K={k}: {r['s_epoch']:.2f} s/epoch", file=sys.stderr)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    head = (f"{'device':<7} {'K':>5} {'amp':>5} {'train s/epoch':>13} {'test s/trial':>12} "
            f"{'trial-epochs/h':>14} {'x lone':>7}")
    print(head)
    print("-" * len(head))
    lone = {r["device"]: r["per_hour"] for r in rows if r["k"] == "lone"}
    for r in rows:
        approx = "~" if r["approx"] else " "
        print(f"{r['device']:<7} {r['k']:>5} {'bf16' if r['amp'] else 'off':>5} "
              f"{approx}{r['s_epoch']:>12.2f} {r['test_s']:>12.3f} {r['per_hour']:>14,.0f} "
              f"{r['per_hour'] / lone[r['device']]:>7.2f}")
    print("\n~: extrapolated from partial epochs (--max-batches)")


if __name__ == "__main__":
    main()
