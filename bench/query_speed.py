"""Query speed on a Llama-sized atlas: 10 tasks × 3 methods of a 32 × 11,008-neuron model
(≈ 10.6 million score rows, 5% sets). Times the overlap matrix and the specificity table."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from atlas.query import neuron_entropy, overlap_matrix, specificity
from atlas.scoring import top_rate
from atlas.store import open_db
from atlas.store import repository as repo


def main() -> None:
    engine = open_db(Path(tempfile.mkdtemp()) / "q.duckdb")
    start = time.perf_counter()
    with engine.begin() as conn:
        model_id = repo.ensure_model(conn, "llama-like", "llama", 32, 11008, "synthetic", "none")
        gen = torch.Generator().manual_seed(0)
        shared = torch.rand(32, 11008, generator=gen)
        for k in range(10):
            task_id = repo.ensure_task(conn, f"task{k:03d}_synthetic", "synthetic", 0, f"h{k}")
            for method in ("cgvst", "gv", "grad_x_act"):
                scores = 0.5 * shared + torch.rand(32, 11008, generator=gen)
                run_id = repo.start_run(conn, model_id, task_id, method, {}, f"{k}{method}")
                repo.write_scores(conn, run_id, scores)
                repo.write_set(conn, f"llama-like/task{k:03d}/{method}", model_id, task_id, run_id,
                               "top:0.05", top_rate(scores), method)
                repo.complete_run(conn, run_id, n_examples=1, n_tokens=1, n_skipped=0)
    print(f"built 30 runs, {30 * 32 * 11008:,} score rows in {time.perf_counter() - start:.1f} s")
    for name, fn in (
        ("overlap matrix (jaccard)", lambda: overlap_matrix(engine, "llama-like", "cgvst")),
        ("specificity table", lambda: specificity(engine, "llama-like", "cgvst")),
        ("per-neuron entropy (top 100)", lambda: neuron_entropy(engine, "llama-like", "cgvst", 100)),
    ):
        fn()  # warm
        start = time.perf_counter()
        fn()
        print(f"{name:30s} {time.perf_counter() - start:.3f} s  (target < 1 s)")
    engine.dispose()


if __name__ == "__main__":
    main()
