"""Training speed of the report's CNN: seconds per epoch and samples per second.

    python -m bench.train_speed                       # full set and a 5k subset, CPU (+ CUDA)
    python -m bench.train_speed --sizes 5000 --devices cpu --amp off,bf16
    python -m bench.train_speed --max-batches 200     # time partial epochs, extrapolate
    python -m bench.train_speed --anatomy --sizes 5000 --amp off,bf16   # the step, op by op
    python -m bench.train_speed --busy 1 --sizes 5000   # threads on a busy machine

Each row builds a fresh ``model.Trainer`` (batch 90, the report's settings), runs one warm-up
epoch (cuDNN autotuning, CUDA-graph capture, oneDNN primitives; with --max-batches only that
many batches), then times ``--epochs`` training epochs (randomising the Coulomb matrices,
shuffling, every optimiser step; the median is shown) and, separately, one evaluation of the
test split (what every epoch of ``model.train`` adds). Samples per
second count training molecules only. Targets: under 0.5 s per full epoch on an H100, over
2,500 samples/s on the 2-core CPU.

Every row also gives the work done per second (GFLOP/s: the training FLOPs of one sample,
counted by ``torch.utils.flop_counter``, times samples per second) and that as a fraction of the
device's peak for the dtype (see :func:`peak_gflops`).

``--anatomy`` times the bare training step (fixed batches: no per-epoch randomising) side by
side for the layer order of the report (ReLU, then max pooling), the shipped one (max pooling,
then the block's last ReLU: the same network, see ``model.network.SpectraCNN``) and, with
``--compile``, the shipped one under ``torch.compile``; each with the share of the step that
convolutions, ReLU, pooling, the optimiser and the rest take (``torch.profiler``).

``--busy N`` keeps N other processes spinning meanwhile and times the CPU with 1 thread, every
core and the default thread count side by side: what a run does on a shared machine.

``--synthetic`` times random matrices and spectra of the real shapes instead of a dataset (speed
does not depend on the values; no geometries needed, as on a GPU machine without qm9pack).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np
import torch

from data_prep import TrainingData, broaden, load_levels, prepare, sort_coulomb
from data_prep.dataset import make_split
from model.config import TrainConfig
from model.contract import E_MAX, E_MIN, MATRIX_SIZE, N_LEVELS
from model.device import available_cpus, cpu_has_amx, cpu_model_name, cpuinfo
from model.network import SpectraCNN
from model.trainer import Trainer

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


#: FLOPs per core per cycle (a multiply-add counts 2): AMX tiles in bf16; AVX-512 bf16 dot
#: products (two FMA ports); AVX-512 float32 FMA (two ports).
CPU_FLOP_PER_CYCLE = {"amx-bf16": 1024, "avx512-bf16": 128, "avx512-fp32": 64}
#: Dense peak TFLOP/s of GPUs by name (bf16 tensor cores; float32 convolutions use TF32, which
#: cuDNN allows by default).
GPU_PEAK_TFLOPS = {"H100": {"bf16": 989.0, "off": 494.0}, "H200": {"bf16": 989.0, "off": 494.0},
                   "A100": {"bf16": 312.0, "off": 156.0}}


#: The CPU clock for the peak (GHz), when given (--ghz); else /proc/cpuinfo's.
CLOCK_GHZ: float | None = None


def cpu_ghz() -> float | None:
    """--ghz, or the clock /proc/cpuinfo states. A VM states the nominal clock, and turbo runs
    higher: on the 2.1 GHz machine of the write-up a 256-channel float32 convolution ran at 124 %
    of the peak at 2.1 GHz. So a fraction of peak at the stated clock is an upper bound."""
    if CLOCK_GHZ is not None:
        return CLOCK_GHZ
    try:
        return float(cpuinfo("cpu MHz") or "") / 1000
    except ValueError:
        return None


def peak_gflops(device: torch.device, amp: bool, threads: int | None) -> tuple[float, str] | None:
    """The device's peak GFLOP/s for the step's dtype and where it comes from, or None when not
    known (an unlisted GPU, no clock)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in GPU_PEAK_TFLOPS.items():
            if key in name:
                dtype = "bf16" if amp else "TF32"
                return peaks["bf16" if amp else "off"] * 1e3, f"{key} dense {dtype}"
        return None
    ghz = cpu_ghz()
    if ghz is None:
        return None
    unit = ("amx-bf16" if cpu_has_amx() else "avx512-bf16") if amp else "avx512-fp32"
    cores = threads or available_cpus()
    return cores * ghz * CPU_FLOP_PER_CYCLE[unit], f"{cores} cores x {ghz:.2f} GHz x {unit}"


