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
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from atlas.errors import AtlasError, first_line
from atlas.store.db import SCHEMA_HEAD, db_path, sandbox_connection

EVALUATION_BLOCK = 500  # evaluations per file of evaluation_examples
_COMPLETE_RUNS = "SELECT run_id FROM runs WHERE status = 'complete'"
_COMPLETE_EVIDENCE = "SELECT evidence_id FROM evidence_runs WHERE status = 'complete'"
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
    "evidence_runs": ("status = 'complete'", "evidence_id", None),
    **{name: (f"evidence_id IN ({_COMPLETE_EVIDENCE})", order, ("evidence_id", 1))
       for name, order in [("evidence_contexts", "evidence_id, context_id"),
                           ("neuron_exemplars", "evidence_id, layer, neuron, sign, rank"),
                           ("neuron_quantiles", "evidence_id, layer, neuron, bin"),
                           ("neuron_density", "evidence_id, task_id, layer, neuron")]},
    "neuron_logits": ("TRUE", "model_id, layer, neuron", ("model_id", 1)),
    "vocab": ("TRUE", "model_id, token_id", ("model_id", 1)),
}
# Tables a snapshot leaves out: what only a run in progress needs (a snapshot holds finished work).
TRANSIENT = ("run_checkpoints",)
# Schemas a snapshot may be at: its tables are restored at that revision, then migrated.
RESTORABLE = ("0005", "0006", SCHEMA_HEAD)
INCOMPLETE = "incomplete"  # manifest key of a snapshot being written (or cut short)
SEQUENCES = {"models": "model_id", "tasks": "task_id", "runs": "run_id",
             "neuron_sets": "set_id", "evaluations": "eval_id", "evidence_runs": "evidence_id"}


