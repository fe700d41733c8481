#!/usr/bin/env bash
# The README's test command: provision what the tests need, then run them all.
#   bash tests/run.sh [pytest options]
# Installs the test extras into the active Python (torch==2.13.0, the CPU build, when no torch is
# installed yet), Debian's chromium + chromium-driver for the browser tests (apt; needs root or
# sudo), starts a stopped local PostgreSQL cluster and a single-node SLURM (.ci/slurm-up.sh), and
# checks the services the tests need. The fast lane needs none of this (no root, no service):
#   python -m pytest -m "not slow"
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python}
if ! "$python" -c "import torch" 2>/dev/null; then
  "$python" -m pip install -q torch==2.13.0   # CPU build; on a GPU machine install torch first
fi
"$python" -m pip install -q -e ".[test]"

sudo_=""
[ "$(id -u)" -eq 0 ] || sudo_="sudo"
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  echo "tests/run.sh: installing chromium and chromium-driver (apt)" >&2
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# PostgreSQL tests need a server on 127.0.0.1:5432 (trust auth, database `test`); they fail, not
# skip, without one. Start a local Debian cluster if there is one and it is stopped.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && [ -d /etc/postgresql ]; then
  $sudo_ pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
fi
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "tests/run.sh: no PostgreSQL on 127.0.0.1:5432; the postgres tests will fail. Start one:" >&2
  echo "  docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres" >&2
fi

# SLURM tests (tests/integration/test_slurm.py) need a single-node SLURM: Debian's slurm-wlm and
# munge, installed and started here (root; no systemd). They fail, not skip, without one. The
# Ray tests start their own head (the `ray` package comes with the test extras).
if ! timeout 10 sinfo -h >/dev/null 2>&1; then
  bash .ci/slurm-up.sh || echo "tests/run.sh: SLURM did not start; the slurm tests will fail" >&2
fi

exec "$python" -m pytest -q "$@"
