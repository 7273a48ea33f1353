"""Bad input as an outsider gives it: every case ends in one `error:` line with exit code 2, and
no file it touched changed (hashes before and after)."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import ROOT_DIR, ingested_tiny, query

runner = CliRunner()


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """A tiny atlas with a snapshot and evaluations: (model folder, db, common options, snap)."""
    root = tmp_path_factory.mktemp("bad")
    folder, db, common = ingested_tiny(root)
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--eval-task", "task379",
                              "--examples", "4", "--controls", "1"])
    assert res.exit_code == 0, res.output
    snap = root / "snap"
    assert runner.invoke(app, ["db", "snapshot", str(snap), "--db", str(db)]).exit_code == 0
    return folder, db, common, snap


def digest(*paths: Path) -> dict[str, str]:
    out = {}
    for path in paths:
        for f in sorted([path] if path.is_file() else path.rglob("*") if path.exists() else []):
            if f.is_file():
                out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def refused(args: list[str], message: str, *watched: Path) -> None:
    before = digest(*watched)
    res = runner.invoke(app, args)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2, res.output
    assert len(errors) == 1 and message in errors[0], res.output  # progress lines may precede
    assert res.output.rstrip().splitlines()[-1] == errors[0]
    assert "Traceback" not in res.output
    assert digest(*watched) == before


def test_snapshot_never_deletes_a_users_files(atlas, tmp_path):
    _, db, _, _ = atlas
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.parquet").write_bytes(b"PAR1 my own results")
    refused(["db", "snapshot", str(mine), "--db", str(db)], "not an atlas snapshot", mine, db)
    refused(["db", "snapshot", str(mine / "results.parquet"), "--db", str(db)], "is a file", mine)


def test_snapshot_refreshes_its_own_folder_but_not_strangers_in_it(atlas, tmp_path):
    _, db, _, snap = atlas
    copy = tmp_path / "snap"
    shutil.copytree(snap, copy)
    assert runner.invoke(app, ["db", "snapshot", str(copy), "--db", str(db)]).exit_code == 0
    (copy / "notes.txt").write_text("mine")
    refused(["db", "snapshot", str(copy), "--db", str(db)], "which a snapshot did not write", copy)


@pytest.mark.system
def test_two_restores_onto_one_name_one_wins_whole(atlas, tmp_path):
    _, _, _, snap = atlas
    target = tmp_path / "new.duckdb"
    command = [sys.executable, "-m", "cli.main", "db", "restore", str(snap), "--db", str(target)]
    procs = [subprocess.Popen(command, cwd=ROOT_DIR, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [(p.wait(timeout=120), p.stdout.read()) for p in procs]
    assert sorted(rc for rc, _ in outs) == [0, 2], outs
    assert any("created by another process" in out or "already exists" in out for _, out in outs)
    assert query(target, "SELECT count(*) FROM neuron_scores") == [(192,)]
    assert not list(tmp_path.glob(".*restoring*"))


def test_force_and_import_never_orphan_evaluations(atlas, tmp_path):
    folder, db, common, _ = atlas
    refused(["ingest", *common, "--examples", "4", "--task", "task379", "--force"],
            "evaluation(s) refer to", db)
    name = query(db, "SELECT s.name FROM neuron_sets s JOIN evaluations e USING (set_id) LIMIT 1")[0][0]
    model, task = name.split("/")[0], "task379"
    path = tmp_path / "mask.pth"
    torch.save([[torch.tensor([0, 1])] * 2], path)
    res = runner.invoke(app, ["import", str(path), "--model", model, "--task", task, "--db", str(db)])
    assert res.exit_code in (0, 2)  # another name (':imported') is fine; a replacement is not
    assert query(db, "SELECT count(*) FROM evaluations WHERE set_id NOT IN "
                     "(SELECT set_id FROM neuron_sets)") == [(0,)]


def test_commands_that_read_never_create_or_touch_a_file(atlas, tmp_path):
    _, db, _, _ = atlas
    missing = tmp_path / "missing.duckdb"
    for args in (["select", "--model", "x", "--task", "task379", "--rule", "layer:2"],
                 ["ablate", "--task", "task379"], ["db", "current"], ["db", "downgrade", "-1"],
                 ["split", "--model", "x"]):
        refused([*args, "--db", str(missing)], "no atlas database", tmp_path)
        assert not missing.exists()
    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE mine (x INTEGER)")
    con.close()
    refused(["db", "upgrade", "--db", str(foreign)], "not an atlas database", foreign)


def test_select_is_all_or_nothing(atlas):
    _, db, _, _ = atlas
    model = query(db, "SELECT name FROM models")[0][0]
    before = query(db, "SELECT count(*) FROM neuron_sets")
    refused(["select", "--model", model, "--task", "task379", "--task", "task999",
             "--rule", "layer:3", "--db", str(db)], "no task 'task999'", db)
    assert query(db, "SELECT count(*) FROM neuron_sets") == before


@pytest.mark.parametrize("args, message", [
    (["ablate", "--task", "task379", "--factor", "nan"], "--factor must be a finite number"),
    (["ablate", "--task", "task379", "--factor", "inf"], "--factor must be a finite number"),
    (["ablate"], "give --task TASK"),
    (["split", "--model", "x", "--shared-in", "0"], "--shared-in"),
    (["serve", "--workers", "0"], "--workers"),
    (["serve", "--sql-max-rows", "-1"], "--sql-max-rows"),
    (["serve", "--sql-timeout", "-1"], "--sql-timeout"),
    (["serve", "--port", "99999"], "--port"),
    (["nosuchcommand"], "No such command"),
    (["ablate", "--task", "task379", "--preset", "reference", "--examples", "100"],
     "--examples 100 contradicts --preset reference"),
    (["ingest", "--task", "task379", "--preset", "reference", "--shots", "2"],
     "--shots 2 contradicts --preset reference"),
])
def test_options_are_validated_at_the_edge(atlas, args, message):
    _, db, _, _ = atlas
    refused([*args, "--db", str(db)] if args[0] != "nosuchcommand" else args, message, db)


def test_a_port_in_use_is_refused_before_serving(atlas):
    _, db, _, _ = atlas
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        refused(["serve", "--port", str(port), "--db", str(db)], "cannot serve on", db)


@pytest.mark.parametrize("content, message", [
    ([[torch.tensor([True, False])] * 2], "not integer neuron indices"),
    ([[torch.tensor([2.7, 1.0])] * 2], "not integer neuron indices"),
    ([[torch.tensor([0])] * 2, [torch.tensor([1])] * 2], "holds 2 sets"),
    ([[torch.tensor([-3, 1])] * 2], "negative index -3"),
])
def test_imported_masks_are_what_they_say(atlas, tmp_path, content, message):
    _, db, _, _ = atlas
    path = tmp_path / "mask.pth"
    torch.save(content, path)
    refused(["import", str(path), "--model", "other", "--task", "t", "--d-mlp", "48",
             "--db", str(db)], message, db)


def _tampered(snap: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / f"snap-{how}"
    shutil.copytree(snap, copy)
    if how == "manifest":
        (copy / "manifest.json").write_text('{"schema": "0006", "rows": ')
    elif how == "parquet":
        target = next((copy / "neuron_scores").glob("*.parquet"))
        target.write_bytes(target.read_bytes()[:100])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        target = next((copy / "neuron_scores").glob("*.parquet"))
        table = pq.read_table(target)
        column = "score" if how == "nan" else "neuron"
        values = table[column].to_numpy().copy()
        values[0] = float("nan") if how == "nan" else 10_000
        k = table.schema.get_field_index(column)
        table = table.set_column(k, column, pa.array(values, table.schema.field(column).type))
        pq.write_table(table, target)
    return copy


@pytest.mark.parametrize("how, message", [("manifest", "not a readable snapshot manifest"),
                                          ("parquet", "unreadable neuron_scores"),
                                          ("nan", "non-finite scores"),
                                          ("range", "outside their model")])
def test_restore_refuses_a_damaged_snapshot(atlas, tmp_path, how, message):
    _, _, _, snap = atlas
    copy = _tampered(snap, tmp_path, how)
    target = tmp_path / "restored.duckdb"
    refused(["db", "restore", str(copy), "--db", str(target)], message, copy)
    assert not target.exists() and not list(tmp_path.glob(".*restoring*"))


def test_outputs_never_overwrite_or_create_folders(atlas, tmp_path):
    _, db, _, _ = atlas
    model = query(db, "SELECT name FROM models")[0][0]
    existing = tmp_path / "file.txt"
    existing.write_text("keep me")
    refused(["export", str(existing), "--db", str(db)], "is a file", existing, db)
    refused(["plot", "overlap", "--model", model, "-o", str(tmp_path / "no" / "x.png"),
             "--db", str(db)], "does not exist", db)
    refused(["db", "restore", str(tmp_path), "--db", str(tmp_path / "nowhere" / "a.duckdb")],
            "", db)


def test_a_newer_schema_is_refused_in_one_line(atlas, tmp_path):
    _, db, common, _ = atlas
    newer = tmp_path / "newer.duckdb"
    shutil.copy(db, newer)
    con = duckdb.connect(str(newer))
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.close()
    refused(["db", "upgrade", "--db", str(newer)], "newer atlas", newer)
    refused(["select", "--model", "x", "--task", "t", "--rule", "layer:2", "--db", str(newer)],
            "", newer)
    assert json.dumps(query(newer, "SELECT version_num FROM alembic_version")) == '[["9999"]]'


def test_a_changed_task_file_is_refused_not_restamped(atlas, tmp_path):
    from tests.helpers import SNI_DIR

    folder, db, _, _ = atlas
    source = json.loads((SNI_DIR / "task379_agnews_topic_classification.json").read_text())
    path = tmp_path / "task9379_news.json"
    source["Instances"] = source["Instances"][:40]
    path.write_text(json.dumps(source))
    common = ["--model", str(folder), "--db", str(db), "--shots", "1", "--task", str(path),
              "--dtype", "float32"]
    assert runner.invoke(app, ["ingest", *common, "--examples", "4"]).exit_code == 0
    stored = query(db, "SELECT data_hash FROM tasks WHERE name = 'task9379_news'")
    source["Instances"][0]["input"] += " (edited)"
    path.write_text(json.dumps(source))
    refused(["ingest", *common, "--examples", "4"], "changed since the atlas stored it", db)
    refused(["ablate", "--model", str(folder), "--db", str(db), "--shots", "1", "--task",
             "task379", "--eval-task", str(path), "--examples", "4", "--controls", "1",
             "--dtype", "float32"],
            "put the original file back", db)
    assert query(db, "SELECT data_hash FROM tasks WHERE name = 'task9379_news'") == stored


def test_a_file_read_by_the_released_rules_is_the_same_task(tmp_path):
    from atlas.tasks.sni import load_task

    path = tmp_path / "task9001_two.json"
    path.write_text(json.dumps({"Definition": ["One. ", "Two."], "Instances": [
        {"id": "a", "input": "x", "output": ["yes"]}, {"id": "b", "input": "y", "output": []}]}))
    default, released = load_task(str(path)), load_task(str(path), released=True)
    assert released.data_hash != default.data_hash  # runs keep what they read
    assert released.stored_hash == default.stored_hash == default.data_hash  # one task row
