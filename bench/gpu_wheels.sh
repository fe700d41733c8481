#!/usr/bin/env bash
# Fills .whl/ (ignored through .git/info/exclude) with what bench/gpu_check.sh carries to the GPU
# machine, whose image has torch, numpy, pandas, scipy, scikit-learn, typer, ... but no optuna,
# pydantic or plotly, and no qm9pack, and whose registries are out of reach:
#   - the wheels it lacks, for CPython 3.12 manylinux x86_64, at the versions of .venv (what the
#     tests here pass with); --no-deps, so every transitive need is listed below and checked
#   - gfn2-xtb-5000.npz: the bundled dataset's first 5,000 molecules (by rank: every subset of it
#     is the bundled dataset's subset) with their sorted Coulomb matrices, which the image cannot
#     compute without qm9pack's geometries (the study and the tests train on it)
# Run once, here, in the repo root (needs .venv and the registry):
#   bash bench/gpu_wheels.sh            # download, check the needs, build the dataset
#   bash bench/gpu_wheels.sh --check    # and dry-run gpu_check.sh (quick, CPU) in a copy of the
#                                       # device image's packages made from .venv's (Python 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
DIR=.whl
[ -x "$PY" ] || { echo "needs .venv (README: install)" >&2; exit 1; }

# What the device image lacks (the rest of the code's needs are in it: see IMAGE below).
CARRY=(
    optuna alembic mako sqlalchemy colorlog          # optuna and its needs (PyYAML, tqdm: image)
    pydantic pydantic-core annotated-types typing-inspection typing-extensions  # hpo.study.config
    plotly                                           # the report's figures (narwhals: image)
    typer shellingham rich annotated-doc             # the CLI, at the version tested here
)
# The device image's packages (KINDS.md, read 2026-11-17): the closure check and --check's copy.
IMAGE="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage
cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops
equinox etils execnet filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch
grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna imageio iniconfig
interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown
markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyre-extensions pyparsing pyproject-hooks pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu
safetensors scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp"
export IMAGE

grep -qxF /.whl/ "$(git rev-parse --git-path info/exclude)" 2> /dev/null \
    || echo /.whl/ >> "$(git rev-parse --git-path info/exclude)"

# name==version of each, as installed in .venv
mapfile -t PINS < <("$PY" - "${CARRY[@]}" <<'EOF'
import importlib.metadata as md
import sys

for name in sys.argv[1:]:
    print(f"{name}=={md.version(name)}")
EOF
)
echo "carrying: ${PINS[*]}"

mkdir -p "$DIR"
rm -f "$DIR"/*.whl  # one version of each: two stop the whole install there
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$DIR" "${PINS[@]}" 2>&1 | grep -v 'is ignored' || true
[ "$(find "$DIR" -maxdepth 1 -type f -name '*.whl' | wc -l)" = "${#CARRY[@]}" ] \
    || { echo "expected ${#CARRY[@]} wheels in $DIR, got:" "$DIR"/* >&2; exit 1; }

# every need (Requires-Dist, markers as on Python 3.12 Linux, no extras) is carried or there
"$PY" - "$DIR" <<'EOF'
import os
import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython",
       "extra": ""}
wheels = sorted(Path(sys.argv[1]).glob("*.whl"))
have = {norm(w.name.split("-")[0]) for w in wheels} | {norm(n) for n in os.environ["IMAGE"].split()}
missing = []
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA")))
    for line in meta.decode().splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if (req.marker is None or req.marker.evaluate(env)) and norm(req.name) not in have:
                missing.append(f"{req} (for {w.name})")
if missing:
    sys.exit("needed but neither carried nor in the image:\n  " + "\n  ".join(missing))
print(f"needs checked: every Requires-Dist of the {len(wheels)} wheels is carried or in the image")
EOF

# the levels dataset with its Coulomb matrices (the same molecules, split and rank)
"$PY" - "$DIR/gfn2-xtb-5000.npz" <<'EOF'
import sys

from data_prep import load_levels
from data_prep.dataset import LevelsDataset
from data_prep.training_data import dataset_coulomb

ds = load_levels("gfn2-xtb").subset(5000)
coulomb = dataset_coulomb(ds, progress=False)
LevelsDataset(ds.index, ds.levels, ds.split, ds.rank,
              {**ds.provenance, "coulomb": "sorted, from qm9pack (bench/gpu_wheels.sh)"},
              coulomb).save(sys.argv[1])
print(f"{sys.argv[1]}: {len(ds)} molecules with their Coulomb matrices")
EOF

ls -l "$DIR"
echo "$DIR: $(du -cb "$DIR"/* | tail -1 | cut -f1) bytes"
tree=$( (git ls-files -co --exclude-standard -z; find "$DIR" -type f -print0) \
    | du -cb --files0-from=- | tail -1 | cut -f1)
echo "what a device call with carry=[\".whl\"] sends: $tree bytes (limit 67,108,864)"

[ "${1:-}" = --check ] || exit 0

# --check: a Python whose packages are .venv's that the image also has (linked), plus the same
# carried packages built for Python 3.11, runs every step of gpu_check.sh, quick, on the CPU
SIM=${GPU_SIM:-/tmp/gpu-sim}
rm -rf "$SIM"
"$("$PY" -c 'import sys; print(sys._base_executable)')" -m venv --without-pip "$SIM/venv"
"$PY" - "$SIM/image" <<'EOF'
import importlib.metadata as md
import os
import re
import sys
from pathlib import Path


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


image = {norm(n) for n in os.environ["IMAGE"].split()}
dst = Path(sys.argv[1])
dst.mkdir(parents=True)
linked = set()
for d in md.distributions():
    if norm(d.metadata["Name"]) not in image:
        continue
    linked.add(norm(d.metadata["Name"]))
    for top in {Path(f).parts[0] for f in d.files or []}:
        if top in ("..", "__pycache__") or top.endswith(".pth") or (dst / top).exists():
            continue
        (dst / top).symlink_to(d.locate_file(top))
print(f"{len(linked)} of .venv's distributions are in the image: linked into {dst}")
EOF
echo "$SIM/image" > "$(echo "$SIM"/venv/lib/python3*/site-packages)/image.pth"
"$PY" -m pip download -q --no-deps --only-binary=:all: -d "$SIM/wheels" "${PINS[@]}" 2>&1 \
    | grep -v 'is ignored' || true
cp "$DIR"/*.npz "$SIM/wheels/"
OUT=$SIM/out GPU_CHECK_DEVICE=cpu GPU_CHECK_QUICK=1 GPU_CHECK_INSTALL=1 \
    GPU_CHECK_PYTHON=$SIM/venv/bin/python GPU_CHECK_WHEELS=$SIM/wheels GPU_CHECK_SITE=$SIM/site \
    GPU_CHECK_WORK=$SIM/work GPU_CHECK_DATA=$SIM/wheels/gfn2-xtb-5000.npz \
    nice bash bench/gpu_check.sh
