"""The inhibition/amplification experiment: evaluate a model unmodified, with a task's neuron set
scaled, and with a random control set of the same per-layer counts, on every evaluation task.
Results go into ``evaluations`` and are reused when the same evaluation is asked for again."""

from __future__ import annotations

import hashlib
import json
import math
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.evaluate.metrics import METRICS, evaluate
from atlas.ingest import Reporter, apply_preset
from atlas.intervene.spec import Intervention, apply, random_control
from atlas.models.loading import LoadedModel
from atlas.naming import sni_id
from atlas.query.core import resolve_model, resolve_task, rows
from atlas.store import evaluations as stored
from atlas.store import repository as repo
from atlas.store.evaluations import EvaluationKey
from atlas.store.identity import task_labels
from atlas.tasks.prompts import PromptFormat
from atlas.tasks.sni import Task, load_task
from atlas.tasks.split import split_task, subsample


@dataclass
class AblateOptions:
    factor: float = 0.0
    metric: str = "label_likelihood"
    examples: int | None = None  # None: the whole held-out half
    shots: int = 5
    seed: int = 0
    split_seed: int = 0
    control_seed: int = 0  # control k uses seed control_seed + k
    controls: int = 3  # random control sets per intervened set
    controls_on: str = "all"  # "all": controls on every evaluated task; "own": on the set's task
    batch_size: int = 8
    control: bool = True
    eval_tasks: list[str] = field(default_factory=lambda: ["all"])
    sni_dir: str | None = None
    split: str = "stratified"
    prompt_rule: str = "marker"  # evaluation prompts: real BOS/EOS; "reference" as released
    # "fixed": the same seeded demonstrations from the scoring half for every query (a shared,
    # cached prompt prefix); "per_query": drawn per query from the evaluation half (as released)
    demos: str = "fixed"
    demos_include_query: bool = False
    join_outputs: bool = False
    released_data: bool = False  # SNI files read by the released rules (see atlas.tasks.sni)
    max_instances: int | None = None  # the released evaluation keeps a task's first 6,500
    preset: str | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.factor):
            raise AtlasError(f"--factor must be a finite number (got {self.factor}); 0 inhibits, "
                             "> 1 amplifies")
        if self.examples is not None and self.examples < 1:
            raise AtlasError(f"--examples must be at least 1 (got {self.examples})")
        if self.shots < 0:
            raise AtlasError(f"--shots must be 0 or more (got {self.shots})")
        if self.controls < 1 and self.control:
            raise AtlasError(f"--controls must be at least 1 (got {self.controls}); use "
                             "--no-control for none")
        if self.preset is not None:
            apply_preset(self, self.preset)
        if self.controls_on not in ("all", "own"):
            raise AtlasError(f"unknown --controls-on '{self.controls_on}'; choose all or own")
        if self.demos not in ("fixed", "per_query"):
            raise AtlasError(f"unknown --demos '{self.demos}'; choose fixed or per_query")

    @property
    def recipe(self) -> dict:
        return {"rule": self.prompt_rule, "demos_include_query": self.demos_include_query,
                "join_outputs": self.join_outputs, "fixed_demos": self.demos == "fixed"}


def find_set(engine: Engine, model: str, *, task: str | None = None, method: str = "cgvst",
             name: str | None = None) -> dict:
    """A stored set, by name or as the current set of (model, task, method); ``model`` and
    ``task`` are identity specs (see :mod:`atlas.store.identity`)."""
    if name:
        found = rows(engine, "SELECT ts.*, m.name AS model, t.name AS task FROM neuron_sets ts "
                             "JOIN models m USING (model_id) LEFT JOIN tasks t USING (task_id) "
                             "WHERE ts.name = :n", n=name)
    else:
        info, task_row = resolve_model(engine, model), resolve_task(engine, task)
        found = rows(engine, "SELECT * FROM task_sets WHERE model_id = :mid AND method = :method "
                             "AND task_id = :tid", mid=info["model_id"], method=method,
                     tid=task_row["task_id"])
    if not found:
        what = f"set '{name}'" if name else f"no '{method}' set of task '{task}' for model '{model}'"
        raise AtlasError(f"{what} not found; run atlas ingest first (or check --set/--method)")
    return found[0]


