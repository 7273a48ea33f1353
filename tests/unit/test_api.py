"""`atlas.open`: the README's Python sections run, every answer equals the CLI's and the
server's, nothing is written, a writer runs beside an open Atlas, and no torch is loaded."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import atlas
from cli.main import app
from tests.helpers import ROOT_DIR, SNI_DIR, save_tiny

runner = CliRunner()
TASKS = ("task195", "task379", "task391")


def cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory):
    """Two tiny models ingested on two tasks, the first one's sets inhibited with controls."""
    base = tmp_path_factory.mktemp("api")
    db = base / "a.duckdb"
    folders = [save_tiny("llama", base / "tiny"), save_tiny("qwen2", base / "tiny2")]
    for folder in folders:
        cli("ingest", "--model", folder, "--sni-dir", SNI_DIR, "--db", db, "--shots", 1,
            "--examples", 4, *[a for t in TASKS for a in ("--task", t)])
    cli("ablate", "--model", folders[0], "--sni-dir", SNI_DIR, "--db", db, "--shots", 1,
        "--examples", 4, "--task", TASKS[0], "--task", TASKS[1], "--controls", 2)
    return db, folders


def _python_block(after: str) -> str:
    readme = (ROOT_DIR / "README.md").read_text()
    return readme.split(after, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def test_the_readme_notebook_session_runs(tiny_atlas):
    db, _ = tiny_atlas
    code = _python_block("## From Python (`atlas.open`)")
    code = (code.replace('"first.duckdb"', repr(str(db)))
            .replace("smollm2-135m-instruct", "tiny").replace("gemma-3-270m", "tiny2"))
    code = re.sub(r'a\.neuron\("tiny", 3, 17\)', 'a.neuron("tiny", 1, 5)', code)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["mask"].shape == namespace["scores"].shape == (2, 48)
    assert namespace["report"].rows[0] == "task195"


def test_the_readme_library_block_runs(tiny_atlas):
    _, folders = tiny_atlas
    code = _python_block("the library's parts")
    code = (code.replace('"smollm2-135m-instruct"', repr(str(folders[0])))
            .replace('"../shared/data/sni"', repr(str(SNI_DIR))))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert tuple(namespace["scores"].shape) == (2, 48)
    assert int(namespace["mask"].sum()) == int(0.05 * 96)  # the top 5% of 96 neurons


def test_every_answer_equals_the_clis_and_the_servers(tiny_atlas):
    db, _ = tiny_atlas
    a = atlas.open(db)
    matrix = json.loads(cli("overlap", "-m", "tiny", "--db", db, "-f", "json"))
    frame = a.overlap("tiny")
    assert [r["task"] for r in matrix] == list(frame.index)
    assert np.allclose([[r[c] for c in frame.columns] for r in matrix], frame.to_numpy())
    for name, args in (("specificity", ("specificity", "-m", "tiny")),
                       ("compare", ("compare", "-m", "tiny", "-m", "tiny2"))):
        out = cli(*args, "--db", db, "-f", "json")
        expected = json.loads(out[out.index("["):])  # after compare's agreement line (stderr)
        got = (a.specificity("tiny") if name == "specificity" else
               a.compare("tiny", "tiny2")).df().to_dict("records")
        assert got == expected
    report = json.loads(cli("report", "-m", "tiny", "--db", db, "-f", "json"))
    mine = a.report("tiny")
    assert mine.rows == report["rows"] and mine.columns == report["columns"]
    assert mine.rel_change == report["rel_change"]
    client = TestClient(__import__("atlas.serve.app", fromlist=["create_app"]).create_app(db))
    assert client.get("/models/tiny/neurons/1/5").json() == json.loads(
        json.dumps(a.neuron("tiny", 1, 5).as_dict(), default=str))
    served = client.get("/sets?limit=500").json()["rows"]
    assert [r["set_id"] for r in served] == a.sets().df().set_id.tolist()
    assert client.get("/runs?model=tiny2").json()["total"] == len(a.runs(model="tiny2").df())
    a.close()


def test_scores_and_masks_equal_the_stored_rows(tiny_atlas):
    db, _ = tiny_atlas
    with atlas.open(db) as a:
        run = a.runs(model="tiny", task="task379", method="cgvst").df().run_id.max()
        stored = a.sql(f"SELECT layer, neuron, score FROM neuron_scores WHERE run_id = {run}")
        expected = np.zeros((2, 48), dtype=np.float32)
        for layer, neuron, score in stored.fetchall():
            expected[layer, neuron] = score
        assert np.array_equal(a.scores("tiny", "task379"), expected)
        one = int(a.sets(model="tiny", task="task379", method="cgvst").df().set_id[0])
        members = a.members(one).fetchall()
        mask = a.mask(one)
        assert sorted(zip(*np.nonzero(mask))) == [tuple(m) for m in members]
        with pytest.raises(atlas.AtlasError, match="no set #999"):
            a.mask(999)
        with pytest.raises(atlas.AtlasError, match="no complete 'gv' run"):
            a.scores("tiny", "task379", "gv")
        with pytest.raises(atlas.AtlasError, match="no model"):
            a.sets(model="nope")
        assert a.sets(method="no-such-method").df().empty


def test_open_writes_nothing_and_never_holds_the_file(tiny_atlas, tmp_path):
    db, _ = tiny_atlas
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    a = atlas.open(db)
    a.overlap("tiny"), a.report("tiny"), a.sql("SELECT * FROM set_overlaps").df()
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    with pytest.raises(atlas.AtlasError, match="read-only|one SQL|not allowed|refused"):
        a.sql("DELETE FROM models")
    copy = tmp_path / "c.duckdb"
    copy.write_bytes(db.read_bytes())
    b = atlas.open(copy)
    b.models().df()
    # a writer beside the open Atlas
    cli("select", "--model", "tiny", "--task", "task195", "--rule", "top:0.2", "--db", copy)
    assert "top:0.2" in b.sets(model="tiny").df().rule.tolist()
    with pytest.raises(atlas.AtlasError, match="no atlas database"):
        atlas.open(tmp_path / "missing.duckdb")
    assert not (tmp_path / "missing.duckdb").exists()


@pytest.mark.system
def test_opening_and_asking_loads_no_torch(tiny_atlas):
    db, _ = tiny_atlas
    code = ("import sys, atlas, atlas.query\n"
            f"a = atlas.open({str(db)!r})\n"
            "a.overlap('tiny'); a.sets().df(); a.scores('tiny', 'task195'); a.neuron('tiny', 0, 0)\n"
            "a.report('tiny'); a.compare('tiny', 'tiny2').df()\n"
            "print(sorted({'torch', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT_DIR, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
