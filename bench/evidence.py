"""Neuron evidence costs, measured side by side in one run on a built-in model:

- a describe pass (exemplars, density, samples recorded; the histogram over 2,048 positions per
  task, as `atlas describe` does) against a plain forward pass over the same token batches
  (target: at most 1.3x);
- logit effects for every neuron of the model (target: under 10 s for SmolLM2 on a CPU), with
  bfloat16 candidates rescored in float32 where the CPU has native bfloat16, and the float32
  product, and how many neurons' tokens differ between the two.

    python bench/evidence.py [--model smollm2-135m-instruct] [--texts 192] [--repeats 2]

The corpus is random text of 200 tokens a text, in two parts (tasks) of 96 texts by default:
`atlas describe` reads every instance of every task (the paper's run: 12 tasks of 100), and
the top-k's work per batch falls as the corpus grows (once every neuron holds k contexts, only
the tokens that reach a neuron's k-th best are merged), so a corpus of a few batches shows the
worst case: pass `--texts 48` for it.
"""

from __future__ import annotations

import argparse
import time

import torch

from atlas.models.batching import length_groups, padded
from atlas.models.loading import load_model
from atlas.models.unembed import logit_effects
from atlas.scoring.exemplars import record_exemplars


def plain_forward(model, sequences, batch_size=8, max_tokens=1024):
    with torch.no_grad():
        for group in length_groups([len(s) for s in sequences], batch_size, max_tokens):
            ids, mask = padded([sequences[i] for i in group], 0)
            model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--texts", type=int, default=192)
    ap.add_argument("--parts", type=int, default=2, help="tasks the texts are split into")
    ap.add_argument("--hist-tokens", type=int, default=2048)
    ap.add_argument("--length", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    loaded = load_model(args.model, dtype=args.dtype)
    gen = torch.Generator().manual_seed(0)
    vocab = len(loaded.tokenizer)
    sequences = [torch.randint(5, vocab, (args.length,), generator=gen).tolist()
                 for _ in range(args.texts)]
    parts = [i % args.parts for i in range(args.texts)]
    plain, record = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine
        t = time.perf_counter()
        plain_forward(loaded.model, sequences)
        plain.append(time.perf_counter() - t)
        t = time.perf_counter()
        record_exemplars(loaded.model, sequences, parts, hist_tokens=args.hist_tokens or None)
        record.append(time.perf_counter() - t)
    timed = {}
    for bf16 in (True, False):
        t = time.perf_counter()
        timed[bf16] = logit_effects(loaded.model, bf16_candidates=bf16)
        timed[bf16, "s"] = time.perf_counter() - t
    fast, exact = timed[True], timed[False]
    differ = torch.zeros(fast.promoted.shape[:2], dtype=torch.bool)
    for side in ("promoted", "suppressed"):  # another token, or another value (not the order
        # of exactly equal values)
        ids = lambda e, side=side: getattr(e, side + "_ids").sort(-1).values  # noqa: E731
        differ |= (ids(fast) != ids(exact)).any(-1)
        differ |= ~torch.isclose(getattr(fast, side), getattr(exact, side), atol=1e-6).all(-1)
    n_tokens = args.texts * args.length
    print(f"{loaded.name} ({loaded.dtype}, {torch.get_num_threads()} threads), {n_tokens} tokens "
          f"in {args.parts} parts, histogram over {args.hist_tokens or 'every'} positions per part")
    print(f"plain forward {min(plain):.2f} s, describe pass {min(record):.2f} s: "
          f"ratio {min(record) / min(plain):.2f} (target <= 1.3)")
    n = loaded.n_layers * loaded.d_mlp
    print(f"logit effects of {n} neurons: bfloat16 candidates rescored {timed[True, 's']:.1f} s, "
          f"float32 product {timed[False, 's']:.1f} s (target < 10); neurons whose tokens or "
          f"values differ: {int(differ.sum())} of {n}")


if __name__ == "__main__":
    main()
