"""A Llama-sized synthetic atlas for the query and serving benchmarks: 10 tasks × 3 methods of a
32 × 11,008-neuron model (about 10.6 million score rows, 5% sets), correlated across tasks; with
``evaluations``, an inhibition experiment of the cgvst sets (every set on every task, 3 random
controls, per-example outcomes) as `atlas ablate` stores it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from atlas.evaluate.metrics import Outcome
from atlas.scoring import top_rate
from atlas.store import evaluations as ev
from atlas.store import open_db
from atlas.store import repository as repo

N_LAYERS, D_MLP, N_TASKS, METHODS = 32, 11008, 10, ("cgvst", "gv", "grad_x_act")


def build_llama_like(path: Path, *, evaluations: bool = False, n_examples: int = 200,
                     evidence: bool = False):
    """Write the synthetic atlas to ``path``; return its (writable) engine. With ``evidence``,
    an evidence run of every neuron (k = 8 exemplars of each sign, 4 quantile samples, density
    in every task) and logit effects, as `atlas describe` stores them."""
    engine = open_db(path)
    set_ids: dict[int, int] = {}
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
                set_id = repo.write_set(conn, f"llama-like/task{k:03d}/{method}", model_id,
                                        task_id, run_id, "top:0.05", top_rate(scores), method)
                if method == "cgvst":
                    set_ids[task_id] = set_id
                repo.complete_run(conn, run_id, n_examples=1, n_tokens=1, n_skipped=0)
        if evaluations:
            _inhibit(conn, model_id, set_ids, n_examples)
    if evidence:
        _evidence(engine, model_id, list(set_ids))
    return engine


def _evidence(engine, model_id: int, task_ids: list[int], k: int = 8, vocab: int = 32000
              ) -> None:
    from atlas.evidence import Corpus, evidence_tables, logits_table
    from atlas.models.unembed import LogitEffects
    from atlas.scoring.exemplars import Density, Exemplars
    from atlas.store import evidence as store

    gen = torch.Generator().manual_seed(1)
    n_seq, length, width = 400, 64, 13
    corpus = Corpus([torch.randint(0, vocab, (length,), generator=gen).tolist()
                     for _ in range(n_seq)], [task_ids[i % len(task_ids)] for i in range(n_seq)],
                    [f"i{i}" for i in range(n_seq)])
    shape = (2, N_LAYERS, k, D_MLP)
    value = torch.rand(shape, generator=gen).sort(2, descending=True).values
    value[1] = -value[1]
    density = {t: Density(length * n_seq // len(task_ids),
                          torch.randint(0, 100, (N_LAYERS, D_MLP), generator=gen),
                          torch.randn(N_LAYERS, D_MLP, generator=gen),
                          torch.randint(0, 50, (N_LAYERS, D_MLP, 16), generator=gen))
               for t in task_ids}
    samples = [(i, 10) for i in range(64)]
    rec = Exemplars(value, torch.randint(0, n_seq, shape, generator=gen),
                    torch.randint(8, length - 4, shape, generator=gen),
                    torch.rand((*shape, width), generator=gen), density, samples,
                    torch.randn(64, N_LAYERS, D_MLP, generator=gen), 8, 4)
    words = [f"tok{i}" for i in range(vocab)]
    evidence_id = store.open_run(engine, model_id, {"synthetic": True}, "synthetic")
    store.write_logits(engine, model_id, logits_table(model_id, LogitEffects(
        torch.randint(0, vocab, (N_LAYERS, D_MLP, 20), generator=gen),
        torch.rand(N_LAYERS, D_MLP, 20, generator=gen),
        torch.randint(0, vocab, (N_LAYERS, D_MLP, 20), generator=gen),
        -torch.rand(N_LAYERS, D_MLP, 20, generator=gen))), words)
    store.complete_run(engine, evidence_id, evidence_tables(evidence_id, rec, corpus, words),
                       n_seq, n_seq * length)


def _inhibit(conn, model_id: int, set_ids: dict[int, int], n: int) -> None:
    """Baselines, each set ×0 on every task, and 3 random controls per set (seeded outcomes:
    a set hurts its own task most)."""
    rng = np.random.default_rng(0)

    def outcomes(level: float) -> tuple[float, list[Outcome]]:
        probs = np.clip(rng.normal(level, 0.2, n), 0.01, 0.99)
        out = [Outcome(f"i{j}", "yes", "yes" if p > 0.5 else "no", bool(p > 0.5), float(np.log(p)),
                       float(p)) for j, p in enumerate(probs)]
        return float(np.mean([o.correct for o in out])), out

    for eval_task in set_ids:
        params = {"shots": 5, "metric": "label_likelihood", "data_hash": f"h{eval_task}"}
        key = f"synthetic-{eval_task}"
        conditions = [(None, 1.0, False, None, 0.8)]
        for set_task, set_id in set_ids.items():
            conditions.append((set_id, 0.0, False, None, 0.4 if set_task == eval_task else 0.7))
            conditions += [(set_id, 0.0, True, seed, 0.78) for seed in range(3)]
        for set_id, factor, control, seed, level in conditions:
            value, out = outcomes(level)
            ev.add(conn, ev.EvaluationKey(model_id, eval_task, set_id, factor, control, seed,
                                          "label_likelihood", key), value, n, 0, params, out)
