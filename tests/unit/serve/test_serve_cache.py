"""The server's memory: bounded, made once per key, and never stale after the atlas changes."""

from __future__ import annotations

import shutil
import threading
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from atlas.query.neurons import ranks_descending
from atlas.scoring import top_rate
from atlas.serve.app import create_app
from atlas.serve.cache import LRU, array_bytes
from atlas.store import open_db
from atlas.store import repository as repo

pytestmark = pytest.mark.system  # a server, a browser or subprocesses


def test_lru_keeps_to_its_byte_bound():
    cache = LRU(3 * 800, array_bytes)
    for k in range(5):
        cache.get(k, lambda: np.zeros(100))  # 800 bytes each
    made = []
    cache.get(4, lambda: made.append(4))
    cache.get(0, lambda: made.append(0) or np.zeros(100))
    assert made == [0]  # 4 was kept, 0 had been dropped


def test_lru_makes_a_value_once_for_concurrent_callers():
    cache = LRU(10, lambda v: 1)
    calls = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.2)
        return 7

    got: list[int] = []
    threads = [threading.Thread(target=lambda: got.append(cache.get("k", slow)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [7] * 6 and len(calls) == 1


def test_ranks_count_the_scores_above():
    scores = np.array([0.5, 0.9, 0.5, 0.1], dtype=np.float32)
    assert ranks_descending(scores).tolist() == [2, 1, 2, 4]


def _atlas(path, seed: int) -> float:
    """A one-run atlas whose neuron 1/2 scores differently per seed; returns that score."""
    scores = torch.rand(2, 4, generator=torch.Generator().manual_seed(seed))
    engine = open_db(path)
    with engine.begin() as conn:
        model_id = repo.ensure_model(conn, "m", "llama", 2, 4, "r", "float32")
        task_id = repo.ensure_task(conn, "task1_x", "test", 1, "h")
        run_id = repo.start_run(conn, model_id, task_id, "cgvst", {}, "k")
        repo.write_scores(conn, run_id, scores)
        repo.write_set(conn, "m/task1/cgvst", model_id, task_id, run_id, "top:0.25",
                       top_rate(scores, 0.25), "cgvst")
        repo.complete_run(conn, run_id, n_examples=1, n_tokens=1, n_skipped=0)
    engine.dispose()
    return float(scores[1, 2])


def test_a_replaced_file_is_not_answered_from_memory(tmp_path):
    first, second = _atlas(tmp_path / "a.duckdb", 0), _atlas(tmp_path / "b.duckdb", 1)
    served = tmp_path / "served.duckdb"
    shutil.copy(tmp_path / "a.duckdb", served)
    client = TestClient(create_app(served))
    before = client.get("/models/m/neurons/1/2").json()["scores"]
    shutil.copy(tmp_path / "b.duckdb", served)  # same ids, other scores
    after = client.get("/models/m/neurons/1/2").json()["scores"]
    assert [r["run_id"] for r in before] == [r["run_id"] for r in after]
    assert before[0]["score"] == np.float32(first) and after[0]["score"] == np.float32(second)


def test_gzip_compresses_an_answer_once_per_etag():
    import asyncio
    import gzip

    from atlas.serve.http import GZip

    body = b"x" * 5000

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"etag", scope["path"].encode()),
                                (b"content-length", b"5000")]})
        await send({"type": "http.response.body", "body": body})

    wrapped = GZip(app)
    made = []
    original = wrapped._gzip
    wrapped._gzip = lambda data: made.append(1) or original(data)

    def ask(path: str, headers) -> tuple[dict, bytes]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        asyncio.run(wrapped({"type": "http", "path": path, "headers": headers}, None, send))
        return dict(sent[0]["headers"]), sent[1]["body"]

    accepts = [(b"accept-encoding", b"gzip, deflate")]
    for _ in range(3):
        headers, got = ask("/a", accepts)
        assert headers[b"content-encoding"] == b"gzip" and gzip.decompress(got) == body
        assert int(headers[b"content-length"]) == len(got)
    assert len(made) == 1  # the same answer (ETag) compressed once
    ask("/b", accepts)
    assert len(made) == 2
    plain_headers, plain = ask("/a", [])  # a client that does not accept gzip
    assert plain == body and b"content-encoding" not in plain_headers
    _, ranged = ask("/a", [*accepts, (b"range", b"bytes=0-9")])
    assert ranged == body  # a ranged request's offsets name the uncompressed answer


def test_answers_follow_a_new_evidence_run(tmp_path):
    """A set's neuron summaries are remembered per atlas state: a completed evidence run is a
    new state (the answer before it has no peak tokens, the answer after it has them)."""
    from typer.testing import CliRunner

    from cli.main import app as cli
    from tests.helpers import SNI_DIR, ingested_tiny

    folder, db, _ = ingested_tiny(tmp_path, tasks=("task379",), extra=("--exemplars", "0"))
    client = TestClient(create_app(db))
    before = client.get("/sets/1/neurons").json()["rows"]
    assert before and all(r["top_tokens"] == [] for r in before)
    res = CliRunner().invoke(cli, ["describe", "--model", str(folder), "--task", "task379",
                                   "--sni-dir", str(SNI_DIR), "--examples", "3", "--k", "3",
                                   "--dtype", "float32", "--db", str(db)])
    assert res.exit_code == 0, res.output
    after = client.get("/sets/1/neurons").json()["rows"]
    assert all(r["top_tokens"] for r in after)
