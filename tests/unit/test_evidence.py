"""The evidence job end to end on a tiny model: stored rows equal a direct recording, the
neuron's evidence and the token search read them, a rerun reuses the run, a killed run leaves
nothing visible, and snapshot/restore/export carry the tables."""

from __future__ import annotations

import dataclasses
import json

import duckdb
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import SNI_DIR, save_tiny

runner = CliRunner()
EVIDENCE_TABLES = ["evidence_runs", "evidence_contexts", "neuron_exemplars", "neuron_quantiles",
                   "neuron_density", "neuron_logits", "vocab"]


def rows_of(db, sql):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def describe(folder, db, *extra):
    return runner.invoke(app, ["describe", "--model", str(folder), "--task", "task195", "--task",
                               "task379", "--sni-dir", str(SNI_DIR), "--examples", "3", "--k", "3",
                               "--samples", "8", "--dtype", "float32", "--db", str(db), *extra])


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evidence")
    folder = save_tiny("llama", tmp / "tiny")
    db = tmp / "a.duckdb"
    res = describe(folder, db)
    assert res.exit_code == 0, res.output
    return folder, db


def test_stored_exemplars_are_the_recording(described):
    from atlas.evidence import DescribeOptions, build_corpus
    from atlas.models.loading import load_model
    from atlas.scoring.exemplars import record_exemplars
    from atlas.tasks.sni import load_task

    folder, db = described
    loaded = load_model(str(folder), dtype="float32")
    tasks = [load_task(t, str(SNI_DIR)) for t in ("task195", "task379")]
    task_ids = [rows_of(db, f"SELECT task_id FROM tasks WHERE name = '{t.name}'")[0][0] for t in tasks]
    corpus = build_corpus(loaded, tasks, task_ids, DescribeOptions(examples=3))
    rec = record_exemplars(loaded.model, corpus.sequences, corpus.task_ids, k=3, n_samples=8)
    stored = rows_of(db, "SELECT layer, neuron, sign, rank, activation, c.token_ids, c.peak "
                         "FROM neuron_exemplars JOIN evidence_contexts c USING (evidence_id, "
                         "context_id) ORDER BY ALL")
    assert len(stored) == 2 * loaded.n_layers * 3 * loaded.d_mlp
    for layer, neuron, sign, rank, activation, token_ids, peak in stored[::37]:
        s = 0 if sign == 1 else 1
        assert activation == pytest.approx(float(rec.value[s, layer, rank - 1, neuron]), abs=1e-5)
        seq, pos = int(rec.seq[s, layer, rank - 1, neuron]), int(rec.pos[s, layer, rank - 1, neuron])
        assert token_ids[peak] == corpus.sequences[seq][pos]
    density = rows_of(db, "SELECT sum(n_positive), sum(list_sum(hist)) FROM neuron_density")[0]
    assert density[1] == sum(d.n_tokens for d in rec.density.values()) * loaded.n_layers * loaded.d_mlp
    assert density[0] == sum(int(d.n_positive.sum()) for d in rec.density.values())


def test_neuron_evidence_and_token_search(described):
    from atlas.query import evidence as ev
    from atlas.store.db import open_db

    folder, db = described
    engine = open_db(db, read_only=True)
    try:
        got = ev.neuron_evidence(engine, folder.name, 1, 5)
        assert len(got.top) == 3 and len(got.bottom) == 3 and len(got.promoted) == 20
        assert got.top[0].activation >= got.top[1].activation >= got.top[2].activation
        assert got.bottom[0].activation <= got.bottom[1].activation
        assert got.top[0].activations[got.top[0].peak] == pytest.approx(got.top[0].activation)
        assert len(got.top[0].tokens) == len(got.top[0].activations)
        assert [q["bin"] for q in got.quantiles] == [0, 1, 2, 3]
        assert len(got.density) == 2 and all(d["n_tokens"] > 0 for d in got.density)
        assert [p["logit"] for p in got.promoted] == sorted([p["logit"] for p in got.promoted],
                                                            reverse=True)
        assert got.as_dict() == dataclasses.asdict(got)  # the served answer's plain values
        peak_token = got.top[0].tokens[got.top[0].peak]
        found = ev.neurons_for_token(engine, folder.name, peak_token, limit=10000)
        assert (1, 5) in {(r["layer"], r["neuron"]) for r in found}
    finally:
        engine.dispose()
    res = runner.invoke(app, ["neurons", "--model", folder.name, "--layer", "1", "--neuron", "5",
                              "--db", str(db)])
    assert res.exit_code == 0 and json.loads(res.output)["top"][0]["task"]


