"""bfloat16 against float32 on this CPU, side by side in one run: CGVST on 5-shot prompts of
each task, per model; the speed ratio, and how far the bfloat16 scores and top-5% sets are from
float32's, next to how far float32's are from themselves on other demonstrations (seed 1),
which is the variation a set has anyway.

Usage: python bench/bf16_cpu.py [--models smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct]
       [--tasks task195,task379,task533] [--examples 8]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from atlas.models import load_model
from atlas.models.loading import native_bf16
from atlas.scoring import cgvst, select
from atlas.tasks import PromptFormat, load_task, scoring_examples, split_task

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a & b).sum() / (a | b).sum())


def prompts(task, score, fmt, args, seed: int):
    ex = scoring_examples(task, score[: args.examples], fmt, args.shots, seed, pool=score)
    return [e.encoded.input_ids for e in ex], [e.encoded.target_groups for e in ex]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m-instruct,qwen2.5-coder-0.5b-instruct")
    ap.add_argument("--tasks", default="task195,task379,task533")
    ap.add_argument("--examples", type=int, default=8)
    ap.add_argument("--shots", type=int, default=5)
    args = ap.parse_args()
    dirs = [SHARED / "sni", SHARED / "sni-more"]
    print(f"native bfloat16 on this CPU: {native_bf16()}; {torch.get_num_threads()} threads; "
          f"{args.shots}-shot prompts, {args.examples} per task")
    for name in args.models.split(","):
        loaded = load_model(name, device="cpu", dtype="float32")
        fmt = PromptFormat.for_tokenizer(loaded.tokenizer)
        print(f"{name}:")
        for task_name in args.tasks.split(","):
            task = load_task(task_name, dirs)
            score = split_task(task).score

            ids, targets = prompts(task, score, fmt, args, seed=0)
            times, scores = {}, {}
            for dtype in (torch.float32, torch.bfloat16):
                loaded.model.to(dtype)
                start = time.perf_counter()
                scores[dtype] = cgvst(loaded.model, ids, targets, batch_size=8)
                times[dtype] = time.perf_counter() - start
            loaded.model.to(torch.float32)
            reseeded = cgvst(loaded.model, *prompts(task, score, fmt, args, seed=1), batch_size=8)
            f32, b16 = scores[torch.float32], scores[torch.bfloat16]
            sets = {k: select(v) for k, v in (("f32", f32), ("b16", b16), ("seed1", reseeded))}
            rho = spearmanr(f32.flatten(), b16.flatten()).statistic
            rho_seed = spearmanr(f32.flatten(), reseeded.flatten()).statistic
            print(f"  {task_name}: {sum(map(len, ids))} tokens; float32 {times[torch.float32]:.1f} s,"
                  f" bfloat16 {times[torch.bfloat16]:.1f} s = "
                  f"{times[torch.float32] / times[torch.bfloat16]:.2f}x; top-5% Jaccard bf16 vs f32 "
                  f"{jaccard(sets['f32'], sets['b16']):.3f} (other demonstrations: "
                  f"{jaccard(sets['f32'], sets['seed1']):.3f}); Spearman {rho:.3f} ({rho_seed:.3f})")
        del loaded


if __name__ == "__main__":
    main()
