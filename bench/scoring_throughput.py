"""CGVST throughput on SmolLM2-135M-Instruct, the released definition on k-shot prompts of
several tasks (default: 5 shots; task195 short, task379 medium, task274 long), side by side:

  reference  the published algorithm: batch 1, loss.backward() with gradients for every
             parameter, then Σ_j up_proj.weight.grad per neuron
  atlas      atlas.scoring.cgvst (activation gradients only)
  plain      the same batches: forward + activation-only backward, no hooks, no reduction

Usage: python bench/scoring_throughput.py [--tasks task195,task379,task274] [--examples 8]
       python bench/scoring_throughput.py --device cuda --dtype bfloat16 --batch-size 32
       python bench/scoring_throughput.py --contention 2
On a GPU it also prints peak GPU memory of each variant.

``--contention N``: atlas CGVST on 4 prompts of about 300 tokens (2 torch threads), alone and
beside N busy processes, with OpenMP's wait policy ACTIVE (spinning idle threads) and PASSIVE
(atlas's default), each in a fresh process (the policy is read when torch loads); prints each
time and the ratio to the run alone.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from atlas.models import load_model
from atlas.scoring import cgvst
from atlas.scoring.engine import CPU_BATCH_TOKENS, example_losses, make_batches
from atlas.tasks import PromptFormat, load_task, scoring_examples, split_task

DEFAULT_SNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "sni"


def reference(model, adapter, ids, targets):
    model.requires_grad_(True)
    device = next(model.parameters()).device
    total = torch.zeros(adapter.n_layers, adapter.d_mlp, device=device)
    for seq, tgt in zip(ids, targets):
        model.zero_grad(set_to_none=True)
        x = torch.tensor([seq], device=device)
        logits = model(input_ids=x).logits[0]
        loss = sum(F.cross_entropy(logits[[t - 1 for t in g]].float(), x[0, g]) for g in tgt)
        loss.backward()
        for layer, up in enumerate(adapter.ups):
            total[layer] += up.weight.grad.float().sum(1).abs()
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters()
                     if p.grad is not None)
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return total.cpu(), grad_bytes


def plain(model, adapter, ids, targets, batch_size):
    device = next(model.parameters()).device
    leaf = adapter.ups[0].register_forward_hook(lambda m, i, o: o.requires_grad_(True))
    budget = CPU_BATCH_TOKENS if device.type == "cpu" else None  # the batches cgvst forms
    for batch in make_batches(ids, targets, batch_size, max_batch_tokens=budget):
        with torch.enable_grad():
            example_losses(model, batch, device).sum().backward()
    leaf.remove()


def timed(fn, repeats=3):
    best, peak = float("inf"), 0
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        best = min(best, time.perf_counter() - start)
    return best, out, peak


def measure(loaded, ids, targets, batch_size: int) -> dict:
    model, adapter = loaded.model, loaded.adapter
    t_ref, (ref_scores, grad_bytes), m_ref = timed(lambda: reference(model, adapter, ids, targets))
    t_atlas, scores, m_atlas = timed(lambda: cgvst(model, ids, targets, batch_size=batch_size))
    t_plain, _, m_plain = timed(lambda: plain(model, adapter, ids, targets, batch_size))
    return {"t_ref": t_ref, "t_atlas": t_atlas, "t_plain": t_plain, "m_ref": m_ref,
            "m_atlas": m_atlas, "m_plain": m_plain, "grad_bytes": grad_bytes,
            "rel": float((scores - ref_scores).abs().max() / ref_scores.abs().max())}


def contention_child(args) -> None:
    """One timed CGVST pass (best of 2) in this process: the time on stdout."""
    torch.set_num_threads(2)
    loaded = load_model("smollm2-135m-instruct", device="cpu", dtype=args.dtype)
    fmt = PromptFormat.for_tokenizer(loaded.tokenizer)
    task = load_task("task274", args.sni_dir)
    score = split_task(task).score
    examples = [e for e in scoring_examples(task, score[:40], fmt, 2, 0, pool=score)
                if 250 <= len(e.encoded.input_ids) <= 350][:4]
    ids = [e.encoded.input_ids for e in examples]
    targets = [e.encoded.target_groups for e in examples]
    best, _, _ = timed(lambda: cgvst(loaded.model, ids, targets, batch_size=4), repeats=2)
    print(f"{best:.3f}")


def contention(args) -> None:
    import os
    import subprocess
    import sys

    def run(policy: str) -> float:
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        out = subprocess.run([sys.executable, __file__, "--contention-child", "--dtype", args.dtype,
                              "--sni-dir", args.sni_dir], env=env, capture_output=True, text=True,
                             check=True)
        return float(out.stdout.split()[-1])

    busy = "import time\nend = time.time() + 600\nwhile time.time() < end: pass"
    print(f"SmolLM2 {args.dtype}, CGVST on 4 prompts of about 300 tokens, 2 torch threads")
    for policy in ("ACTIVE", "PASSIVE"):
        alone = run(policy)
        workers = [subprocess.Popen([sys.executable, "-c", busy]) for _ in range(args.contention)]
        try:
            shared = run(policy)
        finally:
            for w in workers:
                w.kill()
        print(f"  OMP_WAIT_POLICY={policy:8s} alone {alone:6.2f} s, beside {args.contention} busy "
              f"processes {shared:6.2f} s: {shared / alone:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contention", type=int, default=0, help="Busy processes beside the run.")
    ap.add_argument("--contention-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--examples", type=int, default=8, help="Scoring examples per task.")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tasks", default="task195,task379,task274")
    ap.add_argument("--sni-dir", default=str(DEFAULT_SNI))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--shots", type=int, default=5)
    args = ap.parse_args()
    if args.contention_child:
        return contention_child(args)
    if args.contention:
        return contention(args)
    loaded = load_model("smollm2-135m-instruct", device=args.device, dtype=args.dtype)
    fmt = PromptFormat.for_tokenizer(loaded.tokenizer)
    warm = load_task(args.tasks.split(",")[0], args.sni_dir)
    warm_examples = scoring_examples(warm, split_task(warm).score[:2], fmt, 1, 0)
    measure(loaded, [e.encoded.input_ids for e in warm_examples],  # warm-up, not reported
            [e.encoded.target_groups for e in warm_examples], args.batch_size)
    print(f"SmolLM2 {loaded.dtype} on {loaded.device} ({torch.get_num_threads()} CPU threads), "
          f"{args.shots}-shot prompts, released CGVST definition, batch size {args.batch_size}")
    for name in args.tasks.split(","):
        task = load_task(name, args.sni_dir)
        score = split_task(task).score
        examples = scoring_examples(task, score[: args.examples], fmt, args.shots, 0, pool=score)
        ids = [e.encoded.input_ids for e in examples]
        targets = [e.encoded.target_groups for e in examples]
        n_tokens = sum(map(len, ids))
        r = measure(loaded, ids, targets, args.batch_size)
        print(f"{name}: {len(ids)} examples, mean {n_tokens / len(ids):.0f} tokens")
        for label, t, peak in (("reference (batch 1, weight grads)", r["t_ref"], r["m_ref"]),
                               ("atlas cgvst", r["t_atlas"], r["m_atlas"]),
                               ("plain fwd + activation bwd", r["t_plain"], r["m_plain"])):
            memory = f"  peak GPU memory {peak / 2**20:8.0f} MiB" if peak else ""
            print(f"  {label:36s} {n_tokens / t:9.0f} tok/s{memory}")
        print(f"  atlas / reference throughput: {r['t_ref'] / r['t_atlas']:.2f}x  (target ≥ 1.8x)")
        print(f"  atlas / plain throughput:     {r['t_plain'] / r['t_atlas']:.2f}x")
        print(f"  max relative difference atlas vs reference: {r['rel']:.2e}")
    print(f"parameter-gradient memory: reference {r['grad_bytes'] / 2**20:.0f} MiB, atlas "
          f"{sum(p.grad is not None for p in loaded.model.parameters())} tensors (0 MiB)")


if __name__ == "__main__":
    main()
