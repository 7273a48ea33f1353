#!/usr/bin/env bash
# The first atlas: the paper's experiment on the two embedded models (CPU-sized).
#
#   bash experiments/paper_tasks.sh [SNI_DIR]      (default ../shared/data/sni)
#
# Ingests cgvst, gv, grad_x_act, lape and random for SmolLM2-135M-Instruct and Gemma 3 270M on
# nine SNI tasks, imports the paper's released Llama-2-7B-chat sets, inhibits (factor 0) and
# amplifies (factor 2) each task's CGVST set with random controls, inhibits every baseline's
# sets, measures the gold label's probability and exact match (greedy answers) under inhibition,
# and writes docs/results.md with its figures. Every step is idempotent: re-running resumes
# and reuses what is stored. Sizes (1 shot, 24 scoring and 12 evaluation examples per task)
# keep the whole run to a few hours on two CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SNI=${1:-../shared/data/sni}
PUBLISHED=${PUBLISHED:-../shared/data/published/cgvst-llama2-7b-chat}
export ATLAS_DB=${ATLAS_DB:-experiments/paper_tasks.duckdb}
ATLAS=${ATLAS:-.venv/bin/atlas}
MODELS=(smollm2-135m-instruct gemma-3-270m)
TASKS=(task1645 task195 task274 task379 task391 task512 task566 task190 task227)
SHOTS=1
SCORE_EXAMPLES=${SCORE_EXAMPLES:-24}
EVAL_EXAMPLES=${EVAL_EXAMPLES:-12}
SEED=0
AMPLIFY=2
start=$(date +%s)
task_args=()
for t in "${TASKS[@]}"; do task_args+=(--task "$t"); done

ingest() {
  $ATLAS ingest --model "$1" "${task_args[@]}" --sni-dir "$SNI" --shots $SHOTS \
    --examples $SCORE_EXAMPLES --seed $SEED --method cgvst --method gv --method grad_x_act \
    --method lape --method random
}
run_sets() {  # model method factor [extra args]: each task's set in turn, all tasks evaluated
  local model=$1 method=$2 factor=$3; shift 3
  $ATLAS ablate --model "$model" "${task_args[@]}" --method "$method" --factor "$factor" \
    --eval-task all --examples $EVAL_EXAMPLES --shots $SHOTS --seed $SEED --control-seed $SEED \
    --sni-dir "$SNI" "$@"
}
baselines() {  # model [extra args]
  local model=$1; shift
  for method in gv grad_x_act lape random; do run_sets "$model" "$method" 0 --no-control "$@"; done
}

for f in "$PUBLISHED"/*.pth; do
  $ATLAS import "$f" --model llama-2-7b-chat --task "$(basename "$f" .pth)" --layers 32 --d-mlp 11008
done
# Stages in order of importance, so that a cut-short run still holds the main results.
ingest "${MODELS[0]}"
ingest "${MODELS[1]}"
run_sets "${MODELS[0]}" cgvst 0
run_sets "${MODELS[1]}" cgvst 0
baselines "${MODELS[0]}"
run_sets "${MODELS[0]}" cgvst $AMPLIFY
run_sets "${MODELS[1]}" cgvst $AMPLIFY
baselines "${MODELS[1]}"
# Accuracy over 12 examples moves in steps of 1/12 and sits near chance for these small models:
# the gold label's probability (label_prob) is the finer measure of the same predictions.
run_sets "${MODELS[0]}" cgvst 0 --metric label_prob
run_sets "${MODELS[1]}" cgvst 0 --metric label_prob
run_sets "${MODELS[0]}" cgvst 0 --metric exact_match
baselines "${MODELS[0]}" --metric label_prob
run_sets "${MODELS[1]}" cgvst 0 --metric exact_match
.venv/bin/python experiments/write_results.py --db "$ATLAS_DB" --amplify $AMPLIFY \
  --wall-seconds $(( $(date +%s) - start )) \
  --command "bash experiments/paper_tasks.sh $SNI" --sni-dir "$SNI" \
  --sizes "shots=$SHOTS, scoring examples=$SCORE_EXAMPLES, evaluation examples=$EVAL_EXAMPLES, seed=$SEED"
