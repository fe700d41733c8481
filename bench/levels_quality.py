"""How good are our levels: GFN2-xTB (the bundled dataset) against QM9's B3LYP and PySCF.

1. Every molecule of the bundled dataset: its HOMO (highest of the 16 levels) against QM9's own
   B3LYP/6-31G(2df,p) HOMO (``HOMO_au`` in qm9pack's CSV): offset, sd, Pearson r; span of the 16.
2. A seeded random sample: the 16 levels with GFN2-xTB, IPEA1-xTB, GFN1-xTB (tblite), PySCF HF
   and a hybrid DFT (the reference; a smaller sub-sample, it is the slow one), each through
   ``data_prep.levels.compute_levels``: HOMO against QM9's B3LYP, the 16 levels against the
   reference (pooled level by level: level k of one method against level k of the reference).

The sample is drawn from the bundled dataset, whose molecules all have >= 16 occupied valence
levels, so the 16 highest occupied levels are valence levels for every method (all-electron
PySCF's core levels lie far below). Chunks are kept under ``$SPECOPT_CACHE/levels_quality``, so
an interrupted run resumes. Writes docs/levels_quality.md.

    OMP_NUM_THREADS=1 nice -n 10 python -m bench.levels_quality [--size 200] [--ref-size 40]
        [--seed 0] [--basis sto-3g] [--hybrid b3lyp] [--out docs/levels_quality.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.write_up import MARK, kept_write_up
from model.contract import HARTREE_EV, N_LEVELS

XTB = ("gfn2-xtb", "ipea1-xtb", "gfn1-xtb")


@dataclass(frozen=True)
class Agreement:
    """How ``x`` agrees with a reference ``ref`` (same shape; pooled over every element)."""

    n: int
    offset: float  # mean of x - ref (eV)
    sd: float  # sample standard deviation of x - ref (eV)
    r: float  # Pearson correlation of x with ref

    @classmethod
    def of(cls, x: np.ndarray, ref: np.ndarray) -> Agreement:
        x, ref = np.asarray(x, float).ravel(), np.asarray(ref, float).ravel()
        if x.shape != ref.shape or len(x) < 2:
            raise ValueError(f"need two arrays of the same length >= 2, got {x.shape}, {ref.shape}")
        d = x - ref
        return cls(len(x), float(d.mean()), float(d.std(ddof=1)),
                   float(np.corrcoef(x, ref)[0, 1]))


@dataclass(frozen=True)
class Span:
    """Width (eV) of the 16 levels (highest - lowest): median and 5th-95th percentile."""

    median: float
    p5: float
    p95: float

    @classmethod
    def of(cls, levels: np.ndarray) -> Span:
        w = np.asarray(levels, float)[:, -1] - np.asarray(levels, float)[:, 0]
        p5, med, p95 = np.percentile(w, [5, 50, 95])
        return cls(float(med), float(p5), float(p95))

    def __str__(self) -> str:
        return f"{self.median:.2f} ({self.p5:.2f}-{self.p95:.2f})"


def homo(levels: np.ndarray) -> np.ndarray:
    """The HOMO of each molecule: the highest of its 16 ascending levels."""
    levels = np.asarray(levels)
    if levels.ndim != 2 or levels.shape[1] != N_LEVELS:
        raise ValueError(f"expected (N, {N_LEVELS}) levels, got {levels.shape}")
    return levels[:, -1]


def qm9_homo_eV(index: np.ndarray) -> np.ndarray:
    """QM9's B3LYP/6-31G(2df,p) HOMO (eV) of the given QM9 indices, from qm9pack's CSV parts."""
    import pandas as pd

    from data_prep.qm9 import qm9pack_dir

    parts = sorted(qm9pack_dir().glob("qm9_part*.csv"))
    df = pd.concat([pd.read_csv(p, usecols=["Index", "HOMO_au"]) for p in parts])
    table = df.set_index("Index")["HOMO_au"]
    missing = np.setdiff1d(index, table.index.to_numpy())
    if len(missing):
        raise ValueError(f"QM9 indices without a HOMO in qm9pack: {missing[:5].tolist()}")
    return table.loc[np.asarray(index)].to_numpy(float) * HARTREE_EV


def sample_index(index: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A seeded random sample (sorted) of ``size`` QM9 indices out of ``index``."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(np.asarray(index), min(size, len(index)), replace=False))


def method_levels(qm9_index: np.ndarray, method: str,
                  parts_dir: Path | None) -> dict[int, np.ndarray]:
    """{QM9 index: 16 levels} with ``method``, one process (molecules that fail are left out)."""
    from data_prep import load_qm9pack
    from data_prep.levels import compute_levels

    g = load_qm9pack()
    geoms = g.take(g.rows_for(np.asarray(qm9_index)))
    res = compute_levels(geoms, method, parts_dir=parts_dir, workers=1, chunk_size=10,
                         progress=True)
    return {int(i): lv for i, lv in zip(res.index, res.levels, strict=True)}


def _row(name: str, *cells: object) -> str:
    return "| " + " | ".join([name, *map(str, cells)]) + " |"


def _agr(a: Agreement | None) -> list[str]:
    if a is None:
        return ["-", "-", "-"]
    return [f"{a.offset:+.2f}", f"{a.sd:.2f}", f"{a.r:.3f}"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=200, help="sample for the xTB methods and HF")
    ap.add_argument("--ref-size", type=int, default=40,
                    help="first molecules of the sample also done with the hybrid DFT reference "
                         "(about 10 s each on one busy core)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--basis", default="sto-3g", help="PySCF basis of HF and the hybrid")
    ap.add_argument("--hybrid", default="b3lyp", help="PySCF functional of the reference")
    ap.add_argument("--out", type=Path, default=Path("docs/levels_quality.md"))
    args = ap.parse_args(argv)

    from importlib.metadata import version

    from data_prep import load_levels
    from data_prep.cache import cache_root

    t0 = time.time()
    ds = load_levels()
    all_homo = homo(ds.levels)
    full = Agreement.of(all_homo, qm9_homo_eV(ds.index))
    full_span = Span.of(ds.levels)
    print(f"all {full.n}: HOMO offset {full.offset:+.3f} sd {full.sd:.3f} r {full.r:.4f}; "
          f"span {full_span}", flush=True)

    pick = sample_index(ds.index, args.size, args.seed)
    ref_pick = pick[np.random.default_rng(args.seed + 1).permutation(len(pick))[: args.ref_size]]
    hf = f"pyscf:hf/{args.basis}"
    ref = f"pyscf:{args.hybrid}/{args.basis}"
    root = cache_root() / "levels_quality" / f"seed{args.seed}-n{args.size}"
    got: dict[str, dict[int, np.ndarray]] = {}
    seconds: dict[str, float] = {}
    for method, idx in [*[(m, pick) for m in XTB], (hf, pick), (ref, np.sort(ref_pick))]:
        t = time.time()
        sub = root if idx is pick else root.parent / f"seed{args.seed}-n{args.size}-ref{len(idx)}"
        got[method] = method_levels(idx, method, sub / method.replace("/", "_").replace(":", "-"))
        seconds[method] = time.time() - t
        print(f"{method}: {len(got[method])} of {len(idx)} molecules, {seconds[method]:.0f} s",
              flush=True)

    # Molecules every method gave levels for (the HOMO rows), and those with the reference too.
    common = sorted(set.intersection(*(set(got[m]) for m in (*XTB, hf))))
    with_ref = sorted(set(common) & set(got[ref]))
    qm9_common = dict(zip(common, qm9_homo_eV(np.array(common)), strict=True))
    rows = []
    for method in (*XTB, hf, ref):
        ids = common if method != ref else with_ref
        lv = np.array([got[method][i] for i in ids])
        h = Agreement.of(homo(lv), np.array([qm9_common[i] for i in ids]))
        on_ref = np.array([got[method][i] for i in with_ref])
        lw = (Agreement.of(on_ref, np.array([got[ref][i] for i in with_ref]))
              if method != ref else None)
        rows.append((method, len(ids), h, lw, Span.of(lv)))

    hdr = ("| method | molecules | HOMO - QM9 B3LYP (eV) | sd (eV) | r | 16 levels - "
           f"{args.hybrid.upper()}/{args.basis} (eV) | sd (eV) | r | span of the 16 (eV), "
           "median (5-95 %) |")
    lines = [hdr, "|" + "---|" * 9,
             _row("GFN2-xTB, bundled dataset (all)", full.n, *_agr(full), *_agr(None), full_span)]
    for method, n, h, lw, span in rows:
        lines.append(_row(f"{method} (sample)", n, *_agr(h), *_agr(lw), span))
    table = "\n".join(lines)
    print(table)
    cpu = _cpu_name()
    cmd = "OMP_NUM_THREADS=1 nice -n 10 python -m bench.levels_quality " + " ".join(
        sys.argv[1:] if argv is None else argv)
    versions = (f"tblite {version('tblite')}, pyscf {version('pyscf')}, "
                f"qm9pack {version('qm9pack')}, numpy {np.__version__}")
    timing = ", ".join(f"{m} {s:.0f} s" for m, s in seconds.items())
    text = TEMPLATE.format(
        table=table, cmd=cmd.strip(), seed=args.seed, size=len(pick), ref_size=len(ref_pick),
        n_common=len(common), n_ref=len(with_ref), ref=ref, hf=hf, versions=versions, cpu=cpu,
        date=time.strftime("%Y-%m-%d"), timing=timing, total=time.time() - t0,
        provenance=ds.provenance.get("method", "?") if isinstance(ds.provenance, dict) else "?",
    )
    args.out.write_text(text.replace(MARK, kept_write_up(
        args.out, "which method is closest to DFT, how compressed GFN2-xTB is")))
    print(f"wrote {args.out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores, one used)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


TEMPLATE = """# How good are our levels

