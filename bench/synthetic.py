"""A Llama-sized synthetic atlas for the query and serving benchmarks: 10 tasks × 3 methods of a
32 × 11,008-neuron model (about 10.6 million score rows, 5% sets), correlated across tasks."""

from __future__ import annotations

from pathlib import Path

import torch

from atlas.scoring import top_rate
from atlas.store import open_db
from atlas.store import repository as repo

N_LAYERS, D_MLP, N_TASKS, METHODS = 32, 11008, 10, ("cgvst", "gv", "grad_x_act")


def build_llama_like(path: Path):
    """Write the synthetic atlas to ``path``; return its (writable) engine."""
    engine = open_db(path)
    with engine.begin() as conn:
        model_id = repo.ensure_model(conn, "llama-like", "llama", N_LAYERS, D_MLP, "synthetic",
                                     "none")
        gen = torch.Generator().manual_seed(0)
        shared = torch.rand(N_LAYERS, D_MLP, generator=gen)
        for k in range(N_TASKS):
            task_id = repo.ensure_task(conn, f"task{k:03d}_synthetic", "synthetic", 0, f"h{k}")
            for method in METHODS:
                scores = 0.5 * shared + torch.rand(N_LAYERS, D_MLP, generator=gen)
                run_id = repo.start_run(conn, model_id, task_id, method, {}, f"{k}{method}")
                repo.write_scores(conn, run_id, scores)
                repo.write_set(conn, f"llama-like/task{k:03d}/{method}", model_id, task_id, run_id,
                               "top:0.05", top_rate(scores), method)
                repo.complete_run(conn, run_id, n_examples=1, n_tokens=1, n_skipped=0)
    return engine
