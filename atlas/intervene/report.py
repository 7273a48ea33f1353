"""The intervention report of one model, method, factor, metric and evaluation configuration:
built from the store, rendered as markdown, CSV or JSON, or drawn as a heatmap."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.intervene.experiment import report_matrix
from atlas.intervene.stats import describe_tests, report_tests

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
    summary: list[dict]  # per set
    tests: dict

    @property
    def title(self) -> str:
        return f"{self.model} · {self.method} · factor {self.factor:g} · {self.metric}"


def build_report(engine: Engine, model: str, method: str = "cgvst", factor: float = 0.0,
                 metric: str = "label_likelihood", config: str | None = None) -> Report:
    names, cols, matrix, summary = report_matrix(engine, model, method, factor, metric, config)
    return Report(model, method, factor, metric, names, cols, matrix, summary,
                  report_tests(summary))


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def render(report: Report, fmt: str = "markdown") -> str:
    """The report as text: ``markdown`` (matrix, per-set summary, tests), ``csv`` or ``json``."""
    if fmt == "json":
        return json.dumps({"rows": report.rows, "columns": report.columns,
                           "rel_change": report.rel_change, "summary": report.summary,
                           "tests": report.tests}, indent=1) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["set", *report.columns])
        for name, row in zip(report.rows, report.rel_change):
            writer.writerow([name, *("" if v is None else f"{v:.4f}" for v in row)])
        return out.getvalue()
    if fmt != "markdown":
        raise AtlasError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}")
    cols = report.columns
    lines = [f"### {report.title}", "",
             f"Relative change of {report.metric} against the unmodified model (rows: intervened "
             "set).", "", "| set | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(map(_signed, row)) + " |"
              for name, row in zip(report.rows, report.rel_change)]
    lines += ["", "| set | target change | mean change, other tasks | specificity index | "
              "control, target |", "|---|---|---|---|---|"]
    keys = ("target_change", "others_mean_change", "specificity_index", "control_target_change")
    lines += [f"| {s['set']} | " + " | ".join(_signed(s[k]) for k in keys) + " |"
              for s in report.summary]
    lines += ["", describe_tests(report.tests)]
    return "\n".join(lines) + "\n"


def plot(report: Report, out: str | Path) -> Path:
    """Heatmap of the report's relative changes."""
    import numpy as np

    from atlas.query.plots import heatmap

    values = np.array([[np.nan if v is None else v for v in row] for row in report.rel_change])
    title = f"{report.model} · {report.method} × {report.factor:g} · {report.metric}"
    return heatmap(values, report.rows, report.columns, title, out,
                   f"relative change of {report.metric}", cmap="RdBu", center=True, fmt="+.2f")
