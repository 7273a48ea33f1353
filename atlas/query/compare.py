"""Compare two models' task sets: depth profiles, and index-level agreement when shapes match."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.stats import spearmanr, wasserstein_distance
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.query.core import check_method, resolve_model, rows
from atlas.query.overlap import overlap_matrix, pair_measures


def depth_profile(engine: Engine, model: str, method: str) -> dict[str, np.ndarray]:
    """Per task (full name), the relative depth ((layer + 0.5) / n_layers) of every neuron of its
    set."""
    info = resolve_model(engine, model)
    data = rows(engine, """
        SELECT task, rel_depth, n FROM layer_counts WHERE model_id = :mid AND method = :method
        ORDER BY task, rel_depth""", mid=info["model_id"], method=method)
    out: dict[str, list] = {}
    for r in data:
        out.setdefault(r["task"], []).extend([r["rel_depth"]] * int(r["n"]))
    return {t: np.asarray(v) for t, v in out.items()}


def compare_models(engine: Engine, model_a: str, model_b: str, method: str = "cgvst") -> list[dict]:
    """Per task present in both: mean relative depth of each set, the Wasserstein distance of the
    depth distributions; when both models have the same shape, the Jaccard overlap of the
    two sets and the Spearman correlation of their scores."""
    info_a, info_b = resolve_model(engine, model_a), resolve_model(engine, model_b)
    check_method(engine, info_a, method)
    check_method(engine, info_b, method)
    prof_a, prof_b = depth_profile(engine, model_a, method), depth_profile(engine, model_b, method)
    same_shape = (info_a["n_layers"], info_a["d_mlp"]) == (info_b["n_layers"], info_b["d_mlp"])
    out = []
    for task in sorted(set(prof_a) & set(prof_b)):
        row = {"task": task, "depth_a": float(prof_a[task].mean()),
               "depth_b": float(prof_b[task].mean()),
               "depth_distance": float(wasserstein_distance(prof_a[task], prof_b[task]))}
        if same_shape:
            row.update(_index_agreement(engine, info_a["model_id"], info_b["model_id"], method,
                                        task))
        out.append(row)
    return out


def _index_agreement(engine: Engine, model_a: int, model_b: int, method: str, task: str) -> dict:
    stats = rows(engine, f"""
        WITH a AS (SELECT set_id, size, run_id FROM task_sets
                   WHERE model_id = :ma AND method = :method AND task = :task),
             b AS (SELECT set_id, size, run_id FROM task_sets
                   WHERE model_id = :mb AND method = :method AND task = :task),
             pair AS (
                 SELECT (SELECT count(*) FROM neuron_set_members x JOIN neuron_set_members y
                           ON x.layer = y.layer AND x.neuron = y.neuron
                         WHERE x.set_id = (SELECT set_id FROM a)
                           AND y.set_id = (SELECT set_id FROM b)) AS shared,
                        (SELECT size FROM a) AS size_a, (SELECT size FROM b) AS size_b,
                        (SELECT run_id FROM a) AS run_a, (SELECT run_id FROM b) AS run_b)
        SELECT {pair_measures("shared", "size_a", "size_b")}, run_a, run_b FROM pair""",
                 ma=model_a, mb=model_b, method=method, task=task)[0]
    result = {"n_shared": stats["n_shared"], "jaccard": stats["jaccard"]}
    if stats["run_a"] is not None and stats["run_b"] is not None:
        scores = rows(engine, """
            SELECT a.score AS sa, b.score AS sb FROM neuron_scores a JOIN neuron_scores b
              ON a.layer = b.layer AND a.neuron = b.neuron
            WHERE a.run_id = :ra AND b.run_id = :rb""", ra=stats["run_a"], rb=stats["run_b"])
        x = np.array([r["sa"] for r in scores])
        y = np.array([r["sb"] for r in scores])
        result["spearman"] = float(spearmanr(x, y).statistic) if len(x) > 1 else float("nan")
    return result


def mantel(a: np.ndarray, b: np.ndarray, n_permutations: int = 9999, seed: int = 0) -> dict:
    """Pearson correlation of the off-diagonal upper triangles of two symmetric task × task
    matrices, with a two-sided permutation p-value (rows and columns of ``b`` permuted together;
    every permutation when there are at most ``n_permutations`` of them)."""
    n = len(a)
    if n < 3:
        raise AtlasError(f"a Mantel test needs at least 3 shared tasks (got {n})")
    upper = np.triu_indices(n, 1)

    def r(perm: np.ndarray) -> float:
        return float(np.corrcoef(a[upper], b[np.ix_(perm, perm)][upper])[0, 1])

    observed = r(np.arange(n))
    if math.factorial(n) <= n_permutations:
        perms = [np.array(p) for p in itertools.permutations(range(n))]
        exact = True
    else:
        rng = np.random.default_rng(seed)
        perms = [np.arange(n)] + [rng.permutation(n) for _ in range(n_permutations)]
        exact = False
    null = np.array([r(p) for p in perms])
    p = float(np.mean(np.abs(null) >= abs(observed) - 1e-12))
    return {"n_tasks": n, "r": observed, "p": p, "n_permutations": len(perms), "exact": exact}


def task_similarity_agreement(engine: Engine, model_a: str, model_b: str,
                              method: str = "cgvst") -> dict:
    """Do two models find the same tasks similar? The Mantel test of their task × task Jaccard
    matrices over the tasks both have sets for."""
    ma, mb = overlap_matrix(engine, model_a, method), overlap_matrix(engine, model_b, method)
    shared = sorted(set(ma.tasks) & set(mb.tasks))
    ia = [ma.tasks.index(t) for t in shared]
    ib = [mb.tasks.index(t) for t in shared]
    result = mantel(ma.values[np.ix_(ia, ia)], mb.values[np.ix_(ib, ib)])
    return {"model_a": model_a, "model_b": model_b, "method": method, **result}