def flops_per_sample(trainer: Trainer) -> float:
    """Training FLOPs of one sample: forward and backward of one batch, counted op by op."""
    from torch.utils.flop_counter import FlopCounterMode

    bs = min(trainer.config.batch_size, trainer.n_train)
    x, y = trainer.x_train[:bs], trainer.y_train[:bs]
    with FlopCounterMode(display=False) as counter:
        trainer._forward_loss(x, y).backward()
    trainer.optimizer.zero_grad(set_to_none=True)
    return counter.get_total_flops() / bs


def with_rates(row: dict, trainer: Trainer) -> dict:
    """``row`` with where ``trainer`` ran (device, amp, CPU threads), GFLOP/s and the fraction
    of peak (None when the peak is not known)."""
    threads = torch.get_num_threads() if trainer.device.type == "cpu" else None
    gflops = row["samples_s"] * flops_per_sample(trainer) / 1e9
    peak = peak_gflops(trainer.device, trainer.amp, threads)
    return {**row, "device": str(trainer.device), "amp": "bf16" if trainer.amp else "off",
            "threads": threads, "gflops": gflops, "peak": peak[1] if peak else None,
            "of_peak": gflops / peak[0] if peak else None}


def _timed(fn) -> float:
    """Seconds that ``fn()`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peak_cell(row: dict) -> str:
    return f"{100 * row['of_peak']:6.1f}%" if row["of_peak"] is not None else f"{'?':>7}"


def measure(data: TrainingData, device: str, amp: str, compile_: bool, epochs: int,
            max_batches: int | None, threads: int | None) -> dict:
    config = TrainConfig(device=device, amp=amp, compile=compile_, num_threads=threads,
                         epochs=epochs + 1, seed=0)
    if compile_:
        torch._dynamo.reset()  # each row compiles its own model (see recompile_limit)
    trainer = Trainer(config, data)
    n_train, bs = trainer.n_train, config.batch_size
    if max_batches is not None and max_batches * bs >= n_train:
        max_batches = None

    def timed(batches):
        return _timed(lambda: trainer.train_epoch(batches))

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
    test_seconds = _timed(trainer.test_epoch)
    return with_rates({
        "train": n_train, "compile": compile_, "s_epoch": s_epoch,
        "samples_s": n_train / s_epoch, "test_s": test_seconds,
        "extrapolated": max_batches is not None, "default_threads": threads is None}, trainer)


# -- the step, op by op (--anatomy) ----------------------------------------------------------------

#: Op-name fragments of each share of the step (the first that matches counts; ``aten::``
#: ops by self time, so nested calls are not counted twice).
OP_KINDS = {"convolution backward": ("convolution_backward",),
            "convolution": ("convolution", "conv2d"),
            "ReLU": ("relu", "clamp_min", "threshold_backward"),
            "max pooling": ("max_pool",),
            "optimiser": ("adam", "_foreach"),
            "compiled kernels": ("compiledfxgraph",)}


def report_order(model: SpectraCNN) -> None:
    """Put every ReLU that follows a max pooling back before it: the report's layer order, the
    "before" of the shipped order (same outputs and gradients, more ReLU work)."""
    layers = list(model.features)
    for i in range(1, len(layers)):
        if isinstance(layers[i], torch.nn.ReLU) and isinstance(layers[i - 1], torch.nn.MaxPool2d):
            layers[i - 1], layers[i] = layers[i], layers[i - 1]
    model.features = torch.nn.Sequential(*layers)


def op_shares(trainer: Trainer, batches: list) -> dict[str, float]:
    """Fractions of the steps' op time (self time of the aten ops) by :data:`OP_KINDS`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for x, y in batches:
            trainer._eager_step(x, y)
    times: dict[str, float] = dict.fromkeys([*OP_KINDS, "other"], 0.0)
    for event in prof.key_averages():
        name = event.key.lower()
        if not (name.startswith("aten::") or "compiledfxgraph" in name):
            continue
        kind = next((k for k, frags in OP_KINDS.items() if any(f in name for f in frags)),
                    "other")
        times[kind] += event.self_cpu_time_total
    total = sum(times.values()) or 1.0
    return {k: v / total for k, v in times.items() if v}


