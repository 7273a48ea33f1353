"""Write docs/results.md and its figures from the experiment's database, with the library's
reports and plots, plus summary tables read from the atlas views.

Usage: python experiments/write_results.py --db experiments/paper_tasks.duckdb [--amplify 2 4]
       [--n-tasks 12]
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import time
from pathlib import Path

import numpy as np
from evidence_results import evidence_lines

from atlas.errors import AtlasError
from atlas.intervene import report as intervention_report
from atlas.intervene.report_data import report_matrix
from atlas.intervene.stats import describe_tests, report_tests, sign_flip_p
from atlas.intervene.summary import significant
from atlas.query import (
    compare_models,
    depth_profile,
    method_overlap,
    overlap_matrix,
    specificity,
    task_similarity_agreement,
)
from atlas.query.core import resolve_model, rows, set_methods
from atlas.query.plots import plot_compare, plot_layers, plot_overlap
from atlas.store import open_db
from atlas.store.identity import task_labels
from atlas.tasks.sni import load_task

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGS = DOCS / "figures"
DESIGN = ["smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"]
TITLES = {"smollm2-135m-instruct": "SmolLM2-135M-Instruct", "gemma-3-270m": "Gemma 3 270M",
          "qwen2.5-coder-0.5b-instruct": "Qwen2.5-Coder-0.5B-Instruct"}
MODELS = list(DESIGN)  # the design's models stored in the database (set in main)
REFERENCE = "llama-2-7b-chat"
METHODS = ["cgvst", "cgvst_marker", "gv", "grad_x_act", "lape", "random"]
SPLIT_METHODS = ["cgvst-shared", "cgvst-specific"]  # `atlas split` of the CGVST sets
SET_LEVEL_METHODS = ["cgvst", "random", "grad_x_act"]  # with more controls, for the set-level test


def report_section(engine, name: str, factor: float, metric: str, png: Path) -> list[str]:
    """The markdown report of CGVST sets at ``factor`` by ``metric``, and its heatmap."""
    rep = intervention_report.build_report(engine, name, "cgvst", factor, metric)
    intervention_report.plot(rep, png)
    return [intervention_report.render(rep), f"![report {name} ×{factor:g} {metric}](figures/{png.name})",
            ""]


def active_hours(engine, gap_minutes: float = 10.0) -> float:
    """Compute time from the stored timestamps: the sum of gaps between consecutive stored rows
    (run starts and ends, evaluations), leaving out gaps over ``gap_minutes`` (idle time between
    invocations)."""
    stamps = rows(engine, """
        SELECT epoch(t) AS t FROM (
            SELECT started_at AS t FROM runs JOIN models USING (model_id) WHERE name IN :models
            UNION ALL SELECT finished_at FROM runs JOIN models USING (model_id) WHERE name IN :models
            UNION ALL SELECT created_at FROM evaluations) WHERE t IS NOT NULL ORDER BY 1""",
                  models=tuple(MODELS))
    gaps = np.diff([r["t"] for r in stamps])
    return float(gaps[gaps <= gap_minutes * 60].sum() / 3600)


@functools.cache
def chance_note(task: str, sni_dir: tuple[str, ...] | None) -> str:
    try:
        labels = load_task(task, list(sni_dir) if sni_dir else None).labels
    except AtlasError:
        return ""
    return f" (chance {1 / len(labels):.2f})" if labels else ""


def exact_match_lines(engine, name: str) -> list[str]:
    """Exact match under CGVST inhibition, on the tasks the unmodified model answers at all."""
    try:
        model_id = resolve_model(engine, name)["model_id"]
    except AtlasError:
        return []
    data = rows(engine, """
        SELECT set_task, is_control, eval_task, baseline, value, n
        FROM evaluation_effects
        WHERE model_id = :mid AND method = 'cgvst' AND factor = 0 AND metric = 'exact_match'
          AND set_id IN (SELECT set_id FROM task_sets)""", mid=model_id)
    if not data:
        return []
    names = sorted({r["set_task"] for r in data} | {r["eval_task"] for r in data})
    label = dict(zip(names, task_labels(names)))
    for r in data:
        r["set_task"], r["eval_task"] = label[r["set_task"]], label[r["eval_task"]]
    base = {r["eval_task"]: r["baseline"] for r in data}
    cell = {(r["set_task"], r["is_control"], r["eval_task"]): r["value"] for r in data}
    answered = sorted(t for t, b in base.items() if b > 0)
    silent = sorted(t for t, b in base.items() if b == 0)
    left_out = (f"Unmodified exact match is 0 on {', '.join(silent)}; left out." if silent else
                "Unmodified exact match is above 0 on every task.")
    lines = [f"**{name}** (n = {data[0]['n']} per task). {left_out}", ""]
    if not answered:
        return lines
    lines += ["| task | unmodified | own set inhibited | random control | mean change, other answered "
              "tasks |", "|---|---|---|---|---|"]
    for t in answered:
        others = [cell[(t, False, o)] - base[o] for o in answered if o != t and (t, False, o) in cell]
        own, ctrl = cell.get((t, False, t)), cell.get((t, True, t))
        lines.append(f"| {t} | {base[t]:.2f} | {'' if own is None else f'{own:.2f}'} | "
                     f"{'' if ctrl is None else f'{ctrl:.2f}'} | "
                     f"{np.mean(others):+.2f} |" if others else f"| {t} | {base[t]:.2f} | | | |")
    _, _, _, summary = report_matrix(engine, name, "cgvst", 0.0, "exact_match")
    return [*lines, "", describe_tests(report_tests(summary)), ""]


def above_chance_tasks(engine, name: str) -> dict[str, int] | None:
    """The tasks the unmodified model does above chance, from the CGVST ×0 report's baselines,
    label -> task id (None before they are stored)."""
    try:
        rep = intervention_report.build_report(engine, name, "cgvst", 0.0, "label_likelihood")
    except AtlasError:
        return None
    return {c.task: c.task_id for c in rep.columns_info if c.chance and c.chance.above}


def progress_lines(engine, n_tasks: int, factors: list[float], set_controls: int = 20,
                   factors_of: dict[str, list[float]] | None = None, n_controls: int = 3
                   ) -> list[str]:
    """How far the run got: per model and method, complete scoring runs and the sets evaluated
    on every task at each factor. The design: every task's CGVST set at ×0; beyond it, the sets
    of the tasks the model does above chance."""
    factors_of = {m: (factors_of or {}).get(m, factors[1:]) for m in MODELS}
    done = {(r["model"], r["method"]): r["n"] for r in rows(engine, """
        SELECT m.name AS model, r.method, count(DISTINCT r.task_id) AS n
        FROM runs r JOIN models m USING (model_id) WHERE r.status = 'complete' GROUP BY ALL""")}
    evaluated = {(r["model"], r["method"], r["factor"]): r["n"] for r in rows(engine, """
        SELECT model, method, factor, count(*) AS n FROM (
            SELECT m.name AS model, s.method, e.factor, e.set_id
            FROM evaluations e JOIN task_sets s USING (set_id) JOIN models m ON m.model_id = e.model_id
            WHERE NOT e.is_control GROUP BY ALL HAVING count(DISTINCT e.eval_task_id) >= :n)
        GROUP BY ALL""", n=n_tasks)}
    head = " | ".join(f"sets evaluated ×{f:g}" for f in factors)
    lines = ["## Progress of the run", "",
             f"The design: {n_tasks} tasks per model, scored by every method; every task's CGVST "
             "set inhibited (×0); the sets of the tasks the model does above chance also inhibited "
             "for every other method and amplified for CGVST, and their shared and specific parts "
             "(`atlas split`: neurons in more than half of the model's CGVST sets, and the rest) "
             "inhibited. A set counts once it is evaluated on every task.", "",
             f"| model | method | tasks scored | {head} |", "|---|---|---|" + "---|" * len(factors)]
    complete = True
    above_by_model = {name: above_chance_tasks(engine, name) for name in MODELS}
    for name, above in above_by_model.items():
        for method in METHODS:
            mine = [0.0, *factors_of[name]]  # the model's factors
            wanted = {f: (n_tasks if (method, f) == ("cgvst", 0.0) else
                          None if above is None else len(above))
                      for f in (mine if method == "cgvst" else factors[:1])}
            cells = [("—" if f not in wanted else
                      f"{evaluated.get((name, method, f), 0)} / {'?' if wanted[f] is None else wanted[f]}")
                     for f in factors]
            complete &= done.get((name, method), 0) >= n_tasks and all(
                w is not None and evaluated.get((name, method, f), 0) >= w for f, w in wanted.items())
            lines.append(f"| {name} | {method} | {done.get((name, method), 0)} / {n_tasks} | "
                         + " | ".join(cells) + " |")
        if above:
            for method in SPLIT_METHODS:  # derived from the CGVST sets: nothing to score
                n = evaluated.get((name, method, 0.0), 0)
                complete &= n >= len(above)
                lines.append(f"| {name} | {method} | (split of cgvst) | {n} / {len(above)} | "
                             + " | ".join("—" for _ in factors[1:]) + " |")
    controls = {(r["model"], r["method"], r["task_id"]): r["n"] for r in rows(engine, """
        SELECT m.name AS model, s.method, s.task_id, count(DISTINCT e.control_seed) AS n
        FROM evaluations e JOIN task_sets s USING (set_id) JOIN models m ON m.model_id = e.model_id
        WHERE e.is_control AND e.factor = 0 AND e.eval_task_id = s.task_id GROUP BY ALL""")}
    lines.append("")
    for name, above in above_by_model.items():
        if not above:
            continue
        cells = []
        for method in SET_LEVEL_METHODS:
            counts = [controls.get((name, method, task_id), 0) for task_id in above.values()]
            complete &= all(n >= set_controls for n in counts)
            cells.append(f"{method} " + ", ".join(map(str, counts)))
        lines.append(f"Random controls on their own task for the set-level test of {name} "
                     f"({', '.join(above)}; wanted {set_controls} each): " + "; ".join(cells) + ".")
    lines.append("")
    for name, above in above_by_model.items():
        lines.append(f"Above chance for {name}: " + ("not known yet (no baselines stored)"
                                                     if above is None else
                                                     ", ".join(above) or "no task") + ".")
    lines += ["", "The run is complete." if complete else
              "**The run is not complete**: the sections below show what was finished; stages "
              "with no data are left out. `bash experiments/paper_tasks.sh` resumes it."]
    if not complete:
        lines += ["", *remaining_lines(engine, n_tasks, factors_of, n_controls, set_controls,
                                       done, above_by_model)]
    return lines


SCORED_AFTER = {"lape": ("act_prob",)}  # a method whose scores are read from another's pass


def scoring_hours(engine) -> dict[tuple[str, str], float]:
    """(model, method) -> median hours of one task's complete scoring run; for a method not
    scored on a model yet, its median ratio to CGVST on the other models times the model's CGVST
    (a method scored after another's pass counts that pass too)."""
    own = {(r["model"], r["method"]): r["h"] for r in rows(engine, """
        SELECT m.name AS model, r.method,
               median(epoch(r.finished_at) - epoch(r.started_at)) / 3600 AS h
        FROM runs r JOIN models m USING (model_id) WHERE r.status = 'complete' GROUP BY ALL""")}
    per_task = lambda model, method: own.get((model, method), 0.0) + sum(  # noqa: E731
        own.get((model, before), 0.0) for before in SCORED_AFTER.get(method, ()))
    hours = {}
    for model in MODELS:
        for method in METHODS:
            if (model, method) in own:
                hours[model, method] = per_task(model, method)
                continue
            ratios = [per_task(m, method) / own[m, "cgvst"] for m in MODELS
                      if (m, method) in own and own.get((m, "cgvst"))]
            if ratios and (model, "cgvst") in own:
                hours[model, method] = float(np.median(ratios)) * own[model, "cgvst"]
    return hours


def evaluation_hours(engine) -> dict[str, float]:
    """model -> mean hours per stored evaluation (one set or control on one task): the model's
    evaluation time from the stored timestamps (gaps over 10 min left out) over its rows."""
    return {r["model"]: r["h"] for r in rows(engine, """
        SELECT m.name AS model, sum(g) / count(*) / 3600 AS h FROM (
            SELECT model_id, epoch(created_at) - lag(epoch(created_at))
                   OVER (PARTITION BY model_id ORDER BY created_at) AS g FROM evaluations)
        JOIN models m USING (model_id) WHERE g < 600 GROUP BY ALL""")}


def remaining_lines(engine, n_tasks: int, factors_of: dict[str, list[float]], controls: int,
                    set_controls: int, done: dict[tuple[str, str], int],
                    above_by_model: dict[str, dict[str, int] | None]) -> list[str]:
    """What the run has left, per model and stage, and its projected CPU-hours from the stored
    timings of the stages done (scoring runs per task, evaluations per set and task); ``done``
    and ``above_by_model`` as :func:`progress_lines` reads them."""
    score_h, eval_h = scoring_hours(engine), evaluation_hours(engine)
    stored = {(r["model"], r["method"], r["task_id"], r["factor"], r["control"]): r["n"]
              for r in rows(engine, """
        SELECT m.name AS model, s.method, s.task_id, e.factor, e.is_control AS control,
               count(DISTINCT (e.eval_task_id, e.control_seed)) AS n
        FROM evaluations e JOIN task_sets s USING (set_id) JOIN models m ON m.model_id = e.model_id
        WHERE NOT e.is_control OR e.eval_task_id = s.task_id GROUP BY ALL""")}
    table, total = [], 0.0
    for model in MODELS:
        above = above_by_model[model] or {}
        every = [r["task_id"] for r in rows(engine, """
            SELECT DISTINCT task_id FROM task_sets s JOIN models m USING (model_id)
            WHERE m.name = :n AND s.method = 'cgvst'""", n=model)]
        stages = [("cgvst", 0.0, every, set_controls if above else controls)]
        stages += [("cgvst", f, list(above.values()), controls) for f in factors_of[model]]
        stages += [(m, 0.0, list(above.values()), set_controls if m in SET_LEVEL_METHODS else
                    controls) for m in [*METHODS[1:], *SPLIT_METHODS]]
        for method in METHODS:  # scoring
            left = n_tasks - done.get((model, method), 0)
            if left > 0:
                h = left * score_h.get((model, method), float("nan"))
                table.append(f"| {model} | score {method} | {left} tasks | {h:.2f} |")
                total += h
        for method, factor, tasks, wanted in stages:
            units = 0
            for task_id in tasks:
                want_controls = wanted if task_id in above.values() or method != "cgvst" else \
                    controls
                units += max(0, n_tasks - stored.get((model, method, task_id, factor, False), 0))
                units += max(0, want_controls - stored.get((model, method, task_id, factor, True), 0))
            if units:
                h = units * eval_h.get(model, float("nan"))
                table.append(f"| {model} | {method} ×{factor:g} | {units} evaluations | "
                             f"{h:.2f} |")
                total += h
    if not table:
        return []
    return ["What is left, and its projected CPU-hours on the 2-core CPU the finished stages "
            "ran on (from the stored timings: a task's scoring run of the method on the model, "
            "or the method's median ratio to CGVST on the other models; an evaluation of a set "
            "or control on one task, the model's mean):", "",
            "| model | stage | left | projected CPU-h |", "|---|---|---|---|", *table,
            f"| all | | | **{total:.1f}** |"]


def method_agreement_lines(engine) -> list[str]:
    """Per model, how much each method's set of a task overlaps the CGVST set of the same task,
    next to how much two tasks' CGVST sets overlap and two random sets of that size would."""
    lines = []
    for name in MODELS:
        try:
            info = resolve_model(engine, name)
            have = set(set_methods(engine, info))
            others = [m for m in METHODS[1:] if m in have]
            if "cgvst" not in have or not others:
                continue
            agree = method_overlap(engine, name, "cgvst", others, "jaccard")
            tasks = overlap_matrix(engine, name, "cgvst", "jaccard").values
        except AtlasError:
            continue
        fraction = agree[0]["size"] / (info["n_layers"] * info["d_mlp"])
        chance = fraction / (2 - fraction)
        off = tasks[~np.eye(len(tasks), dtype=bool)]
        lines += [f"| {name} | cgvst, another task | {len(tasks)} | {off.mean():.3f} | "
                  f"{off.min():.3f} | {off.max():.3f} | {chance:.3f} |"]
        for method in others:
            values = np.array([r[method] for r in agree if r[method] is not None])
            if values.size:
                lines.append(f"| {name} | {method}, same task | {values.size} | {values.mean():.3f} "
                             f"| {values.min():.3f} | {values.max():.3f} | {chance:.3f} |")
    if not lines:
        return []
    return ["## Do the methods find the same neurons?", "",
            "Jaccard between a task's CGVST set and its set from another method (`atlas overlap "
            "--versus METHOD`), next to the Jaccard between two different tasks' CGVST sets; "
            "chance: the expected Jaccard of two random sets of the same size, p / (2 − p) for a "
            "fraction p of the model's neurons.", "",
            "| model | compared with | tasks | mean Jaccard | min | max | chance |",
            "|---|---|---|---|---|---|---|", *lines, ""]


def method_effect_lines(engine) -> list[str]:
    """Per above-chance set and method (×0): its own-task effect against its random controls."""
    lines = []
    for name in MODELS:
        cells: dict[str, dict[str, str]] = {}
        task_ids: dict[str, int] = {}  # label -> task id (rows are matched by id)
        levels: list[str] = []  # the set-level test's rows
        present = []
        for method in METHODS + SPLIT_METHODS:
            try:
                rep = intervention_report.build_report(engine, name, method, 0.0,
                                                       "label_likelihood")
            except AtlasError:
                continue
            for e in rep.summary:
                if e.own_task_above_chance and e.paired is not None:
                    pr = e.paired
                    task_ids[e.set] = e.set_task_id
                    cells.setdefault(e.set, {})[method] = (
                        f"{pr.mean_diff:+.3f} ({pr.p:.2g}); "
                        f"{e.target_change * 100:+.0f}%")
                    if (v := e.set_level) is not None:
                        levels.append(
                            f"| {e.set} | {method} | {v.own_mean:.3f} | "
                            f"{v.controls_mean:.3f} ± {v.controls_sd:.3f} | "
                            f"{v.n_controls} | {v.diff:+.3f} | {v.t_p:.2g} | "
                            f"{v.rank} / {v.n_controls + 1} |")
                    if method not in present:
                        present.append(method)
        if not cells:
            continue
        lines += [f"**{name}**", "", "| set | " + " | ".join(present) + " |",
                  "|---|" + "---|" * len(present)]
        lines += [f"| {task} | " + " | ".join(row.get(m, "") for m in present) + " |"
                  for task, row in sorted(cells.items())]
        lines += ["", *head_to_head_lines(engine, name, sorted(task_ids.items()), present)]
        lines += ["Set-level test: the set's mean gold-label probability on its own task against "
                  "the spread of its random controls' means (each control one random set of the "
                  "same per-layer counts): two-sided prediction-interval t test with n − 1 "
                  "degrees of freedom, and the set's rank among them (1 = lowest). The `random` "
                  "method's rows are random sets tested the same way: how often the test is "
                  "fooled.", "",
                  "| set | method | own set | controls: mean ± sd | n | difference | t p | rank |",
                  "|---|---|---|---|---|---|---|---|", *sorted(levels), ""]
    if not lines:
        return []
    return ["## Own-task effect of each method's set (×0)", "",
            "Per set of a task the model does above chance: the paired difference in the gold "
            "label's probability against its random controls (sign-flip p over the 100 "
            "examples, which holds the controls' mean fixed: a test against these controls, not "
            "against random sets), then the relative change of its own task's accuracy.", "",
            *lines]


def head_to_head_lines(engine, name: str, tasks: list[tuple[str, int]], methods: list[str]
                       ) -> list[str]:
    """Per above-chance set: each other method's set of the same task against CGVST's, on the
    same examples of that task (×0): mean gold-label probability difference, sign-flip p."""
    others = [m for m in methods if m != "cgvst" and m in METHODS]
    if "cgvst" not in methods or not others:
        return []
    data = rows(engine, """
        WITH x AS (
            SELECT s.method, s.task_id, e.params_key, ex.example, ex.gold_prob
            FROM evaluations e JOIN task_sets s ON s.set_id = e.set_id
            JOIN evaluation_examples ex USING (eval_id)
            WHERE e.model_id = :mid AND e.factor = 0 AND NOT e.is_control
              AND e.metric = 'label_likelihood' AND e.eval_task_id = s.task_id)
        SELECT a.method, a.task_id, list(a.gold_prob - c.gold_prob ORDER BY a.example) AS d
        FROM x a JOIN x c ON c.method = 'cgvst' AND c.task_id = a.task_id
             AND c.params_key = a.params_key AND c.example = a.example
        WHERE a.method <> 'cgvst' GROUP BY ALL""", mid=resolve_model(engine, name)["model_id"])
    diff = {(r["method"], r["task_id"]): np.asarray(r["d"], float) for r in data}
    lines = [f"| {label} | " + " | ".join(
        "" if (m, tid) not in diff else
        f"{diff[m, tid].mean():+.3f} ({sign_flip_p(list(diff[m, tid])):.2g})" for m in others)
        + " |" for label, tid in tasks]
    return ["Against CGVST's set of the same task, on the same examples (×0): the other set's "
            "gold-label probability minus CGVST's (negative: the other set does more harm), "
            "sign-flip p over examples.", "", "| set | " + " | ".join(others) + " |",
            "|---|" + "---|" * len(others), *lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--db", required=True)
    ap.add_argument("--amplify", type=float, nargs="+", default=[2.0],
                    help="Amplification factors (the first gets a full report).")
    ap.add_argument("--amplify-of", action="append", default=[], metavar="MODEL=F[,F]",
                    help="A model's own amplification factors (default: --amplify).")
    ap.add_argument("--controls", type=int, default=3,
                    help="Controls per set on its own task (the paired test's comparison).")
    ap.add_argument("--n-tasks", type=int, default=12, help="Tasks per model in the design.")
    ap.add_argument("--wall-seconds", type=int, default=0)
    ap.add_argument("--command", default="bash experiments/paper_tasks.sh")
    ap.add_argument("--sizes", default="")
    ap.add_argument("--set-controls", type=int, default=20,
                    help="Controls wanted per set for the set-level test.")
    ap.add_argument("--sni-dir", nargs="+", default=None,
                    help="SNI folders, for each task's chance accuracy")
    args = ap.parse_args()
    amplify = args.amplify[0]  # the factor that gets a full report
    dirs = tuple(args.sni_dir) if args.sni_dir else None
    FIGS.mkdir(parents=True, exist_ok=True)
    started = time.time()  # every figure is drawn again; the others go once the page is written
    engine = open_db(args.db, read_only=True)
    stored = {r["name"] for r in rows(engine, "SELECT DISTINCT m.name FROM models m JOIN runs r "
                                              "USING (model_id) WHERE r.status = 'complete'")}
    MODELS[:] = [m for m in DESIGN if m in stored]
    titles = [TITLES[m] for m in MODELS]
    lines = ["# The first atlas: task-specific neurons in " + (
                 ", ".join(titles[:-1]) + " and " + titles[-1] if len(titles) > 1 else titles[0]), "",
             "Generated by `experiments/write_results.py` from the database of one run of "
             "`experiments/paper_tasks.sh`; do not edit by hand.", ""]
    versions = rows(engine, "SELECT DISTINCT params->'versions' AS v FROM runs WHERE (params->'versions') "
                            "IS NOT NULL")
    models = rows(engine, "SELECT name, family, n_layers, d_mlp, revision, dtype FROM models "
                          "ORDER BY model_id")
    lines += ["## Run", "",
              f"- command: `{args.command}`",
              f"- sizes: {args.sizes}",
              f"- compute time: {active_hours(engine):.2f} h on a 2-core CPU, from the stored "
              "timestamps (ingestion and evaluation; gaps over 10 min between stored rows, i.e. "
              "between invocations, left out); the last invocation took "
              f"{args.wall_seconds / 3600:.2f} h and reused every stage already stored",
              "- library versions: " + "; ".join(
                  ", ".join(f"{k} {v}" for k, v in (json.loads(r["v"]) if isinstance(r["v"], str)
                                                    else r["v"]).items()) for r in versions),
              "", "| model | family | layers × neurons | revision | dtype |", "|---|---|---|---|---|"]
    lines += [f"| {m['name']} | {m['family']} | {m['n_layers']} × {m['d_mlp']} | `{m['revision']}` "
              f"| {m['dtype']} |" for m in models]

    factors_of = {m: [float(f) for f in fs.split(",")]
                  for m, fs in (a.split("=", 1) for a in args.amplify_of)}
    lines += ["", *progress_lines(engine, args.n_tasks, [0.0, *args.amplify], args.set_controls,
                                  factors_of, args.controls)]
    lines += ["", "## Overlap of task neuron sets (CGVST, top 5%)", "",
              "Mean pairwise Jaccard between different tasks' sets (the paper's released sets "
              "for Llama-2-7B-chat imported for reference):", "",
              "| model | tasks | set size | mean Jaccard | min | max |", "|---|---|---|---|---|---|"]
    for name in [*MODELS, REFERENCE]:
        try:
            matrix = overlap_matrix(engine, name, "cgvst", "jaccard")
        except AtlasError:
            continue
        off = matrix.values[~np.eye(len(matrix.tasks), dtype=bool)]
        info = resolve_model(engine, name)
        size = rows(engine, "SELECT max(size) AS s FROM task_sets WHERE model_id = :mid "
                            "AND method = 'cgvst'", mid=info["model_id"])[0]["s"]
        if off.size:  # two tasks or more
            lines.append(f"| {name} | {len(matrix.tasks)} | {size} | {off.mean():.3f} "
                         f"| {off.min():.3f} | {off.max():.3f} |")
            plot_overlap(matrix, FIGS / f"overlap-{name}.png")
        plot_layers(depth_profile(engine, name, "cgvst"), info["n_layers"], f"{name} · cgvst",
                    FIGS / f"layers-{name}.png")
    lines += [""] + [f"![overlap {n}](figures/overlap-{n}.png)" for n in [*MODELS, REFERENCE]
                     if (FIGS / f"overlap-{n}.png").exists()]
    lines += ["", "## Where the neurons sit", ""]
    lines += [f"![layers {n}](figures/layers-{n}.png)" for n in [*MODELS, REFERENCE]
              if (FIGS / f"layers-{n}.png").exists()]
    agreement = []
    for a, b in itertools.combinations([*MODELS, REFERENCE], 2):
        try:
            m = task_similarity_agreement(engine, a, b, "cgvst")
        except AtlasError:
            continue
        agreement.append(f"| {a} | {b} | {m['n_tasks']} | {m['r']:+.3f} | {m['p']:.3g} |")
    if agreement:
        lines += ["", "Do the models find the same tasks similar? Correlation of their task × task "
                  "Jaccard matrices over shared tasks, Mantel permutation p-value:", "",
                  "| model | model | shared tasks | r | p |", "|---|---|---|---|---|", *agreement]
    for other in [*MODELS[1:], REFERENCE]:
        try:
            data = compare_models(engine, MODELS[0], other, "cgvst")
        except AtlasError:
            continue
        lines += ["", f"Mean relative depth of each task's set, {MODELS[0]} vs {other} "
                  "(Wasserstein distance of the depth distributions):", "",
                  f"| task | depth, {MODELS[0]} | depth, {other} | distance |", "|---|---|---|---|"]
        lines += [f"| {label} | {r['depth_a']:.2f} | {r['depth_b']:.2f} | "
                  f"{r['depth_distance']:.3f} |"
                  for label, r in zip(task_labels([r["task"] for r in data]), data)]
        plot_compare(depth_profile(engine, MODELS[0], "cgvst"), depth_profile(engine, other, "cgvst"),
                     (MODELS[0], other), FIGS / f"compare-{other}.png")
        lines += ["", f"![compare {other}](figures/compare-{other}.png)"]

    lines += ["", *method_agreement_lines(engine)]
    lines += ["", "## Task-specificity of the sets (CGVST)", ""]
    for name in MODELS:
        try:
            spec = specificity(engine, name, "cgvst")
        except AtlasError:
            continue
        if len(spec) < 2:  # specificity is relative to the other tasks' sets
            continue
        lines += [f"**{name}**", "",
                  "| task | size | unique neurons | share unique | mean Jaccard to others |",
                  "|---|---|---|---|---|"]
        lines += [f"| {label} | {r['size']} | {r['n_unique']} | {r['specificity']:.3f} "
                  f"| {r['mean_jaccard']:.3f} |"
                  for label, r in zip(task_labels([r["task"] for r in spec]), spec)]
        lines.append("")

    lines += ["## Inhibition and amplification (accuracy by label likelihood, held-out half)", ""]
    n_before = len(lines)
    for name in MODELS:
        for factor in (0.0, amplify):
            try:
                report_matrix(engine, name, "cgvst", factor, "label_likelihood")
            except AtlasError:
                continue
            lines += report_section(engine, name, factor, "label_likelihood",
                                    FIGS / f"report-{name}-x{factor:g}.png")
        try:
            model_id = resolve_model(engine, name)["model_id"]
        except AtlasError:
            continue
        base = rows(engine, """
            SELECT t.name, e.value, e.n FROM evaluations e
            JOIN tasks t ON t.task_id = e.eval_task_id
            WHERE e.model_id = :mid AND e.set_id IS NULL AND e.metric = 'label_likelihood'
            ORDER BY 1""", mid=model_id)
        for b, label in zip(base, task_labels([b["name"] for b in base])):
            b["task"] = label
        if base:
            lines += [f"Unmodified accuracy of {name} (chance = 1 / number of labels): " + ", ".join(
                f"{b['task']} {b['value']:.2f}{chance_note(b['name'], dirs)}" for b in base)
                + f" (n = {base[0]['n']} each).", ""]
    if len(lines) == n_before:
        lines += ["No evaluations stored yet.", ""]

    section = []
    for name in MODELS:
        try:
            report_matrix(engine, name, "cgvst", 0.0, "label_prob")
        except AtlasError:
            continue
        section += report_section(engine, name, 0.0, "label_prob",
                                  FIGS / f"report-{name}-x0-label_prob.png")
    if section:  # evaluations by label_prob of their own (the reports above test it paired)
        lines += ["## Inhibition measured by the gold label's probability", "",
                  "`label_prob`: the probability of the gold label, normalised over the task's "
                  "labels, averaged over the same held-out examples.", "", *section]

    lines += ["## Own-task effect against random controls, per method and factor", "",
              "Primary statistic: per held-out example, the gold label's probability (normalised "
              "over the task's labels) with the task's own set scaled, minus the mean over its "
              "random controls (same size per layer) on the same examples; a set counts as "
              "significant at two-sided sign-flip p < 0.05 over examples. Accuracy beside it: the "
              "same paired difference of correct answers. Specificity index of a set = relative "
              "accuracy drop of its own task minus the mean relative drop of the other tasks, with "
              "the sign-flip p-value over sets. Only sets whose own task the unmodified model does "
              "above chance take part (one-sided binomial test, p < 0.05); the others are listed "
              "in each report. Against the other tasks' sets: per example of the set's own task, "
              "its gold-label probability under the set minus the mean under the other tasks' "
              "sets (same method and factor), averaged over sets, with the sign-flip p-value over "
              "sets and the number of sets below the others at p < 0.05 over examples.", "",
              "| model | method | factor | sets (above chance / all) | mean Δ gold prob vs "
              "controls | sets with p < 0.05 (down / up) | mean Δ accuracy vs controls | mean "
              "specificity index | p | mean Δ gold prob vs other tasks' sets | p | sets below "
              "the others (p < 0.05) |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in MODELS:
        for method in METHODS + SPLIT_METHODS:
            for factor in (0.0, *args.amplify):
                try:
                    rep = intervention_report.build_report(engine, name, method, factor,
                                                           "label_likelihood")
                except AtlasError:
                    continue
                included = rep.included
                paired = [e.paired for e in included if e.paired is not None]
                acc = [e.paired_accuracy.mean_diff for e in included
                       if e.paired_accuracy is not None]
                down = sum(significant(p, -1) for p in paired)
                up = sum(significant(p, +1) for p in paired)
                tests = rep.tests
                index = ("" if tests.mean_specificity_index is None else
                         f"{tests.mean_specificity_index:+.3f}")
                p_index = "" if tests.specificity_p is None else f"{tests.specificity_p:.3f}"
                gold = "" if not paired else f"{np.mean([p.mean_diff for p in paired]):+.4f}"
                versus = [e.vs_other_sets for e in included if e.vs_other_sets is not None]
                below = sum(significant(v, -1) for v in versus)
                vs_p = tests.vs_other_sets_p
                vs = ("| | | |" if not versus else
                      f"| {tests.mean_vs_other_sets:+.4f} | "
                      f"{'' if vs_p is None else f'{vs_p:.3f}'} | {below} / {len(versus)} |")
                lines.append(f"| {name} | {method} | {factor:g} | {len(included)} / "
                             f"{len(rep.summary)} | {gold} | {down} / {up} | "
                             f"{'' if not acc else f'{np.mean(acc):+.3f}'} | {index} | {p_index} "
                             + vs)
    lines += ["", *method_effect_lines(engine)]
    lines += ["", "## Do CGVST sets matter more than random neurons on every task?", "",
              "Mean |relative change| over all evaluated tasks when a task's CGVST set is "
              "scaled, against its random controls evaluated on the same tasks; p: two-sided "
              "sign-flip test of the per-set difference across sets. Computed only where the "
              "controls were evaluated on every task (`--controls-on all`).", ""]
    table = []
    for name in MODELS:
        for metric, factor in (("label_likelihood", 0.0), ("label_likelihood", amplify),
                               ("label_prob", 0.0), ("exact_match", 0.0)):
            try:
                tests = intervention_report.build_report(engine, name, "cgvst", factor, metric).tests
            except AtlasError:
                continue
            if tests.control_mean_abs_change is not None:
                table.append(f"| {name} | {metric} | {factor:g} | {tests.mean_abs_change:.3f} | "
                             f"{tests.control_mean_abs_change:.3f} | "
                             f"{tests.abs_change_minus_control_p:.3f} |")
    lines += (["| model | metric | factor | CGVST sets | random controls | p |",
               "|---|---|---|---|---|---|", *table] if table else
              ["Not computed in this run: its controls were evaluated on each set's own task only."])
    em = [line for name in MODELS for line in exact_match_lines(engine, name)]
    if em:
        lines += ["", "## Exact match under CGVST inhibition (greedy answers)", "",
                  "Absolute exact-match accuracy of the generated answer, only on tasks the "
                  "unmodified model answers at least once.", "", *em]
    lines += evidence_lines(engine, MODELS, TITLES, dirs)
    reading = ROOT / "experiments" / "reading.md"
    if reading.exists():
        lines += ["", reading.read_text().strip()]
    (DOCS / "results.md").write_text("\n".join(lines) + "\n")
    for old in FIGS.glob("*.png"):  # figures of an earlier run that this one did not draw
        if old.stat().st_mtime < started:
            old.unlink()
    engine.dispose()
    print(DOCS / "results.md")


if __name__ == "__main__":
    main()
