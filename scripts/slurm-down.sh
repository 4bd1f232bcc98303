#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by slurm-up.sh (munged is left running).
set -u
DIR="$(realpath -m "${SLURM_DIR:-.slurm}")"
for name in slurmd slurmctld; do
  if [ -f "$DIR/$name.pid" ]; then kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true; fi
done
sleep 1
echo "SLURM stopped"
