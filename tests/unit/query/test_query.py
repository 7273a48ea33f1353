"""Query layer: views, overlaps, specificity, compare, SQL, import, export and plots."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from atlas.errors import NotFound
from atlas.query import compare_models, overlap_matrix, specificity
from atlas.query.core import rows
from atlas.store import open_db
from cli.main import app
from tests.helpers import PUBLISHED_DIR, SNI_DIR, save_tiny
from tests.helpers import ROOT_DIR as ROOT

runner = CliRunner()
PAPER = ["task075", "task1645", "task195", "task274", "task379", "task391", "task512", "task566"]


@pytest.fixture(scope="module")
def published_db(tmp_path_factory):
    db = tmp_path_factory.mktemp("pub") / "p.duckdb"
    for task in PAPER:
        res = runner.invoke(app, ["import", str(PUBLISHED_DIR / f"{task}.pth"), "--model",
                                  "llama-2-7b-chat", "--task", task, "--layers", "32",
                                  "--d-mlp", "11008", "--db", str(db)])
        assert res.exit_code == 0, res.output
    return db


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory):
    base = tmp_path_factory.mktemp("tinyq")
    db = base / "t.duckdb"
    for family in ("llama", "qwen2"):
        folder = save_tiny(family, base / f"tiny-{family}")
        res = runner.invoke(app, ["ingest", "--model", str(folder), "--sni-dir", str(SNI_DIR),
                                  "--db", str(db), "--shots", "1", "--examples", "4",
                                  "--task", "task379", "--task", "task195", "--task", "task391",
                                  "--method", "cgvst", "--method", "random"])
        assert res.exit_code == 0, res.output
    return db


def test_published_sets_match_the_paper_facts(published_db):
    engine = open_db(published_db, read_only=True)
    matrix = overlap_matrix(engine, "llama-2-7b-chat", "cgvst", "n_shared")
    assert np.all(np.diag(matrix.values) == 17612)
    jac = overlap_matrix(engine, "llama-2-7b-chat", "cgvst", "jaccard").values
    off = jac[~np.eye(8, dtype=bool)]
    assert 0.21 < off.min() < 0.23 and 0.36 < off.max() < 0.38
    assert np.allclose(jac, jac.T)
    res = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM (SELECT layer, neuron FROM "
                              "neuron_set_members GROUP BY ALL HAVING count(*) = 8)",
                              "--db", str(published_db), "--format", "json"])
    assert json.loads(res.output) == [{"n": 2268}]
    res = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM (SELECT DISTINCT layer, neuron "
                              "FROM neuron_set_members)", "--db", str(published_db), "-f", "csv"])
    assert res.output.split() == ['"n"', "58103"] or res.output.split() == ["n", "58103"]
    rows = specificity(engine, "llama-2-7b-chat", "cgvst")
    assert len(rows) == 8 and all(r["size"] == 17612 for r in rows)
    unique_total = sum(r["n_unique"] for r in rows)
    only_one = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM unique_neurons",
                                   "--db", str(published_db), "-f", "json"])
    assert json.loads(only_one.output) == [{"n": unique_total}]
    engine.dispose()


def test_import_rejects_bad_shapes(tmp_path):
    db = tmp_path / "x.duckdb"
    res = runner.invoke(app, ["import", str(PUBLISHED_DIR / "task195.pth"), "--model", "m",
                              "--task", "task195", "--layers", "30", "--d-mlp", "11008",
                              "--db", str(db)])
    assert res.exit_code == 2 and "32 layers" in res.output
    res = runner.invoke(app, ["import", str(PUBLISHED_DIR / "task195.pth"), "--model", "m",
                              "--task", "task195", "--d-mlp", "100", "--db", str(db)])
    assert res.exit_code == 2 and "≥ --d-mlp 100" in res.output
    res = runner.invoke(app, ["import", str(tmp_path / "none.pth"), "--model", "m",
                              "--task", "t", "--db", str(db)])
    assert res.exit_code == 2 and "not found" in res.output


def test_overlap_and_specificity_on_ingested_sets(tiny_db):
    engine = open_db(tiny_db, read_only=True)
    model = [n for n in _models(tiny_db) if "llama" in n][0]
    matrix = overlap_matrix(engine, model, "cgvst", "n_shared")
    assert matrix.values.shape == (3, 3)
    # diagonal = set size = int(2 · 48 · 0.05)
    assert list(np.diag(matrix.values)) == [4, 4, 4]
    spec = specificity(engine, model, "cgvst")
    for row in spec:
        others = [r for r in spec if r is not row]
        assert 0 <= row["n_unique"] <= row["size"]
        assert row["specificity"] == pytest.approx(row["n_unique"] / row["size"])
        assert others
    res = runner.invoke(app, ["specificity", "--model", model, "--db", str(tiny_db),
                              "--neurons", "5"])
    assert res.exit_code == 0 and "lowest-entropy neurons" in res.output
    res = runner.invoke(app, ["overlap", "--model", model, "--method", "gv", "--db", str(tiny_db)])
    assert res.exit_code == 2 and "has no 'gv' sets" in res.output
    res = runner.invoke(app, ["overlap", "--model", "nope", "--db", str(tiny_db)])
    assert res.exit_code == 2 and "no model 'nope'" in res.output
    engine.dispose()


def _models(db):
    res = runner.invoke(app, ["sql", "SELECT name FROM models ORDER BY model_id", "--db", str(db),
                              "-f", "json"])
    return [r["name"] for r in json.loads(res.output)]


def test_compare_models_same_shape(tiny_db):
    engine = open_db(tiny_db, read_only=True)
    a, b = _models(tiny_db)
    out = compare_models(engine, a, b, "cgvst")
    assert [r["task"] for r in out] == sorted(r["task"] for r in out) and len(out) == 3
    for row in out:
        assert 0 <= row["depth_a"] <= 1 and 0 <= row["depth_distance"] <= 1
        assert 0 <= row["jaccard"] <= 1 and -1 <= row["spearman"] <= 1
    same = compare_models(engine, a, a, "cgvst")
    assert all(r["jaccard"] == 1 and r["spearman"] == pytest.approx(1) for r in same)
    assert all(r["depth_distance"] == 0 for r in same)
    engine.dispose()


def test_sql_is_read_only_and_reports_errors(tiny_db):
    res = runner.invoke(app, ["sql", "DELETE FROM runs", "--db", str(tiny_db)])
    assert res.exit_code == 2 and "read-only" in res.output
    res = runner.invoke(app, ["sql", "SELECT nope FROM runs", "--db", str(tiny_db)])
    assert res.exit_code == 2 and "SQL error" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM runs", "--db", str(tiny_db),
                              "-f", "json"])
    assert json.loads(res.output) == [{"n": 12}]
    blob = "SELECT '\\xFF\\x00'::BLOB AS b, [1, 2] AS l"  # BLOBs as hex, lists as JSON
    res = runner.invoke(app, ["sql", blob, "--db", str(tiny_db), "-f", "csv"])
    assert res.exit_code == 0 and res.output.splitlines() == ['"b","l"', '"ff00","[1, 2]"']
    res = runner.invoke(app, ["sql", blob, "--db", str(tiny_db), "-f", "json"])
    assert json.loads(res.output) == [{"b": "ff00", "l": [1, 2]}]



def test_sql_writes_every_duckdb_type_and_repeated_names_in_every_format(tiny_db, tmp_path):
    """Types Arrow cannot carry to every format (INTERVAL, BIT, BIGNUM, UNION) come back as
    DuckDB's text; NaN and infinities as JSON null; repeated column names are made unique (JSON
    rows are objects); table cells and errors are plain text, not markup."""
    query = ("SELECT max(finished_at) - min(finished_at) >= INTERVAL 0 SECOND AS ok, "
             "INTERVAL 90 SECOND AS d, [INTERVAL 2 DAY] AS l, 1 AS n, 2 AS n FROM runs")
    res = runner.invoke(app, ["sql", query, "--db", str(tiny_db), "-f", "csv"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines() == ['"ok","d","l","n","n_1"', 'true,"00:01:30","[2 days]",1,2']
    res = runner.invoke(app, ["sql", query, "--db", str(tiny_db), "-f", "json"])
    assert json.loads(res.output) == [{"ok": True, "d": "00:01:30", "l": "[2 days]", "n": 1,
                                       "n_1": 2}]
    res = runner.invoke(app, ["sql", query, "--db", str(tiny_db), "-f", "parquet", "-o",
                              str(tmp_path / "x.parquet")])
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "x.parquet").column("d").to_pylist() == ["00:01:30"]
    res = runner.invoke(app, ["sql", "SELECT finished_at - started_at AS took, 1 AS n, 2 AS n "
                              "FROM runs LIMIT 1", "--db", str(tiny_db)])
    assert res.exit_code == 0 and "MonthDayNano" not in res.output
    assert res.output.count("│") == 4 and " n_1 " in res.output  # every column shown
    res = runner.invoke(app, ["sql", "SELECT name FROM models WHERE false", "--db", str(tiny_db)])
    assert res.exit_code == 0 and "name" in res.output  # an empty result keeps its header

    odd = ("SELECT '101'::BIT AS b, 12345678901234567890123::VARINT AS v, "
           "union_value(k := 2) AS u, {'BIT': 1} AS s, 'NaN'::DOUBLE AS x, ['inf'::DOUBLE] AS l")
    res = runner.invoke(app, ["sql", odd, "--db", str(tiny_db), "-f", "json"])
    assert res.exit_code == 0, res.output  # valid JSON: no NaN or Infinity tokens
    assert json.loads(res.output) == [{"b": "101", "v": "12345678901234567890123", "u": "2",
                                       "s": {"BIT": 1}, "x": None, "l": [None]}]
    res = runner.invoke(app, ["sql", odd, "--db", str(tiny_db), "-f", "parquet", "-o",
                              str(tmp_path / "odd.parquet")])
    assert res.exit_code == 0, res.output
    assert pq.read_table(tmp_path / "odd.parquet").column("b").to_pylist() == ["101"]
    res = runner.invoke(app, ["sql", odd, "--db", str(tiny_db)])
    assert res.exit_code == 0 and "[inf]" in res.output  # cells are text, not rich markup
    res = runner.invoke(app, ["overlap", "--model", "[bold]x", "--db", str(tiny_db)])
    assert res.exit_code == 2 and "no model '[bold]x'" in res.output


def test_export_and_plots(tiny_db, tmp_path):
    res = runner.invoke(app, ["export", str(tmp_path / "pq"), "--db", str(tiny_db)])
    assert res.exit_code == 0, res.output
    scores = pq.read_table(tmp_path / "pq" / "neuron_scores.parquet")
    assert scores.num_rows == 12 * 96
    assert (tmp_path / "pq" / "set_overlaps.parquet").exists()
    a, b = _models(tiny_db)
    for args in (["overlap", "--model", a], ["layers", "--model", a],
                 ["compare", "--model", a, "--model", b]):
        out = tmp_path / f"{args[0]}.png"
        res = runner.invoke(app, ["plot", *args, "-o", str(out), "--db", str(tiny_db)])
        assert res.exit_code == 0, res.output
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000


def test_every_table_and_view_is_exported_and_snapshotted(tiny_db, tmp_path):
    """The lists cannot drift from the schema: every table and view of the migrated database
    is exported, every table snapshotted (unless it holds only runs in progress), and the
    schema module, export and the README's contract name the same ones."""
    import duckdb

    from atlas.query.sql import VIEWS
    from atlas.store.schema import metadata
    from atlas.store.snapshot import TABLES, TRANSIENT

    con = duckdb.connect(str(tiny_db), read_only=True)
    found = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                             "WHERE table_name <> 'alembic_version'").fetchall())
    con.close()
    tables = {n for n, kind in found.items() if kind == "BASE TABLE"}
    views = {n for n, kind in found.items() if kind == "VIEW"}
    assert tables == set(metadata.tables) and views == set(VIEWS)
    assert set(TABLES) | set(TRANSIENT) == tables and not set(TABLES) & set(TRANSIENT)
    res = runner.invoke(app, ["export", str(tmp_path / "pq"), "--db", str(tiny_db)])
    assert res.exit_code == 0, res.output
    assert {p.stem for p in (tmp_path / "pq").glob("*.parquet")} == tables | views
    contract = (ROOT / "README.md").read_text().split("## Tables and views", 1)[1].split("\n## ")[0]
    assert all(f"`{name}`" in contract for name in tables | views)


