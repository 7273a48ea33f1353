"""The read side of the store: the SQL sandbox, read-only never migrating, readers during a live
ingest, and resumption after a real SIGKILL."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import duckdb
import pytest
from typer.testing import CliRunner

from atlas.store.db import connect, migrate
from cli.main import app
from tests.helpers import ROOT_DIR, SNI_DIR, save_tiny

pytestmark = pytest.mark.system  # a server, a browser or subprocesses

runner = CliRunner()
ROOT = ROOT_DIR


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def atlas_db(llama_dir, tmp_path_factory):
    db = tmp_path_factory.mktemp("db") / "a.duckdb"
    res = runner.invoke(app, ["ingest", "--model", str(llama_dir), "--sni-dir", str(SNI_DIR),
                              "--task", "task195", "--shots", "1", "--examples", "3", "--db", str(db)])
    assert res.exit_code == 0, res.output
    return db


def sql(db, query, *extra):
    return runner.invoke(app, ["sql", query, "--db", str(db), *extra])


def csv_rows(output: str) -> list[list[str]]:
    return list(csv.reader(output.splitlines()))


def test_sql_bypasses_are_refused_and_write_nothing(atlas_db, tmp_path):
    victim = tmp_path / "victim.duckdb"
    duckdb.connect(str(victim)).execute("CREATE TABLE keep AS SELECT 42 AS x").close()
    victim_bytes = victim.read_bytes()
    (tmp_path / "dump").mkdir()
    (tmp_path / "dump" / "schema.sql").write_text("CREATE TABLE pwned (x INT);")
    out = tmp_path / "out.csv"
    statements = [
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{out}'",
        f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{victim}'",
        f"COPY (SELECT 1) TO '{out}'",
        f"IMPORT DATABASE '{tmp_path / 'dump'}'",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/passwd')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM 'https://example.com/x.csv'",
        "SELECT * FROM 's3://bucket/x.parquet'",
        f"ATTACH '{victim}' AS v",
        "INSTALL httpfs",
        "LOAD httpfs",
        "SET threads = 1",
        "PRAGMA threads = 1",
        "SELECT 1; SELECT 2",
        "CREATE TABLE t AS SELECT 1",
        "DELETE FROM runs",
    ]
    for statement in statements:
        res = sql(atlas_db, statement)
        assert res.exit_code == 2, (statement, res.output)
        assert res.output.startswith("error:") and "Traceback" not in res.output, statement
    injected = tmp_path / "pwned.csv"
    res = sql(atlas_db, "SELECT 1 AS a", "-f", "csv", "-o",
              f"{tmp_path}/x.csv' (FORMAT csv); COPY (SELECT 1) TO '{injected}'; --")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert not out.exists() and not injected.exists()
    assert victim.read_bytes() == victim_bytes
    assert csv_rows(sql(atlas_db, "SELECT count(*) AS n FROM runs", "-f", "csv").output) == \
        [["n"], ["1"]]


def test_output_is_written_by_the_library(atlas_db, tmp_path):
    for fmt in ("csv", "json", "parquet"):
        target = tmp_path / f"runs.{fmt}"
        res = sql(atlas_db, "SELECT run_id, params, [1, 2] AS nested FROM runs", "-f", fmt,
                  "-o", str(target))
        assert res.exit_code == 0, res.output
        assert target.stat().st_size > 0
    assert '"[1, 2]"' in (tmp_path / "runs.csv").read_text()  # nested values as JSON text


def test_read_only_commands_never_migrate(atlas_db, tmp_path):
    old = tmp_path / "old.duckdb"
    engine = connect(old)
    migrate(engine, "0001")
    engine.dispose()
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).execute("CREATE TABLE someone_elses AS SELECT 1 AS x").close()
    for db, message in ((old, "atlas db upgrade"), (foreign, "not an atlas database")):
        before = db.read_bytes()
        for args in (["sql", "SELECT 1"], ["overlap", "-m", "x"], ["export", str(tmp_path / "ex")]):
            res = runner.invoke(app, [*args, "--db", str(db)])
            assert res.exit_code == 2 and message in res.output, (args, res.output)
        assert db.read_bytes() == before
    before = foreign.read_bytes()
    res = runner.invoke(app, ["ingest", "--model", "x", "--task", "task195", "--sni-dir",
                              str(SNI_DIR), "--db", str(foreign)])
    assert res.exit_code == 2 and "not an atlas database" in res.output
    assert foreign.read_bytes() == before


def _atlas(*args, env=None) -> subprocess.Popen:
    code = "import sys; from cli.main import app; sys.argv[0] = 'atlas'; app()"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _ingest_args(model, db):
    return ["ingest", "--model", str(model), "--sni-dir", str(SNI_DIR), "--task", "task195",
            "--task", "task379", "--method", "cgvst", "--method", "gv", "--shots", "2",
            "--examples", "40", "--batch-size", "2", "--checkpoint-every", "2", "--db", str(db)]


def _poll(db, query):
    """One read-only query from this process while the writer runs (None: not readable yet)."""
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error:
        return None
    try:
        return con.execute(query).fetchall()
    except duckdb.Error:
        return None
    finally:
        con.close()


def test_readers_work_while_an_ingest_writes(llama_dir, tmp_path):
    db = tmp_path / "live.duckdb"
    writer = _atlas(*_ingest_args(llama_dir, db))
    seen_running, reads = False, 0
    try:
        deadline = time.monotonic() + 300
        while writer.poll() is None and time.monotonic() < deadline:
            res = sql(db, "SELECT count(*) FILTER (WHERE status = 'running') AS running, "
                          "(SELECT coalesce(max(n_done), 0) FROM run_checkpoints) AS done "
                          "FROM runs", "-f", "csv")
            if res.exit_code == 0:
                reads += 1
                running, done = map(int, csv_rows(res.output)[1])
                seen_running |= running == 1 and done > 0
            time.sleep(0.2)
        out = writer.communicate(timeout=300)[0]
    finally:
        writer.kill()
    assert writer.returncode == 0, out
    assert seen_running and reads >= 3  # committed checkpoints were visible mid-run
    res = sql(db, "SELECT count(*) AS n FROM runs WHERE status = 'complete'", "-f", "csv")
    assert csv_rows(res.output) == [["n"], ["4"]]


def test_sigkill_at_several_points_resumes_to_identical_scores(llama_dir, tmp_path):
    clean, killed = tmp_path / "clean.duckdb", tmp_path / "killed.duckdb"
    env = {**os.environ, "ATLAS_LOCK_WAIT": "30"}
    ref = _atlas(*_ingest_args(llama_dir, clean), env=env)
    assert ref.wait(timeout=600) == 0, ref.stdout.read()
    for at_least in (2, 10):  # kill mid-run twice, at different checkpoints
        proc = _atlas(*_ingest_args(llama_dir, killed), env=env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            done = _poll(killed, "SELECT coalesce(max(n_done), 0) FROM run_checkpoints")
            if done and done[0][0] >= at_least:
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the ingest ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    final = _atlas(*_ingest_args(llama_dir, killed), env=env)
    out = final.communicate(timeout=600)[0]
    assert final.returncode == 0, out
    assert "resuming" in out
    query = ("SELECT t.name, r.method, s.layer, s.neuron, s.score FROM neuron_scores s "
             "JOIN runs r USING (run_id) JOIN tasks t USING (task_id) ORDER BY ALL")
    assert _poll(killed, query) == _poll(clean, query)
    assert _poll(killed, "SELECT count(*) FROM runs WHERE status <> 'complete'") == [(0,)]


def test_schema_head_constant_matches_the_migrations():
    from atlas.store.db import SCHEMA_HEAD, head_revision

    assert head_revision() == SCHEMA_HEAD


def test_quick_commands_import_no_heavy_library(atlas_db):
    code = ("import sys; from cli.main import app; sys.argv = ['atlas', 'sql', 'select 1', '--db', "
            f"{str(atlas_db)!r}]\ntry:\n    app()\nexcept SystemExit as e:\n    assert not e.code\n"
            "heavy = {'torch', 'scipy', 'matplotlib', 'transformers', 'sqlalchemy', 'alembic'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
    help_code = ("import sys; from cli.main import app; sys.argv = ['atlas', '--help']\ntry:\n"
                 "    app()\nexcept SystemExit:\n    pass\n"
                 "print(sorted({'torch', 'scipy', 'matplotlib', 'sqlalchemy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", help_code], cwd=ROOT, capture_output=True, text=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_core_tables_match_the_migrated_schema(tmp_path):
    import sqlalchemy as sa

    from atlas.store import schema

    duck_type = {sa.Integer: "INTEGER", sa.String: "VARCHAR", sa.BigInteger: "BIGINT",
                 sa.SmallInteger: "SMALLINT", sa.REAL: "FLOAT", sa.Double: "DOUBLE",
                 sa.LargeBinary: "BLOB", sa.TIMESTAMP: "TIMESTAMP", sa.JSON: "JSON",
                 sa.Boolean: "BOOLEAN"}
    engine = connect(tmp_path / "s.duckdb")
    migrate(engine)
    engine.dispose()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    stored = con.execute("SELECT table_name, column_name, data_type, is_nullable = 'YES' "
                         "FROM information_schema.columns WHERE table_schema = 'main' AND "
                         "table_name IN (SELECT table_name FROM information_schema.tables "
                         "WHERE table_type = 'BASE TABLE' AND table_name <> 'alembic_version') "
                         "ORDER BY table_name, ordinal_position").fetchall()
    con.close()
    def declared_type(col_type) -> str:
        if isinstance(col_type, sa.ARRAY):
            return declared_type(col_type.item_type) + "[]"
        return duck_type[type(col_type)]

    declared = sorted(
        (table.name, col.name, declared_type(col.type), bool(col.nullable and not col.primary_key))
        for table in schema.metadata.sorted_tables for col in table.columns)
    assert sorted(stored) == declared
