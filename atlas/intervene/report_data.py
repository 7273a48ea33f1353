"""The evaluations one intervention report shows, read from the store (no model, no torch):
evaluation configurations, the report's data keyed by ids, and its matrix and per-set summary."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.intervene.summary import SetSummary
from atlas.naming import config_id
from atlas.query.core import resolve_model, rows
from atlas.store.identity import task_labels


def _as_dict(value) -> dict:
    return value if isinstance(value, dict) else json.loads(value)


def evaluation_configs(engine: Engine, model_id: int, method: str, factor: float,
                       metric: str) -> list[dict]:
    """The evaluation configurations with intervened evaluations of this selection, newest
    first: ``config`` (a hash of the params without the evaluated task's data hash), its
    ``params_keys`` (one per task) and ``params``."""
    data = rows(engine, """
        SELECT e.params_key, any_value(e.params) AS params, max(e.created_at) AS last
        FROM evaluations e JOIN neuron_sets s USING (set_id)
        WHERE e.model_id = :mid AND s.method = :method AND e.factor = :factor
          AND e.metric = :metric
        GROUP BY e.params_key ORDER BY last DESC""", mid=model_id, method=method, factor=factor,
                metric=metric)
    configs: dict[str, dict] = {}
    for r in data:
        params = {k: v for k, v in _as_dict(r["params"]).items() if k != "data_hash"}
        config = config_id(params)
        entry = configs.setdefault(config, {"config": config, "params": params, "params_keys": []})
        entry["params_keys"].append(r["params_key"])
    return list(configs.values())


def _choose_config(configs: list[dict], config: str | None, what: str) -> dict:
    if config:
        found = [c for c in configs if c["config"].startswith(config)]
        if len(found) != 1:
            raise AtlasError(f"--config {config} matches {len(found)} evaluation configurations of "
                             f"{what}; give a prefix of one of: "
                             f"{', '.join(c['config'] for c in configs)}")
        return found[0]
    if len(configs) > 1:
        def summary(c: dict) -> str:
            p = c["params"]
            return (f"{c['config']} (shots {p.get('shots')}, examples {p.get('examples')}, "
                    f"seed {p.get('seed')}, {p.get('split')}, preset {p.get('preset')})")
        raise AtlasError(f"{what} has {len(configs)} evaluation configurations; a report shows one: "
                         f"pass --config with one of {'; '.join(map(summary, configs))}")
    return configs[0]


@dataclass
class ReportData:
    """The evaluations one report shows, keyed by ids."""

    model_id: int
    params_keys: list[str]  # the configuration's keys (one per evaluated task)
    sets: list[int]  # set task ids (rows)
    cols: list[int]  # evaluated task ids (columns)
    labels: dict[int, str]  # task id -> display label
    seeds: list[int]  # control seeds
    cell: dict[tuple[int, bool, int, int], float | None]  # (set, control, seed|-1, col) -> rel

    def set_seeds(self, s: int) -> list[int]:
        """The control seeds evaluated for set ``s`` (sets may have different numbers)."""
        return [seed for seed in self.seeds if any((s, True, seed, c) in self.cell
                                                   for c in self.cols)]

    def row_keys(self) -> list[tuple[int, bool, int]]:
        """The report's rows in order, as (set task id, is control, control seed or -1): each
        set, then its controls."""
        return [(s, control, seed) for s in self.sets
                for control, seed in [(False, -1)] + [(True, k) for k in self.set_seeds(s)]]


def report_data(engine: Engine, model: str, method: str, factor: float, metric: str,
                config: str | None = None) -> ReportData:
    info = resolve_model(engine, model)
    what = f"model '{model}' with {method} sets at factor {factor:g} ({metric})"
    configs = evaluation_configs(engine, info["model_id"], method, factor, metric)
    if not configs:
        raise AtlasError(f"no evaluations of {what}; run atlas ablate first")
    keys = _choose_config(configs, config, what)["params_keys"]
    data = rows(engine, """
        SELECT set_task_id, set_task, is_control, coalesce(control_seed, -1) AS control_seed,
               eval_task_id, eval_task, avg(rel_change) AS rel_change
        FROM evaluation_effects
        WHERE model_id = :mid AND method = :method AND factor = :factor AND metric = :metric
          AND list_contains(:keys, params_key) AND set_id IN (SELECT set_id FROM task_sets)
        GROUP BY ALL""", mid=info["model_id"], method=method, factor=factor, metric=metric, keys=keys)
    set_names = {r["set_task_id"]: r["set_task"] for r in data}
    eval_names = {r["eval_task_id"]: r["eval_task"] for r in data}
    names = {**set_names, **eval_names}  # task id -> full name
    return ReportData(
        info["model_id"], keys, sorted(set_names, key=set_names.get),
        sorted(eval_names, key=eval_names.get), dict(zip(names, task_labels(list(names.values())))),
        sorted({r["control_seed"] for r in data if r["is_control"]}),
        {(r["set_task_id"], r["is_control"], r["control_seed"], r["eval_task_id"]): r["rel_change"]
         for r in data})


def report_matrix(engine: Engine, model: str, method: str, factor: float, metric: str,
                  config: str | None = None
                  ) -> tuple[list[str], list[str], list[list[float | None]], list[SetSummary]]:
    """Rows = intervened sets (and their random controls, one row per control seed), columns =
    evaluated tasks, values = relative change against the unmodified model in the same
    evaluation configuration (``config``: a prefix of its hash; required when several exist).
    Per set: a specificity index (the target task's relative drop minus the mean relative drop of
    the other tasks) and the mean |change| over all evaluated tasks, of the set and of its
    controls (averaged over control seeds, with their spread)."""
    return matrix_of(report_data(engine, model, method, factor, metric, config))


def matrix_of(d: ReportData
              ) -> tuple[list[str], list[str], list[list[float | None]], list[SetSummary]]:
    """The rows, columns, matrix and per-set summary of :func:`report_matrix` from its data."""
    keys = d.row_keys()
    row_names = [f"{d.labels[s]} (random, seed {seed})" if control else d.labels[s]
                 for s, control, seed in keys]
    matrix = [[d.cell.get((s, control, seed, c)) for c in d.cols] for s, control, seed in keys]
    summary = []
    for s in d.sets:
        seeds = d.set_seeds(s)
        own = {c: v for c in d.cols if (v := d.cell.get((s, False, -1, c))) is not None}
        per_seed = [{c: v for c in d.cols if (v := d.cell.get((s, True, seed, c))) is not None}
                    for seed in seeds]
        ctrl = {c: float(np.mean([p[c] for p in per_seed if c in p]))
                for c in d.cols if any(c in p for p in per_seed)}
        target = own.get(s)
        others = [v for c, v in own.items() if c != s]
        ctrl_targets = [p[s] for p in per_seed if s in p]
        summary.append(SetSummary(
            set=d.labels[s],
            set_task_id=s,
            target_change=target,
            others_mean_change=float(np.mean(others)) if others else None,
            specificity_index=float(np.mean(others)) - target
            if target is not None and others else None,
            control_target_change=ctrl.get(s),
            control_target_sd=float(np.std(ctrl_targets)) if len(ctrl_targets) > 1 else None,
            mean_abs_change=float(np.mean(np.abs(list(own.values())))) if own else None,
            # over the same tasks as the set's; None when controls were evaluated on fewer
            control_mean_abs_change=float(np.mean(np.abs([ctrl[c] for c in own])))
            if own and all(c in ctrl for c in own) else None,
        ))
    return row_names, [d.labels[c] for c in d.cols], matrix, summary
