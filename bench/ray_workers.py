"""Ray ingestion throughput with 1 and 2 workers on the CPU (tiny model, four tasks), side by side.

Usage: python bench/ray_workers.py [--sni-dir DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from atlas.distributed.ray_backend import plan_jobs, run_on_ray
from atlas.ingest import IngestOptions
from atlas.tasks import load_task

DEFAULT_SNI = Path(__file__).resolve().parents[2] / "shared" / "data" / "sni"


def main() -> None:
    import ray
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("--sni-dir", default=str(DEFAULT_SNI))
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(root / "model")
    from atlas.models.loading import _smollm2_gguf, convert_gguf  # tokenizer with a chat template

    AutoTokenizer.from_pretrained(convert_gguf(_smollm2_gguf())).save_pretrained(root / "model")
    tasks = [load_task(t, args.sni_dir) for t in ("task379", "task195", "task391", "task512")]
    options = IngestOptions(shots=1, examples=24)
    timings = {}
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        jobs = plan_jobs([str(root / "model")], tasks, 2, device="cpu", dtype="float32")
        start = time.perf_counter()
        results, errors = run_on_ray(jobs, options, root / f"shards{workers}")
        timings[workers] = (time.perf_counter() - start, sum(r.n_tokens for r in results))
        ray.shutdown()
        assert not errors, errors
    for workers, (seconds, tokens) in timings.items():
        print(f"{workers} worker(s): {tokens / seconds:8.0f} tok/s ({seconds:.1f} s, incl. model loads)")
    print(f"2 / 1 worker throughput: {timings[1][0] / timings[2][0]:.2f}x "
          f"(each worker uses {torch.get_num_threads()} threads on {torch.get_num_threads()} cores)")


if __name__ == "__main__":
    main()
