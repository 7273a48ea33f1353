"""Identity: a model is (name, revision, dtype) and a task is its full name; every lookup ends in
an id. A name that matches several stored models is an error listing them, never a silent merge.

Model specs: ``name``, ``name@dtype``, ``name@revision`` (or a revision prefix), or ``#model_id``.
Task specs: the full name, a Super-NaturalInstructions id (``task195``) when exactly one stored
task has it, or ``#task_id``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from atlas.errors import Ambiguous, AtlasError, NotFound
from atlas.naming import SNI_ID, sni_id


def _label(model: dict[str, Any]) -> str:
    return f"{model['name']}@{model['dtype']} (#{model['model_id']}, {model['revision']})"


def matching_models(conn: Connection, spec: str) -> list[dict[str, Any]]:
    """Every stored model that ``spec`` could name (rows of ``models`` as dicts)."""
    models = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM models ORDER BY model_id"))]
    if spec.startswith("#") and spec[1:].isdigit():
        return [m for m in models if m["model_id"] == int(spec[1:])]
    name, _, qualifier = spec.partition("@")
    return [m for m in models if m["name"] == name and (
        not qualifier or m["dtype"] == qualifier or str(m["revision"]).startswith(qualifier))]


@contextmanager
def _connected(bind: Connection | Engine) -> Iterator[Connection]:
    """``bind`` itself when it is a connection, else one of its connections for the lookup."""
    if isinstance(bind, Connection):
        yield bind
    else:
        with bind.connect() as conn:
            yield conn


def resolve_model(bind: Connection | Engine, spec: str) -> dict[str, Any]:
    """The one stored model that ``spec`` names (a row of ``models`` as a dict).

    Args:
        bind: a connection, or an engine to take one from.
        spec: NAME, NAME@DTYPE, NAME@REVISION (or a revision prefix) or #ID.

    Returns:
        The model's row; a NotFound or an Ambiguous error listing the candidates otherwise.
    """
    with _connected(bind) as conn:
        return _resolve_model(conn, spec)


def _resolve_model(conn: Connection, spec: str) -> dict[str, Any]:
    found = matching_models(conn, spec)
    if len(found) == 1:
        return found[0]
    if not found:
        known = sorted({r.name for r in conn.execute(text("SELECT name FROM models"))})
        raise NotFound(f"no model '{spec}' in the atlas; known: {', '.join(known) or 'none'}")
    raise Ambiguous(f"model '{spec}' is ambiguous: {'; '.join(map(_label, found))}; name one as "
                     "NAME@DTYPE, NAME@REVISION or #ID")


def resolve_task(bind: Connection | Engine, spec: str) -> dict[str, Any]:
    """The one stored task that ``spec`` names (a row of ``tasks`` as a dict).

    Args:
        bind: a connection, or an engine to take one from.
        spec: the full name, a Super-NaturalInstructions id (``task195``) that exactly one
            stored task has, or #ID.
    """
    with _connected(bind) as conn:
        tasks = [dict(r._mapping) for r in conn.execute(
            text("SELECT * FROM tasks ORDER BY task_id"))]
    if spec.startswith("#") and spec[1:].isdigit():
        found = [t for t in tasks if t["task_id"] == int(spec[1:])]
    else:
        found = [t for t in tasks if t["name"] == spec]
        if not found and SNI_ID.fullmatch(spec):
            found = [t for t in tasks if t["name"].startswith(spec + "_")]
    if len(found) == 1:
        return found[0]
    if not found:
        raise NotFound(f"no task '{spec}' in the atlas; give a stored task's full name "
                         "(SELECT name FROM tasks)")
    names = ", ".join(f"{t['name']} (#{t['task_id']})" for t in found)
    raise Ambiguous(f"task '{spec}' is ambiguous: {names}; give the full name or #ID")


def task_labels(names: list[str]) -> list[str]:
    """Short display labels: a task's SNI id (``task195``) where no other of ``names`` shares it,
    else its full name. Labels never merge two tasks."""
    ids = [sni_id(name) for name in names]
    return [i if i and ids.count(i) == 1 else name for i, name in zip(ids, names)]


def latest_complete_run(conn: Connection, model_id: int, task_id: int, method: str) -> int:
    run_id = conn.execute(text(
        "SELECT max(run_id) FROM runs WHERE model_id = :m AND task_id = :t AND method = :method "
        "AND status = 'complete'"), {"m": model_id, "t": task_id, "method": method}).scalar()
    if run_id is None:
        raise AtlasError(f"no complete '{method}' run for this model and task; run atlas ingest "
                         f"--method {method} first")
    return int(run_id)
