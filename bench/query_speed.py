"""Query speed on a Llama-sized atlas: 10 tasks × 3 methods of a 32 × 11,008-neuron model
(≈ 10.6 million score rows, 5% sets). Times the overlap matrix and the specificity table."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from synthetic import build_llama_like

from atlas.query import neuron_entropy, overlap_matrix, specificity


def main() -> None:
    start = time.perf_counter()
    engine = build_llama_like(Path(tempfile.mkdtemp()) / "q.duckdb")
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
