"""Distributed ingestion on a local Ray cluster (two workers) equals single-process ingestion."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import SNI_DIR, save_tiny

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed")
runner = CliRunner()


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _rows(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(
            "SELECT m.name, t.name, r.method, r.status, r.n_examples, r.n_tokens, s.layer, "
            "s.neuron, s.score FROM neuron_scores s JOIN runs r USING (run_id) "
            "JOIN models m USING (model_id) JOIN tasks t USING (task_id) ORDER BY ALL").fetchall()
    finally:
        con.close()


def test_ray_ingestion_equals_single_process(ray_cluster, tmp_path):
    models = [str(save_tiny(f, tmp_path / f"tiny-{f}")) for f in ("llama", "gpt2")]
    common = ["--sni-dir", str(SNI_DIR), "--shots", "1", "--examples", "4", "--task", "task379",
              "--task", "task195", "--checkpoint-every", "2"]
    for m in models:
        common += ["--model", m]
    single = tmp_path / "single.duckdb"
    res = runner.invoke(app, ["ingest", *common, "--db", str(single)])
    assert res.exit_code == 0, res.output
    dist = tmp_path / "ray.duckdb"
    res = runner.invoke(app, ["ingest", *common, "--db", str(dist), "--backend", "ray",
                              "--tasks-per-job", "1"])
    assert res.exit_code == 0, res.output
    expected, got = _rows(single), _rows(dist)
    assert len(got) == 2 * 2 * 96 and got == expected
    # a re-run reuses the shards and the runs: nothing is added
    res = runner.invoke(app, ["ingest", *common, "--db", str(dist), "--backend", "ray"])
    assert res.exit_code == 0, res.output
    assert _rows(dist) == expected
    sets = duckdb.connect(str(dist), read_only=True).execute(
        "SELECT count(*), min(size) FROM neuron_sets").fetchone()
    assert sets == (4, 4)


def test_worker_resumes_from_shard_checkpoint(tmp_path):
    """A worker that died keeps its checkpoint: the next run resumes and gives equal scores."""
    import torch

    from atlas.distributed.shards import ShardRuns, read_shard_scores
    from atlas.ingest import IngestOptions, Ingestor
    from atlas.models import load_model
    from atlas.tasks import load_task

    folder = save_tiny("llama", tmp_path / "tiny")
    loaded = load_model(str(folder), device="cpu")
    task = load_task("task195", SNI_DIR)
    options = IngestOptions(shots=1, examples=6, checkpoint_every=2)
    clean = Ingestor(loaded, options, ShardRuns(tmp_path / "clean")).run([task])[0]

    import atlas.ingest

    real, calls = atlas.ingest.reduce_neurons, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker died")
        return real(*args, **kwargs)

    atlas.ingest.reduce_neurons = dying
    try:
        with pytest.raises(RuntimeError):
            Ingestor(loaded, options, ShardRuns(tmp_path / "crash")).run([task])
    finally:
        atlas.ingest.reduce_neurons = real
    resumed = Ingestor(loaded, options, ShardRuns(tmp_path / "crash")).run([task])[0]
    assert resumed.status == "resumed"
    shape = (loaded.n_layers, loaded.d_mlp)
    assert torch.equal(read_shard_scores(Path(clean.run_id), shape),
                       read_shard_scores(Path(resumed.run_id), shape))
