"""Writers killed part-way (a real SIGKILL in the middle of their writes) leave nothing
half-done: select, split, import, snapshot and restore. Each command runs in a subprocess whose
writer function kills the process right after its N-th call; the database (or folder) must hold
exactly what it held before, and running the command again must give what a clean run gives."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import torch
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import ROOT_DIR, ingested_tiny

pytestmark = pytest.mark.system  # a server, a browser or subprocesses

ROOT = ROOT_DIR
runner = CliRunner()

# Runs `atlas ARGS...` with MODULE:FUNCTION wrapped so that the process SIGKILLs itself right
# after the function's AFTER-th call returns (mid-command: later writes never happen).
_KILLER = """
import importlib, os, signal, sys
module, name, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
mod = importlib.import_module(module)
*owners, name = name.split(".")
for owner in owners:
    mod = getattr(mod, owner)
original, calls = getattr(mod, name), [0]
def dying(*args, **kwargs):
    out = original(*args, **kwargs)
    calls[0] += 1
    if calls[0] >= after:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
setattr(mod, name, dying)
from cli.main import app
sys.argv = ['atlas', *sys.argv[4:]]
app()
"""


def killed(target: str, after: int, *args: str) -> None:
    module, name = target.split(":")
    proc = subprocess.run([sys.executable, "-c", _KILLER, module, name, str(after), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)


def rows(db: Path) -> dict[str, list]:
    """Every row of every table, ordered."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_type = 'BASE TABLE'").fetchall()]
        return {n: con.execute(f"SELECT * EXCLUDE (created_at) FROM {n} ORDER BY ALL").fetchall()
                if "created_at" in _columns(con, n) else
                con.execute(f"SELECT * FROM {n} ORDER BY ALL").fetchall() for n in names}
    finally:
        con.close()


def _columns(con, table: str) -> set[str]:
    return {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = ?", [table]).fetchall()}


def folder_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """A tiny model ingested on two tasks: (database, model folder)."""
    folder, db, _ = ingested_tiny(tmp_path_factory.mktemp("kills"))
    return db, folder


def fresh(atlas, tmp_path: Path, name: str = "a.duckdb") -> Path:
    db = tmp_path / name
    shutil.copy(atlas[0], db)
    return db


def invoke(*args: str) -> None:
    res = runner.invoke(app, list(args))
    assert res.exit_code == 0, res.output


SELECT = ["select", "--model", "tiny", "--task", "task379", "--task", "task195",
          "--rule", "top:0.1"]


def assert_a_killed_write_stores_nothing(atlas, tmp_path, args: list[str], after: int) -> None:
    """``atlas ARGS`` killed right after its ``after``-th ``write_set`` leaves every row as it
    was, and run again gives what a clean run gives."""
    db, clean = fresh(atlas, tmp_path), fresh(atlas, tmp_path, "clean.duckdb")
    before = rows(db)
    killed("atlas.store.repository:write_set", after, *args, "--db", str(db))
    assert rows(db) == before
    invoke(*args, "--db", str(db))
    invoke(*args, "--db", str(clean))
    assert rows(db) == rows(clean)


@pytest.mark.parametrize("after", [1, 2])
def test_a_killed_select_stores_no_set(atlas, tmp_path, after):
    assert_a_killed_write_stores_nothing(atlas, tmp_path, SELECT, after)


def test_a_killed_split_stores_no_part(atlas, tmp_path):
    split = ["split", "--model", "tiny", "--shared-in", "2"]
    assert_a_killed_write_stores_nothing(atlas, tmp_path, split, 3)  # of 4 parts


def test_a_killed_import_stores_no_set(atlas, tmp_path):
    masks = tmp_path / "two.pth"  # the released LAPE format: one list of per-layer indices per set
    torch.save([[torch.tensor([0, 3]), torch.tensor([1])], [torch.tensor([2]), torch.tensor([])]],
               masks)
    args = ["import", str(masks), "--model", "other", "--format", "lape", "--task", "x1",
            "--task", "x2", "--layers", "2", "--d-mlp", "8"]
    assert_a_killed_write_stores_nothing(atlas, tmp_path, args, 1)


def test_a_killed_snapshot_is_refused_by_restore_and_completed_by_the_next(atlas, tmp_path):
    db = fresh(atlas, tmp_path)
    folder = tmp_path / "snap"
    invoke("db", "snapshot", str(folder), "--db", str(db))
    invoke(*SELECT, "--db", str(db))  # new sets: the next snapshot changes files
    killed("atlas.store.snapshot:_write_atomic", 2, "db", "snapshot", str(folder),
           "--db", str(db))  # the incomplete mark and one file written
    res = runner.invoke(app, ["db", "restore", str(folder), "--db", str(tmp_path / "r.duckdb")])
    assert res.exit_code != 0 and "incomplete" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.duckdb").exists()
    invoke("db", "snapshot", str(folder), "--db", str(db))
    clean = tmp_path / "clean-snap"
    invoke("db", "snapshot", str(clean), "--db", str(db))
    assert folder_hashes(folder) == folder_hashes(clean)


def test_a_snapshot_killed_mid_file_leaves_a_folder_the_next_snapshot_accepts(atlas, tmp_path):
    db = fresh(atlas, tmp_path)
    folder = tmp_path / "snap"
    invoke("db", "snapshot", str(folder), "--db", str(db))
    invoke(*SELECT, "--db", str(db))
    # killed between writing a file's temporary copy and moving it into place
    killed("pathlib:Path.write_bytes", 2, "db", "snapshot", str(folder), "--db", str(db))
    assert list(folder.rglob("*.tmp"))
    invoke("db", "snapshot", str(folder), "--db", str(db))
    assert not list(folder.rglob("*.tmp"))
    clean = tmp_path / "clean-snap"
    invoke("db", "snapshot", str(clean), "--db", str(db))
    assert folder_hashes(folder) == folder_hashes(clean)


def test_a_killed_restore_creates_nothing_and_the_next_restore_succeeds(atlas, tmp_path):
    folder = tmp_path / "snap"
    invoke("db", "snapshot", str(folder), "--db", str(atlas[0]))
    target = tmp_path / "r.duckdb"
    killed("atlas.store.repository:insert_arrow", 3, "db", "restore", str(folder),
           "--db", str(target))
    assert not target.exists()
    assert list(tmp_path.glob(".r.duckdb.*.restoring*"))  # what the killed restore left
    invoke("db", "restore", str(folder), "--db", str(target))
    assert not list(tmp_path.glob(".r.duckdb.*.restoring*"))  # cleared: its process is gone
    assert rows(target) == rows(atlas[0])
    assert os.path.getsize(target) > 0
