#!/usr/bin/env bash
# One specopt worker per SLURM array task, all on one study in one PostgreSQL database.
#
#   sbatch --array=0-15 docs/slurm_array.sh full-tpe
#
# The same without a script to edit (and with the time-limit requeue done for you):
#   specopt launch full-tpe --on slurm --workers 16 --gpus-per-worker 1 --time 24:00:00
# (pip install 'specopt[slurm]'; docs/distributed.md). This script is the plain-sbatch variant.
#
# Every task runs `specopt worker`, which takes trials until the study's budget is spent; the
# workers coordinate only through the database, so tasks may start late, be preempted or be
# requeued: a task killed mid-trial (even with SIGKILL) stops sending heartbeats, its trial is
# marked FAIL after the study's grace period and re-run by another worker. SLURM's SIGTERM at the
# time limit makes a worker finish its current epoch, re-queue its trial and exit cleanly
# (--signal below sends it early enough for one epoch to finish).
#
# Set SPECOPT_STORAGE to the shared database (password in ~/.pgpass rather than here) and
# SPECOPT_ARTIFACTS to a folder every node can write (checkpoints and predictions).
#SBATCH --job-name=specopt
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=24:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --requeue
#SBATCH --output=specopt-%A_%a.out
set -euo pipefail

STUDY=${1:?usage: sbatch --array=0-N docs/slurm_array.sh STUDY [worker options]}
shift
: "${SPECOPT_STORAGE:?set SPECOPT_STORAGE, e.g. postgresql+psycopg://specopt@dbhost:5432/specopt}"
: "${SPECOPT_ARTIFACTS:?set SPECOPT_ARTIFACTS to a folder on the shared file system}"

# The environment holding specopt (adapt: module load, conda activate, a venv on shared storage).
if [ -n "${SPECOPT_VENV:-}" ]; then . "$SPECOPT_VENV/bin/activate"; fi
# Derived arrays (Coulomb matrices, spectra) are cached per node; node-local disk is fastest.
export SPECOPT_CACHE=${SPECOPT_CACHE:-${TMPDIR:-/tmp}/specopt-cache-$USER}

# exec: SLURM's signals go straight to the worker
exec specopt worker "$STUDY" \
  --storage "$SPECOPT_STORAGE" \
  --artifacts "$SPECOPT_ARTIFACTS" \
  --worker-index "${SLURM_ARRAY_TASK_ID:-0}" \
  --threads "${SLURM_CPUS_PER_TASK:-1}" \
  "$@"
