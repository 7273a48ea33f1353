"""Greedy generation throughput on SmolLM2 with and without an intervention (a 5% set at
factor 0), side by side, and the same with raw PyTorch hooks for reference."""

from __future__ import annotations

import time

import torch

from atlas.intervene import Intervention, apply
from atlas.models import load_model


def run(model, ids, new_tokens):
    start = time.perf_counter()
    with torch.no_grad():
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return ids.shape[0] * new_tokens / (time.perf_counter() - start)


def main() -> None:
    loaded = load_model("smollm2-135m-instruct", device="cpu")
    model = loaded.model
    ids = torch.randint(100, 40000, (8, 256), generator=torch.Generator().manual_seed(0))
    mask = torch.rand(loaded.n_layers, loaded.d_mlp, generator=torch.Generator().manual_seed(1)) < 0.05
    spec = Intervention.from_mask(mask, 0.0)
    run(model, ids, 4)  # warm
    plain, hooked = [], []
    for _ in range(3):
        plain.append(run(model, ids, 32))
        with apply(model, spec):
            hooked.append(run(model, ids, 32))
    p, h = max(plain), max(hooked)
    print(f"plain generation:        {p:7.1f} new tok/s")
    print(f"with intervention (5%):  {h:7.1f} new tok/s")
    print(f"ratio: {h / p:.3f}  (target ≥ 0.90)")


if __name__ == "__main__":
    main()
