"""Write what the CLI prints and the server answers on an atlas into a folder, one file per
question: run before and after a change and compare the folders (``diff -r``) to show that the
change kept every answer byte for byte.

    python scripts/capture_outputs.py ATLAS.duckdb OUT_FOLDER
"""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from atlas.serve.app import create_app
from cli.main import app

MODELS = ["smollm2-135m-instruct", "gemma-3-270m"]
CLI = [
    ["sql", "SELECT * FROM set_sizes ORDER BY set_id", "-f", "csv"],
    ["sql", "SELECT * FROM evaluation_effects ORDER BY eval_id LIMIT 300", "-f", "json"],
    ["compare", "-m", MODELS[0], "-m", MODELS[1], "-f", "json"],
    ["compare", "-m", MODELS[0], "-m", "llama-2-7b-chat", "-f", "json"],
]
for m in MODELS:
    CLI += [["overlap", "-m", m, "-f", "json"], ["overlap", "-m", m, "--measure", "overlap_coef"],
            ["specificity", "-m", m, "-f", "json"], ["specificity", "-m", m],
            ["report", "-m", m, "-f", "json"], ["report", "-m", m],
            ["report", "-m", m, "-f", "csv", "--method", "grad_x_act"]]
QWEN = "qwen2.5-coder-0.5b-instruct@float32"  # set-level tests (20 controls) and amplification
CLI += [["report", "-m", QWEN, "-f", "json"], ["report", "-m", QWEN, "--factor", "2"]]
HTTP = ["/overview", "/models", "/tasks", "/runs?model=gemma-3-270m&limit=500",
        "/sets?limit=500", "/sets/3/members?limit=50", "/sets/99999/members",
        "/evaluations?model=smollm2-135m-instruct&limit=200", "/models/nope/neurons/0/0",
        "/compare?model_a=smollm2-135m-instruct&model_b=gemma-3-270m"]
for m in MODELS:
    HTTP += [f"/layers?model={m}", f"/overlaps?model={m}", f"/specificity?model={m}",
             f"/reports?model={m}", f"/models/{m}/neurons/3/17", f"/models/{m}/neurons/99/0",
             f"/specificity?model={m}&format=csv", f"/method-overlaps?model={m}&versus=gv"]


def main(db: str, out: str) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    runner = CliRunner()
    for k, args in enumerate(CLI):
        res = runner.invoke(app, [*args, "--db", db])
        (folder / f"cli_{k:02d}.txt").write_text(f"{args}\nexit {res.exit_code}\n{res.output}")
    client = TestClient(create_app(db))
    for k, url in enumerate(HTTP):
        res = client.get(url)
        (folder / f"http_{k:02d}.txt").write_bytes(
            f"{url}\n{res.status_code} {res.headers.get('content-type')}\n".encode() + res.content)
    print(f"{len(CLI)} CLI outputs and {len(HTTP)} HTTP answers in {folder}")


if __name__ == "__main__":
    main(*sys.argv[1:])