def step_anatomy(data: TrainingData, device: str, amp: str, variants: list[str],
                 threads: int | None, steps: int = 30, rounds: int = 15) -> list[dict]:
    """Milliseconds per bare training step of each variant ("report order", "shipped",
    "shipped, compiled"): ``rounds`` rounds that each time ``steps`` fixed batches of every
    variant in turn, so a slow spell of a shared machine hits them all alike; the median and
    the fastest round are kept."""
    trainers = {}
    torch._dynamo.reset()  # earlier rows' compiled models count towards the recompile limit
    for variant in variants:
        config = TrainConfig(device=device, amp=amp, compile=variant.endswith("compiled"),
                             num_threads=threads, seed=0)
        trainers[variant] = trainer = Trainer(config, data)
        if variant == "report order":
            report_order(trainer.model)
    bs = next(iter(trainers.values())).config.batch_size
    n_batches = min(steps, next(iter(trainers.values())).n_train // bs)
    if n_batches == 0:
        raise SystemExit(f"--anatomy needs at least one batch of {bs} training molecules")

    def batches(trainer):
        return [(trainer.x_train[i:i + bs], trainer.y_train[i:i + bs])
                for i in range(0, n_batches * bs, bs)]

    def run(trainer) -> float:
        steps = batches(trainer)
        return _timed(lambda: [trainer._eager_step(x, y) for x, y in steps]) / n_batches

    for trainer in trainers.values():
        run(trainer)  # warm-up (compilation, oneDNN primitives)
    times: dict[str, list[float]] = {v: [] for v in trainers}
    for _ in range(rounds):
        for variant, trainer in trainers.items():
            times[variant].append(run(trainer))
    rows = []
    for variant, trainer in trainers.items():
        step_s = float(np.median(times[variant]))
        shares = op_shares(trainer, batches(trainer)) if trainer.device.type == "cpu" else {}
        rows.append(with_rates({
            "variant": variant, "step_ms": step_s * 1e3, "best_ms": min(times[variant]) * 1e3,
            "samples_s": bs / step_s, "shares": shares}, trainer))
    return rows


def conv_widths(device: str, amp: str, threads: int | None,
                widths: tuple[int, ...] = (16, 22, 32, 42, 47, 48, 64, 128), repeats: int = 20,
                batch: int = 90, side: int = 14) -> list[dict]:
    """GFLOP/s of one 3x3 convolution, C -> C channels, forward and backward on a batch of
    ``batch`` C x ``side`` x ``side`` maps, for each width C (best of ``repeats``): how the
    report's widths (22, 47, 42) fill the device against round ones."""
    dev = torch.device(device)
    if dev.type == "cpu" and threads:
        torch.set_num_threads(threads)
    bf16 = amp == "bf16"
    rows = []
    for c in widths:
        conv = torch.nn.Conv2d(c, c, 3, padding=1).to(dev, memory_format=torch.channels_last)
        x = torch.randn(batch, c, side, side, device=dev).contiguous(
            memory_format=torch.channels_last).requires_grad_()

        def step(conv=conv, x=x):
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
                y = conv(x)
            y.float().sum().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize()

        for _ in range(3):
            step()
        best = min(_timed(step) for _ in range(repeats))
        flops = 3 * 2 * batch * side * side * c * c * 9  # forward, input and weight gradients
        rows.append({"width": c, "ms": best * 1e3, "gflops": flops / best / 1e9})
    return rows


def print_anatomy(rows: list[dict]) -> None:
    kinds = [k for k in [*OP_KINDS, "other"] if any(k in r["shares"] for r in rows)]
    head = (f"{'variant':<18} {'device':<6} {'amp':>4} {'ms/step':>8} {'best':>6} {'samples/s':>9} "
            f"{'GFLOP/s':>8} {'of peak':>7}  " + "  ".join(f"{k:>{max(len(k), 5)}}" for k in kinds))
    print("\nthe training step alone (fixed batches; median and best of interleaved rounds), "
          "share of op time:")
    print(head)
    print("-" * len(head))
    for r in rows:
        peak = _peak_cell(r)
        shares = "  ".join(f"{100 * r['shares'].get(k, 0):>{max(len(k), 5) - 1}.0f}%"
                           for k in kinds)
        print(f"{r['variant']:<18} {r['device']:<6} {r['amp']:>4} {r['step_ms']:>8.2f} "
              f"{r['best_ms']:>6.2f} "
              f"{r['samples_s']:>9,.0f} {r['gflops']:>8.0f} {peak}  {shares}")
    print("peaks: " + "; ".join(sorted({f"{r['device']} {r['amp']}: {r['peak']}" for r in rows
                                         if r["peak"]})))


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
                    help="time random data of the real shapes (no dataset or geometries "
                    "needed; speed does not depend on the values)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", help="levels .npz (default: the bundled dataset)")
    ap.add_argument("--sizes", default="full,5000",
                    help="molecules per row: numbers or 'full' (comma-separated)")
    add_speed_options(ap, amp_help="comma-separated: auto, off, bf16")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="keep N other processes spinning while measuring, and time the CPU "
                    "with 1 thread, every core and the default (the idle cores) side by side")
    ap.add_argument("--ghz", type=float, default=None,
                    help="CPU clock for the peak (default: /proc/cpuinfo's, often the nominal)")
    ap.add_argument("--widths", action="store_true",
                    help="also time one 3x3 convolution at the report's widths and round ones")
    ap.add_argument("--anatomy", action="store_true",
                    help="also time the bare step in the report's layer order against the "
                    "shipped one (and compiled, with --compile), with each op kind's share")
    args = ap.parse_args(argv)
    global CLOCK_GHZ
    CLOCK_GHZ = args.ghz

    devices = (["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
               if args.devices == "auto" else args.devices.split(","))
    if args.synthetic:
        levels, source = None, "synthetic: random data of the real shapes"
    else:
        try:
            levels = load_levels(args.dataset)
        except ValueError as err:
            sys.exit(f"{err}\n(use --dataset PATH, or --synthetic to time random data)")
        source = f"{args.dataset or 'bundled dataset'} ({len(levels)} molecules)"

    print(f"torch {torch.__version__}; CPU: {cpu_model_name()}, {os.cpu_count()} cores", end="")
    if torch.cuda.is_available():
        print(f"; GPU: {torch.cuda.get_device_name()}", end="")
    print(f"\ndata: {source}; batch 90, Np 300\n")

    rows, anatomy = [], []
    thread_choices = [1, available_cpus(), None] if args.busy else [args.threads]
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(args.busy)]
    if spinners:
        print(f"{args.busy} other process(es) spinning while measuring\n")
        time.sleep(1.0)  # let the kernel's runnable count see them
    try:
        measure_all(args, levels, devices, thread_choices, rows, anatomy)
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
    print_rows(rows)
    if anatomy:
        print_anatomy(anatomy)
    if args.widths:
        for device in devices:
            for amp in args.amp.split(","):
                widths = conv_widths(device, amp, args.threads)
                print(f"\none 3x3 convolution C -> C, 90 x C x 14 x 14, forward and backward, "
                      f"{device} amp={amp}:")
                print("  C:       " + " ".join(f"{w['width']:>6}" for w in widths))
                print("  ms:      " + " ".join(f"{w['ms']:>6.2f}" for w in widths))
                print("  GFLOP/s: " + " ".join(f"{w['gflops']:>6.0f}" for w in widths))


