"""`atlas split`: each task's set into the neurons most tasks share and those specific to it."""

from __future__ import annotations

import torch
from typer.testing import CliRunner

from atlas.intervene.experiment import find_set
from atlas.store import open_db
from atlas.store import repository as repo
from cli.main import app
from tests.helpers import query

runner = CliRunner()
N_LAYERS, D_MLP = 3, 8


def _atlas(path, n_tasks: int = 4) -> dict[str, set[tuple[int, int]]]:
    """An atlas of one model with a random set per task; returns each task's members."""
    generator = torch.Generator().manual_seed(0)
    engine = open_db(path)
    members = {}
    with engine.begin() as conn:
        model_id = repo.ensure_model(conn, "m", "llama", N_LAYERS, D_MLP, "r", "float32")
        for k in range(n_tasks):
            task = f"task{k + 1}_x"
            task_id = repo.ensure_task(conn, task, "test", 1, "h")
            mask = torch.rand(N_LAYERS, D_MLP, generator=generator) < 0.5  # [n_layers, d_mlp]
            repo.write_set(conn, f"m/task{k + 1}/cgvst", model_id, task_id, None, "top:0.5", mask,
                           "cgvst")
            members[task] = {tuple(ix) for ix in mask.nonzero().tolist()}
    engine.dispose()
    return members


def _stored(db, method: str) -> dict[str, set[tuple[int, int]]]:
    out: dict[str, set] = {}
    for task, layer, neuron in query(db, "SELECT task, layer, neuron FROM neuron_set_members "
                                         f"JOIN task_sets USING (set_id) WHERE method = '{method}'"):
        out.setdefault(task, set()).add((layer, neuron))
    return out


def test_split_matches_set_arithmetic_and_is_idempotent(tmp_path):
    db = tmp_path / "a.duckdb"
    members = _atlas(db)
    res = runner.invoke(app, ["split", "--model", "m", "--shared-in", "3", "--db", str(db)])
    assert res.exit_code == 0, res.output
    everyone = set().union(*members.values())
    shared = {n for n in everyone if sum(n in m for m in members.values()) >= 3}
    assert 0 < len(shared) < len(everyone)
    got_shared, got_specific = _stored(db, "cgvst-shared"), _stored(db, "cgvst-specific")
    for task, m in members.items():
        assert got_shared.get(task, set()) == m & shared
        assert got_specific.get(task, set()) == m - shared
    sizes = query(db, "SELECT method, rule, sum(size) FROM neuron_sets WHERE method LIKE 'cgvst-%' "
                      "GROUP BY ALL ORDER BY 1")
    assert sizes == [("cgvst-shared", "shared-in:3/4", sum(len(m & shared) for m in members.values())),
                     ("cgvst-specific", "shared-in:3/4", sum(len(m - shared) for m in members.values()))]
    engine = open_db(db)
    try:  # ablation finds a part as the set of (model, task, method)
        found = find_set(engine, "m", task="task2_x", method="cgvst-specific")
        assert found["size"] == len(members["task2_x"] - shared)
    finally:
        engine.dispose()
    n_sets = query(db, "SELECT count(*) FROM neuron_sets")
    again = runner.invoke(app, ["split", "--model", "m", "--shared-in", "3", "--db", str(db)])
    assert again.exit_code == 0 and "created" not in again.output
    assert query(db, "SELECT count(*) FROM neuron_sets") == n_sets == [(12,)]
    # another threshold: new current sets, the earlier ones kept (evaluations may refer to them)
    assert runner.invoke(app, ["split", "--model", "m", "--shared-in", "2", "--db", str(db)]
                         ).exit_code == 0
    assert query(db, "SELECT count(*) FROM neuron_sets") == [(20,)]
    shared_2 = {n for n in everyone if sum(n in m for m in members.values()) >= 2}
    assert _stored(db, "cgvst-specific") == {t: m - shared_2 for t, m in members.items()
                                             if m - shared_2}
    # the default: shared by more than half of the sets (3 of 4)
    assert runner.invoke(app, ["split", "--model", "m", "--db", str(db)]).exit_code == 0
    assert query(db, "SELECT DISTINCT rule FROM task_sets WHERE method = 'cgvst-shared'") == [
        ("shared-in:3/4",)]
    assert _stored(db, "cgvst-shared") == {t: m & shared for t, m in members.items() if m & shared}


def test_split_rejects_bad_input_and_stores_nothing(tmp_path):
    db = tmp_path / "a.duckdb"
    _atlas(db)
    for args, message in [(["--shared-in", "5"], "--shared-in 5 is out of range"),
                          (["--method", "gv"], "at least two 'gv' sets"),
                          (["--method", "cgvst-shared"], "already a split")]:
        res = runner.invoke(app, ["split", "--model", "m", *args, "--db", str(db)])
        assert res.exit_code == 2 and message in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1
    assert query(db, "SELECT count(*) FROM neuron_sets") == [(4,)]
