#!/usr/bin/env bash
# One-shot GPU check (issue 12): what only a GPU exercises, in one device call of ~8 minutes:
#   run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
# .whl/ comes from `bash bench/gpu_wheels.sh`, run here once: the wheels the device image lacks and
# a 5,000-molecule levels dataset with its Coulomb matrices (the image has no qm9pack to make them).
#
# Steps, each under its own timeout (all within GPU_CHECK_DEADLINE seconds), a failed one not
# stopping the rest, each one's output tee'd into $OUT/<n>-<step>.txt:
#   1 setup        install the carried wheels into /tmp/site; versions; nvidia-smi
#   2 train_speed  bench/train_speed.py: the CUDA path, CUDA graph and bf16 (full size, 5,000)
#   3 pack_speed   bench/pack_speed.py, K = 1..32 (goal: >= 8x trial-epochs/h at the best K)
#   4 study        the demo study through the CLI: 2 workers, SQLite, its report; trials checked
#   5 tests        the tests that mention CUDA (pytest -k cuda)
#   6 study_pack   the demo study with --pack 4 (if time is left)
#   7 compile      bench/train_speed.py --compile, 5,000 molecules, bf16 (if time is left)
# then a summary (also $OUT/8-summary.txt): 8 files, the device tool's limit.
#
# The benchmarks time synthetic data of the real shapes (train_speed's 'full' is 118,000
# molecules): speed does not depend on the values, and the full set's Coulomb matrices (440 MB)
# cannot travel. The study and the tests use the carried real molecules.
#
# Here, without a GPU (every step, tiny sizes, against .venv):
#   OUT=/tmp/gpuout GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 nice bash bench/gpu_check.sh
# Settings: GPU_CHECK_DEVICE (cuda), GPU_CHECK_QUICK (0), GPU_CHECK_DEADLINE (500 s: the call's
# 540 less the kill grace), GPU_CHECK_PYTHON (python3; .venv's on the CPU), GPU_CHECK_INSTALL
# (auto: when not on the CPU and wheels are there; 1; 0), GPU_CHECK_WHEELS (.whl),
# GPU_CHECK_SITE (/tmp/site), GPU_CHECK_DATA (.whl/gfn2-xtb-5000.npz),
# GPU_CHECK_WORK (/tmp/gpu-check, emptied first).
set -u
cd "$(dirname "$0")/.." || exit 1

export DEV=${GPU_CHECK_DEVICE:-cuda}
export QUICK=${GPU_CHECK_QUICK:-0}
export OUT=${OUT:-/tmp/gpu-check-out}
export WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
export WHEELS=${GPU_CHECK_WHEELS:-.whl}
export SITE=${GPU_CHECK_SITE:-/tmp/site}
export DATA=${GPU_CHECK_DATA:-$PWD/.whl/gfn2-xtb-5000.npz}
DEADLINE=${GPU_CHECK_DEADLINE:-500}

if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    PY=$GPU_CHECK_PYTHON
elif [ "$DEV" = cpu ] && [ -x .venv/bin/python ]; then
    PY=$PWD/.venv/bin/python
else
    PY=python3
fi
export PY

have_wheels() { compgen -G "$WHEELS/*.whl" > /dev/null; }
INSTALL=${GPU_CHECK_INSTALL:-auto}
if [ "$INSTALL" = auto ]; then
    if [ "$DEV" != cpu ] && have_wheels; then INSTALL=1; else INSTALL=0; fi
fi
export INSTALL

mkdir -p "$OUT"
rm -rf "$WORK"
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1
# the study's runs, the data cache and torch.compile's cache stay out of the repo and ~
export SPECOPT_HOME=$WORK/home SPECOPT_CACHE=$WORK/cache TORCHINDUCTOR_CACHE_DIR=$WORK/inductor
# not pip-installed (pyproject says python < 3.12): the repo and the wheels by path; launched
# workers inherit it (hpo.execution.launch starts them as sys.executable -m hpo.cli with os.environ)
if [ "$INSTALL" = 1 ]; then
    export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
DATA_ARGS=""
[ -f "$DATA" ] && DATA_ARGS="--dataset $DATA"
export DATA_ARGS

