"""Start-up time of the command line, side by side with a bare interpreter and `import torch`:
the median of 5 runs of `atlas --help` and `atlas sql "select 1"` (target ≤ 1.0 s each).

Usage: python bench/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ATLAS = [sys.executable, "-c", "import sys; from cli.main import app; sys.argv[0] = 'atlas'; app()"]
ROOT = Path(__file__).resolve().parents[1]


def median_seconds(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "a.duckdb")
        subprocess.run([*ATLAS, "db", "upgrade", "--db", db], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        rows = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import torch'", [sys.executable, "-c", "import torch"]),
            ("atlas --help", [*ATLAS, "--help"]),
            ('atlas sql "select 1"', [*ATLAS, "sql", "select 1", "--db", db]),
        ]
        figures = {name: median_seconds(cmd, args.runs) for name, cmd in rows}
    torch_s = figures["python -c 'import torch'"]
    print(f"median of {args.runs} runs")
    for name, seconds in figures.items():
        print(f"  {name:28s} {seconds:6.2f} s   {seconds / torch_s:5.2f}x import torch")
    for name in ("atlas --help", 'atlas sql "select 1"'):
        verdict = "meets" if figures[name] <= 1.0 else "misses"
        print(f"{name}: {figures[name]:.2f} s {verdict} the 1.0 s target")


if __name__ == "__main__":
    main()
