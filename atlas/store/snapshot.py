"""Snapshots: an atlas database as a folder of Parquet files, and back.

A snapshot holds what is finished (complete runs with their scores, sets, evaluations with their
per-example outcomes), never a run in progress. Large tables are split into one file per run, per
set or per block of evaluations, written in a fixed order, so that taking a new snapshot of a
grown atlas leaves the files of what was already there byte for byte the same (a snapshot kept in
version control grows by what is new). ``manifest.json`` holds the schema revision and row counts;
restoring checks both and builds the database under a temporary name, visible only once complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atlas.errors import AtlasError
from atlas.store.db import SCHEMA_HEAD, db_path, sandbox_connection

EVALUATION_BLOCK = 500  # evaluations per file of evaluation_examples
_COMPLETE_RUNS = "SELECT run_id FROM runs WHERE status = 'complete'"
_FINISHED_SETS = f"SELECT set_id FROM neuron_sets WHERE run_id IS NULL OR run_id IN ({_COMPLETE_RUNS})"
# table -> (rows to keep, order, partition column and its file-name rule); in restore order
TABLES: dict[str, tuple[str, str, tuple[str, int] | None]] = {
    "models": ("TRUE", "model_id", None),
    "tasks": ("TRUE", "task_id", None),
    "runs": ("status = 'complete'", "run_id", None),
    "neuron_scores": (f"run_id IN ({_COMPLETE_RUNS})", "run_id, layer, neuron", ("run_id", 1)),
    "neuron_sets": (f"set_id IN ({_FINISHED_SETS})", "set_id", None),
    "neuron_set_members": (f"set_id IN ({_FINISHED_SETS})", "set_id, layer, neuron", ("set_id", 1)),
    "evaluations": (f"set_id IS NULL OR set_id IN ({_FINISHED_SETS})", "eval_id", None),
    "evaluation_examples": ("eval_id IN (SELECT eval_id FROM evaluations WHERE set_id IS NULL OR "
                            f"set_id IN ({_FINISHED_SETS}))", "eval_id, example",
                            ("eval_id", EVALUATION_BLOCK)),
}
# Schemas a snapshot may be at: its tables are restored at that revision, then migrated.
RESTORABLE = ("0005", SCHEMA_HEAD)
SEQUENCES = {"models": "model_id", "tasks": "task_id", "runs": "run_id",
             "neuron_sets": "set_id", "evaluations": "eval_id"}


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _write_if_changed(data: bytes, target: Path) -> bool:
    """Write ``data`` to ``target`` (atomically) unless the file already holds exactly these
    bytes; whether it wrote."""
    if target.exists() and target.read_bytes() == data:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return True


def take_snapshot(folder: str | Path, db: str | Path | None = None) -> dict:
    """Write the finished part of the atlas at ``db`` into ``folder`` (read-only on the database).
    Returns the manifest plus ``written``: the files that changed."""
    folder = Path(folder)
    con = sandbox_connection(db)
    written: list[str] = []
    counts: dict[str, int] = {}
    keep: set[Path] = {folder / "manifest.json"}
    try:
        for name, (where, order, part) in TABLES.items():
            data = con.sql(f"SELECT * FROM {name} WHERE {where} ORDER BY {order}").to_arrow_table()
            counts[name] = data.num_rows
            if part is None:
                pieces = {folder / f"{name}.parquet": data}
            else:
                column, block = part
                keys = data[column].to_numpy() // block
                pieces = {folder / name / f"{column}_{key * block:07d}.parquet":
                          data.filter(pa.array(keys == key)) for key in np.unique(keys)}
            for target, piece in pieces.items():
                keep.add(target)
                if _write_if_changed(_parquet(piece), target):
                    written.append(str(target))
    finally:
        con.close()
    for stale in [p for p in folder.rglob("*.parquet") if p not in keep]:
        stale.unlink()
    manifest = {"schema": SCHEMA_HEAD, "rows": counts}
    target = folder / "manifest.json"
    if _write_if_changed((json.dumps(manifest, indent=2) + "\n").encode(), target):
        written.append(str(target))
    return {**manifest, "written": written}


def _manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.exists():
        raise AtlasError(f"{folder} is not an atlas snapshot (no manifest.json); pass the folder "
                         "`atlas db snapshot` wrote")
    manifest = json.loads(path.read_text())
    schema = str(manifest.get("schema"))
    if schema not in RESTORABLE or not set(manifest.get("rows", {})) <= set(TABLES):
        raise AtlasError(f"snapshot {folder} is at schema {manifest.get('schema')}, this atlas "
                         f"restores {', '.join(RESTORABLE)}; use the atlas version that wrote it")
    return manifest


def _read(folder: Path, name: str) -> pa.Table | None:
    files = sorted((folder / name).glob("*.parquet")) or sorted(folder.glob(f"{name}.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files])


def restore_snapshot(folder: str | Path, db: str | Path | None = None) -> dict[str, int]:
    """Build a new atlas database at ``db`` from the snapshot in ``folder``; an existing file is
    refused. The database appears only when every row is in. Returns rows per table."""
    from atlas.store.db import connect, migrate
    from atlas.store.repository import insert_arrow

    folder, target = Path(folder), db_path(db)
    manifest = _manifest(folder)
    if target.exists():
        raise AtlasError(f"{target} already exists; restore into a new --db (nothing was changed)")
    building = target.with_name(target.name + ".restoring")
    for leftover in (building, building.with_name(building.name + ".wal")):
        leftover.unlink(missing_ok=True)
    engine = connect(building)
    counts = {}
    try:
        migrate(engine, manifest["schema"])
        with engine.begin() as conn:
            for name in TABLES:
                data = _read(folder, name)
                counts[name] = data.num_rows if data is not None else 0
                if counts[name] != manifest["rows"].get(name, 0):
                    raise AtlasError(f"snapshot {folder} has {counts[name]} rows of {name}, its "
                                     f"manifest says {manifest['rows'].get(name, 0)}; take the "
                                     "snapshot again")
                if data is not None and data.num_rows:
                    insert_arrow(conn, name, data)
            for name, column in SEQUENCES.items():  # new ids continue after the restored ones
                conn.exec_driver_sql(
                    f"SELECT nextval('seq_{name}') FROM range((SELECT coalesce(max({column}), 0) "
                    f"FROM {name}))").fetchall()
        migrate(engine)  # an older snapshot's rows brought to this schema
    except BaseException:
        engine.dispose()
        building.unlink(missing_ok=True)
        raise
    engine.dispose()
    os.replace(building, target)
    return counts
