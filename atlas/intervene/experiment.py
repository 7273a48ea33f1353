"""The inhibition/amplification experiment: evaluate a model unmodified, with a task's neuron set
scaled, and with a random control set of the same per-layer counts, on every evaluation task.
Results go into ``evaluations`` and are reused when the same evaluation is asked for again."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.evaluate.metrics import METRICS, evaluate
from atlas.intervene.spec import Intervention, apply, random_control
from atlas.models.loading import LoadedModel
from atlas.naming import params_key, sni_id
from atlas.presets import apply_preset
from atlas.progress import Reporter
from atlas.query.core import resolve_model, resolve_task, rows
from atlas.store import arrays
from atlas.store import evaluations as stored
from atlas.store import repository as repo
from atlas.store.evaluations import EvaluationKey
from atlas.store.runs import register_model
from atlas.tasks.prompts import PromptFormat
from atlas.tasks.sni import Instance, Task, load_task
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
        """The prompt recipe as the scorers' keywords."""
        return {"prompt_rule": self.prompt_rule, "demos_include_query": self.demos_include_query,
                "join_outputs": self.join_outputs, "fixed_demos": self.demos == "fixed"}


def stored_recipe(recipe: dict) -> dict:
    """The recipe as stored in an evaluation's params (its key ``rule``: params keys unchanged)."""
    return {("rule" if k == "prompt_rule" else k): v for k, v in recipe.items()}


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
        return torch.from_numpy(arrays.read_set_mask(conn, set_id, n_layers, d_mlp))


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


@dataclass(frozen=True)
class EvalTask:
    """A task prepared once for evaluation: its stored id, the evaluation's params and their
    key, the seeded queries from the held-out half and the pool demonstrations come from."""

    task: Task
    task_id: int
    params: dict
    params_key: str
    queries: list[Instance]
    pool: list[Instance]


class Experiment:
    """Evaluations of one loaded model, cached in the store."""

    def __init__(self, engine: Engine, loaded: LoadedModel, options: AblateOptions,
                 reporter: Reporter | None = None):
        if options.metric not in METRICS:
            raise AtlasError(f"unknown metric '{options.metric}'; choose one of {', '.join(METRICS)}")
        self.engine, self.loaded, self.options = engine, loaded, options
        self.reporter = reporter or Reporter()
        self._prepared: dict[str, EvalTask] = {}
        self.fmt = PromptFormat.for_tokenizer(loaded.tokenizer, options.released_data)
        self.model_id = register_model(engine, loaded)

    def prepare(self, name: str) -> EvalTask:
        """The evaluation task ``name`` (an SNI name or a file), loaded, registered, split and
        subsampled once per experiment."""
        if name not in self._prepared:
            self._prepared[name] = self._prepare(
                load_task(name, self.options.sni_dir, self.options.released_data))
        return self._prepared[name]

    def _prepare(self, task: Task) -> EvalTask:
        o = self.options
        params = {"metric": o.metric, "shots": o.shots, "seed": o.seed, "split_seed": o.split_seed,
                  "examples": o.examples, "data_hash": task.data_hash, "prompt": self.fmt.describe(),
                  "split": f"evaluation half ({o.split})", **stored_recipe(o.recipe), "preset": o.preset,
                  "label_tokens": "in context"}
        if o.max_instances is not None:  # only then: other evaluations keep their keys
            params["max_instances"] = o.max_instances
        split = split_task(_capped(task, o.max_instances), o.split_seed, split_rule=o.split)
        if o.examples is not None and o.examples > len(split.evaluate):
            raise AtlasError(
                f"task '{task.name}' has {len(split.evaluate)} held-out examples, fewer than "
                f"--examples {o.examples}; ask for at most {len(split.evaluate)} or "
                "leave --examples out for the whole half")
        with self.engine.begin() as conn:
            task_id = repo.ensure_task(conn, task.name, task.source, len(task.instances),
                                       task.stored_hash, also=(task.data_hash,))
        return EvalTask(task, task_id, params, params_key(params),
                        subsample(split.evaluate, o.examples, o.seed),
                        split.score if o.demos == "fixed" else split.evaluate)

    def measure(self, prepared: EvalTask, spec: Intervention | None, set_id: int | None,
                control_seed: int | None = None) -> tuple[float, int, bool]:
        """(value, n, reused) for a prepared task under ``spec`` (None: unmodified)."""
        o, task = self.options, prepared.task
        key = EvaluationKey(self.model_id, prepared.task_id, set_id, spec.factor if spec else 1.0,
                            control_seed is not None, control_seed, o.metric, prepared.params_key)
        with self.engine.begin() as conn:
            hit = stored.find(conn, key)
        if hit:
            return hit[0], hit[1], True
        self.reporter.start(f"{task.short_name} · {spec.label if spec else 'unmodified'}", 1)
        with apply(self.loaded.model, spec) if spec else nullcontext():
            score = evaluate(o.metric, self.loaded, self.fmt, task, prepared.queries,
                             prepared.pool, o.shots, o.seed, batch_size=o.batch_size, **o.recipe)
        self.reporter.advance(1, 0)
        self.reporter.finish()
        with self.engine.begin() as conn:
            stored.add(conn, key, score.value, score.n, o.seed, prepared.params, score.examples)
        return score.value, score.n, False

    def run(self, target: dict, reporter: Reporter | None = None) -> list[dict]:
        """Baseline, intervened and random-control accuracy on every evaluation task (progress
        to ``reporter`` when given)."""
        if reporter is not None:
            self.reporter = reporter
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
        out = []
        for prepared in [self.prepare(name) for name in names]:
            task = prepared.task
            base, n, _ = self.measure(prepared, None, None)
            value, _, reused = self.measure(prepared, spec, target["set_id"])
            row = {"eval_task": task.short_name, "n": n, "baseline": base, "intervened": value,
                   "delta": value - base}
            if controls and (self.options.controls_on == "all" or task.name == target.get("task")):
                values = [self.measure(prepared, ctrl, target["set_id"], seed)[0]
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
