"""Sets made from stored scores, identity by id, and one-line errors for bad input."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import atlas.ingest
from cli.main import app
from tests.helpers import SNI_DIR, query, save_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


def ingest(model_dir, db, *extra):
    return runner.invoke(app, ["ingest", "--model", str(model_dir), "--sni-dir", str(SNI_DIR),
                               "--db", str(db), "--shots", "1", "--examples", "3", *extra])


def test_new_rule_reuses_the_scores(llama_dir, tmp_path, monkeypatch):
    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task195").exit_code == 0
    calls = []
    real = atlas.ingest.reduce_neurons
    monkeypatch.setattr(atlas.ingest, "reduce_neurons", lambda *a, **k: calls.append(1) or real(*a, **k))
    res = ingest(llama_dir, db, "--task", "task195", "--rule", "layer:4")
    assert res.exit_code == 0, res.output
    assert calls == []  # nothing recomputed
    assert query(db, "SELECT count(*) FROM runs") == [(1,)]
    assert sorted(query(db, "SELECT rule, size FROM neuron_sets")) == [("layer:4", 8), ("top:0.05", 4)]
    name = llama_dir.name
    res = runner.invoke(app, ["select", "--model", name, "--task", "task195", "--rule", "top:0.25",
                              "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert ("top:0.25", 24) in query(db, "SELECT rule, size FROM neuron_sets")
    again = runner.invoke(app, ["select", "--model", name, "--task", "task195", "--rule",
                                "top:0.25", "--db", str(db)])
    assert "exists" in again.output and query(db, "SELECT count(*) FROM neuron_sets") == [(3,)]
    members = query(db, "SELECT count(*) FROM neuron_set_members JOIN neuron_sets USING (set_id) "
                        "WHERE rule = 'top:0.25'")
    assert members == [(24,)]


def test_two_dtypes_of_one_model_are_two_identities(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task195", "--dtype", "float32").exit_code == 0
    assert ingest(llama_dir, db, "--task", "task195", "--dtype", "bfloat16").exit_code == 0
    assert query(db, "SELECT dtype FROM models ORDER BY 1") == [("bfloat16",), ("float32",)]
    name = llama_dir.name
    res = runner.invoke(app, ["select", "--model", name, "--task", "task195", "--rule", "layer:2",
                              "--db", str(db)])
    assert res.exit_code == 2 and "ambiguous" in res.output
    assert f"{name}@float32" in res.output and f"{name}@bfloat16" in res.output
    res = runner.invoke(app, ["select", "--model", f"{name}@bfloat16", "--task", "task195", "--rule",
                              "layer:2", "--db", str(db)])
    assert res.exit_code == 0, res.output
    assert query(db, "SELECT m.dtype FROM neuron_sets JOIN models m USING (model_id) "
                     "WHERE rule = 'layer:2'") == [("bfloat16",)]


def test_non_finite_scores_fail_the_run(llama_dir, tmp_path, monkeypatch):
    db = tmp_path / "a.duckdb"
    monkeypatch.setattr(atlas.ingest, "reduce_neurons",
                        lambda *a, **k: torch.full((2, 48), float("nan")))
    res = ingest(llama_dir, db, "--task", "task195")
    assert res.exit_code == 2 and "non-finite" in res.output
    assert query(db, "SELECT status FROM runs") == [("failed",)]
    assert query(db, "SELECT count(*) FROM neuron_scores") == [(0,)]


@pytest.mark.parametrize("args, message", [
    (["--examples", "0"], "--examples must be at least 1"),
    (["--examples", "-3"], "--examples must be at least 1"),
    (["--shots", "-1"], "--shots must be 0 or more"),
    (["--rule", "top:0.001"], "selects no neuron"),
    (["--rule", "layer:999"], "per-layer k=999"),
])
def test_bad_numbers_are_one_line_errors(llama_dir, tmp_path, args, message):
    db = tmp_path / "a.duckdb"
    res = ingest(llama_dir, db, "--task", "task195", *args)
    assert res.exit_code == 2 and message in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and res.output.rstrip().endswith(errors[0])
    assert "Traceback" not in res.output
    assert not db.exists() or query(db, "SELECT count(*) FROM runs") == [(0,)]


def test_bad_models_and_files_are_one_line_errors(tmp_path):
    from transformers import T5Config, T5ForConditionalGeneration

    (tmp_path / "empty_folder").mkdir()
    (tmp_path / "bad_config").mkdir()
    (tmp_path / "bad_config" / "config.json").write_text("{}")
    T5ForConditionalGeneration(T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2,
                                        vocab_size=100, d_kv=8)).save_pretrained(tmp_path / "t5")
    (tmp_path / "empty.jsonl").write_text("")
    cases = [
        (["--model", str(tmp_path / "empty_folder"), "--task", "task195"], "no config.json"),
        (["--model", str(tmp_path / "bad_config"), "--task", "task195"], "could not load model"),
        (["--model", str(tmp_path / "t5"), "--task", "task195"], "encoder-decoder"),
        (["--task", str(tmp_path / "empty.jsonl")], "is empty"),
    ]
    for args, message in cases:
        res = runner.invoke(app, ["ingest", *args, "--sni-dir", str(SNI_DIR), "--db",
                                  str(tmp_path / "a.duckdb")])
        assert res.exit_code == 2 and message in res.output, (args, res.output)
        assert "Traceback" not in res.output


def test_interrupted_force_run_is_cleaned_by_the_next_ingest(llama_dir, tmp_path, monkeypatch):
    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task195", "--checkpoint-every", "1").exit_code == 0
    scores = query(db, "SELECT layer, neuron, score FROM neuron_scores ORDER BY ALL")
    real, calls = atlas.ingest.reduce_neurons, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(atlas.ingest, "reduce_neurons", dying)
    assert ingest(llama_dir, db, "--task", "task195", "--checkpoint-every", "1",
                  "--force").exit_code == 130
    assert sorted(query(db, "SELECT status FROM runs")) == [("complete",), ("running",)]
    monkeypatch.setattr(atlas.ingest, "reduce_neurons", real)
    res = ingest(llama_dir, db, "--task", "task195", "--checkpoint-every", "1")
    assert res.exit_code == 0 and "reusing" in res.output
    assert query(db, "SELECT status FROM runs") == [("complete",)]
    assert query(db, "SELECT count(*) FROM run_checkpoints") == [(0,)]
    assert query(db, "SELECT layer, neuron, score FROM neuron_scores ORDER BY ALL") == scores


def test_scoring_restores_training_mode_on_error(monkeypatch):
    import atlas.scoring.engine as engine
    from tests.helpers import tiny_model

    model = tiny_model("llama").train()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "example_losses", broken)
    with pytest.raises(RuntimeError, match="boom"):
        engine.cgvst(model, [[5, 6, 7, 8]], [[1, 2]])
    assert model.training


def test_gguf_conversion_runs_once_for_concurrent_callers(tmp_path, monkeypatch):
    import threading
    import time as clock

    import atlas.models.loading as loading

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake weights")
    calls = []

    def slow_convert(source, sha, target):
        calls.append(source)
        clock.sleep(0.5)
        target.mkdir(parents=True)
        (target / "atlas.json").write_text("{}")

    monkeypatch.setattr(loading, "_convert", slow_convert)
    folders = []
    threads = [threading.Thread(target=lambda: folders.append(loading.convert_gguf(gguf)))
               for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(set(folders)) == 1


def test_tasks_are_found_across_several_folders(llama_dir, tmp_path):
    from tests.helpers import SHARED

    db = tmp_path / "a.duckdb"
    res = runner.invoke(app, ["ingest", "--model", str(llama_dir), "--sni-dir", str(SNI_DIR),
                              "--sni-dir", str(SHARED / "sni-more"), "--task", "task195", "--task",
                              "task533", "--shots", "1", "--examples", "2", "--db", str(db)])
    assert res.exit_code == 0, res.output
    names = [r[0] for r in query(db, "SELECT name FROM tasks ORDER BY name")]
    assert names == ["task195_sentiment140_classification",
                     "task533_europarl_es-en_language_identification"]


def test_evaluation_bad_input_is_refused(llama_dir, tmp_path):
    from atlas.errors import AtlasError
    from atlas.evaluate.labels import Scored, label_sequences, score_sequences
    from tests.helpers import tiny_model

    db = tmp_path / "a.duckdb"
    assert ingest(llama_dir, db, "--task", "task195").exit_code == 0
    res = runner.invoke(app, ["ablate", "--model", str(llama_dir), "--sni-dir", str(SNI_DIR),
                              "--db", str(db), "--task", "task195", "--eval-task", "task195",
                              "--examples", "10000", "--shots", "1"])
    assert res.exit_code == 2 and "fewer than --examples 10000" in res.output
    assert query(db, "SELECT count(*) FROM evaluations") == [(0,)]

    class Lowercasing:  # a tokenizer that cannot tell 'Yes' from 'yes'
        def tokenize(self, text, rule):
            return {"input_ids": [ord(c) for c in text.lower()]}

    with pytest.raises(AtlasError, match="cannot be told apart"):
        label_sequences(Lowercasing(), "Answer: ", ["Yes", "yes"], "marker")
    model = tiny_model("llama")  # context of 2048 positions
    with pytest.raises(AtlasError, match="exceeds the model's context of 2048"):
        score_sequences(model, [Scored(list(range(5, 505)) * 5, 1)])