def set_owner(engine: Engine, name: str, dtype: str) -> str:
    """The stored model whose sets an ablation of ``name`` in ``dtype`` uses: ``name@dtype`` when
    stored, else ``name`` (an error when that is ambiguous)."""
    try:
        return f"#{resolve_model(engine, f'{name}@{dtype}')['model_id']}"
    except AtlasError:
        return name


def set_mask(engine: Engine, set_id: int, n_layers: int, d_mlp: int) -> torch.Tensor:
    with engine.connect() as conn:
        return torch.from_numpy(repo.read_set_mask(conn, set_id, n_layers, d_mlp))


def _eval_task_names(engine: Engine, model_id: int, method: str, names: list[str]) -> list[str]:
    """What to load for ``--eval-task``: the names given, or for ``all`` every task the model has
    a set of: an SNI task by its name, any other task by the file it was read from."""
    if names != ["all"]:
        return names
    stored = rows(engine, "SELECT DISTINCT t.name AS task, t.source FROM task_sets s JOIN tasks t "
                          "USING (task_id) WHERE s.model_id = :mid AND s.method = :method "
                          "ORDER BY t.name", mid=model_id, method=method)
    return [r["task"] if sni_id(r["task"]) or not r["source"] else _task_file(r) for r in stored]


def _task_file(task: dict) -> str:
    if not Path(task["source"]).is_file():
        raise AtlasError(f"task '{task['task']}' was read from {task['source']}, which is gone; "
                         "put the file back or name the evaluation tasks with --eval-task")
    return task["source"]


class Experiment:
    """Evaluations of one loaded model, cached in the store."""

    def __init__(self, engine: Engine, loaded: LoadedModel, options: AblateOptions,
                 reporter: Reporter | None = None):
        if options.metric not in METRICS:
            raise AtlasError(f"unknown metric '{options.metric}'; choose one of {', '.join(METRICS)}")
        self.engine, self.loaded, self.options = engine, loaded, options
        self.reporter = reporter or Reporter()
        self.fmt = PromptFormat.for_tokenizer(loaded.tokenizer, options.released_data)
        with engine.begin() as conn:
            self.model_id = repo.ensure_model(conn, loaded.name, loaded.adapter.family,
                                              loaded.n_layers, loaded.d_mlp, loaded.revision,
                                              loaded.dtype)

    def _params(self, task: Task) -> tuple[dict, str]:
        o = self.options
        params = {"metric": o.metric, "shots": o.shots, "seed": o.seed, "split_seed": o.split_seed,
                  "examples": o.examples, "data_hash": task.data_hash, "prompt": self.fmt.describe(),
                  "split": f"evaluation half ({o.split})", **o.recipe, "preset": o.preset,
                  "label_tokens": "in context"}
        if o.max_instances is not None:  # only then: other evaluations keep their keys
            params["max_instances"] = o.max_instances
        return params, hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:24]

    def measure(self, task: Task, spec: Intervention | None, set_id: int | None,
                control_seed: int | None = None) -> tuple[float, int, bool]:
        """(value, n, reused) for ``task`` under ``spec`` (None: unmodified)."""
        params, params_key = self._params(task)
        with self.engine.begin() as conn:
            task_id = repo.ensure_task(conn, task.name, task.source, len(task.instances),
                                       task.data_hash)
            key = EvaluationKey(self.model_id, task_id, set_id, spec.factor if spec else 1.0,
                                control_seed is not None, control_seed,
                                self.options.metric, params_key)
            hit = stored.find(conn, key)
        if hit:
            return hit[0], hit[1], True
        split = split_task(_capped(task, self.options.max_instances), self.options.split_seed,
                           rule=self.options.split)
        if self.options.examples is not None and self.options.examples > len(split.evaluate):
            raise AtlasError(
                f"task '{task.name}' has {len(split.evaluate)} held-out examples, fewer than "
                f"--examples {self.options.examples}; ask for at most {len(split.evaluate)} or "
                "leave --examples out for the whole half")
        queries = subsample(split.evaluate, self.options.examples, self.options.seed)
        pool = split.score if self.options.demos == "fixed" else split.evaluate
        label = f"{task.short_name} · {spec.label if spec else 'unmodified'}"
        self.reporter.start(label, 1)
        with apply(self.loaded.model, spec) if spec else nullcontext():
            score = evaluate(self.options.metric, self.loaded, self.fmt, task, queries,
                             pool, self.options.shots, self.options.seed,
                             batch_size=self.options.batch_size, **self.options.recipe)
        self.reporter.advance(1, 0)
        self.reporter.finish()
        with self.engine.begin() as conn:
            stored.add(conn, key, score.value, score.n, self.options.seed, params, score.examples)
        return score.value, score.n, False

    def run(self, target: dict) -> list[dict]:
        """Baseline, intervened and random-control accuracy on every evaluation task."""
        mask = set_mask(self.engine, target["set_id"], self.loaded.n_layers, self.loaded.d_mlp)
        if not mask.any():
            raise AtlasError(f"set '{target['name']}' is empty")
        spec = Intervention.from_mask(mask, self.options.factor, label=target["name"])
        seeds = ([self.options.control_seed + k for k in range(self.options.controls)]
                 if self.options.control else [])
        controls = {seed: Intervention.from_mask(random_control(mask, seed), self.options.factor,
                                                 label=f"random control {seed}") for seed in seeds}
        names = _eval_task_names(self.engine, target["model_id"], target["method"],
                                 self.options.eval_tasks)
        tasks = [load_task(name, self.options.sni_dir, self.options.released_data)
                 for name in names]
        out = []
        for task in tasks:
            base, n, _ = self.measure(task, None, None)
            value, _, reused = self.measure(task, spec, target["set_id"])
            row = {"eval_task": task.short_name, "n": n, "baseline": base, "intervened": value,
                   "delta": value - base}
            if controls and (self.options.controls_on == "all" or task.name == target.get("task")):
                values = [self.measure(task, ctrl, target["set_id"], seed)[0]
                          for seed, ctrl in controls.items()]
                row.update({"control": float(np.mean(values)), "control_sd": float(np.std(values)),
                            "control_delta": float(np.mean(values)) - base})
            out.append({**row, "reused": reused})
        return out


