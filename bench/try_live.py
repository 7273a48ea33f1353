"""Trying a set live, measured side by side in one run on a built-in model (default SmolLM2):

- the side-by-side generation (default and a 5% set at factor 0, one batch, one forward per
  step) against a single plain generation of the same length, both by atlas's loop and by
  transformers' ``generate`` (target: at most 2.2x);
- the time until the first token of both outputs for a 100-token prompt (target: at most 1 s);
- the activations of a 5% set on a 200-token text (target: at most 0.5 s).

    python bench/try_live.py [--model smollm2-135m-instruct] [--dtype float32] [--new 32]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from atlas.intervene.live import generate_side_by_side, neuron_activations
from atlas.intervene.spec import Intervention
from atlas.models.loading import load_model


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--new", type=int, default=32, help="tokens generated per output")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    loaded = load_model(args.model, dtype=args.dtype, device="cpu")
    model, tok = loaded.model, loaded.tokenizer
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 20000, (100,), generator=gen).tolist()  # 100 tokens
    text = torch.randint(100, 20000, (200,), generator=gen).tolist()  # 200 tokens
    mask = torch.rand(loaded.n_layers, loaded.d_mlp, generator=gen) < 0.05
    spec = Intervention.from_mask(mask, 0.0, "5% random set")

    def ours(specs):  # no stop token: every output runs the whole length, as hf_plain does
        return generate_side_by_side(model, tok, prompt, specs, max_new_tokens=args.new,
                                     stops=set())

    def hf_plain():
        with torch.inference_mode():
            model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=args.new,
                           min_new_tokens=args.new, eos_token_id=None, pad_token_id=0)

    ours([spec])  # warm
    hf_plain()
    side = _median(lambda: ours([spec]), args.repeats)
    single = _median(lambda: ours([]), args.repeats)
    plain = _median(hf_plain, args.repeats)
    first = statistics.median(ours([spec]).first_token_s for _ in range(args.repeats))
    acts = _median(lambda: neuron_activations(model, tok, text, spec.neurons), args.repeats)
    print(f"{args.model} ({args.dtype}, {torch.get_num_threads()} threads), prompt 100 tokens, "
          f"{args.new} new tokens per output, medians of {args.repeats}")
    print(f"  side by side (default + set x0, one batch): {side:.3f} s")
    print(f"  single plain generation, atlas loop:        {single:.3f} s  "
          f"ratio {side / single:.2f}x (target <= 2.2x)")
    print(f"  single plain generation, transformers:      {plain:.3f} s  "
          f"ratio {side / plain:.2f}x")
    print(f"  first token of both outputs:                {first:.3f} s (target <= 1 s)")
    print(f"  activations of the set ({spec.size} neurons), 200 tokens: {acts:.3f} s "
          "(target <= 0.5 s)")


if __name__ == "__main__":
    main()
