"""One neuron of a stored model: the sets it is in and its score and rank in every complete run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from atlas.errors import NotFound
from atlas.query.core import resolve_model, rows
from atlas.store import arrays


def ranks_descending(scores: np.ndarray) -> np.ndarray:
    """Each score's rank: 1 + the number of scores above it (ties share a rank). # [n]"""
    ascending = np.sort(scores)
    return (len(scores) - np.searchsorted(ascending, scores, side="right") + 1).astype(np.int32)


def flat_mask(engine, set_id: int, shape: tuple[int, int]) -> np.ndarray:
    """A set's members as a flat boolean mask [n_layers * d_mlp]."""
    with engine.connect() as conn:
        return arrays.read_set_mask(conn, set_id, *shape).ravel()


def flat_scores(engine, run_id: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A run's scores and their ranks (1 = top), flat [n_layers * d_mlp]."""
    with engine.connect() as conn:
        values = arrays.read_scores(conn, run_id, *shape).ravel()
    return values, ranks_descending(values)


def model_sets_and_runs(engine: Engine, model_id: int) -> tuple[list[dict], list[dict]]:
    """A model's sets (``current``: the task's set of its method now) and complete runs."""
    sets = rows(engine, """
        SELECT s.set_id, s.name, s.method, s.rule, t.name AS task, s.created_at,
               s.set_id IN (SELECT set_id FROM task_sets) AS current
        FROM neuron_sets s LEFT JOIN tasks t USING (task_id)
        WHERE s.model_id = :mid ORDER BY s.set_id""", mid=model_id)
    runs = rows(engine, """
        SELECT r.run_id, r.method, t.name AS task, r.started_at
        FROM runs r JOIN tasks t USING (task_id)
        WHERE r.model_id = :mid AND r.status = 'complete' ORDER BY r.run_id""", mid=model_id)
    return sets, runs


@dataclass(frozen=True)
class NeuronProfile:
    """A neuron's place in the atlas."""

    model: str
    model_id: int
    layer: int
    neuron: int
    sets: list[dict[str, Any]]  # the stored sets it is in (set_id, name, method, rule, task, current)
    scores: list[dict[str, Any]]  # per complete run: run_id, method, task, score, rank (1 = top)
    current_sets_per_method: dict[str, int]  # how many tasks' current sets hold it, per method
    specific_to_one_task: dict[str, bool]  # per method: in exactly one task's current set

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def neuron_profile(info: dict, layer: int, neuron: int, sets: list[dict], runs: list[dict],
                   mask_of: Callable[[dict], np.ndarray],
                   scores_of: Callable[[dict], tuple[np.ndarray, np.ndarray]]) -> NeuronProfile:
    """The profile of neuron ``layer``/``neuron`` of the stored model ``info``.

    Args:
        info: the model's row (``resolve_model``).
        sets, runs: the model's sets and complete runs (:func:`model_sets_and_runs`).
        mask_of: a set's row -> its flat members mask [n_layers * d_mlp].
        scores_of: a run's row -> its flat (scores, ranks) [n_layers * d_mlp].
    Returns:
        The neuron's :class:`NeuronProfile`; a neuron outside the model is a NotFound.
    """
    if not (0 <= layer < info["n_layers"] and 0 <= neuron < info["d_mlp"]):
        raise NotFound(f"model '{info['name']}' has no neuron {layer}/{neuron} "
                       f"({info['n_layers']} layers × {info['d_mlp']} neurons)")
    flat = layer * info["d_mlp"] + neuron
    in_sets = [{k: v for k, v in row.items() if k != "created_at"} for row in sets
               if mask_of(row)[flat]]
    scores = []
    for run in runs:
        values, ranks = scores_of(run)
        scores.append({"run_id": run["run_id"], "method": run["method"], "task": run["task"],
                       "score": float(values[flat]), "rank": int(ranks[flat])})
    n_tasks: dict[str, int] = {}
    for s in in_sets:
        if s["current"]:
            n_tasks[s["method"]] = n_tasks.get(s["method"], 0) + 1
    return NeuronProfile(info["name"], info["model_id"], layer, neuron, in_sets, scores, n_tasks,
                         {m: n == 1 for m, n in n_tasks.items()})


def neuron(engine: Engine, model: str, layer: int, neuron: int) -> NeuronProfile:
    """:func:`neuron_profile` read straight from the store (the server reads through caches)."""
    info = resolve_model(engine, model)
    shape = (info["n_layers"], info["d_mlp"])
    sets, runs = model_sets_and_runs(engine, info["model_id"])
    return neuron_profile(info, layer, neuron, sets, runs,
                          lambda row: flat_mask(engine, row["set_id"], shape),
                          lambda run: flat_scores(engine, run["run_id"], shape))
