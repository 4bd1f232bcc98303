#!/usr/bin/env bash
# The GPU check: the pack benchmark (VAE and DDPM: process per retrain, sequential fits, one pack),
# a fashion DDPM fit, and TRAK's sharded featurisation and scoring of the whole fashion training
# file (the VAE's per-example gradients on the GPU), with the figures printed.
#   bash scripts/gpu-check.sh          # on a machine with a CUDA GPU (minutes)
#   bash scripts/gpu-check.sh --cpu    # the same steps, tiny, on the CPU (CI runs it: it cannot rot)
# Fashion-MNIST: Debian's dataset-fashion-mnist, or FASHION_DIR=<folder with the four .gz files>;
# without either, the DDPM fit uses the digits and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export WANDB_MODE=disabled
if [ "${1:-}" = "--cpu" ]; then
  TRAINER=cpu MEMBERS=4 SAMPLE=1 SCALE=0.05 FIT="model.fit.max_epochs=1 data.source.per_class=20"
  FEAT="model.fit.max_epochs=1 data.source.per_class=20 +attribution.gradient.shard_size=64"
else
  TRAINER=gpu MEMBERS=64 SAMPLE=3 SCALE=1 FIT="model.fit.max_epochs=30"
  FEAT="model.fit.max_epochs=5 data.source.per_class=null +attribution.gradient.shard_size=8192"
fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

"$PY" - "$TRAINER" <<'PY'
import sys, torch
trainer = sys.argv[1]
if trainer == "gpu" and not torch.cuda.is_available():
    sys.exit("gpu-check: no CUDA GPU here; run it with --cpu, or on a GPU machine")
where = torch.cuda.get_device_name() if trainer == "gpu" else f"CPU, {torch.get_num_threads()} threads"
print(f"gpu-check on {where}, torch {torch.__version__}")
PY

FASHION_DIR=${FASHION_DIR:-/usr/share/datasets/fashion-mnist}
if [ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then
  DATA="data=fashion data.source.path=$FASHION_DIR"
else
  DATA="data=digits"
  echo "gpu-check: no Fashion-MNIST in $FASHION_DIR (make data, or FASHION_DIR=...): the DDPM fit uses the digits"
fi

echo "== pack benchmark ($TRAINER): packed against sequential fits and one process per retrain, same run"
"$PY" benchmarks/retrain_throughput.py --models vae ddpm --members "$MEMBERS" --sample "$SAMPLE" \
  --epochs "$SCALE" --trainer "$TRAINER" --memory-members 0

echo "== DDPM fit ($TRAINER, $DATA)"
start=$SECONDS
"$PY" -m influence_lab.cli train model=ddpm $DATA trainer=$TRAINER trainer.progress_bar=false \
  logger=none paths.output_dir="$OUT" $FIT
echo "gpu-check: DDPM fit took $((SECONDS - start)) s wall (incl. start-up)"

echo "== TRAK features and scores ($TRAINER, the VAE on $DATA, sharded)"
TRAK="model=vae $DATA trainer=$TRAINER trainer.progress_bar=false logger=none paths.output_dir=$OUT
  attribution.methods=[trak] attribution.gradient.ensemble=1 generate.m=4 $FEAT"
start=$SECONDS
"$PY" -m influence_lab.cli featurise $TRAK   # prints "featurise trak: ... rows in X s"
echo "gpu-check: featurise took $((SECONDS - start)) s wall (incl. the VAE fit and start-up)"
start=$SECONDS
"$PY" -m influence_lab.cli attribute $TRAK
echo "gpu-check: attribute (kernel, query gradients, streamed top-k) took $((SECONDS - start)) s wall (incl. start-up)"
echo "gpu-check: done"
