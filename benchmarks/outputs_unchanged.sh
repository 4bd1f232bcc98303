#!/usr/bin/env bash
# Are the outputs of this checkout byte-identical to those of another commit? Runs, at one thread,
# the demo (`influence-lab pipeline`) and a small DDPM attribute + LDS run with all eight built-in
# methods, once with the code at REF (a temporary git worktree) and once with this checkout, each
# into its own fresh output folder, and compares every CSV, parquet and NPY file they write (the
# demo's stats.csv, the attribution tables, the LDS tables, ...) and the result folders' names
# (their signatures). JSON provenance differs only by the output folder's absolute path.
#   bash benchmarks/outputs_unchanged.sh REF        (e.g. REF=HEAD~5; about 20 min on 2 cores)
set -euo pipefail
REF=${1:?usage: outputs_unchanged.sh REF}
ROOT=$(git rev-parse --show-toplevel)
PY=${PYTHON:-$ROOT/.venv/bin/python}
WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/ref" >/dev/null 2>&1 || true' EXIT
git -C "$ROOT" worktree add --detach "$WORK/ref" "$REF" >/dev/null
ln -s ../../conf "$WORK/ref/src/influence_lab/conf"  # the configs beside the package, as installed
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
DDPM="model=ddpm data=digits model.fit.max_epochs=20 generate.m=2
  generate.prompts=[digit_zero,digit_seven] attribution.gradient.proj_dim=256 logger=none
  attribution.methods=[paper,fused,caption_only,raw_only,latent_only,tracin,trak,dtrak]"
LDS="lds.subsets=8 lds.seeds=[1] lds.pack_size=8 lds.trak_ensembles=[1] lds.track_items=2"
run() {  # run SRC OUT: the three commands with the package at SRC
  local cli=(env PYTHONPATH="$1" "$PY" -m influence_lab.cli)
  "${cli[@]}" pipeline paths.output_dir="$2" logger=none
  # shellcheck disable=SC2086
  "${cli[@]}" attribute $DDPM paths.output_dir="$2"
  # shellcheck disable=SC2086
  "${cli[@]}" lds $DDPM $LDS paths.output_dir="$2"
}
(cd "$WORK/ref" && run "$WORK/ref/src" "$WORK/before") > "$WORK/before.log" 2>&1
(cd "$ROOT" && run "$ROOT/src" "$WORK/after") > "$WORK/after.log" 2>&1
list() { (cd "$1" && find train generate attribute counterfactual lds -type f \
  \( -name '*.csv' -o -name '*.parquet' -o -name '*.npy' \) | sort); }
diff <(list "$WORK/before") <(list "$WORK/after") || { echo "result folders differ"; exit 1; }
differ=0
while read -r f; do
  cmp -s "$WORK/before/$f" "$WORK/after/$f" || { echo "differs: $f"; differ=1; }
done < <(list "$WORK/before")
echo "$(list "$WORK/before" | wc -l) files compared against $REF; differing: $differ"
exit $differ
