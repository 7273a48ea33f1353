"""Load on `atlas serve`: a Llama-sized atlas (10 tasks × 3 methods × 32 × 11,008 neurons, about
10.6 million score rows, and an inhibition experiment: 410 evaluations × 200 examples), a uvicorn
server on 127.0.0.1, N concurrent clients for a bounded time per endpoint. Prints requests/s and
p50/p95 latency of every GET endpoint (target with 8 clients on 2 cores: p95 ≤ 100 ms warm,
that is after each answer's first request of an atlas state).

The server is a real `atlas serve --workers W` process (default 1: on 2 cores the clients need the
other one).

Usage: python bench/serve_load.py [--clients 8] [--seconds 10] [--workers 1] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from synthetic import build_llama_like

ROOT = Path(__file__).resolve().parents[1]


def load(base: str, paths, clients: int, seconds: float) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p95 ms, errors) of ``clients`` threads requesting ``paths()``."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=base, timeout=60) as client:
            while time.monotonic() < stop:
                start = time.perf_counter()
                res = client.get(paths(rng))
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    errors[0] += res.status_code != 200

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return len(ms) / wall, statistics.median(ms), p95, errors[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="DuckDB threads (0: one per core)")
    args = ap.parse_args()
    db = Path(tempfile.mkdtemp()) / "load.duckdb"
    start = time.perf_counter()
    build_llama_like(db, evaluations=True, evidence=True).dispose()
    print(f"built {30 * 32 * 11008:,} score rows, 410 evaluations and an evidence run "
          f"({2 * 8 * 32 * 11008:,} exemplars) in {time.perf_counter() - start:.0f} s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-c", "from cli.main import app; app()", "serve", "--db", str(db),
         "--port", str(port), "--workers", str(args.workers), "--threads", str(args.threads)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(base + "/models", timeout=5)
            break
        except httpx.HTTPError:
            time.sleep(0.2)
    sets = httpx.get(base + "/sets", params={"model": "llama-like", "limit": 500},
                     timeout=120).json()["rows"]
    set_ids = [r["set_id"] for r in sets]
    methods = ["cgvst", "gv", "grad_x_act"]
    model = "model=llama-like"
    # Every GET of the API: (paths to choose from, or a function of a random generator). Each
    # fixed path is asked once before the load (warm: the first answer of an atlas state fills
    # the answer cache); the neuron's first answer fills the score cache of every neuron.
    endpoints = {
        "overview": ["/overview"],
        "models": ["/models"],
        "tasks": ["/tasks?limit=50"],
        "runs (paged)": ["/runs?limit=50", "/runs?limit=50&offset=50"],
        "sets (paged)": [f"/sets?{model}&limit=50"],
        "sets (csv)": [f"/sets?{model}&limit=50&format=csv"],
        "set members": [f"/sets/{i}/members?limit=200" for i in set_ids[:10]],
        "evaluations": [f"/evaluations?{model}&limit=50"],
        "layers": [f"/layers?{model}&method={m}" for m in methods],
        "overlap matrix": [f"/overlaps?{model}&method={m}" for m in methods],
        "method overlaps": [f"/method-overlaps?{model}&versus=gv&versus=grad_x_act"],
        "specificity": [f"/specificity?{model}&method={m}" for m in methods],
        "compare": [f"/compare?model_a=llama-like&model_b=llama-like&method={m}"
                    for m in methods],
        "report": [f"/reports?{model}&method=cgvst&factor=0"],
        "neuron": lambda rng: f"/models/llama-like/neurons/{rng.randrange(32)}/"
                              f"{rng.randrange(11008)}",
        "neuron evidence": lambda rng: f"/models/llama-like/neurons/{rng.randrange(32)}/"
                                       f"{rng.randrange(11008)}/evidence",
        "token neurons": lambda rng: f"/models/llama-like/token-neurons?token=tok"
                                     f"{rng.randrange(32000)}",
        "set neurons": [f"/sets/{i}/neurons?limit=25" for i in set_ids[:10]],
    }
    target = 100
    print(f"{args.clients} clients, {args.seconds:g} s per endpoint, 127.0.0.1, "
          f"{args.workers} server worker(s), DuckDB threads {args.threads or 'one per core'}, "
          f"{os.cpu_count()} cores; target p95 ≤ {target} ms warm for every GET")
    missed = []
    for name, spec in endpoints.items():
        fixed = spec if isinstance(spec, list) else [spec(random.Random(0))]
        start = time.perf_counter()
        for path in fixed:
            assert httpx.get(base + path, timeout=300).status_code == 200, path
        first = (time.perf_counter() - start) * 1000 / len(fixed)
        paths = (lambda rng, f=fixed: rng.choice(f)) if isinstance(spec, list) else spec
        rps, p50, p95, errors = load(base, paths, args.clients, args.seconds)
        if p95 > target:
            missed.append(name)
        print(f"  {name:16s} {rps:7.1f} req/s  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
              f"errors {errors}  first {first:6.0f} ms")
    print("every GET met the target" if not missed else f"missed: {', '.join(missed)}")
    server.terminate()
    server.wait(10)


if __name__ == "__main__":
    main()