def test_rerun_reuses_and_a_killed_run_stays_invisible(described, tmp_path, monkeypatch):
    folder, db = described
    res = describe(folder, db)
    assert res.exit_code == 0 and "reused" in res.output
    assert rows_of(db, "SELECT count(*) FROM evidence_runs") == [(1,)]
    # a run that dies while storing leaves no rows and no complete run
    import shutil

    import atlas.store.evidence as store

    copy = tmp_path / "b.duckdb"
    shutil.copy(db, copy)
    before = {t: rows_of(copy, f"SELECT count(*) FROM {t}") for t in EVIDENCE_TABLES}
    original = store.insert_arrow
    calls = []

    def dies(conn, name, data):
        calls.append(name)
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed mid-write
        original(conn, name, data)

    monkeypatch.setattr(store, "insert_arrow", dies)
    res = describe(folder, copy, "--seed", "1")
    assert res.exit_code != 0
    after = {t: rows_of(copy, f"SELECT count(*) FROM {t}") for t in EVIDENCE_TABLES}
    assert {t: after[t] for t in EVIDENCE_TABLES if t != "evidence_runs"} == \
        {t: before[t] for t in EVIDENCE_TABLES if t != "evidence_runs"}
    assert rows_of(copy, "SELECT count(*) FROM evidence_runs WHERE status = 'complete'") == [(1,)]
    monkeypatch.setattr(store, "insert_arrow", original)
    res = describe(folder, copy, "--seed", "1")  # resumed: the same rows as a clean run
    assert res.exit_code == 0, res.output
    clean = tmp_path / "c.duckdb"
    shutil.copy(db, clean)
    assert describe(folder, clean, "--seed", "1").exit_code == 0
    q = ("SELECT layer, neuron, sign, rank, activation, activations FROM neuron_exemplars "
         "WHERE evidence_id = (SELECT max(evidence_id) FROM evidence_runs) ORDER BY ALL")
    assert rows_of(copy, q) == rows_of(clean, q)
    assert rows_of(copy, "SELECT count(*) FROM evidence_runs") == [(2,)]


def test_snapshot_restore_and_export_carry_the_evidence(described, tmp_path):
    folder, db = described
    snap = tmp_path / "snap"
    assert runner.invoke(app, ["db", "snapshot", str(snap), "--db", str(db)]).exit_code == 0
    restored = tmp_path / "r.duckdb"
    res = runner.invoke(app, ["db", "restore", str(snap), "--db", str(restored)])
    assert res.exit_code == 0, res.output
    for table in EVIDENCE_TABLES:
        q = f"SELECT * FROM {table} ORDER BY ALL"
        if table == "evidence_runs":
            q = "SELECT evidence_id, model_id, status, params_key, n_tokens FROM evidence_runs"
        assert rows_of(restored, q) == rows_of(db, q), table
    out = tmp_path / "export"
    out.mkdir()
    res = runner.invoke(app, ["export", str(out / "x"), "--db", str(db)])
    assert res.exit_code == 0, res.output
    exported = {p.stem for p in (out / "x").glob("*.parquet")}
    assert set(EVIDENCE_TABLES) | {"exemplar_peaks"} <= exported