def _capped(task: Task, max_instances: int | None) -> Task:
    """The task's first ``max_instances`` instances (all when None), as the released
    evaluation reads a file."""
    if max_instances is None or len(task.instances) <= max_instances:
        return task
    return replace(task, instances=task.instances[:max_instances])


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
        config = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
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
                  ) -> tuple[list[str], list[str], list[list[float | None]], list[dict]]:
    """Rows = intervened sets (and their random controls, one row per control seed), columns =
    evaluated tasks, values = relative change against the unmodified model in the same
    evaluation configuration (``config``: a prefix of its hash; required when several exist).
    Per set: a specificity index (the target task's relative drop minus the mean relative drop of
    the other tasks) and the mean |change| over all evaluated tasks, of the set and of its
    controls (averaged over control seeds, with their spread)."""
    return matrix_of(report_data(engine, model, method, factor, metric, config))


def matrix_of(d: ReportData) -> tuple[list[str], list[str], list[list[float | None]], list[dict]]:
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
        summary.append({
            "set": d.labels[s],
            "set_task_id": s,
            "target_change": target,
            "others_mean_change": float(np.mean(others)) if others else None,
            "specificity_index": float(np.mean(others)) - target
            if target is not None and others else None,
            "control_target_change": ctrl.get(s),
            "control_target_sd": float(np.std(ctrl_targets)) if len(ctrl_targets) > 1 else None,
            "mean_abs_change": float(np.mean(np.abs(list(own.values())))) if own else None,
            # over the same tasks as the set's; None when controls were evaluated on fewer
            "control_mean_abs_change": float(np.mean(np.abs([ctrl[c] for c in own])))
            if own and all(c in ctrl for c in own) else None,
        })
    return row_names, [d.labels[c] for c in d.cols], matrix, summary
