"""Load on `atlas serve`: a Llama-sized atlas (10 tasks × 3 methods × 32 × 11,008 neurons, about
10.6 million score rows, and an inhibition experiment: 410 evaluations × 200 examples), a uvicorn
server on 127.0.0.1, N concurrent clients for a bounded time per endpoint. Prints requests/s and
p50/p95 latency (targets with 8 clients on 2 cores: neuron p95 ≤ 100 ms, overlap matrix p95 ≤
250 ms).

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
    build_llama_like(db, evaluations=True).dispose()
    print(f"built {30 * 32 * 11008:,} score rows and 410 evaluations in "
          f"{time.perf_counter() - start:.0f} s")
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
    endpoints = {
        "neuron": (lambda rng: f"/models/llama-like/neurons/{rng.randrange(32)}/"
                               f"{rng.randrange(11008)}", 100),
        "overlap matrix": (lambda rng: "/overlaps?model=llama-like&method="
                                       + rng.choice(["cgvst", "gv", "grad_x_act"]), 250),
        "report": (lambda rng: "/reports?model=llama-like&method=cgvst&factor=0", None),
        "sets (paged)": (lambda rng: "/sets?model=llama-like&limit=50", None),
    }
    print(f"{args.clients} clients, {args.seconds:g} s per endpoint, 127.0.0.1, "
          f"{args.workers} server worker(s), DuckDB threads {args.threads or 'one per core'}, "
          f"{os.cpu_count()} cores")
    for name, (paths, target) in endpoints.items():
        start = time.perf_counter()
        httpx.get(base + paths(random.Random(0)), timeout=120)  # the first answer fills memory
        first = (time.perf_counter() - start) * 1000
        rps, p50, p95, errors = load(base, paths, args.clients, args.seconds)
        goal = "" if target is None else f"  (target p95 ≤ {target} ms: " + (
            "met)" if p95 <= target else "missed)")
        print(f"  {name:16s} {rps:7.1f} req/s  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
              f"errors {errors}  first {first:6.0f} ms{goal}")
    server.terminate()
    server.wait(10)


if __name__ == "__main__":
    main()