def test_a_sets_neurons_with_their_summaries(tmp_path):
    """`set_neurons` against a brute force over the stored scores (both orders), and each
    summary against the neuron's own evidence."""
    from statistics import mean

    from atlas.query import evidence as ev
    from atlas.store.db import open_db
    from tests.helpers import ingested_tiny

    folder, db, _ = ingested_tiny(tmp_path, tasks=("task379", "task195", "task391"))
    assert describe(folder, db).exit_code == 0
    set_id, run_id, task_id = rows_of(db, "SELECT set_id, run_id, task_id FROM neuron_sets "
                                          "WHERE name LIKE '%task379/cgvst'")[0]
    score = {(l, n): s for l, n, s in rows_of(  # noqa: E741
        db, f"SELECT layer, neuron, score FROM neuron_scores WHERE run_id = {run_id}")}
    others: dict[tuple, list[float]] = {}
    for l, n, s in rows_of(db, f"""SELECT layer, neuron, score FROM neuron_scores JOIN runs
            USING (run_id) WHERE task_id <> {task_id} AND method = 'cgvst'"""):  # noqa: E741
        others.setdefault((l, n), []).append(s)
    members = [tuple(m) for m in rows_of(db, "SELECT layer, neuron FROM neuron_set_members "
                                             f"WHERE set_id = {set_id}")]
    by_score = sorted(members, key=lambda m: (-score[m], m))
    ratio = {m: score[m] / mean(others[m]) for m in members}
    by_ratio = sorted(members, key=lambda m: (-ratio[m], -score[m], m))
    engine = open_db(db, read_only=True)
    try:
        got = ev.set_neurons(engine, set_id, 100, "score")
        assert [(r["layer"], r["neuron"]) for r in got] == by_score
        specific = ev.set_neurons(engine, set_id, 2, "specificity")
        assert [(r["layer"], r["neuron"]) for r in specific] == by_ratio[:2]
        assert specific[0]["ratio"] == pytest.approx(ratio[by_ratio[0]], rel=1e-5)
        for r in got:
            one = ev.neuron_evidence(engine, folder.name, r["layer"], r["neuron"])
            assert r["top_tokens"] == [c.tokens[c.peak] for c in one.top[:3]]
            assert r["promoted"] == [p["token"] for p in one.promoted[:5]]
        with pytest.raises(ev.NotFound):
            ev.set_neurons(engine, 999)
    finally:
        engine.dispose()


def test_restricted_to_stored_sets_keeps_their_rows_only(tmp_path):
    """`describe --sets-of cgvst` stores the rows of the sets' neurons only, each equal to the
    full run's row; a set of another model is refused."""
    from tests.helpers import ingested_tiny

    folder, db, _ = ingested_tiny(tmp_path, tasks=("task379", "task195"))
    assert describe(folder, db).exit_code == 0
    res = describe(folder, db, "--sets-of", "cgvst")
    assert res.exit_code == 0, res.output
    full, part = [r[0] for r in rows_of(db, "SELECT evidence_id FROM evidence_runs WHERE "
                                            "params->>'source' IS NULL ORDER BY 1")]
    members = set(rows_of(db, "SELECT DISTINCT layer, neuron FROM neuron_set_members m JOIN "
                              "neuron_sets s USING (set_id) WHERE s.method = 'cgvst'"))
    for table in ("neuron_exemplars", "neuron_quantiles", "neuron_density"):
        kept = set(rows_of(db, f"SELECT DISTINCT layer, neuron FROM {table} "
                               f"WHERE evidence_id = {part}"))
        assert kept == members, table
    same = rows_of(db, f"""
        SELECT count(*), count(*) FILTER (WHERE a.activation = b.activation
                                          AND a.activations = b.activations)
        FROM neuron_exemplars a JOIN neuron_exemplars b USING (layer, neuron, sign, rank)
        WHERE a.evidence_id = {full} AND b.evidence_id = {part}""")[0]
    assert same[0] == same[1] == 2 * 3 * len(members)
    params = json.loads(rows_of(db, f"SELECT params FROM evidence_runs WHERE evidence_id = {part}")[0][0])
    assert params["sets_of"] == ["cgvst"] and params["neurons"]["n"] == len(members)
    bad = describe(folder, db, "--set", "999")
    assert bad.exit_code == 2 and "no set with id 999" in bad.output
    from atlas.query import evidence as ev
    from atlas.store.db import open_db

    engine = open_db(db, read_only=True)
    try:  # a neuron outside the sets still reads the full run; one inside, the newest
        outside = next((l, n) for l in range(2) for n in range(48) if (l, n) not in members)  # noqa: E741
        inside = next(iter(members))
        assert ev.neuron_evidence(engine, folder.name, *outside).evidence_id == full
        assert ev.neuron_evidence(engine, folder.name, *inside).evidence_id == part
        assert ev.latest_evidence(engine, 1) == full
    finally:
        engine.dispose()


