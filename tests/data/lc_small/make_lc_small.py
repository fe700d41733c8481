"""Make the small real learning-curve table that drives tests/unit/bench/test_replay.py:
10 runs (8 configurations, 2 of them again with seed 1) of the report's CNN on 300 bundled
molecules, 5 epochs each, through bench/lc_build.py's own ``run_one`` and ``assemble`` (so the
files have exactly the big table's format).  Made with (from the repository root):

    python -m tests.data.lc_small.make_lc_small
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from bench import lc_build

OUT = Path(__file__).resolve().parent
#: (sigma, n_points, loss, lr, batch_size): a few (sigma, loss, lr) cells, one cell with two
#: (Np, batch) pairs, lr from 1e-4 to 1e-2.
CONFIGS = (
    (0.5, 300, "rmse", 1e-3, 90),
    (0.5, 300, "rmse", 1e-3, 180),
    (0.5, 300, "rmse", 1e-4, 90),
    (0.5, 500, "cosine", 1e-3, 180),
    (0.3, 300, "rmse", 1e-3, 90),
    (0.3, 500, "rmse", 1e-4, 180),
    (0.3, 300, "cosine", 1e-4, 90),
    (0.5, 500, "rmse", 1e-2, 90),
)
REPEATED = (0, 2)  # these configurations again with seed 1 (the noise floor)


def runs() -> list[dict]:
    out = [dict(zip(lc_build.KEYS, c, strict=True), seed=0) for c in CONFIGS]
    out += [dict(out[i], seed=1) for i in REPEATED]
    for r in out:
        r["config_id"] = lc_build.config_id(r)
        r["run_id"] = f"{r['config_id']}-s{r['seed']}"
    return out


def main() -> None:
    lc_build.EPOCHS, lc_build.SUBSET = 5, 300
    planned = runs()
    lc_build.design = lambda: [dict(r) for r in planned]  # assemble() reads the design
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "runs").mkdir()
        for run in planned:
            record = lc_build.run_one(run)
            (Path(tmp) / "runs" / f"{run['run_id']}.json").write_text(
                json.dumps(record, sort_keys=True, default=float))
            print(run["run_id"], record["status"], flush=True)
        lc_build.assemble(Path(tmp))
        for name in ("table.csv", "configs.csv"):
            shutil.copyfile(Path(tmp) / name, OUT / name)


if __name__ == "__main__":
    main()
