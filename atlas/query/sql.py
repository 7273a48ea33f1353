"""Read-only SQL over the atlas, and Parquet export of every table and view.

Queries run on the store's sandboxed read-only connection (see :mod:`atlas.store.db`): one
SELECT or EXPLAIN statement, no file, URL or extension access, configuration locked. Results are
written by the library (pyarrow), never by a DuckDB ``COPY`` built from a path."""

from __future__ import annotations

import io
import json
import math
import re
import threading
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from atlas.errors import AtlasError, first_line
from atlas.store.db import sandbox_connection

READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}
# The SQL contract's views (the tables come from atlas.store.schema); a test checks both lists
# against the migrated database, so export cannot miss one.
VIEWS = ["task_sets", "set_sizes", "set_overlaps", "unique_neurons", "layer_counts",
         "evaluation_effects", "exemplar_peaks"]


@contextmanager
def _read_only_connection(db: str | Path | None):
    """A sandboxed read-only DuckDB connection, closed on exit."""
    con = sandbox_connection(db)
    try:
        yield con
    finally:
        con.close()


def run_sql(query: str, db: str | Path | None = None, *, timeout_s: float | None = None,
            max_rows: int | None = None) -> pa.Table:
    """Run one read-only statement on the sandboxed connection; write statements are refused.
    ``timeout_s`` interrupts a longer query; ``max_rows`` keeps the first rows (the table's
    metadata says ``truncated`` when more were there)."""
    with _read_only_connection(db) as con:
        return run_sql_on(con, query, timeout_s=timeout_s, max_rows=max_rows)


def run_sql_on(con, query: str, *, timeout_s: float | None = None,
               max_rows: int | None = None) -> pa.Table:
    """:func:`run_sql` on an open sandboxed connection ``con``."""
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as err:
        raise AtlasError(f"SQL error: {first_line(err)}") from err
    if len(statements) != 1:
        raise AtlasError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in READ_ONLY_TYPES:
        raise AtlasError(f"atlas sql is read-only: {kind} statements are refused; "
                         "use SELECT (the atlas changes only through its commands)")
    timer = threading.Timer(timeout_s, con.interrupt) if timeout_s else None
    if timer:
        timer.start()
    try:
        relation = con.sql(query)
        names = _unique(relation.columns)
        relation = _text_where_arrow_cannot(relation)
        if max_rows is not None:
            relation = relation.limit(max_rows + 1)
        table = relation.to_arrow_table().rename_columns(names)
    except duckdb.Error as err:
        if timer and not timer.is_alive():
            raise AtlasError(f"SQL query stopped after the {timeout_s:g} s limit") from err
        raise AtlasError(f"SQL error: {first_line(err)}") from err
    finally:
        if timer:
            timer.cancel()
    if max_rows is not None and table.num_rows > max_rows:
        return table.slice(0, max_rows).replace_schema_metadata({"truncated": "true"})
    return table


def _unique(names: list[str]) -> list[str]:
    """Repeated column names made unique as DuckDB does (a, a_1, a_2): JSON rows are objects."""
    seen: set[str] = set()
    out = []
    for name in names:
        new, k = name, 0
        while new in seen:
            k += 1
            new = f"{name}_{k}"
        seen.add(new)
        out.append(new)
    return out


# DuckDB types Arrow cannot carry faithfully to every format (INTERVAL has no CSV or Parquet
# form, BIT and BIGNUM arrive as DuckDB's internal bytes, UNION has no Parquet form); the name
# as DuckDB spells the type, outside quoted struct field names.
_AS_TEXT = re.compile(r"\b(INTERVAL|BIT|BIGNUM|VARINT|UNION)\b")


def _text_where_arrow_cannot(relation: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """Columns of those types (also inside lists or structs) as DuckDB writes them as text
    ('00:01:30', '2 days', '101')."""
    types = [re.sub(r'"[^"]*"', "", str(t)) for t in relation.types]
    if not any(_AS_TEXT.search(t) for t in types):
        return relation
    return relation.project(", ".join(  # by position: names may repeat
        f"CAST(#{k + 1} AS VARCHAR)" if _AS_TEXT.search(t) else f"#{k + 1}"
        for k, t in enumerate(types)))


def write_table(table: pa.Table, fmt: str, out: str | Path | None) -> str | None:
    """Write ``table`` as csv/json/parquet to the file ``out`` (or return csv/json text)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if fmt not in ("csv", "json", "parquet"):
        raise AtlasError(f"unknown format '{fmt}'; choose table, csv, json or parquet")
    if fmt == "parquet" and not out:
        raise AtlasError("--format parquet needs --output FILE")
    if out:
        target = Path(out)
        if not target.parent.is_dir():
            raise AtlasError(f"cannot write {target}: folder {target.parent} does not exist")
        if fmt == "parquet":
            pq.write_table(table, target)
        elif fmt == "csv":
            pacsv.write_csv(_flat(table), target)
        else:
            target.write_text(_json_text(table), encoding="utf-8")
        return None
    if fmt == "csv":
        buf = io.BytesIO()
        pacsv.write_csv(_flat(table), buf)
        return buf.getvalue().decode()
    return _json_text(table)


def _json_text(table: pa.Table) -> str:
    """JSON rows; NaN and infinities, which JSON has no number for, as null."""
    return json.dumps(json_safe(table.to_pylist()), default=json_value, indent=1, allow_nan=False)


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities (no JSON number) as None, inside lists and dicts too."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def _flat(table: pa.Table) -> pa.Table:
    """CSV has no nested or binary values: list, struct and map columns are written as JSON
    text, BLOB columns as hex."""
    columns = []
    for column in table.columns:
        if pa.types.is_nested(column.type):
            column = pa.array([None if v is None else json.dumps(v, default=json_value)
                               for v in column.to_pylist()], pa.string())
        elif _is_binary(column.type):
            column = pa.array([None if v is None else v.hex() for v in column.to_pylist()],
                              pa.string())
        columns.append(column)
    return pa.table(columns, names=table.column_names)


def _is_binary(kind: pa.DataType) -> bool:
    return (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
            or pa.types.is_fixed_size_binary(kind))


def json_value(value: Any) -> Any:
    """A value JSON cannot hold as it is: BLOBs as hex, decimals as numbers, the rest as text."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def export_parquet(folder: str | Path, db: str | Path | None = None) -> list[Path]:
    """One Parquet file per table and view into ``folder``."""
    import pyarrow.parquet as pq

    from atlas.store.schema import metadata

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AtlasError(f"{folder} is a file, not a folder; give a folder to export into "
                         "(nothing was changed)")
    written = []
    with _read_only_connection(db) as con:
        folder.mkdir(parents=True, exist_ok=True)
        for name in [*metadata.tables, *VIEWS]:
            target = folder / f"{name}.parquet"
            pq.write_table(con.sql(f"SELECT * FROM {name}").to_arrow_table(), target)
            written.append(target)
    return written
