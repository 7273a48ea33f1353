"""Pairwise overlaps of task neuron sets, and task-specificity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError, NotFound
from atlas.query.core import check_method, resolve_model, rows
from atlas.store.identity import task_labels

MEASURES = ("jaccard", "overlap_coef", "n_shared")


@dataclass
class OverlapMatrix:
    model: str
    method: str
    measure: str
    tasks: list[str]
    values: np.ndarray  # [n_tasks, n_tasks]

    @property
    def labels(self) -> list[str]:
        return task_labels(self.tasks)

    def as_rows(self) -> list[dict]:
        return [{"task": label, **{u: float(v) for u, v in zip(self.labels, row)}}
                for label, row in zip(self.labels, self.values)]


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise AtlasError(f"unknown overlap measure '{measure}'; choose one of {', '.join(MEASURES)}")


def pair_measures(n_shared: str, size_a: str, size_b: str) -> str:
    """The SQL of a set pair's ``n_shared``, ``jaccard`` (|A ∩ B| / |A ∪ B|) and
    ``overlap_coef`` (|A ∩ B| / min(|A|, |B|)) from the columns named: NULL where undefined (two
    empty sets), as the ``set_overlaps`` view defines them (a test holds the two equal)."""
    n = f"coalesce({n_shared}, 0)"
    return (f"{n} AS n_shared, {n} / nullif({size_a} + {size_b} - {n}, 0) AS jaccard, "
            f"{n} / nullif(least({size_a}, {size_b}), 0) AS overlap_coef")


def _set_pairs(engine: Engine, model_id: int, methods: list[str], *, same_task: bool
               ) -> list[dict]:
    """Ordered pairs of the current sets of ``model_id`` scored by ``methods``, with their
    n_shared, jaccard and overlap_coef. ``same_task``: pairs of one task's sets from different
    methods; otherwise pairs of one method's sets (the diagonal included), as in set_overlaps."""
    params = {f"m{k}": m for k, m in enumerate(methods)}
    key = "task_id" if same_task else "method"
    pair = "a.method <> b.method" if same_task else "TRUE"
    # The set_overlaps view, restricted to this model and these methods before the self-join.
    return rows(engine, f"""
        WITH sets AS (SELECT set_id, task_id, task, method, size FROM task_sets
                      WHERE model_id = :mid AND method IN ({', '.join(':' + k for k in params)})),
             members AS (SELECT s.set_id, s.{key}, m.layer, m.neuron
                         FROM neuron_set_members m JOIN sets s USING (set_id)),
             shared AS (SELECT a.set_id AS set_a, b.set_id AS set_b, count(*) AS n_shared
                        FROM members a JOIN members b USING ({key}, layer, neuron) GROUP BY ALL)
        SELECT a.task_id AS task_id_a, a.task AS task_a, a.method AS method_a,
               b.task_id AS task_id_b, b.task AS task_b, b.method AS method_b,
               {pair_measures("sh.n_shared", "a.size", "b.size")}
        FROM sets a JOIN sets b ON a.{key} = b.{key} AND {pair}
        LEFT JOIN shared sh ON sh.set_a = a.set_id AND sh.set_b = b.set_id""",
        mid=model_id, **params)


def overlap_matrix(engine: Engine, model: str, method: str = "cgvst",
                   measure: str = "jaccard") -> OverlapMatrix:
    """The task × task overlap of the current sets of ``model`` scored by ``method``."""
    _check_measure(measure)
    info = resolve_model(engine, model)
    check_method(engine, info, method)
    data = _set_pairs(engine, info["model_id"], [method], same_task=False)
    tasks = sorted({r["task_a"] for r in data})
    index = {t: k for k, t in enumerate(tasks)}
    values = np.zeros((len(tasks), len(tasks)))
    for r in data:
        values[index[r["task_a"]], index[r["task_b"]]] = r[measure] or 0.0
    return OverlapMatrix(model, method, measure, tasks, values)


def method_overlap(engine: Engine, model: str, method: str, versus: list[str],
                   measure: str = "jaccard") -> list[dict]:
    """Per task, the overlap of its ``method`` set with its set from each of ``versus``: whether
    different scorers find the same neurons for the same task. A task without a ``versus`` set
    gets None there."""
    _check_measure(measure)
    info = resolve_model(engine, model)
    methods = list(dict.fromkeys((method, *versus)))
    for m in methods:
        check_method(engine, info, m)
    if not versus or method in versus:
        raise AtlasError(f"give --versus one or more methods other than '{method}'")
    value = {(r["task_id_a"], r["method_b"]): r[measure]
             for r in _set_pairs(engine, info["model_id"], methods, same_task=True)
             if r["method_a"] == method}
    kind = int if measure == "n_shared" else float
    tasks = rows(engine, "SELECT task_id, task, size FROM task_sets WHERE model_id = :mid AND "
                 "method = :m ORDER BY task", mid=info["model_id"], m=method)
    return [{"task": label, "size": t["size"],
             **{v: (None if value.get((t["task_id"], v)) is None else
                    kind(value[t["task_id"], v])) for v in versus}}
            for label, t in zip(task_labels([t["task"] for t in tasks]), tasks)]


