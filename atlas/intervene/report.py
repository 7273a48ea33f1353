"""The intervention report of one model, method, factor, metric and evaluation configuration:
built from the store, rendered as markdown, CSV or JSON, or drawn as a heatmap."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.intervene.report_data import ReportData, matrix_of, report_data
from atlas.intervene.stats import (
    above_chance,
    describe_tests,
    paired_difference,
    paired_rel_change_interval,
    report_tests,
    set_level_test,
)
from atlas.intervene.summary import (
    ColumnInfo,
    ReportTests,
    SetSummary,
    VersusOtherSets,
    included_sets,
)
from atlas.query.core import rows as query_rows

FORMATS = ("markdown", "csv", "json")


@dataclass
class Report:
    model: str
    method: str
    factor: float
    metric: str
    rows: list[str]  # intervened sets and their random controls
    columns: list[str]  # evaluated tasks
    rel_change: list[list[float | None]]  # [rows, columns]
    summary: list[SetSummary]  # per set
    tests: ReportTests  # across the sets whose own task the unmodified model does above chance
    intervals: list[list[tuple[float, float] | None]]  # 95% paired bootstrap, per cell
    columns_info: list[ColumnInfo]  # per evaluated task: unmodified accuracy, chance, binomial test
    excluded: list[str]  # why sets were left out of the summary tests
    row_seeds: list[int | None]  # per row: its control seed, None for the set itself

    @property
    def included(self) -> list[SetSummary]:
        """The sets the summary tests count: those whose own task the unmodified model does
        above chance (or whose chance status is unknown)."""
        return included_sets(self.summary)

    @property
    def title(self) -> str:
        return f"{self.model} · {self.method} · factor {self.factor:g} · {self.metric}"


LABEL_METRICS = ("label_likelihood", "label_prob")


def _example_values(engine: Engine, d: ReportData, method: str, factor: float, metric: str
                    ) -> dict[tuple, dict[str, np.ndarray | list]]:
    """Per evaluation, its per-example outcomes in example order, keyed (set task id or None,
    is control, control seed or -1, evaluated task id)."""
    data = query_rows(engine, """
        SELECT s.task_id AS set_task_id, e.is_control, coalesce(e.control_seed, -1) AS seed,
               e.eval_task_id, x.example, x.correct, x.gold_prob, x.gold
        FROM evaluations e JOIN evaluation_examples x USING (eval_id)
        LEFT JOIN neuron_sets s ON s.set_id = e.set_id
        WHERE e.model_id = :mid AND e.metric = :metric AND list_contains(:keys, e.params_key)
          AND (e.set_id IS NULL OR (e.factor = :factor AND e.set_id IN
               (SELECT set_id FROM task_sets WHERE method = :method)))
        ORDER BY e.eval_id, x.example""", mid=d.model_id, metric=metric, keys=d.params_keys,
                        factor=factor, method=method)
    out: dict[tuple, dict] = {}
    for r in data:
        entry = out.setdefault((r["set_task_id"], r["is_control"], r["seed"], r["eval_task_id"]),
                               {"correct": [], "gold_prob": [], "gold": []})
        entry["correct"].append(float(r["correct"]))
        entry["gold_prob"].append(np.nan if r["gold_prob"] is None else r["gold_prob"])
        entry["gold"].append(r["gold"])
    return {k: {**v, "correct": np.array(v["correct"]), "gold_prob": np.array(v["gold_prob"])}
            for k, v in out.items()}


def build_report(engine: Engine, model: str, method: str = "cgvst", factor: float = 0.0,
                 metric: str = "label_likelihood", config: str | None = None,
                 seed: int = 0) -> Report:
    """The report with per-cell 95% intervals (paired bootstrap over examples, ``seed``), each
    set's own-task effect tested paired against its random controls on the same examples (the
    gold label's probability for label metrics, accuracy beside it), and the tasks the
    unmodified model does above chance; sets whose own task is at chance are shown but left out
    of the summary tests."""
    d = report_data(engine, model, method, factor, metric, config)
    names, cols, matrix, summary = matrix_of(d)
    examples = _example_values(engine, d, method, factor, metric)
    value_key = "gold_prob" if metric == "label_prob" else "correct"
    columns_info = []
    for c in d.cols:
        base = examples.get((None, False, -1, c))
        columns_info.append(ColumnInfo(d.labels[c], c, None if base is None else
                                       above_chance(base["correct"], base["gold"])))
    intervals, row_seeds = [], []
    for s, control, seed_ in d.row_keys():
        row = []
        for c in d.cols:
            base, treated = examples.get((None, False, -1, c)), examples.get((s, control, seed_, c))
            ok = base is not None and treated is not None and len(base[value_key]) == len(
                treated[value_key])
            row.append(paired_rel_change_interval(base[value_key], treated[value_key], seed)
                       if ok else None)
        intervals.append(row)
        row_seeds.append(seed_ if control else None)
    chance_by_task = {c: info.chance for c, info in zip(d.cols, columns_info)}
    excluded = []
    primary = "gold_prob" if metric in LABEL_METRICS else "correct"  # the paired statistic
    for entry in summary:
        s = entry.set_task_id
        own = examples.get((s, False, -1, s))
        controls = [examples[k] for k in [(s, True, seed_, s) for seed_ in d.seeds] if k in examples]
        if own is not None and controls:
            entry.paired = paired_difference(own[primary], [c[primary] for c in controls], primary)
            if metric in LABEL_METRICS:
                entry.paired_accuracy = paired_difference(own["correct"],
                                                          [c["correct"] for c in controls])
            entry.set_level = set_level_test(float(np.nanmean(own[primary])),
                                             [float(np.nanmean(c[primary])) for c in controls])
        other_sets = [examples[k] for k in [(o, False, -1, s) for o in d.sets if o != s]
                      if k in examples]
        if own is not None:
            entry.vs_other_sets = _against_other_sets(own, other_sets, primary)
        status = chance_by_task.get(s)
        entry.own_task_above_chance = None if status is None else status.above
        if status is not None and not status.above:
            excluded.append(f"{entry.set}: the unmodified model is at chance on its task "
                            f"(accuracy {status.accuracy:.2f}, chance {status.chance:.2f}, "
                            f"binomial p = {status.p:.2g})")
    tests = report_tests(included_sets(summary))
    return Report(model, method, factor, metric, names, cols, matrix, summary, tests, intervals,
                  columns_info, excluded, row_seeds)


def _against_other_sets(own: dict, others: list[dict], primary: str) -> VersusOtherSets | None:
    """Is a task hurt (or helped) most by its own set? Per example of the task, the own set's
    value minus the mean of the other tasks' sets (same method and factor) on the same examples,
    with its sign-flip p-value, and the own set's rank among all of them by mean value
    (1 = lowest). ``primary`` names the per-example statistic ("gold_prob" or "correct")."""
    n = len(own[primary])
    others = [o for o in others if len(o[primary]) == n]  # the same examples only
    if not others:
        return None
    means = [float(np.nanmean(o[primary])) for o in others]
    own_mean = float(np.nanmean(own[primary]))
    test = paired_difference(own[primary], [o[primary] for o in others])
    return VersusOtherSets(primary, own_mean, float(np.mean(means)),
                           1 + sum(m < own_mean for m in means), 1 + len(others), test.mean_diff,
                           test.p, test.n)


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def render(report: Report, fmt: str = "markdown") -> str:
    """The report as text: ``markdown`` (matrix, per-set summary, tests), ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps({"rows": report.rows, "columns": report.columns,
                           "rel_change": report.rel_change, "intervals": report.intervals,
                           "row_seeds": report.row_seeds,
                           "display_rows": [{"name": n, "values": v, "intervals": ci}
                                            for n, v, ci in display_rows(report)],
                           "columns_info": [c.to_dict() for c in report.columns_info],
                           "summary": [s.to_dict() for s in report.summary],
                           "tests": report.tests.to_dict(), "excluded": report.excluded},
                          indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["set", "eval_task", "rel_change", "ci_low", "ci_high"])
        for name, row, ci_row in zip(report.rows, report.rel_change, report.intervals):
            for col, v, ci in zip(report.columns, row, ci_row):
                writer.writerow([name, col, "" if v is None else f"{v:.4f}",
                                 "" if ci is None else f"{ci[0]:.4f}",
                                 "" if ci is None else f"{ci[1]:.4f}"])
        return out.getvalue()
    if fmt != "markdown":
        raise AtlasError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}")
    cols = [f"{c} ✓" if info.chance and info.chance.above else c
            for c, info in zip(report.columns, report.columns_info)]
    lines = [f"### {report.title}", "",
             f"Relative change of {report.metric} against the unmodified model (rows: intervened "
             "set), with its 95% interval (paired bootstrap over examples). ✓: the unmodified "
             "model does the task above chance (one-sided binomial test, p < 0.05).", "",
             *_md_table(["set", *cols], [[name, *(_cell(v, ci) for v, ci in zip(row, ci_row))]
                                         for name, row, ci_row in display_rows(report)])]
    lines += ["", *_md_table(
        ["task", "unmodified accuracy", "n", "chance", "binomial p"],
        [[i.task, f"{c.accuracy:.3f}", c.n, f"{c.chance:.2f}", f"{c.p:.2g}"]
         for i in report.columns_info if (c := i.chance)])]
    summary_rows = []
    for s in report.summary:
        sd = "" if s.control_target_sd is None else f" ± {s.control_target_sd:.3f}"
        paired, acc = s.paired, s.paired_accuracy
        summary_rows.append([s.set, _signed(s.target_change),
                             f"{_signed(s.control_target_change)}{sd}",
                             _signed(s.specificity_index), _signed(paired and paired.mean_diff),
                             _p(paired and paired.p), _signed(acc and acc.mean_diff),
                             _p(acc and acc.p)])
    lines += ["", *_md_table(["set", "own-task change", "control (mean of seeds ± sd)",
                              "specificity index", "paired vs controls: mean difference", "p",
                              "accuracy difference", "p"], summary_rows)]
    if report.summary and report.summary[0].paired is not None:
        lines += ["", f"Paired statistic: per example, the set's {report.summary[0].paired.statistic} "
                  "minus the mean of its random controls' on the same examples (two-sided "
                  "sign-flip test)."]
    level = [s for s in report.summary if s.set_level is not None]
    if level:
        stat = level[0].paired.statistic
        lines += ["", f"Set-level test: the set's mean {stat} on its own task against the spread "
                  "of its random controls' means (each control is one draw of a random set of "
                  "the same size): two-sided prediction-interval t test, and the set's rank "
                  "among the controls (1 = lowest) with its two-sided Monte Carlo p-value.", "",
                  *_md_table(
                      ["set", f"{stat}, own set", "random controls: mean ± sd", "n", "difference",
                       "t p", "rank", "rank p"],
                      [[s.set, f"{v.own_mean:.3f}",
                        f"{v.controls_mean:.3f} ± {v.controls_sd:.3f}", v.n_controls,
                        _signed(v.diff), _p(v.t_p), f"{v.rank} / {v.n_controls + 1}",
                        _p(v.rank_p)] for s in level if (v := s.set_level)])]
    versus = [s for s in report.summary if s.vs_other_sets is not None]
    if versus:
        stat = versus[0].vs_other_sets.statistic
        lines += ["", f"Does a task respond most to its own set? Per example of the set's own task, "
                  f"its {stat} under the set minus the mean under the other tasks' sets (same "
                  "method and factor) on the same examples (two-sided sign-flip test); rank of "
                  "the own set among all sets on that task by mean value, 1 = lowest.", "",
                  *_md_table(
                      ["set", f"{stat}, own set", "other tasks' sets (mean)", "mean difference",
                       "p", "rank"],
                      [[s.set, f"{v.own_mean:.3f}", f"{v.others_mean:.3f}",
                        _signed(v.mean_diff), _p(v.p), f"{v.rank} / {v.n_sets}"]
                       for s in versus if (v := s.vs_other_sets)])]
    if report.excluded:
        lines += ["", "Left out of the summary tests: " + "; ".join(report.excluded) + "."]
    lines += ["", describe_tests(report.tests)]
    return "\n".join(lines) + "\n"


