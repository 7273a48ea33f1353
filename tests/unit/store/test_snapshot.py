"""Snapshots: an atlas as Parquet files and back, finished rows only, stable files."""

from __future__ import annotations

import json

import duckdb
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import ingested_tiny

runner = CliRunner()
ORDER = {"models": "model_id", "tasks": "task_id", "runs": "run_id",
         "neuron_scores": "run_id, layer, neuron", "neuron_sets": "set_id",
         "neuron_set_members": "set_id, layer, neuron", "evaluations": "eval_id",
         "evaluation_examples": "eval_id, example"}


def _tables(db) -> dict[str, list[tuple]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {o}").fetchall() for t, o in ORDER.items()}
    finally:
        con.close()


def test_snapshot_restores_the_same_atlas_and_leaves_unfinished_runs_out(tmp_path):
    folder, db, common = ingested_tiny(tmp_path)
    snap = tmp_path / "snap"
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--examples", "4",
                              "--controls", "1"])
    assert res.exit_code == 0, res.output
    before = _tables(db)
    con = duckdb.connect(str(db))  # a run in progress: not part of a snapshot
    con.execute("INSERT INTO runs (model_id, task_id, method, status, params, params_key) "
                "VALUES (1, 1, 'gv', 'running', '{}', 'x')")
    con.close()

    res = runner.invoke(app, ["db", "snapshot", str(snap), "--db", str(db)])
    assert res.exit_code == 0, res.output
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["rows"]["runs"] == 2 and manifest["rows"]["evaluation_examples"] > 0
    files = {p: p.read_bytes() for p in snap.rglob("*.parquet")}
    assert len(list((snap / "neuron_scores").glob("*.parquet"))) == 2  # one file per run

    restored = tmp_path / "b.duckdb"
    res = runner.invoke(app, ["db", "restore", str(snap), "--db", str(restored)])
    assert res.exit_code == 0, res.output
    assert _tables(restored) == before
    res = runner.invoke(app, ["report", "--model", folder.name, "--db", str(restored), "-f", "json"])
    assert res.exit_code == 0 and json.loads(res.output)["summary"][0]["paired"]["n"] == 4

    # a snapshot of the restored atlas writes nothing: its files are byte for byte the same
    res = runner.invoke(app, ["db", "snapshot", str(snap), "--db", str(restored)])
    assert res.exit_code == 0 and "0 files written" in res.output
    assert {p: p.read_bytes() for p in snap.rglob("*.parquet")} == files

    # new rows in the restored atlas continue its ids and add files without touching the others
    res = runner.invoke(app, ["ingest", *common[:-4], "--db", str(restored), "--shots", "1",
                              "--examples", "4", "--task", "task379", "--method", "random"])
    assert res.exit_code == 0, res.output
    run_ids = [r[0] for r in _tables(restored)["runs"]]
    assert run_ids == [1, 2, 3]
    res = runner.invoke(app, ["db", "snapshot", str(snap), "--db", str(restored)])
    assert res.exit_code == 0, res.output
    assert all(p.read_bytes() == data for p, data in files.items()
               if "neuron_scores" in p.parts or "neuron_set_members" in p.parts)

    res = runner.invoke(app, ["db", "restore", str(snap), "--db", str(db)])
    assert res.exit_code == 2 and "already exists" in res.output
    assert _tables(db)["runs"][:2] == before["runs"]  # untouched
    (snap / "manifest.json").write_text(json.dumps({**manifest, "schema": "0001"}))
    res = runner.invoke(app, ["db", "restore", str(snap), "--db", str(tmp_path / "c.duckdb")])
    assert res.exit_code == 2 and "schema 0001" in res.output
    assert not (tmp_path / "c.duckdb").exists()
