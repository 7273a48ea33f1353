"""What `atlas ingest --exemplars` costs: the same ingest (SmolLM2, CGVST, 5-shot prompts) with
and without exemplars recorded in its scoring pass, side by side in one run, each into a fresh
database (target: at most 1.15x). The logit effects, computed once per model, are timed apart.

    python bench/ingest_exemplars.py [--task task533] [--examples 16] [--repeats 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from atlas.ingest import IngestOptions, Ingestor, load_tasks
from atlas.models.loading import load_model
from atlas.models.unembed import logit_effects
from atlas.store import open_db
from atlas.store.runs import DatabaseRuns

ROOT = Path(__file__).resolve().parents[1]


def ingest_once(loaded, tasks, k: int) -> float:
    db = Path(tempfile.mkdtemp()) / "bench.duckdb"
    engine = open_db(db)
    try:
        options = IngestOptions(methods=["cgvst"], shots=5, examples=ARGS.examples, exemplars=k,
                                sni_dir=ARGS.sni_dir)
        started = time.perf_counter()
        Ingestor(loaded, options, DatabaseRuns(engine), evidence_db=engine).run(tasks)
        return time.perf_counter() - started
    finally:
        engine.dispose()


def main() -> None:
    loaded = load_model(ARGS.model, dtype=ARGS.dtype, device="cpu")
    options = IngestOptions(examples=ARGS.examples, sni_dir=ARGS.sni_dir)
    tasks = load_tasks(ARGS.task, options, print)
    t = time.perf_counter()
    logit_effects(loaded.model)  # once per model (the run stores it), timed apart
    logits = time.perf_counter() - t
    import atlas.evidence as evidence

    evidence.ensure_logits = lambda *args, **kwargs: None  # both sides without it
    plain, recorded = [], []
    for _ in range(ARGS.repeats):  # interleaved, so both see the same machine
        plain.append(ingest_once(loaded, tasks, 0))
        recorded.append(ingest_once(loaded, tasks, 8))
    print(f"{loaded.name} ({loaded.dtype}), {', '.join(ARGS.task)}, {ARGS.examples} examples "
          f"per task, 5 shots, CGVST; best of {ARGS.repeats}")
    print(f"ingest {min(plain):.1f} s, with --exemplars 8 {min(recorded):.1f} s: ratio "
          f"{min(recorded) / min(plain):.2f} (target <= 1.15); logit effects once per model "
          f"{logits:.1f} s")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--task", nargs="+", default=["task533"])
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--sni-dir", default=str(ROOT.parent / "shared" / "data" / "sni-more"))
    ARGS = ap.parse_args()
    main()
