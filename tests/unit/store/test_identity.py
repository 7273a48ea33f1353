"""Identity by id: one model in two dtypes, two tasks sharing a name prefix, and reports that
never average across evaluation configurations."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import SNI_DIR, save_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_tiny("llama", tmp_path_factory.mktemp("tiny-llama"))


def run(*args):
    res = runner.invoke(app, [str(a) for a in args])
    return res


def ingest(model_dir, db, *extra):
    res = run("ingest", "--model", model_dir, "--sni-dir", SNI_DIR, "--db", db, "--shots", 1,
              "--examples", 3, *extra)
    assert res.exit_code == 0, res.output
    return res


def as_json(res):
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_two_dtypes_give_separate_correct_answers(llama_dir, tmp_path):
    both, alone = tmp_path / "both.duckdb", tmp_path / "alone.duckdb"
    tasks = ["--task", "task195", "--task", "task379"]
    ingest(llama_dir, both, *tasks, "--method", "cgvst", "--dtype", "float32")
    ingest(llama_dir, both, *tasks, "--method", "cgvst", "--dtype", "bfloat16")
    ingest(llama_dir, alone, *tasks, "--method", "cgvst", "--dtype", "bfloat16")
    name = llama_dir.name
    res = run("overlap", "-m", name, "--db", both)
    assert res.exit_code == 2 and "ambiguous" in res.output
    for command in ("overlap", "specificity"):
        got = as_json(run(command, "-m", f"{name}@bfloat16", "--db", both, "-f", "json"))
        expected = as_json(run(command, "-m", name, "--db", alone, "-f", "json"))
        assert got == expected and len(got) == 2
    f32 = as_json(run("specificity", "-m", f"{name}@float32", "--db", both, "-f", "json"))
    assert [r["size"] for r in f32] == [4, 4]  # one set per task, not two merged


def test_tasks_sharing_a_prefix_stay_apart(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    for label, words in (("pos", "good great fine"), ("neg", "bad awful poor")):
        rows = [{"input": f"{w} {k}", "output": label} for k, w in enumerate(words.split() * 4)]
        (tmp_path / f"sent_{label}.jsonl").write_text("\n".join(map(json.dumps, rows)))
        ingest(llama_dir, db, "--task", tmp_path / f"sent_{label}.jsonl")
    matrix = as_json(run("overlap", "-m", llama_dir.name, "--db", db, "-f", "json"))
    assert [r["task"] for r in matrix] == ["sent_neg", "sent_pos"]
    assert matrix[0]["sent_neg"] == 1.0 and matrix[1]["sent_pos"] == 1.0
    spec = as_json(run("specificity", "-m", llama_dir.name, "--db", db, "-f", "json"))
    assert [r["task"] for r in spec] == ["sent_neg", "sent_pos"]


def test_ablate_evaluates_the_users_task_files_by_their_files(llama_dir, tmp_path):
    """Stored tasks read from the user's files are evaluated from those files (not looked up as
    SNI names) and labelled by their whole names (two sharing a prefix stay apart)."""
    db = tmp_path / "a.duckdb"
    files = []
    for label, words in (("pos", "good great fine"), ("neg", "bad awful poor")):
        rows = [{"input": f"{w} {k}", "output": label} for k, w in enumerate(words.split() * 4)]
        files.append(tmp_path / f"sent_{label}.jsonl")
        files[-1].write_text("\n".join(map(json.dumps, rows)))
        ingest(llama_dir, db, "--task", files[-1])
    res = run("ablate", "--model", llama_dir, "--db", db, "--shots", 1, "--task", "sent_pos",
              "--eval-task", "all", "--examples", 3, "--no-control")
    assert res.exit_code == 0, res.output
    assert "sent_neg" in res.output and "sent_pos" in res.output  # not both "sent"
    evaluated = as_json(run("sql", "SELECT DISTINCT t.name FROM evaluations e JOIN tasks t ON "
                                   "t.task_id = e.eval_task_id ORDER BY 1", "--db", db, "-f", "json"))
    assert evaluated == [{"name": "sent_neg"}, {"name": "sent_pos"}]
    files[1].unlink()
    res = run("ablate", "--model", llama_dir, "--db", db, "--shots", 1, "--task", "sent_pos",
              "--eval-task", "all", "--examples", 3, "--no-control")
    assert res.exit_code != 0 and "sent_neg.jsonl, which is gone" in res.output, res.output


def test_report_shows_one_evaluation_configuration(llama_dir, tmp_path):
    db = tmp_path / "a.duckdb"
    ingest(llama_dir, db, "--task", "task195", "--task", "task379")
    common = ["--model", llama_dir, "--sni-dir", SNI_DIR, "--db", db, "--shots", 1, "--task",
              "task195", "--eval-task", "task195"]
    for examples in (3, 4):
        assert run("ablate", *common, "--examples", examples).exit_code == 0
    res = run("report", "-m", llama_dir.name, "--db", db, "-f", "json")
    assert res.exit_code == 2 and "2 evaluation configurations" in res.output
    configs = [part.split()[0] for part in res.output.split("--config with one of ")[1].split("; ")]
    stored = as_json(run("sql", "SELECT n, rel_change FROM evaluation_effects WHERE NOT is_control",
                         "--db", db, "-f", "json"))
    by_n = {r["n"]: r["rel_change"] for r in stored}
    seen = set()
    for config in configs:
        data = as_json(run("report", "-m", llama_dir.name, "--db", db, "-f", "json", "--config",
                           config))
        (value,) = data["rel_change"][0]
        assert value in by_n.values()  # one stored evaluation, not an average of both
        seen.add(value)
    assert len(seen) == len(set(by_n.values()))
