#!/usr/bin/env bash
# A single-node SLURM on this machine for the tests (tests/integration/test_slurm.py): munged,
# slurmctld and slurmd started in the background without systemd, one partition `debug` holding
# this host with its real CPU count and memory (from `slurmd -C`). Idempotent: a running cluster
# that answers is left alone. Needs root and Debian's slurm-wlm + munge (installed when missing).
#   bash .ci/slurm-up.sh          # then: sinfo; specopt launch STUDY --on slurm ...
# Logs: /var/log/slurm/{slurmctld,slurmd}.log.
set -euo pipefail

sudo_=""
[ "$(id -u)" -eq 0 ] || sudo_="sudo"
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "slurm-up: installing slurm-wlm and munge (apt)" >&2
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq slurm-wlm munge >/dev/null
fi

if timeout 10 sinfo -h >/dev/null 2>&1 && timeout 10 scontrol ping 2>/dev/null | grep -q UP; then
  echo "slurm-up: SLURM already running" >&2
  exit 0
fi

conf=/etc/slurm/slurm.conf
marker="# specopt: single-node test cluster (.ci/slurm-up.sh)"
if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
  echo "slurm-up: $conf exists and is not ours; not touching it" >&2
  exit 1
fi

# munge: a key, its run folder, the daemon as user munge
$sudo_ mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  $sudo_ dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
fi
$sudo_ chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
$sudo_ chmod 0700 /etc/munge && $sudo_ chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  $sudo_ runuser -u munge -- /usr/sbin/munged --force  # --force: past a stale socket
fi

host=$(hostname -s)
node=$(slurmd -C | head -1)  # NodeName=host CPUs=.. ... RealMemory=..
$sudo_ mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
$sudo_ tee "$conf" >/dev/null <<EOF
$marker
ClusterName=specopt
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# no cgroups (containers, sandboxes): processes are tracked by parent pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# seconds between SIGTERM and SIGKILL: a worker finishes its epoch and re-queues its trial
KillWait=60
# requeued jobs start again at once (tests)
SchedulerParameters=bf_interval=5
MinJobAge=300
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
# drop the UpTime=... that slurmd -C prints on the node line, if any
$sudo_ sed -i 's/ UpTime=[^ ]*//' "$conf"

$sudo_ slurmctld -c 2>/dev/null || $sudo_ slurmctld  # -c: start clean (no old jobs)
$sudo_ slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "slurm-up: SLURM up: $(sinfo -h -o '%P %D %c %T' | head -1)" >&2
    exit 0
  fi
  sleep 1
done
echo "slurm-up: SLURM did not come up; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
sinfo >&2 || true
exit 1