def test_import_lape_format_one_set_per_language(tmp_path):
    import torch

    path = tmp_path / "lape.pth"
    torch.save([[torch.tensor([0, 5]), torch.tensor([3])], [torch.tensor([5]), torch.tensor([])]],
               path)
    db = tmp_path / "l.duckdb"
    res = runner.invoke(app, ["import", str(path), "--model", "m", "--task", "en,fr", "--format",
                              "lape", "--d-mlp", "8", "--db", str(db)])
    assert res.exit_code == 0, res.output
    out = runner.invoke(app, ["sql", "SELECT task, size FROM set_sizes ORDER BY task",
                              "--db", str(db), "-f", "json"])
    assert json.loads(out.output) == [{"task": "en", "size": 3}, {"task": "fr", "size": 1}]
    res = runner.invoke(app, ["import", str(path), "--model", "m", "--task", "en", "--format",
                              "lape", "--d-mlp", "8", "--db", str(db)])
    assert res.exit_code == 2 and "2 set(s)" in res.output


def test_random_sets_differ_between_tasks(tiny_db):
    engine = open_db(tiny_db, read_only=True)
    model = _models(tiny_db)[0]
    jac = overlap_matrix(engine, model, "random", "jaccard").values
    assert np.allclose(np.diag(jac), 1)
    assert jac[~np.eye(len(jac), dtype=bool)].max() < 1
    engine.dispose()


