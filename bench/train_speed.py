"""Training speed of the report's CNN: seconds per epoch and samples per second.

    python bench/train_speed.py                       # full set and a 5k subset, CPU (+ CUDA)
    python bench/train_speed.py --sizes 5000 --devices cpu --amp off,bf16
    python bench/train_speed.py --max-batches 200     # time partial epochs, extrapolate

Each row builds a fresh ``model.Trainer`` (batch 90, the report's settings), runs one warm-up
epoch (cuDNN autotuning, CUDA-graph capture, oneDNN primitives; with --max-batches only that
many batches), then times ``--epochs`` training epochs (randomising the Coulomb matrices,
shuffling, every optimiser step; the median is shown) and, separately, one evaluation of the
test split (what every epoch of ``model.train`` adds). Samples per
second count training molecules only. Targets: under 0.5 s per full epoch on an H100, over
2,500 samples/s on the 2-core CPU.

Without the bundled dataset (or --dataset), ``--synthetic`` times random matrices and spectra of
the same shapes (speed does not depend on the values); the table says so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_prep import TrainingData, broaden, load_levels, prepare, sort_coulomb  # noqa: E402
from data_prep.dataset import make_split  # noqa: E402
from model.config import TrainConfig  # noqa: E402
from model.contract import E_MAX, E_MIN, MATRIX_SIZE, N_LEVELS  # noqa: E402
from model.device import cpu_model_name  # noqa: E402
from model.trainer import Trainer  # noqa: E402

SYNTHETIC_FULL = 118_000


def synthetic_data(n: int, n_points: int = 300, seed: int = 0) -> TrainingData:
    """Random sorted Coulomb-like matrices and spectra of random levels (shapes only)."""
    rng = np.random.default_rng(seed)
    size = MATRIX_SIZE
    atoms = rng.integers(10, size + 1, n)
    c = np.abs(rng.normal(0, 5, (n, size, size))).astype(np.float32)
    c = (c + c.transpose(0, 2, 1)) / 2
    mask = np.arange(size)[None, :] < atoms[:, None]
    c *= mask[:, :, None] & mask[:, None, :]
    c[:, np.arange(size), np.arange(size)] += 36.9 * mask  # carbon-like diagonal 0.5 * 6^2.4
    levels = np.sort(rng.uniform(-22, -9, (n, N_LEVELS)), 1).astype(np.float32)
    split, _ = make_split(n)
    return TrainingData(
        coulomb=sort_coulomb(c), spectra=broaden(levels, 0.5, n_points), levels=levels,
        split=split, index=np.arange(n), sigma=0.5, n_points=n_points, e_min=E_MIN, e_max=E_MAX,
        fingerprint="synthetic", provenance={"synthetic": True})


def measure(data: TrainingData, device: str, amp: str, compile_: bool, epochs: int,
            max_batches: int | None, threads: int | None) -> dict:
    config = TrainConfig(device=device, amp=amp, compile=compile_, num_threads=threads,
                         epochs=epochs + 1, seed=0)
    trainer = Trainer(config, data)
    n_train, bs = trainer.n_train, config.batch_size
    if max_batches is not None and max_batches * bs >= n_train:
        max_batches = None

    def timed(batches):
        start = time.perf_counter()
        trainer.train_epoch(batches)
        return time.perf_counter() - start

    timed(max_batches)  # warm-up
    if max_batches is None:
        s_epoch = float(np.median([timed(None) for _ in range(epochs)]))
    else:
        # Partial epochs of k and 2k batches separate the per-epoch work (randomising and
        # shuffling the whole training set) from the per-batch time.
        t1 = float(np.median([timed(max_batches) for _ in range(epochs)]))
        t2 = float(np.median([timed(2 * max_batches) for _ in range(epochs)]))
        per_batch = (t2 - t1) / max_batches
        s_epoch = max(0.0, t1 - per_batch * max_batches) + per_batch * n_train / bs
    start = time.perf_counter()
    trainer.test_epoch()
    test_seconds = time.perf_counter() - start
    return {
        "device": str(trainer.device), "train": n_train, "amp": "bf16" if trainer.amp else "off",
        "compile": compile_, "s_epoch": s_epoch, "samples_s": n_train / s_epoch,
        "test_s": test_seconds, "extrapolated": max_batches is not None,
        "threads": torch.get_num_threads() if trainer.device.type == "cpu" else None,
    }


def add_speed_options(ap: argparse.ArgumentParser, amp_help: str) -> None:
    """The options every speed benchmark takes (train_speed, pack_speed)."""
    ap.add_argument("--devices", default="auto",
                    help="cpu, cuda, or auto (cpu, plus cuda when available)")
    ap.add_argument("--amp", default="auto", help=amp_help)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs per row (median)")
    ap.add_argument("--max-batches", type=int, default=None,
                    help="time partial epochs of this many (and twice as many) batches and "
                    "extrapolate to the full epoch")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads (default: the idle cores, as a run picks them)")
    ap.add_argument("--synthetic", action="store_true",
                    help="random data of the right shapes when no dataset is available")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="levels .npz (default: the bundled dataset)")
    ap.add_argument("--sizes", default="full,5000",
                    help="molecules per row: numbers or 'full' (comma-separated)")
    add_speed_options(ap, amp_help="comma-separated: auto, off, bf16")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = ap.parse_args(argv)

    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
               if args.devices == "auto" else args.devices.split(","))
    try:
        levels = load_levels(args.dataset)
        source = f"{args.dataset or 'bundled dataset'} ({len(levels)} molecules)"
    except ValueError as err:
        if not args.synthetic:
            sys.exit(f"{err}\n(use --dataset PATH, or --synthetic to time random data)")
        levels, source = None, f"synthetic ({err})"

    print(f"torch {torch.__version__}; CPU: {cpu_model_name()}, {os.cpu_count()} cores", end="")
    if torch.cuda.is_available():
        print(f"; GPU: {torch.cuda.get_device_name()}", end="")
    print(f"\ndata: {source}; batch 90, Np 300\n")

    rows = []
    for size in args.sizes.split(","):
        n = None if size == "full" else int(size)
        if levels is None:
            data = synthetic_data(n or SYNTHETIC_FULL)
        else:
            data = prepare(levels, sigma=0.5, n_points=300, subset=n)
        for device in devices:
            for amp in args.amp.split(","):
                for compile_ in [False, True] if args.compile else [False]:
                    rows.append(measure(data, device, amp, compile_, args.epochs,
                                        args.max_batches, args.threads))
                    r = rows[-1]
                    print(f"  measured {r['device']} {r['train']} molecules amp={r['amp']} "
                          f"compile={compile_}: {r['s_epoch']:.2f} s/epoch", file=sys.stderr)

    head = (f"{'device':<7} {'threads':>7} {'train molecules':>15} {'amp':>5} {'compile':>7} "
            f"{'s/epoch':>9} {'samples/s':>10} {'test eval s':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        approx = "~" if r["extrapolated"] else " "
        print(f"{r['device']:<7} {r['threads'] or '':>7} {r['train']:>15,} {r['amp']:>5} "
              f"{'yes' if r['compile'] else 'no':>7} {approx}{r['s_epoch']:>8.2f} "
              f"{r['samples_s']:>10,.0f} {r['test_s']:>11.3f}")
    if any(r["extrapolated"] for r in rows):
        print("~ extrapolated from partial epochs (--max-batches)")
    print("targets: < 0.5 s per full epoch on an H100; > 2,500 samples/s on the 2-core CPU")


if __name__ == "__main__":
    main()