def _ingest(folder, db, *extra):
    return runner.invoke(app, [
        "ingest", "--model", str(folder), "--sni-dir", str(SNI_DIR), "--db", str(db), "--shots",
        "1", "--dtype", "float32", "--examples", "6", "--task", "task379", "--task", "task195",
        "--checkpoint-every", "4", "--method", "cgvst", "--method", "gv", *extra])


EVIDENCE_ROWS = {
    "neuron_exemplars": "SELECT x.layer, x.neuron, x.sign, x.rank, x.activation, x.activations, "
                        "c.token_ids, c.peak FROM neuron_exemplars x JOIN evidence_contexts c "
                        "USING (evidence_id, context_id)",
    "neuron_quantiles": "SELECT * EXCLUDE (evidence_id, context_id) FROM neuron_quantiles",
    "neuron_density": "SELECT * EXCLUDE (evidence_id) FROM neuron_density"}


def _evidence_rows(db) -> dict[str, list]:
    return {t: rows_of(db, f"{sql} ORDER BY ALL") for t, sql in EVIDENCE_ROWS.items()}


def test_ingest_records_exemplars_in_its_scoring_pass(tmp_path, monkeypatch):
    """--exemplars read live in the scoring pass equal those read by a pass of their own (runs
    reused), and a killed ingest leaves no evidence and resumes to the same rows."""
    folder = save_tiny("llama", tmp_path / "tiny")
    live = _ingest(folder, tmp_path / "a.duckdb")
    assert live.exit_code == 0, live.output
    assert "exemplars stored as evidence run" in live.output and "reused" not in live.output
    expected = _evidence_rows(tmp_path / "a.duckdb")
    assert len(expected["neuron_exemplars"]) == 2 * 8 * 2 * 48
    params = json.loads(rows_of(tmp_path / "a.duckdb", "SELECT params FROM evidence_runs")[0][0])
    assert params["source"] == "ingest" and params["k"] == 8 and params["prompt_rule"] == "reference"

    later = tmp_path / "b.duckdb"
    assert _ingest(folder, later, "--exemplars", "0").exit_code == 0
    assert rows_of(later, "SELECT count(*) FROM evidence_runs")[0][0] == 0
    fallback = _ingest(folder, later)
    assert "whose runs were reused" in fallback.output
    assert _evidence_rows(later) == expected

    import atlas.ingest as ingest_module

    killed, calls = tmp_path / "c.duckdb", []
    real = ingest_module.reduce_neurons

    def dies_on_the_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "reduce_neurons", dies_on_the_third_chunk)
    assert _ingest(folder, killed).exit_code != 0
    assert rows_of(killed, "SELECT count(*) FROM evidence_runs WHERE status = 'complete'") \
        == [(0,)]
    monkeypatch.setattr(ingest_module, "reduce_neurons", real)
    resumed = _ingest(folder, killed)
    assert resumed.exit_code == 0, resumed.output
    assert _evidence_rows(killed) == expected
    again = _ingest(folder, killed)
    assert "reusing complete evidence run" in again.output