def measure_all(args: argparse.Namespace, levels, devices: list[str],
                thread_choices: list[int | None], rows: list[dict], anatomy: list[dict]) -> None:
    """Every row of the table (into ``rows``) and, with --anatomy, the step's (``anatomy``)."""
    for size in args.sizes.split(","):
        n = None if size == "full" else int(size)
        if levels is None:
            data = synthetic_data(n or SYNTHETIC_FULL)
        else:
            data = prepare(levels, sigma=0.5, n_points=300, subset=n)
        for device in devices:
            for amp in args.amp.split(","):
                for compile_ in [False, True] if args.compile else [False]:
                    for threads in thread_choices if device == "cpu" else [None]:
                        rows.append(measure(data, device, amp, compile_, args.epochs,
                                            args.max_batches, threads))
                        r = rows[-1]
                        print(f"  measured {r['device']} {r['train']} molecules amp={r['amp']} "
                              f"compile={compile_} threads={r['threads']}: "
                              f"{r['s_epoch']:.2f} s/epoch", file=sys.stderr)
                if args.anatomy and not anatomy:  # once, on the first size
                    variants = ["report order", "shipped"] + (
                        ["shipped, compiled"] if args.compile else [])
                    for amp in args.amp.split(","):
                        anatomy += step_anatomy(data, device, amp, variants, args.threads)


def print_rows(rows: list[dict]) -> None:
    head = (f"{'device':<7} {'threads':>7} {'train molecules':>15} {'amp':>5} {'compile':>7} "
            f"{'s/epoch':>9} {'samples/s':>10} {'GFLOP/s':>8} {'of peak':>7} {'test eval s':>11}")
    print(head)
    print("-" * len(head))
    for r in rows:
        approx = "~" if r["extrapolated"] else " "
        peak = _peak_cell(r)
        threads = f"{r['threads'] or ''}{'*' if r['default_threads'] and r['threads'] else ''}"
        print(f"{r['device']:<7} {threads:>7} {r['train']:>15,} {r['amp']:>5} "
              f"{'yes' if r['compile'] else 'no':>7} {approx}{r['s_epoch']:>8.2f} "
              f"{r['samples_s']:>10,.0f} {r['gflops']:>8.0f} {peak} {r['test_s']:>11.3f}")
    if any(r["extrapolated"] for r in rows):
        print("~ extrapolated from partial epochs (--max-batches)")
    if any(r["default_threads"] and r["threads"] for r in rows):
        print("* threads picked by default: the cores idle when the run started")
    print("targets: < 0.5 s per full epoch on an H100; > 2,500 samples/s on the 2-core CPU")


if __name__ == "__main__":
    main()