The bundled dataset's 16 levels are {provenance} valence orbital energies. Below they are
compared with QM9's own B3LYP/6-31G(2df,p) HOMO (`HOMO_au` in qm9pack's CSV), and, on a seeded
random sample, with other tblite methods and with PySCF (HF and the hybrid `{ref}`, the
reference for the level-by-level columns). Offset = mean of (method - reference), sd = standard
deviation of that difference, r = Pearson correlation; the level-by-level columns pool all 16
levels (level k against level k of the reference). Span = highest - lowest of the 16 levels.
All 16 levels are the 16 highest occupied orbitals of each method; every sampled molecule has at
least 16 occupied valence orbitals, so no core orbital enters (minimal-basis valence methods
such as xTB have no core orbitals at all).

{table}

HOMO columns of the sample rows: the {n_common} sampled molecules every method gave levels for
(the reference row: its {n_ref}). Level-by-level columns: the {n_ref} molecules with the
reference.

## What it means

WRITE-UP

## Provenance

- Command: `{cmd}`
- Sample: seed {seed}, {size} molecules of the bundled dataset (xTB methods and `{hf}`), of them
  {ref_size} (a seeded sub-sample) also with `{ref}`; PySCF's `b3lyp` is libxc's B3LYP
  (VWN-RPA correlation, as in Gaussian, which QM9 used).
- Versions: {versions}.
- CPU: {cpu}, {date}; wall time {total:.0f} s ({timing}).
"""


if __name__ == "__main__":
    main()