def _parquet(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _write_if_changed(data: bytes, target: Path) -> bool:
    """Write ``data`` to ``target`` (atomically) unless the file already holds exactly these
    bytes; whether it wrote."""
    if target.exists() and target.read_bytes() == data:
        return False
    _write_atomic(data, target)
    return True


def _write_atomic(data: bytes, target: Path) -> None:
    """Write ``data`` to ``target`` through a temporary file and a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def take_snapshot(folder: str | Path, db: str | Path | None = None) -> dict:
    """Write the finished part of the atlas at ``db`` into ``folder`` (read-only on the database).

    Every file is built in memory first; when anything changes, the manifest is first marked
    ``incomplete`` and rewritten whole last, so a snapshot cut short (even by SIGKILL) is refused
    by restore and completed by the next snapshot. Returns the manifest plus ``written``: the
    files that changed."""
    folder = Path(folder)
    _check_snapshot_folder(folder)
    pieces, counts = _pieces(folder, db)
    manifest = {"schema": SCHEMA_HEAD, "rows": counts}
    target = folder / "manifest.json"
    manifest_bytes = (json.dumps(manifest, indent=2) + "\n").encode()
    changed = {path: data for path, data in pieces.items()
               if not (path.exists() and path.read_bytes() == data)}
    stale = [p for p in folder.rglob("*.parquet") if p not in pieces]
    leftovers = list(folder.rglob("*.tmp"))
    written: list[str] = []
    if changed or stale or leftovers:
        _write_atomic((json.dumps({**manifest, INCOMPLETE: True}, indent=2) + "\n").encode(),
                      target)
        for path, data in changed.items():  # compared above: written without reading again
            _write_atomic(data, path)
            written.append(str(path))
        for path in stale + leftovers:
            path.unlink(missing_ok=True)
    if _write_if_changed(manifest_bytes, target):
        written.append(str(target))
    return {**manifest, "written": written}


def _pieces(folder: Path, db) -> tuple[dict[Path, bytes], dict[str, int]]:
    """Every file of the snapshot of ``db`` (Parquet bytes by path) and the rows per table."""
    con = sandbox_connection(db)
    pieces: dict[Path, bytes] = {}
    counts: dict[str, int] = {}
    try:
        for name, (where, order, part) in TABLES.items():
            data = con.sql(f"SELECT * FROM {name} WHERE {where} ORDER BY {order}").to_arrow_table()
            counts[name] = data.num_rows
            if part is None:
                pieces[folder / f"{name}.parquet"] = _parquet(data)
                continue
            column, block = part
            keys = data[column].to_numpy() // block
            for key in np.unique(keys):
                piece = data.filter(pa.array(keys == key))
                pieces[folder / name / f"{column}_{key * block:07d}.parquet"] = _parquet(piece)
    finally:
        con.close()
    return pieces, counts


def _check_snapshot_folder(folder: Path) -> None:
    """A snapshot goes into a new or empty folder, or one holding an earlier snapshot of its own
    (its manifest names the tables): never over a user's files."""
    if folder.exists() and not folder.is_dir():
        raise AtlasError(f"{folder} is a file, not a folder; give a new or empty folder "
                         "(nothing was changed)")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        ours = isinstance(manifest, dict) and set(manifest.get("rows", {})) <= set(TABLES) \
            and "schema" in manifest
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise AtlasError(f"{folder} holds files that are not an atlas snapshot; give a new or "
                         "empty folder, or the folder of an earlier snapshot (nothing was changed)")
    known = {folder / "manifest.json"} | {folder / f"{name}.parquet" for name in TABLES}
    known |= {p.with_name(p.name + ".tmp") for p in known}
    strangers = [p for p in folder.rglob("*") if p.is_file() and p not in known
                 and not (p.name.endswith((".parquet", ".parquet.tmp"))
                          and p.parent.name in TABLES)]
    if strangers:
        raise AtlasError(f"snapshot folder {folder} also holds {strangers[0]} (and "
                         f"{len(strangers) - 1} more), which a snapshot did not write; move them "
                         "out first (nothing was changed)")


def _manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.exists():
        raise AtlasError(f"{folder} is not an atlas snapshot (no manifest.json); pass the folder "
                         "`atlas db snapshot` wrote")
    try:
        manifest = json.loads(path.read_text())
        schema = str(manifest.get("schema"))
        rows = manifest["rows"]
        if not all(isinstance(n, int) for n in rows.values()):
            raise ValueError("row counts are not integers")
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as err:
        raise AtlasError(f"{path} is not a readable snapshot manifest ({first_line(err)}); take "
                         "the snapshot again (nothing was changed)") from err
    if manifest.get(INCOMPLETE):
        raise AtlasError(f"snapshot {folder} is incomplete (a snapshot was interrupted); run "
                         "`atlas db snapshot` into it again (nothing was changed)")
    if schema not in RESTORABLE or not set(manifest.get("rows", {})) <= set(TABLES):
        raise AtlasError(f"snapshot {folder} is at schema {manifest.get('schema')}, this atlas "
                         f"restores {', '.join(RESTORABLE)}; use the atlas version that wrote it")
    return manifest


def _read(folder: Path, name: str) -> pa.Table | None:
    files = sorted((folder / name).glob("*.parquet")) or sorted(folder.glob(f"{name}.parquet"))
    if not files:
        return None
    try:
        return pa.concat_tables([pq.read_table(f) for f in files])
    except (OSError, pa.ArrowException) as err:
        raise AtlasError(f"snapshot {folder} has an unreadable {name} file ({first_line(err)}); "
                         "take the snapshot again (nothing was changed)") from err


# Rows a restored atlas must not hold: (what, query counting them).
_BAD_VALUES = [
    ("non-finite scores", "SELECT count(*) FROM neuron_scores WHERE NOT isfinite(score)"),
    ("scores of neurons outside their model", """
        SELECT count(*) FROM neuron_scores s JOIN runs r USING (run_id) JOIN models m USING (model_id)
        WHERE s.layer NOT BETWEEN 0 AND m.n_layers - 1 OR s.neuron NOT BETWEEN 0 AND m.d_mlp - 1"""),
    ("set members outside their model", """
        SELECT count(*) FROM neuron_set_members x JOIN neuron_sets s USING (set_id)
        JOIN models m USING (model_id)
        WHERE x.layer NOT BETWEEN 0 AND m.n_layers - 1 OR x.neuron NOT BETWEEN 0 AND m.d_mlp - 1"""),
    ("runs of unknown models or tasks", """
        SELECT count(*) FROM runs WHERE model_id NOT IN (SELECT model_id FROM models)
        OR task_id NOT IN (SELECT task_id FROM tasks)"""),
    ("set members of unknown sets",
     "SELECT count(*) FROM neuron_set_members WHERE set_id NOT IN (SELECT set_id FROM neuron_sets)"),
    ("sets whose size is not their member count", """
        SELECT count(*) FROM neuron_sets s WHERE size <> (SELECT count(*) FROM neuron_set_members x
        WHERE x.set_id = s.set_id)"""),
    ("evaluations of unknown sets", """
        SELECT count(*) FROM evaluations WHERE set_id IS NOT NULL
        AND set_id NOT IN (SELECT set_id FROM neuron_sets)"""),
]


def _check_values(conn, folder: Path) -> None:
    """Refuse a snapshot whose rows a working atlas cannot hold (before anything is visible)."""
    for what, sql in _BAD_VALUES:
        n = conn.exec_driver_sql(sql).scalar()
        if n:
            raise AtlasError(f"snapshot {folder} has {n} {what}; it was not restored (take the "
                             "snapshot again from a sound atlas)")


def _clear_dead_restores(target: Path) -> None:
    """Remove what restores into ``target`` killed before they finished left behind (files named
    after a process that no longer runs)."""
    for leftover in target.parent.glob(f".{target.name}.*.restoring*"):
        pid = leftover.name[len(target.name) + 2:].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_snapshot(folder: str | Path, db: str | Path | None = None) -> dict[str, int]:
    """Build a new atlas database at ``db`` from the snapshot in ``folder``; an existing file is
    refused. The database appears only when every row is in. Returns rows per table."""
    from atlas.store.db import connect, migrate
    from atlas.store.repository import insert_arrow

    folder, target = Path(folder), db_path(db)
    manifest = _manifest(folder)
    if target.exists():
        raise AtlasError(f"{target} already exists; restore into a new --db (nothing was changed)")
    if not target.parent.is_dir() or not os.access(target.parent, os.W_OK):
        raise AtlasError(f"cannot create {target}: folder {target.parent} does not exist or is "
                         "not writable; pass another --db")
    _clear_dead_restores(target)
    # each restore builds under a name of its own, so that two at once never share a file
    building = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.restoring")
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
                    try:
                        insert_arrow(conn, name, data)
                    except Exception as err:  # DuckDB's conversion and constraint errors
                        raise AtlasError(f"snapshot {folder}: its {name} rows do not fit the "
                                         f"table ({first_line(err)}); take the snapshot again "
                                         "(nothing was changed)") from err
            _check_values(conn, folder)
            for name, column in SEQUENCES.items():  # new ids continue after the restored ones
                if not counts[name]:  # (an older snapshot may lack the table's sequence)
                    continue
                conn.exec_driver_sql(
                    f"SELECT nextval('seq_{name}') FROM range((SELECT coalesce(max({column}), 0) "
                    f"FROM {name}))").fetchall()
        migrate(engine)  # an older snapshot's rows brought to this schema
    except BaseException:
        engine.dispose()
        for leftover in (building, building.with_name(building.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    engine.dispose()
    try:  # a link never replaces an existing file: of two restores, the second is refused
        os.link(building, target)
    except FileExistsError:
        raise AtlasError(f"{target} was created by another process meanwhile; restore into a "
                         "new --db (nothing was changed)") from None
    finally:
        building.unlink(missing_ok=True)
    return counts