def specificity(engine: Engine, model: str, method: str = "cgvst") -> list[dict]:
    """Per task: set size, neurons unique to it, their share (specificity), and mean Jaccard to
    the other tasks' sets."""
    info = resolve_model(engine, model)
    check_method(engine, info, method)
    return rows(engine, """
        WITH uniq AS (
            SELECT set_id, count(*) AS n_unique FROM unique_neurons
            WHERE model_id = :mid AND method = :method GROUP BY set_id),
        other AS (
            SELECT set_a AS set_id, avg(jaccard ORDER BY set_b) AS mean_jaccard FROM set_overlaps
            WHERE model_id = :mid AND method = :method AND set_a <> set_b GROUP BY set_a)
        SELECT ts.task, ts.task_id, ts.size, coalesce(u.n_unique, 0) AS n_unique,
               coalesce(u.n_unique, 0) / ts.size AS specificity, o.mean_jaccard
        FROM task_sets ts LEFT JOIN uniq u USING (set_id) LEFT JOIN other o USING (set_id)
        WHERE ts.model_id = :mid AND ts.method = :method
        ORDER BY ts.task""", mid=info["model_id"], method=method)


def neuron_entropy(engine: Engine, model: str, method: str = "cgvst", limit: int | None = None
                   ) -> list[dict]:
    """Per neuron, the entropy of its scores normalised across tasks (low: task-specific),
    with the task holding most of its mass; lowest entropy first."""
    info = resolve_model(engine, model)
    check_method(engine, info, method)
    sql = """
        WITH s AS (
            SELECT ts.task, sc.layer, sc.neuron, greatest(sc.score, 0) AS score
            FROM task_sets ts JOIN neuron_scores sc USING (run_id)
            WHERE ts.model_id = :mid AND ts.method = :method)
        SELECT layer, neuron,
               ln(sum(score)) - sum(CASE WHEN score > 0 THEN score * ln(score) ELSE 0 END)
                   / sum(score) AS entropy,
               arg_max(task, score) AS top_task, max(score) / sum(score) AS top_share
        FROM s GROUP BY layer, neuron HAVING sum(score) > 0
        ORDER BY entropy, layer, neuron"""
    if limit:
        sql += f" LIMIT {int(limit)}"
    return rows(engine, sql, mid=info["model_id"], method=method)


@dataclass(frozen=True)
class SetPair:
    """Two sets side by side: how many neurons are in both and in each alone, and (up to a
    limit each) which, by (layer, neuron)."""

    set_a: int
    set_b: int
    n_shared: int
    n_a_only: int
    n_b_only: int
    jaccard: float | None
    shared: list[tuple[int, int]]
    a_only: list[tuple[int, int]]
    b_only: list[tuple[int, int]]


def set_pair(engine: Engine, set_a: int, set_b: int, limit: int = 200) -> SetPair:
    """The neurons sets ``set_a`` and ``set_b`` share and each holds alone (by id).

    Args:
        engine: the atlas database.
        set_a, set_b: the sets.
        limit: neurons listed at most per part (the counts are whole).

    Returns:
        :class:`SetPair`; a set that does not exist is a NotFound error.
    """
    for set_id in (set_a, set_b):
        if not rows(engine, "SELECT 1 FROM neuron_sets WHERE set_id = :s", s=set_id):
            raise NotFound(f"no set with id {set_id}")
    found = rows(engine, """
        SELECT coalesce(a.layer, b.layer) AS layer, coalesce(a.neuron, b.neuron) AS neuron,
               CASE WHEN a.set_id IS NULL THEN 'b' WHEN b.set_id IS NULL THEN 'a'
                    ELSE 'shared' END AS part
        FROM (SELECT * FROM neuron_set_members WHERE set_id = :a) a
        FULL JOIN (SELECT * FROM neuron_set_members WHERE set_id = :b) b
        USING (layer, neuron) ORDER BY 1, 2""", a=set_a, b=set_b)
    parts: dict[str, list[tuple[int, int]]] = {"shared": [], "a": [], "b": []}
    for r in found:
        parts[r["part"]].append((r["layer"], r["neuron"]))
    union = len(found)
    return SetPair(set_a, set_b, len(parts["shared"]), len(parts["a"]), len(parts["b"]),
                   len(parts["shared"]) / union if union else None, parts["shared"][:limit],
                   parts["a"][:limit], parts["b"][:limit])