SHOWN_CONTROL_ROWS = 3  # per set, in markdown and the plot; further controls: one row of their mean


def display_rows(report: Report) -> list[tuple[str, list, list]]:
    """The rows markdown and the plot show, as (name, values, intervals): each set, its first
    ``SHOWN_CONTROL_ROWS`` controls, then one row with the mean of its other controls (csv and
    json keep every control)."""
    out, rest, shown, set_name = [], [], 0, ""

    def flush() -> None:
        if rest:
            means = [float(np.mean(vals)) if (vals := [r[k] for r in rest if r[k] is not None])
                     else None for k in range(len(report.columns))]
            out.append((f"{set_name} (random, mean of {len(rest)} more seeds)", means,
                        [None] * len(means)))
            rest.clear()

    for name, seed, row, ci_row in zip(report.rows, report.row_seeds, report.rel_change,
                                       report.intervals):
        if seed is None:
            flush()
            set_name, shown = name, 0
        elif shown >= SHOWN_CONTROL_ROWS:
            rest.append(row)
            continue
        else:
            shown += 1
        out.append((name, row, ci_row))
    flush()
    return out


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    """A markdown table's lines: the header, its separator, one line per row of cells."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def _cell(value: float | None, interval: tuple[float, float] | None) -> str:
    if value is None:
        return ""
    return _signed(value) + ("" if interval is None else f" [{interval[0]:+.2f}, {interval[1]:+.2f}]")


def _p(p: float | None) -> str:
    return "" if p is None else f"{p:.3g}"


def plot(report: Report, out: str | Path) -> Path:
    """Heatmap of the report's relative changes (the rows markdown shows)."""
    from atlas.query.plots import heatmap

    shown = display_rows(report)
    values = np.array([[np.nan if v is None else v for v in row] for _, row, _ in shown])
    title = f"{report.model} · {report.method} × {report.factor:g} · {report.metric}"
    return heatmap(values, [name for name, _, _ in shown], report.columns, title, out,
                   f"relative change of {report.metric}", cmap="RdBu", center=True, fmt="+.2f")
