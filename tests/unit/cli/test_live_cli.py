"""`atlas try` and `atlas activations` on a tiny ingested model: JSON answers equal to the
library's, one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.helpers import ingested_tiny

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder, db, _ = ingested_tiny(tmp_path_factory.mktemp("try"))
    return ["--model", str(folder), "--db", str(db), "--dtype", "float32"], folder


def _json(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{"):])


def test_try_prints_both_outputs_side_by_side(tiny):
    common, _ = tiny
    data = _json(runner.invoke(app, ["try", "hello there", *common, "--set", "1", "--set", "2",
                                     "--max-new-tokens", "5", "--format", "json"]))
    assert [o["label"] for o in data["outputs"]][0] == "default"
    assert [s["set_id"] for s in data["sets"]] == [1, 2] and len(data["outputs"]) == 3
    assert all(len(o["steps"]) <= 5 for o in data["outputs"])
    union = _json(runner.invoke(app, ["try", "hello there", *common, "--set", "1", "--set", "2",
                                      "--union", "--factor", "2", "--max-new-tokens", "5",
                                      "--format", "json"]))
    assert len(union["outputs"]) == 2 and union["outputs"][1]["factor"] == 2.0
    table = runner.invoke(app, ["try", "hello there", *common, "--neuron", "1/3",
                                "--max-new-tokens", "3"])
    assert table.exit_code == 0 and "default" in table.output and "1/3 × 0" in table.output


def test_activations_equal_the_library(tiny):
    from atlas.intervene.live import encode_prompt, neuron_activations
    from atlas.models.loading import load_model

    common, folder = tiny
    data = _json(runner.invoke(app, ["activations", "some text", *common, "--neuron", "0/4",
                                     "--neuron", "1/2", "--format", "json"]))
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    ids = encode_prompt(loaded.tokenizer, "some text", chat=False)
    direct = neuron_activations(loaded.model, loaded.tokenizer, ids, {0: [4], 1: [2]})
    np.testing.assert_allclose(np.array(data["values"]), direct.values, atol=1e-6)
    assert data["tokens"] == direct.tokens


@pytest.mark.parametrize("args, words", [
    (["try", "hi", "--set", "999"], "no set with id 999"),
    (["try", "hi"], "nothing to intervene"),
    (["try", "hi", "--neuron", "x"], "LAYER/NEURON"),
    (["activations", "hi", "--neuron", "9/0"], "outside the model"),
])
def test_bad_input_is_one_line(tiny, args, words):
    res = runner.invoke(app, [*args, *tiny[0]])
    assert res.exit_code == 2 and words in res.output
    assert "Traceback" not in res.output


def test_serve_with_a_model_needs_one_worker(tiny):
    res = runner.invoke(app, ["serve", *tiny[0][:4], "--workers", "2"])
    assert res.exit_code == 2 and "--workers" in res.output
