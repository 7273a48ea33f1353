#!/usr/bin/env bash
# The first atlas: the paper's experiment on the three embedded models, at the paper's prompt scale.
#
#   bash experiments/paper_tasks.sh [SNI_DIR] [MORE_SNI_DIR]
#        (defaults ../shared/data/sni and ../shared/data/sni-more)
#
# Ingests cgvst (the released definition), cgvst_marker, gv, grad_x_act, lape and random for
# SmolLM2-135M-Instruct, Gemma 3 270M and Qwen2.5-Coder-0.5B-Instruct (a model that does the
# paper's tasks above chance; amplified x2 only), all in float32 (bfloat16 is emulated on this
# CPU: 32x slower), on the paper's SNI tasks plus the three language-ID tasks
# of sni-more, at 5 shots on 100 seeded examples of each task's scoring half; imports the paper's
# released Llama-2-7B-chat sets; records the neuron evidence of SmolLM2 and Gemma (`atlas describe`,
# the same 100 scoring examples of every task, each instance alone); inhibits (x0) every task's CGVST set, then, for the tasks the
# model does above chance, inhibits (x0) every other method's sets, amplifies (x2, x4) the CGVST
# sets and inhibits their shared and specific parts (`atlas split`); each set evaluated on 100
# seeded examples of every task's held-out half (label likelihood, per-example outcomes stored)
# and against 3 random controls of the same per-layer counts on the set's own task (the paired
# test's comparison; 20 for the set-level test of the CGVST, grad_x_act and random sets of the
# above-chance tasks); writes docs/results.md. Every step is idempotent: re-running resumes and
# reuses what is stored, so the run can be spread over several sessions.
set -euo pipefail
cd "$(dirname "$0")/.."
SNI=${1:-../shared/data/sni}
MORE=${2:-../shared/data/sni-more}
PUBLISHED=${PUBLISHED:-../shared/data/published/cgvst-llama2-7b-chat}
mkdir -p "${ATLAS_HOME:-$HOME/.cache/atlas}/experiments"
export ATLAS_DB=${ATLAS_DB:-${ATLAS_HOME:-$HOME/.cache/atlas}/experiments/paper_tasks.duckdb}
ATLAS=${ATLAS:-.venv/bin/atlas}
# What is finished is kept as a snapshot in the repository (Parquet; files of finished work never
# change), taken after every step; a machine without the database starts from it.
SNAPSHOT=${SNAPSHOT:-experiments/atlas}
if [[ ! -e $ATLAS_DB && -e $SNAPSHOT/manifest.json ]]; then $ATLAS db restore "$SNAPSHOT"; fi
snapshot() { $ATLAS db snapshot "$SNAPSHOT"; }
MODELS=(smollm2-135m-instruct gemma-3-270m qwen2.5-coder-0.5b-instruct)
dtype_of() {  # the dtype each model's atlas is computed in (pinned: auto depends on the CPU)
  echo float32
}
factors_up_of() {  # amplification factors per model
  case $1 in qwen*) echo 2 ;; *) echo 2 4 ;; esac
}
# The language-ID tasks first: the models do them above chance, so their sets' effects are the
# readable ones, and a run cut short holds them. (LAPE's runs depend on this order; keep it.)
TASKS=(task533 task447 task896 task1645 task195 task274 task379 task391 task512 task566 task190
       task227)
SHOTS=5
SCORE_EXAMPLES=100  # per task, from the scoring half
EVAL_EXAMPLES=100  # per task, from the held-out half
SEED=0
CONTROLS=3
SET_CONTROLS=20  # for the set-level test of the main sets (and of random sets, its calibration)
FACTORS_UP=(2 4)
start=$(date +%s)
task_args=()
for t in "${TASKS[@]}"; do task_args+=(--task "$t"); done
dirs=(--sni-dir "$SNI" --sni-dir "$MORE")