def test_mantel_matches_brute_force():
    import itertools

    from atlas.query.compare import mantel

    rng = np.random.default_rng(0)
    n = 5
    a = rng.random((n, n))
    a = (a + a.T) / 2
    b = a + rng.normal(0, 0.05, (n, n))
    b = (b + b.T) / 2
    iu = np.triu_indices(n, 1)
    observed = np.corrcoef(a[iu], b[iu])[0, 1]
    null = [np.corrcoef(a[iu], b[np.ix_(p, p)][iu])[0, 1] for p in itertools.permutations(range(n))]
    got = mantel(a, b)
    assert got["exact"] and got["n_permutations"] == 120
    assert got["r"] == pytest.approx(observed)
    assert got["p"] == pytest.approx(np.mean(np.abs(null) >= abs(observed) - 1e-12))
    assert mantel(a, a)["r"] == pytest.approx(1.0)
    sampled = mantel(a, b, n_permutations=50)
    assert not sampled["exact"] and sampled["n_permutations"] == 51


def test_compare_reports_task_similarity_agreement(tiny_db, tmp_path):
    import shutil

    from atlas.query.compare import mantel

    db = tmp_path / "with_published.duckdb"
    shutil.copy(tiny_db, db)
    for task in ("task195", "task379", "task391"):
        res = runner.invoke(app, ["import", str(PUBLISHED_DIR / f"{task}.pth"), "--model",
                                  "llama-2-7b-chat", "--task", task, "--layers", "32",
                                  "--d-mlp", "11008", "--db", str(db)])
        assert res.exit_code == 0, res.output
    engine = open_db(db, read_only=True)
    tiny = [r["name"] for r in rows(engine, "SELECT name FROM models WHERE name LIKE 'tiny-%' "
                                            "ORDER BY name")]
    a = overlap_matrix(engine, tiny[0], "cgvst").values
    b = overlap_matrix(engine, "llama-2-7b-chat", "cgvst").values  # same three tasks, same order
    engine.dispose()
    expected = mantel(a, b)
    res = runner.invoke(app, ["compare", "-m", tiny[0], "-m", "llama-2-7b-chat", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert "over 3 shared tasks" in res.output
    assert f"Mantel r = {expected['r']:+.3f}, p = {expected['p']:.3g} (6 permutations)" in res.output


def test_method_overlap_matches_set_arithmetic(tmp_path):
    """Per task, the agreement of two methods' sets, against Python set arithmetic; the sets of
    another model with the same tasks and of other tasks do not leak in."""
    import torch

    from atlas.query import method_overlap
    from atlas.store import repository as repo

    db = tmp_path / "m.duckdb"
    generator = torch.Generator().manual_seed(1)
    engine = open_db(db)
    members: dict[tuple[str, str], set] = {}
    with engine.begin() as conn:
        for model in ("a", "b"):
            model_id = repo.ensure_model(conn, model, "llama", 3, 8, "r", "float32")
            for k in range(3):
                task_id = repo.ensure_task(conn, f"task{k + 1}_x", "test", 1, "h")
                for method in ("cgvst", "gv") if k < 2 else ("cgvst",):  # task3: no gv set
                    mask = torch.rand(3, 8, generator=generator) < 0.5  # [n_layers, d_mlp]
                    repo.write_set(conn, f"{model}/task{k + 1}/{method}", model_id, task_id, None,
                                   "top:0.5", mask, method)
                    if model == "a":
                        members[f"task{k + 1}", method] = {tuple(i) for i in mask.nonzero().tolist()}
    got = {m: method_overlap(engine, "a", "cgvst", ["gv"], m)
           for m in ("jaccard", "overlap_coef", "n_shared")}
    assert [r["task"] for r in got["jaccard"]] == ["task1", "task2", "task3"]
    for k, task in enumerate(("task1", "task2")):
        a, b = members[task, "cgvst"], members[task, "gv"]
        assert got["n_shared"][k]["gv"] == len(a & b) > 0
        assert got["jaccard"][k]["gv"] == pytest.approx(len(a & b) / len(a | b))
        assert got["overlap_coef"][k]["gv"] == pytest.approx(len(a & b) / min(len(a), len(b)))
        assert got["jaccard"][k]["size"] == len(a)
    assert got["jaccard"][2]["gv"] is None
    engine.dispose()
    res = runner.invoke(app, ["overlap", "--model", "a", "--versus", "gv", "--db", str(db),
                              "-f", "json"])
    assert res.exit_code == 0, res.output
    assert [r["gv"] for r in json.loads(res.output)] == [r["gv"] for r in got["jaccard"]]
    for bad, message in ((["--versus", "cgvst"], "other than 'cgvst'"),
                         (["--versus", "lape"], "has no 'lape' sets")):
        res = runner.invoke(app, ["overlap", "--model", "a", *bad, "--db", str(db)])
        assert res.exit_code == 2 and message in res.output, res.output
    from fastapi.testclient import TestClient

    from atlas.serve.app import create_app

    client = TestClient(create_app(db))  # the same answer over HTTP, csv too
    served = client.get("/method-overlaps", params={"model": "a", "versus": "gv"})
    assert served.status_code == 200, served.text
    assert [r["gv"] for r in served.json()["rows"]] == [r["gv"] for r in got["jaccard"]]
    csv_rows = client.get("/method-overlaps", params={"model": "a", "versus": "gv",
                                                      "measure": "n_shared", "format": "csv"})
    assert csv_rows.text.splitlines()[1:3] == [f'"task{k + 1}",{r["size"]},{r["gv"]}'
                                               for k, r in enumerate(got["n_shared"][:2])]
    bad = client.get("/method-overlaps", params={"model": "a", "versus": "lape"})
    assert bad.status_code == 404 and "has no 'lape' sets" in bad.json()["error"]


def test_one_definition_of_the_set_pair_measures(tiny_db):
    """The set_overlaps view, overlap and compare compute a pair's measures by one definition:
    the view's SQL holds pair_measures' text, and compare's Jaccard equals the view's."""
    import re
    import runpy

    from atlas.query.overlap import pair_measures

    migrations = sorted((ROOT / "migrations" / "versions").glob("0*.py"))
    defined = [runpy.run_path(str(m)).get("VIEW_SQL", {}).get("set_overlaps") for m in migrations]
    view = [sql for sql in defined if sql][-1]  # the newest definition of the view
    squeeze = lambda sql: re.sub(r"\s+", "", sql).lower()  # noqa: E731
    assert squeeze(pair_measures("sh.n_shared", "a.size", "b.size")) in squeeze(view)
    engine = open_db(tiny_db, read_only=True)
    a, b = _models(tiny_db)

    def members(model: str, task: str) -> set:
        return {(r["layer"], r["neuron"]) for r in rows(
            engine, "SELECT layer, neuron FROM neuron_set_members JOIN task_sets USING (set_id) "
                    "WHERE model = :m AND task = :t AND method = 'cgvst'", m=model, t=task)}
    for row in compare_models(engine, a, b, "cgvst"):  # brute force over the members
        x, y = members(a, row["task"]), members(b, row["task"])
        assert row["n_shared"] == len(x & y) and row["jaccard"] == len(x & y) / len(x | y)
    engine.dispose()


def test_a_set_pair_is_the_set_operations(tmp_path):
    from atlas.query.overlap import set_pair
    from atlas.store.db import open_db
    from tests.helpers import ingested_tiny

    _, db, _ = ingested_tiny(tmp_path, tasks=("task379", "task195"))
    engine = open_db(db, read_only=True)
    try:
        members = {s: set(map(tuple, [(r["layer"], r["neuron"]) for r in rows(
            engine, "SELECT layer, neuron FROM neuron_set_members WHERE set_id = :s", s=s)]))
            for s in (1, 2)}
        got = set_pair(engine, 1, 2)
        assert set(got.shared) == members[1] & members[2]
        assert set(got.a_only) == members[1] - members[2]
        assert set(got.b_only) == members[2] - members[1]
        assert got.n_shared + got.n_a_only == len(members[1])
        assert got.jaccard == pytest.approx(len(members[1] & members[2]) / len(members[1] | members[2]))
        assert len(set_pair(engine, 1, 2, limit=1).a_only) <= 1
        with pytest.raises(NotFound):
            set_pair(engine, 1, 999)
    finally:
        engine.dispose()
