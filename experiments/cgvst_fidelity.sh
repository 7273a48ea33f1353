#!/usr/bin/env bash
# How far atlas's first reading of CGVST (cgvst_marker: predict the role-marker tokens, one mean)
# is from the released definition (cgvst): both methods on the nine SNI tasks for the two
# embedded models, same prompts' seeds, then the Jaccard index of each task's two top-5% sets.
#
#   bash experiments/cgvst_fidelity.sh [SNI_DIR]      (default ../shared/data/sni)
#
# Idempotent: a re-run reuses complete runs and resumes interrupted ones.
set -euo pipefail
cd "$(dirname "$0")/.."
SNI=${1:-../shared/data/sni}
# Kept outside the work tree, so that a run spread over sessions keeps its progress.
mkdir -p "${ATLAS_HOME:-$HOME/.cache/atlas}/experiments"
export ATLAS_DB=${ATLAS_DB:-${ATLAS_HOME:-$HOME/.cache/atlas}/experiments/cgvst_fidelity.duckdb}
ATLAS=${ATLAS:-.venv/bin/atlas}
SHOTS=${SHOTS:-5}
EXAMPLES=${EXAMPLES:-48}
task_args=()
for t in task1645 task195 task274 task379 task391 task512 task566 task190 task227; do
  task_args+=(--task "$t")
done
for model in smollm2-135m-instruct gemma-3-270m; do
  $ATLAS ingest --model "$model" "${task_args[@]}" --sni-dir "$SNI" --shots "$SHOTS" \
    --examples "$EXAMPLES" --seed 0 --method cgvst --method cgvst_marker
done
$ATLAS sql "
  WITH members AS (
    SELECT model, task, method, layer, neuron
    FROM task_sets JOIN neuron_set_members USING (set_id)
    WHERE method IN ('cgvst', 'cgvst_marker'))
  SELECT model, task,
         round(count(*) FILTER (WHERE n = 2) / count(*), 3) AS jaccard_released_vs_marker
  FROM (SELECT model, task, layer, neuron, count(*) AS n FROM members GROUP BY ALL)
  GROUP BY ALL ORDER BY model, task" --format csv