ingest() {  # model method...
  local model=$1; shift
  local methods=()
  for m in "$@"; do methods+=(--method "$m"); done
  $ATLAS ingest --model "$model" --dtype "$(dtype_of "$model")" "${task_args[@]}" "${dirs[@]}" \
    --skip-missing --shots $SHOTS --examples $SCORE_EXAMPLES --seed $SEED "${methods[@]}" \
    --exemplars 0  # the evidence comes from record_evidence (each instance alone)
  snapshot
}
record_evidence() {  # model: what every neuron responds to (each instance alone) and writes
  $ATLAS describe --model "$1" --dtype "$(dtype_of "$1")" "${task_args[@]}" "${dirs[@]}" \
    --examples $SCORE_EXAMPLES --shots 0 --seed $SEED
  snapshot
}
run_sets() {  # model method factor [task...]: each task's set in turn (default: every task's),
              # every task evaluated
  local model=$1 method=$2 factor=$3; shift 3
  local sets=("$@") set_args=()
  (( ${#sets[@]} )) || sets=("${TASKS[@]}")
  for t in "${sets[@]}"; do set_args+=(--task "$t"); done
  $ATLAS ablate --model "$model" --dtype "$(dtype_of "$model")" "${set_args[@]}" \
    --method "$method" --factor "$factor" \
    --eval-task all --examples $EVAL_EXAMPLES --shots $SHOTS --seed $SEED --control-seed $SEED \
    --controls $CONTROLS --controls-on own "${dirs[@]}"
  snapshot
}
above_chance() {  # model: the tasks its unmodified model does above chance (stored baselines)
  $ATLAS report --model "$1@$(dtype_of "$1")" --method cgvst --factor 0 --format json | .venv/bin/python -c \
    'import json, sys; print(*[c["task"] for c in json.load(sys.stdin)["columns_info"] if c.get("above")])'
}

published=("$PUBLISHED"/*.pth)
imported=0
if [[ -e $ATLAS_DB ]]; then
  imported=$($ATLAS sql "SELECT count(*) AS n FROM neuron_sets WHERE name LIKE
    'llama-2-7b-chat/%/cgvst:imported'" --format csv | tail -1)
fi
if (( imported < ${#published[@]} )); then
  for f in "${published[@]}"; do
    $ATLAS import "$f" --model llama-2-7b-chat --task "$(basename "$f" .pth)" --layers 32 \
      --d-mlp 11008
  done
  snapshot
fi
# Stages in order of importance, so that a cut-short run still holds the main results; one model
# at a time, so that the first model's picture is whole before the second model starts.
# Beyond CGVST x0 (every task's set), the sets of the tasks a model does above chance: only their
# effects enter the summary tests (a set whose own task is at chance is left out of them). The
# stages that need no new scoring come first. (cgvst and grad_x_act share one pass: same prompts,
# targets and loss.)
for model in "${MODELS[@]}"; do
  ingest "$model" cgvst grad_x_act
  case $model in smollm2*|gemma*) record_evidence "$model" ;; esac
  run_sets "$model" cgvst 0
  above=$(above_chance "$model")
  echo "$model does above chance: ${above:-no task}"
  if [[ -n $above ]]; then
    # The paper's central test first: the CGVST sets of the above-chance tasks against 20 random
    # controls (set-level test) and against the other tasks' sets (evaluated above).
    # shellcheck disable=SC2086  # the task list splits into words
    CONTROLS=$SET_CONTROLS run_sets "$model" cgvst 0 $above
    # shellcheck disable=SC2086
    for factor in $(factors_up_of "$model"); do run_sets "$model" cgvst "$factor" $above; done
    # shellcheck disable=SC2086
    run_sets "$model" grad_x_act 0 $above
    # Every set hurts the same tasks: is it the neurons most sets share, or the task's own?
    $ATLAS split --model "$model" --method cgvst
    for part in shared specific; do
      # shellcheck disable=SC2086
      run_sets "$model" "cgvst-$part" 0 $above
    done
  fi
  ingest "$model" cgvst_marker gv lape random
  if [[ -n $above ]]; then
    for method in cgvst_marker gv lape random; do
      # shellcheck disable=SC2086
      run_sets "$model" "$method" 0 $above
    done
    # The per-example paired test holds the controls' mean fixed; whether a set does more than
    # random sets of its size do is a test against their spread, which needs more controls.
    # The random method's sets, themselves random, show how often that test is fooled.
    for method in random grad_x_act; do
      # shellcheck disable=SC2086
      CONTROLS=$SET_CONTROLS run_sets "$model" "$method" 0 $above
    done
  fi
done
amplify_of=()
for model in "${MODELS[@]}"; do
  amplify_of+=(--amplify-of "$model=$(factors_up_of "$model" | tr ' ' ',')")
done
.venv/bin/python experiments/write_results.py --db "$ATLAS_DB" --amplify "${FACTORS_UP[@]}" \
  "${amplify_of[@]}" --n-tasks ${#TASKS[@]} --controls $CONTROLS --set-controls $SET_CONTROLS \
  --wall-seconds $(( $(date +%s) - start )) \
  --command "bash experiments/paper_tasks.sh $SNI $MORE" --sni-dir "$SNI" "$MORE" \
  --sizes "shots=$SHOTS, scoring examples=$SCORE_EXAMPLES, evaluation examples=$EVAL_EXAMPLES, seed=$SEED, controls=$CONTROLS on the set's own task ($SET_CONTROLS for the set-level test)"
