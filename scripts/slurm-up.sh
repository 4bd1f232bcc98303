#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (Debian's slurm-wlm; no cgroups, no systemd).
# Installs the packages if missing. State lives in ${SLURM_DIR:-.slurm}; prints the SLURM_CONF to export.
set -euo pipefail
DIR="$(realpath -m "${SLURM_DIR:-.slurm}")"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
   || [ ! -x /usr/sbin/munged ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi
mkdir -p "$DIR/state" "$DIR/spool"
HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))"
cat > "$DIR/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
StateSaveLocation=${DIR}/state
SlurmdSpoolDir=${DIR}/spool
SlurmctldPidFile=${DIR}/slurmctld.pid
SlurmdPidFile=${DIR}/slurmd.pid
SlurmctldLogFile=${DIR}/slurmctld.log
SlurmdLogFile=${DIR}/slurmd.log
NodeName=${HOST} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM_MB} State=UNKNOWN
PartitionName=debug Nodes=${HOST} Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /run/munge && chown munge:munge /run/munge
[ -f /etc/munge/munge.key ] || (command -v mungekey >/dev/null && mungekey --create >/dev/null 2>&1 || true)
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld -f "$DIR/slurm.conf"
pgrep -x slurmd >/dev/null || slurmd -f "$DIR/slurm.conf"
export SLURM_CONF="$DIR/slurm.conf"
for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "SLURM is up: export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "SLURM did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
exit 1
