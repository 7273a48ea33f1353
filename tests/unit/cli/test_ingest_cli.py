"""End-to-end `atlas ingest` with tiny random models and SNI tasks from ../shared."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import atlas.ingest
from atlas.store.db import connect, current_revision, migrate
from cli.main import app
from tests.helpers import SNI_DIR, query, save_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return save_tiny("gpt2", tmp_path_factory.mktemp("tiny-gpt2"))


def ingest(model_dir, db, *extra):
    args = ["ingest", "--model", str(model_dir), "--sni-dir", str(SNI_DIR), "--db", str(db),
            "--shots", "1", "--examples", "6", "--batch-size", "3", "--checkpoint-every", "2",
            *extra]
    return runner.invoke(app, args)


@pytest.mark.parametrize("which", ["llama_dir", "gpt2_dir"])
def test_ingest_writes_complete_runs(which, request, tmp_path):
    model_dir = request.getfixturevalue(which)
    db = tmp_path / "a.duckdb"
    res = ingest(model_dir, db, "--task", "task379", "--task", "task195")
    assert res.exit_code == 0, res.output
    runs = query(db, "SELECT r.run_id, r.status, r.n_examples, m.n_layers * m.d_mlp, "
                     "(SELECT count(*) FROM neuron_scores s WHERE s.run_id = r.run_id) "
                     "FROM runs r JOIN models m USING (model_id) ORDER BY run_id")
    assert len(runs) == 2
    for _, status, n_examples, n_neurons, n_rows in runs:
        assert status == "complete" and n_examples == 6
        assert n_rows == n_neurons == 2 * 48
    sizes = query(db, "SELECT size, (SELECT count(*) FROM neuron_set_members m "
                      "WHERE m.set_id = s.set_id) FROM neuron_sets s")
    assert sizes == [(4, 4), (4, 4)]  # int(96 · 0.05)
    params = query(db, "SELECT params->>'shots', params->'prompt'->'markers'->>'user', "
                       "params->'versions'->>'torch' FROM runs LIMIT 1")[0]
    assert params[0] == "1" and params[1] == "<|im_start|>user" and params[2]


def test_idempotent_and_force(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task379").exit_code == 0
    again = ingest(llama_dir, db, "--task", "task379")
    assert again.exit_code == 0 and "reusing complete run" in again.output
    assert query(db, "SELECT count(*) FROM runs") == [(1,)]
    forced = ingest(llama_dir, db, "--task", "task379", "--force")
    assert forced.exit_code == 0
    assert query(db, "SELECT run_id, status FROM runs") == [(2, "complete")]
    assert query(db, "SELECT DISTINCT run_id FROM neuron_scores") == [(2,)]
    other = ingest(llama_dir, db, "--task", "task379", "--shots", "2")
    assert other.exit_code == 0
    assert query(db, "SELECT count(*) FROM runs WHERE status = 'complete'") == [(2,)]


def test_resume_after_crash_equals_uninterrupted(llama_dir, tmp_path, monkeypatch):
    clean = tmp_path / "clean.duckdb"
    assert ingest(llama_dir, clean, "--task", "task195").exit_code == 0
    expected = query(clean, "SELECT layer, neuron, score FROM neuron_scores ORDER BY 1, 2")

    crashed = tmp_path / "crashed.duckdb"
    real = atlas.ingest.reduce_neurons
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(atlas.ingest, "reduce_neurons", dying)
    res = ingest(llama_dir, crashed, "--task", "task195")
    assert res.exit_code == 130
    assert query(crashed, "SELECT status FROM runs") == [("running",)]
    assert query(crashed, "SELECT count(*) FROM neuron_scores") == [(0,)]
    assert query(crashed, "SELECT n_done FROM run_checkpoints") == [(2,)]
    monkeypatch.setattr(atlas.ingest, "reduce_neurons", real)
    res = ingest(llama_dir, crashed, "--task", "task195")
    assert res.exit_code == 0, res.output
    assert "resuming run 1 from example 2 of 6" in res.output
    assert query(crashed, "SELECT status, n_examples FROM runs") == [("complete", 6)]
    got = query(crashed, "SELECT layer, neuron, score FROM neuron_scores ORDER BY 1, 2")
    assert got == expected


def test_failure_marks_run_failed_and_keeps_other_runs(llama_dir, tmp_path, monkeypatch):
    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task379").exit_code == 0

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(atlas.ingest, "reduce_neurons", broken)
    res = ingest(llama_dir, db, "--task", "task195")
    assert res.exit_code != 0
    assert query(db, "SELECT status FROM runs ORDER BY run_id") == [("complete",), ("failed",)]
    assert query(db, "SELECT count(DISTINCT run_id) FROM neuron_scores") == [(1,)]


@pytest.mark.system
def test_second_writer_gets_clear_message(llama_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_LOCK_WAIT", "1")
    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task379").exit_code == 0
    import subprocess
    import sys
    holder = subprocess.Popen(
        [sys.executable, "-c",
         f"import duckdb,time; c=duckdb.connect({str(db)!r}); print('ok', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        res = ingest(llama_dir, db, "--task", "task195")
        assert res.exit_code == 2
        assert "in use by another process" in res.output
        assert "Traceback" not in res.output
    finally:
        holder.kill()
        holder.wait()
    assert query(db, "SELECT count(*), min(status) FROM runs") == [(1, "complete")]


def test_bad_arguments(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    res = ingest(llama_dir, db, "--task", "task9999")
    assert res.exit_code == 2 and "task 'task9999' not found" in res.output
    assert str(SNI_DIR) in res.output
    res = ingest(llama_dir, db, "--task", "task9999", "--task", "task379", "--skip-missing")
    assert res.exit_code == 0 and "skipping task 'task9999'" in res.output
    res = ingest(llama_dir, db, "--task", "task379", "--method", "nope")
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output
    res = runner.invoke(app, ["ingest", "--model", "no-such-alias-xyz/a/b", "--task", "task379",
                              "--sni-dir", str(SNI_DIR), "--db", str(db)])
    assert res.exit_code == 2 and "no-such-alias-xyz" in res.output
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    res = ingest(llama_dir, db, "--task", str(bad))
    assert res.exit_code == 2 and "not valid JSON" in res.output
    empty = tmp_path / "empty.json"
    empty.write_text('{"Definition": ["d"], "Instances": []}')
    res = ingest(llama_dir, db, "--task", str(empty))
    assert res.exit_code == 2 and "has no instances" in res.output
    res = ingest(llama_dir, db, "--task", "task379", "--max-tokens", "20")
    assert res.exit_code == 2 and "longer than 20 tokens" in res.output


def test_long_examples_are_skipped_and_counted(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    res = ingest(llama_dir, db, "--task", "task274", "--max-tokens", "260")
    assert res.exit_code == 0, res.output
    n_examples, n_skipped = query(db, "SELECT n_examples, n_skipped FROM runs")[0]
    assert n_skipped > 0 and n_examples + n_skipped == 6


def test_lape_and_baselines(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    res = ingest(llama_dir, db, "--task", "task379", "--task", "task195", "--method", "lape",
                 "--method", "gv", "--method", "grad_x_act", "--method", "act_mean",
                 "--method", "random")
    assert res.exit_code == 0, res.output
    methods = query(db, "SELECT method, count(*) FROM runs WHERE status = 'complete' "
                        "GROUP BY method ORDER BY method")
    assert methods == [("act_mean", 2), ("gate_prob", 2), ("grad_x_act", 2), ("gv", 2),
                       ("lape", 2), ("random", 2)]
    rules = query(db, "SELECT DISTINCT rule FROM neuron_sets WHERE method = 'lape'")
    assert rules == [("lape:0.01",)]


def test_migrations_up_and_down_keep_data(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task379").exit_code == 0
    engine = connect(db)
    head = current_revision(engine)
    migrate(engine, "0001", down=True)
    assert current_revision(engine) == "0001"
    migrate(engine, "head")
    assert current_revision(engine) == head
    engine.dispose()
    assert query(db, "SELECT count(*) FROM neuron_scores") == [(96,)]
    res = runner.invoke(app, ["db", "downgrade", "base", "--db", str(db)])
    assert res.exit_code == 0
    tables = query(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'")
    assert tables == [(0,)]
    res = runner.invoke(app, ["db", "upgrade", "--db", str(db)])
    assert res.exit_code == 0 and "revision" in res.output


def test_layernorm_models_get_a_warning(gpt2_dir, llama_dir, tmp_path):
    res = ingest(gpt2_dir, tmp_path / "g.duckdb", "--task", "task379")
    assert res.exit_code == 0 and "centring LayerNorm" in res.output
    res = ingest(llama_dir, tmp_path / "l.duckdb", "--task", "task379")
    assert res.exit_code == 0 and "centring LayerNorm" not in res.output


def test_cgvst_and_grad_x_act_share_one_pass(llama_dir, tmp_path, monkeypatch):
    """Methods with the same prompts, targets and loss are computed in one pass, and each
    gives exactly the scores of its own pass."""
    alone = tmp_path / "alone.duckdb"
    for method in ("cgvst", "grad_x_act"):
        assert ingest(llama_dir, alone, "--task", "task195", "--method", method).exit_code == 0
    real, calls = atlas.ingest.reduce_neurons, []

    def counting(*args, **kwargs):
        calls.append(kwargs["reduction"])
        return real(*args, **kwargs)

    monkeypatch.setattr(atlas.ingest, "reduce_neurons", counting)
    shared = tmp_path / "shared.duckdb"
    res = ingest(llama_dir, shared, "--task", "task195", "--method", "cgvst",
                 "--method", "grad_x_act", "--method", "gv")
    assert res.exit_code == 0, res.output
    # 6 examples in chunks of 2: three calls for cgvst with grad_x_act, three for gv
    assert calls == [("up_weight_grad", "grad_x_act")] * 3 + [("up_weight_grad",)] * 3
    sql = ("SELECT r.method, r.n_examples, r.n_tokens, s.layer, s.neuron, s.score FROM runs r "
           "JOIN neuron_scores s USING (run_id) WHERE r.method <> 'gv' ORDER BY 1, 4, 5")
    assert query(shared, sql) == query(alone, sql)
    calls.clear()  # complete runs are reused; nothing is computed again
    res = ingest(llama_dir, shared, "--task", "task195", "--method", "cgvst",
                 "--method", "grad_x_act")
    assert res.exit_code == 0 and calls == []
    # a run computed in another's pass is stored with it, not held until its method's turn
    both = tmp_path / "both.duckdb"
    res = ingest(llama_dir, both, "--task", "task195", "--task", "task379", "--method", "cgvst",
                 "--method", "grad_x_act")
    assert res.exit_code == 0, res.output
    order = query(both, "SELECT split_part(t.name, '_', 1), r.method FROM runs r JOIN tasks t "
                        "USING (task_id) WHERE r.status = 'complete' ORDER BY r.finished_at")
    assert order == [("task195", "cgvst"), ("task195", "grad_x_act"), ("task379", "cgvst"),
                     ("task379", "grad_x_act")]


def test_names_with_brackets_are_printed_as_written(llama_dir, tmp_path):
    """Model names, folders and task labels are text, not rich markup: `[bold]` stays."""
    model_dir = tmp_path / "tiny[bold]model"
    model_dir.symlink_to(llama_dir, target_is_directory=True)
    db = tmp_path / "a.duckdb"
    res = ingest(model_dir, db, "--task", "task379")
    assert res.exit_code == 0, res.output
    assert "model tiny[bold]model:" in res.output
    snap, restored = tmp_path / "snap[red]shot", tmp_path / "copy[i]x.duckdb"
    res = runner.invoke(app, ["db", "snapshot", str(snap), "--db", str(db)])
    assert res.exit_code == 0 and f"snapshot {snap} " in res.output.replace("\n", ""), res.output
    res = runner.invoke(app, ["db", "restore", str(snap), "--db", str(restored)])
    assert res.exit_code == 0 and f"restored {restored}:" in res.output.replace("\n", "")


def test_migration_0006_rekeys_runs_the_released_loss_reproduces(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    for shots in ("1", "2"):
        assert ingest(llama_dir, db, "--task", "task379", "--shots", shots).exit_code == 0
    new = query(db, "SELECT params->>'shots', params_key, params->>'loss' FROM runs ORDER BY 1")
    assert all(loss.startswith("mean CE of the first four") for _, _, loss in new)
    engine = connect(db)
    migrate(engine, "0005", down=True)
    engine.dispose()
    old = query(db, "SELECT params->>'shots', params_key, params->>'loss' FROM runs ORDER BY 1")
    # 1 shot: both rules give one group, so the run is re-described; 2 shots: they differ
    assert old[0][2].startswith("mean CE of the turns before") and old[0][1] != new[0][1]
    assert old[1] == new[1]
    engine = connect(db)
    migrate(engine, "head")
    engine.dispose()
    assert query(db, "SELECT params->>'shots', params_key, params->>'loss' FROM runs ORDER BY 1") == new
    res = ingest(llama_dir, db, "--task", "task379", "--shots", "1")
    assert res.exit_code == 0 and "reused" in res.output