step_setup() {
    local rc=0
    if [ "$INSTALL" = 1 ]; then
        echo "installing $(find "$WHEELS" -maxdepth 1 -type f -name '*.whl' | wc -l) wheels" \
            "from $WHEELS into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" "$WHEELS"/*.whl || rc=1
    else
        echo "no wheel install (device $DEV, GPU_CHECK_INSTALL=${GPU_CHECK_INSTALL:-auto})"
    fi
    echo "python: $PY; PYTHONPATH=$PYTHONPATH"
    if [ -f "$DATA" ]; then echo "data: $DATA"
    else echo "data: $DATA is missing: the bundled dataset (needs qm9pack for Coulomb matrices)"; fi
    "$PY" - <<'EOF' || rc=1
import importlib.metadata as md
import os
import sys

print("python", sys.version.split()[0], sys.executable)
for name in ["torch", "triton", "numpy", "scipy", "pandas", "scikit-learn", "optuna",
             "sqlalchemy", "alembic", "pydantic", "pydantic-core", "plotly", "typer", "rich",
             "typing-extensions", "pytest"]:
    try:
        d = md.distribution(name)
        print(f"  {name:18} {d.version:14} {d.locate_file('')}")
    except md.PackageNotFoundError:
        print(f"  {name:18} MISSING")
import torch

print("torch", torch.__version__, "CUDA", torch.version.cuda, "available",
      torch.cuda.is_available(), "threads", torch.get_num_threads(), "cpus", os.cpu_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}, "
          f"{p.multi_processor_count} SMs; cuDNN {torch.backends.cudnn.version()}; "
          f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
    "$PY" -m hpo.cli --help > /dev/null && echo "python -m hpo.cli: imports" || rc=1
    "$PY" -m bench.pack_speed --help > /dev/null \
        && echo "python -m bench.pack_speed (and bench.train_speed): imports" || rc=1
    if command -v nvidia-smi > /dev/null; then nvidia-smi || rc=1
    else echo "no nvidia-smi"; [ "$DEV" = cpu ] || rc=1; fi
    return $rc
}

step_train_speed() {
    local sizes=full,5000 batches=200
    [ "$QUICK" = 1 ] && sizes=1000 batches=2
    "$PY" -m bench.train_speed --devices "$DEV" --synthetic \
        --sizes "$sizes" --amp off,bf16 --max-batches "$batches"
}

step_pack_speed() {
    local size=full packs=1,2,4,8,16,32 batches=100
    [ "$QUICK" = 1 ] && size=1000 packs=1,2 batches=2
    "$PY" -m bench.pack_speed --devices "$DEV" --synthetic \
        --size "$size" --packs "$packs" --max-batches "$batches"
}

# run_study NAME ARGS...: the demo study in its own SQLite file, then its status, a check of
# its trials (every one finished, >= 1 complete, none failed, all on $DEV) and its report
run_study() {
    local name=$1; shift
    local url="sqlite:///$WORK/$name.db" out="$WORK/$name-report" quick=""
    [ "$QUICK" = 1 ] && quick="--n-trials 2 --epochs 2 --subset 300"
    # stopped (SIGTERM: the workers finish their epoch) 25 s before the step's end, so that
    # the status and the check below still say how far it got
    # shellcheck disable=SC2086  # DATA_ARGS and quick are word lists
    timeout -k 10 $((STEP_T - 25)) "$PY" -m hpo.cli run demo --storage "$url" --out "$out" \
        --device "$DEV" $DATA_ARGS $quick "$@"
    local rc=$?
    echo "== specopt run exited $rc$( ((rc == 124)) && echo ": stopped after $((STEP_T - 25))s")"
    "$PY" -m hpo.cli status demo --storage "$url"
    STUDY_URL=$url "$PY" - <<'EOF' || rc=1
import collections
import os
import sys

import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name="demo", storage=os.environ["STUDY_URL"])
want = os.environ["DEV"]
states = collections.Counter(t.state.name for t in study.trials)
for t in study.trials:
    a = t.user_attrs
    took = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_complete and t.datetime_start else None
    print(f"  trial {t.number}: {t.state.name:8} value {t.values} epochs {a.get('epochs_run')} "
          f"s/epoch {a.get('seconds_per_epoch')} device {a.get('device')} "
          f"{'' if took is None else f'{took:.1f} s'} {a.get('failure') or ''}")
problems = []
if states["COMPLETE"] < 1:
    problems.append("no complete trial")
if states["FAIL"]:
    problems.append(f"{states['FAIL']} failed")
if states["RUNNING"] or states["WAITING"]:
    problems.append("unfinished trials")
devices = {str(t.user_attrs.get("device")) for t in study.trials if t.state.name == "COMPLETE"}
if not all(d.startswith(want) for d in devices):
    problems.append(f"trials ran on {sorted(devices)}, not {want}")
print(f"CHECK {'OK' if not problems else 'FAILED: ' + '; '.join(problems)}: "
      f"{dict(states)}, devices {sorted(devices)}")
sys.exit(1 if problems else 0)
EOF
    echo "== report: $(find "$out" -type f 2> /dev/null | wc -l) files in $out"
    local md
    md=$(find "$out" -name '*.md' 2> /dev/null | head -1)
    [ -n "$md" ] && head -10 "$md"
    [ -n "$md" ] || rc=1
    return $rc
}

step_study() { run_study study --workers 2; }
step_study_pack() { run_study study_pack --workers 1 --pack 4; }

step_tests() {
    local files
    files=$(grep -rli --include='test_*.py' cuda tests | sort)
    echo "files mentioning CUDA:" "${files//$'\n'/ }"
    # the carried dataset has its Coulomb matrices: the fixtures' subsets need no qm9pack
    [ -f "$DATA" ] && export SPECOPT_TEST_DATASET=$DATA
    # shellcheck disable=SC2086
    "$PY" -m pytest -q -rs -p no:cacheprovider -k cuda --continue-on-collection-errors $files
}

step_compile() {
    local sizes=5000 batches=200
    [ "$QUICK" = 1 ] && sizes=1000 batches=2
    "$PY" -m bench.train_speed --devices "$DEV" --synthetic \
        --sizes "$sizes" --amp bf16 --max-batches "$batches" --compile
}
export -f step_setup step_train_speed step_pack_speed run_study step_study step_study_pack \
    step_tests step_compile

SUMMARY=()
# step N NAME CAP RESERVE: run step_NAME under a timeout of CAP seconds, less if the deadline
# (less RESERVE seconds kept for the steps after it) comes first; skipped under 20 s
step() {
    local n=$1 name=$2 cap=$3 reserve=$4
    local file="$OUT/$n-$name.txt" left=$((DEADLINE - SECONDS - reserve))
    local t=$((cap < left ? cap : left))
    if ((t < 20)); then
        echo "== $n $name: skipped, ${left}s left" | tee "$file"
        SUMMARY+=("$(printf '%-2s %-12s %-14s %5s' "$n" "$name" skipped -)")
        return
    fi
    local start=$SECONDS rc
    export STEP_T=$t
    {
        echo "== $n $name: timeout ${t}s, at ${SECONDS}s"
        timeout -k 10 "$t" bash -c "step_$name"
    } 2>&1 | tee "$file"
    rc=${PIPESTATUS[0]}
    local how=ok
    ((rc == 124 || rc == 137)) && how="TIMEOUT(${t}s)"
    ((rc != 0 && rc != 124 && rc != 137)) && how="FAILED(rc $rc)"
    SUMMARY+=("$(printf '%-2s %-12s %-14s %5s' "$n" "$name" "$how" "$((SECONDS - start))")")
}

# reserve: the least the later steps 2-5 need (45, 60, 90 and 30 s); 6 and 7 get what is left
#    n name         cap reserve
step 1 setup         60 225
step 2 train_speed  100 180
step 3 pack_speed   150 120
step 4 study        160  30
step 5 tests         60   0
step 6 study_pack   120   0
step 7 compile      300   0

# the end of the output is what the device tool's reply shows: the results, short
tables() {  # the data line and the table of a benchmark's output file
    [ -f "$1" ] && grep -q '^device ' "$1" \
        && { echo "-- $(basename "$1")"; sed -n '/^data: /p;/^device /,$p' "$1"; }
}
{
    echo "== summary: device $DEV, quick $QUICK, ${SECONDS}s in all (deadline ${DEADLINE}s)"
    echo "n  step         result         seconds"
    printf '%s\n' "${SUMMARY[@]}"
    tables "$OUT/2-train_speed.txt"
    tables "$OUT/7-compile.txt"
    tables "$OUT/3-pack_speed.txt"
    for f in "$OUT/4-study.txt" "$OUT/6-study_pack.txt"; do
        [ -f "$f" ] \
            && { echo "-- $(basename "$f")"; grep -E '^(CHECK|== specopt run|study demo:)' "$f"; }
    done
    [ -f "$OUT/5-tests.txt" ] && { echo "-- 5-tests.txt"; tail -n 1 "$OUT/5-tests.txt"; }
} 2>&1 | tee "$OUT/8-summary.txt"
