"""Label-likelihood evaluation of one task's held-out half at 5 shots on SmolLM2, side by side:

  per query  the previous path: each query's whole prompt (system prompt, demonstrations, query)
             is encoded, then its labels are scored on that prompt's KV cache
  cached     atlas.evaluate: the shared prefix (system prompt and demonstrations) is encoded once
             and the (query + label) suffixes are scored in batches on copies of its cache

Both score the same token sequences (same fixed demonstrations, labels tokenized in context), so
their log-probabilities and accuracy must agree.

Usage: python bench/eval_prefix_cache.py [--task task195] [--examples N] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from atlas.evaluate.labels import label_sequences, score_sequences
from atlas.evaluate.metrics import prompt_text
from atlas.models import load_model
from atlas.tasks import PromptFormat, load_task, split_task

DEFAULT_SNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "sni"


@torch.no_grad()
def per_query(model, sequences_by_query) -> list[float]:
    """The previous algorithm: encode each prompt once, labels as a batch on its cache."""
    out = []
    for sequences in sequences_by_query:
        prompt = sequences[0].ids[: len(sequences[0].ids) - sequences[0].n_label]
        first = model(input_ids=torch.tensor([prompt]), use_cache=True)
        cache = first["cache"] if "cache" in first else first["past_key_values"]
        logp_first = F.log_softmax(first.logits[0, -1].float(), dim=-1)
        rest = [s.ids[len(prompt):] for s in sequences]
        width = max(len(r) for r in rest)
        cache.batch_repeat_interleave(len(rest))
        ids = torch.zeros((len(rest), width), dtype=torch.long)
        mask = torch.zeros((len(rest), len(prompt) + width), dtype=torch.long)
        mask[:, : len(prompt)] = 1
        for row, r in enumerate(rest):
            ids[row, : len(r)] = torch.tensor(r)
            mask[row, len(prompt) : len(prompt) + len(r)] = 1
        key = "cache" if "cache" in first else "past_key_values"
        logits = model(input_ids=ids, attention_mask=mask, use_cache=True, **{key: cache}).logits
        logp = F.log_softmax(logits.float(), dim=-1)
        for row, r in enumerate(rest):
            total = float(logp_first[r[0]])
            total += sum(float(logp[row, k - 1, t]) for k, t in enumerate(r) if k > 0)
            out.append(total)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="task195")
    ap.add_argument("--examples", type=int, default=None, help="Default: the whole held-out half.")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--sni-dir", default=str(DEFAULT_SNI))
    args = ap.parse_args()
    loaded = load_model("smollm2-135m-instruct", device="cpu")
    fmt = PromptFormat.for_tokenizer(loaded.tokenizer)
    task = load_task(args.task, args.sni_dir)
    split = split_task(task)
    queries = split.evaluate[: args.examples] if args.examples else split.evaluate
    by_query = [label_sequences(fmt, prompt_text(fmt, task, q, split.score, args.shots, 0,
                                                 fixed_demos=True), task.labels, "marker")
                for q in queries]
    flat = [s for group in by_query for s in group]
    n_tokens = sum(len(s.ids) for s in flat)
    start = time.perf_counter()
    old = torch.tensor(per_query(loaded.model, by_query), dtype=torch.float64)
    t_old = time.perf_counter() - start
    start = time.perf_counter()
    new = score_sequences(loaded.model, flat, batch_size=args.batch_size)
    t_new = time.perf_counter() - start
    n_labels = len(task.labels)
    gold = torch.tensor([task.labels.index(q.output) for q in queries])
    acc_old = float((old.view(-1, n_labels).argmax(1) == gold).float().mean())
    acc_new = float((new.view(-1, n_labels).argmax(1) == gold).float().mean())
    print(f"{args.task}: {len(queries)} held-out examples, {args.shots} shots, {n_labels} labels, "
          f"{n_tokens / len(flat):.0f} tokens per (query, label) sequence; "
          f"{torch.get_num_threads()} CPU threads")
    print(f"  per query  {len(queries) / t_old:8.2f} examples/s   accuracy {acc_old:.3f}")
    print(f"  cached     {len(queries) / t_new:8.2f} examples/s   accuracy {acc_new:.3f}")
    print(f"cached / per-query throughput: {t_old / t_new:.1f}x  (target ≥ 5x)")
    print(f"max |difference| of label log-probabilities: {float((old - new).abs().max()):.2e}")


if __name__ == "__main__":
    main()
