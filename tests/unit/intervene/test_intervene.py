"""Interventions and the ablation experiment with tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from atlas.intervene import Intervention, apply, random_control
from atlas.models import adapter_for
from cli.main import app
from tests.helpers import SNI_DIR, ingested_tiny, save_tiny, tiny_model

runner = CliRunner()


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("family", ["llama", "gpt2", "phi3"])
def test_factor_one_is_identity_and_hooks_are_removed(family):
    model = tiny_model(family)
    ids = torch.randint(5, 600, (2, 9))
    before = _logits(model, ids)
    spec = Intervention({0: [1, 2, 3], 1: [0, 47]}, factor=1.0)
    with apply(model, spec):
        assert torch.equal(_logits(model, ids), before)
    adapter = adapter_for(model)
    assert all(not d._forward_pre_hooks for d in adapter.downs)
    with pytest.raises(RuntimeError), apply(model, Intervention({0: [1]}, 0.0)):
        raise RuntimeError("inside")
    assert all(not d._forward_pre_hooks for d in adapter.downs)
    assert torch.equal(_logits(model, ids), before)


def test_factor_zero_on_a_whole_layer_equals_zeroing_the_down_input():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    ids = torch.randint(5, 600, (2, 9))
    handle = adapter.downs[1].register_forward_pre_hook(lambda m, i: (torch.zeros_like(i[0]),))
    expected = _logits(model, ids)
    handle.remove()
    with apply(model, Intervention({1: list(range(adapter.d_mlp))}, 0.0)):
        got = _logits(model, ids)
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, _logits(model, ids))


def test_amplification_and_positions_change_only_what_they_should():
    model = tiny_model("llama")
    ids = torch.randint(5, 600, (1, 8))
    base = _logits(model, ids)
    with apply(model, Intervention({0: [3, 4]}, 3.0, positions=[6, 7])):
        got = _logits(model, ids)
    assert torch.allclose(got[:, :6], base[:, :6], atol=1e-6)  # causal: earlier positions intact
    assert not torch.allclose(got[:, 6:], base[:, 6:])


def test_spec_roundtrips_through_json():
    spec = Intervention({0: [1, 2], 5: [7]}, 2.5, positions=[0, 3])
    assert Intervention.from_json(spec.to_json()) == spec


def test_random_control_keeps_size_and_layer_profile():
    mask = torch.zeros(4, 50, dtype=torch.bool)
    mask[0, :10] = mask[2, 5:8] = mask[3, 40:] = True
    ctrl = random_control(mask, seed=1)
    assert torch.equal(ctrl.sum(1), mask.sum(1))
    assert not torch.equal(ctrl, mask)
    assert torch.equal(random_control(mask, seed=1), ctrl)
    assert not torch.equal(random_control(mask, seed=2), ctrl)


def test_ablate_stores_and_reuses_evaluations(tmp_path):
    folder, db, common = ingested_tiny(tmp_path)
    args = ["ablate", *common, "--task", "task379", "--examples", "5", "--batch-size", "4"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    count = runner.invoke(app, ["sql", "SELECT count(*) AS n, sum(is_control::INT) AS c, "
                                "count(set_id) AS s FROM evaluations", "--db", str(db), "-f", "json"])
    # 2 tasks × (baseline, intervened, 3 controls)
    assert json.loads(count.output) == [{"n": 10, "c": 6, "s": 8}]
    values = runner.invoke(app, ["sql", "SELECT value, n FROM evaluations", "--db", str(db),
                                 "-f", "json"])
    assert all(0 <= r["value"] <= 1 and r["n"] == 5 for r in json.loads(values.output))
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "True" in res.output
    again = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM evaluations", "--db", str(db),
                                "-f", "json"])
    assert json.loads(again.output) == [{"n": 10}]
    res = runner.invoke(app, ["amplify", *common, "--task", "task195", "--examples", "5",
                              "--eval-task", "task195"])
    assert res.exit_code == 0, res.output
    rep = runner.invoke(app, ["report", "--model", folder.name, "--db", str(db), "-f", "json"])
    assert rep.exit_code == 0, rep.output
    data = json.loads(rep.output)
    assert data["rows"] == ["task379"] + [f"task379 (random, seed {k})" for k in range(3)]
    assert data["columns"] == ["task195", "task379"]
    own, *ctrls = data["rel_change"]
    ctrl = [sum(row[c] for row in ctrls) / 3 for c in range(2)]  # mean over control seeds
    assert data["summary"][0]["mean_abs_change"] == pytest.approx(sum(abs(v) for v in own) / len(own))
    assert data["summary"][0]["control_mean_abs_change"] == pytest.approx(
        sum(abs(v) for v in ctrl) / len(ctrl))
    assert len(data["intervals"]) == 4 and len(data["columns_info"]) == 2
    paired = data["summary"][0]["paired"]  # own task vs its 3 controls, same 5 examples
    assert paired["statistic"] == "gold_prob" and paired["n"] == 5
    png = tmp_path / "r.png"
    res = runner.invoke(app, ["plot", "report", "--model", folder.name, "--db", str(db), "-o", str(png)])
    assert res.exit_code == 0 and png.stat().st_size > 5000
    md = runner.invoke(app, ["report", "--model", folder.name, "--db", str(db)])
    assert "specificity index" in md.output and "Mean specificity index" in md.output
    res = runner.invoke(app, ["ablate", *common, "--task", "task274"])
    assert res.exit_code == 2 and "no task 'task274' in the atlas" in res.output
    res = runner.invoke(app, [*args, "--eval-task", "task379", "--metric", "label_prob"])
    assert res.exit_code == 0, res.output
    probs = runner.invoke(app, ["sql", "SELECT value FROM evaluations WHERE metric = 'label_prob'",
                                "--db", str(db), "-f", "json"])
    values = [r["value"] for r in json.loads(probs.output)]  # baseline, intervened, 3 controls
    assert len(values) == 5 and all(0 < v < 1 for v in values)
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--metric", "bleu"])
    assert res.exit_code == 2 and "unknown metric" in res.output


def test_ablate_evaluates_the_whole_held_out_half_by_default(tmp_path):
    from atlas.tasks import load_task, split_task

    _, db, common = ingested_tiny(tmp_path, tasks=("task379",))
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--controls", "1",
                              "--batch-size", "16"])
    assert res.exit_code == 0, res.output
    stored = runner.invoke(app, ["sql", "SELECT DISTINCT n FROM evaluations", "--db", str(db),
                                 "-f", "json"])
    half = len(split_task(load_task("task379", SNI_DIR)).evaluate)
    assert half >= 100 and json.loads(stored.output) == [{"n": half}]


def test_exact_match_generation_and_normalisation(tmp_path):
    from atlas.evaluate.metrics import exact_match, normalise
    from atlas.models import load_model
    from atlas.tasks import PromptFormat, load_task, split_task

    assert normalise("  The Sci/Tech!\nmore") == "scitech"
    folder = save_tiny("llama", tmp_path / "tiny")
    loaded = load_model(str(folder), device="cpu")
    task = load_task("task379", SNI_DIR)
    split = split_task(task)
    fmt = PromptFormat.for_tokenizer(loaded.tokenizer)
    score = exact_match(loaded, fmt, task, split.evaluate[:5], split.evaluate, 1, 0, batch_size=2)
    assert score.n == 5 and 0.0 <= score.value <= 1.0
    with apply(loaded.model, Intervention({0: list(range(48)), 1: list(range(48))}, 0.0)):
        ablated = exact_match(loaded, fmt, task, split.evaluate[:5], split.evaluate, 1, 0)
    assert ablated.n == 5


def _full_sequence_logprobs(model, prompt, labels):
    """Independent reference: each prompt + label as its own sequence, no cache."""
    out = []
    with torch.no_grad():
        for lab in labels:
            ids = torch.tensor([prompt + lab])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
            out.append(sum(float(logp[len(prompt) + k - 1, t]) for k, t in enumerate(lab)))
    return torch.tensor(out)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "qwen2"])
def test_prefix_cached_label_scoring_equals_full_sequences(family):
    from atlas.evaluate.labels import Scored, score_sequences

    model = tiny_model(family)
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(5, 600, (40,), generator=gen).tolist()
    labels = [[7], [8, 9, 10], [11, 12]]
    queries = [torch.randint(5, 600, (n,), generator=gen).tolist() for n in (3, 9, 5, 12)]
    sequences = [Scored(prefix + q + lab, len(lab)) for q in queries for lab in labels]
    reference = torch.cat([_full_sequence_logprobs(model, prefix + q, labels) for q in queries])
    for batch_size in (1, 5, 16):
        cached = score_sequences(model, sequences, batch_size=batch_size)
        assert torch.allclose(cached.float(), reference, atol=1e-4)
    assert torch.allclose(score_sequences(model, sequences, cache_prefix=False).float(), reference,
                          atol=1e-4)
    with apply(model, Intervention({1: [0, 1, 2]}, 0.0)):
        ablated = score_sequences(model, sequences, batch_size=5)
        ablated_reference = torch.cat([_full_sequence_logprobs(model, prefix + q, labels)
                                       for q in queries])
    assert torch.allclose(ablated.float(), ablated_reference, atol=1e-4)
    assert not torch.allclose(ablated.float(), reference, atol=1e-4)


def test_label_metrics_match_full_sequence_scoring(tmp_path):
    from atlas.evaluate.metrics import label_likelihood, label_prob, prompt_text
    from atlas.models import load_model
    from atlas.tasks import PromptFormat, load_task, split_task

    loaded = load_model(str(save_tiny("llama", tmp_path / "tiny")), device="cpu")
    task = load_task("task379", SNI_DIR)
    split = split_task(task)
    fmt = PromptFormat.for_tokenizer(loaded.tokenizer)
    queries = split.evaluate[:4]
    tok = loaded.tokenizer
    gold_probs, hits = [], []
    for q in queries:  # labels tokenized in context: prompt + label, minus the prompt's tokens
        text = prompt_text(fmt, task, q, split.score, 2, 0, fixed_demos=True)
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        label_ids = [tok(text + lab, add_special_tokens=False)["input_ids"][len(prompt):]
                     for lab in task.labels]
        probs = torch.softmax(_full_sequence_logprobs(loaded.model, prompt, label_ids).double(), 0)
        gold = task.labels.index(q.output)
        gold_probs.append(float(probs[gold]))
        hits.append(int(probs.argmax()) == gold)
    prob = label_prob(loaded, fmt, task, queries, split.score, 2, 0, fixed_demos=True)
    acc = label_likelihood(loaded, fmt, task, queries, split.score, 2, 0, fixed_demos=True)
    assert prob.n == acc.n == 4
    assert prob.value == pytest.approx(sum(gold_probs) / 4, abs=1e-4)
    assert acc.value == pytest.approx(sum(hits) / 4)


def test_ablate_without_control_and_several_sets(tmp_path):
    folder = save_tiny("gpt2", tmp_path / "tiny")
    db = tmp_path / "a.duckdb"
    common = ["--model", str(folder), "--sni-dir", str(SNI_DIR), "--db", str(db), "--shots", "1"]
    res = runner.invoke(app, ["ingest", *common, "--examples", "4", "--task", "task379",
                              "--task", "task195", "--method", "random"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--task", "task195",
                              "--method", "random", "--examples", "4", "--no-control"])
    assert res.exit_code == 0, res.output
    count = runner.invoke(app, ["sql", "SELECT count(*) AS n, count_if(is_control) AS c "
                                "FROM evaluations", "--db", str(db), "-f", "json"])
    assert json.loads(count.output) == [{"n": 2 + 4, "c": 0}]  # 2 baselines, 2 sets × 2 tasks
    rep = runner.invoke(app, ["report", "--model", folder.name, "--method", "random", "--db",
                              str(db), "-f", "json"])
    data = json.loads(rep.output)
    assert data["rows"] == ["task195", "task379"]  # no control was evaluated: no control rows
    assert all(v is not None for row in data["rel_change"] for v in row)
    assert all(s["specificity_index"] is not None or s["target_change"] is None
               for s in data["summary"])
    # each set against the other task's set on its own task, from the per-example rows
    found = runner.invoke(app, ["sql", "SELECT split_part(st.name, '_', 1) AS set_task, "
                                "split_part(et.name, '_', 1) AS eval_task, x.gold_prob "
                                "FROM evaluations e JOIN evaluation_examples x USING (eval_id) "
                                "JOIN neuron_sets s USING (set_id) JOIN tasks st ON st.task_id = "
                                "s.task_id JOIN tasks et ON et.task_id = e.eval_task_id "
                                "ORDER BY e.eval_id, x.example", "--db", str(db), "-f", "json"])
    probs: dict = {}
    for r in json.loads(found.output):
        probs.setdefault((r["set_task"], r["eval_task"]), []).append(r["gold_prob"])
    for s, other in (("task379", "task195"), ("task195", "task379")):
        own, theirs = np.array(probs[s, s]), np.array(probs[other, s])
        versus = next(e for e in data["summary"] if e["set"] == s)["vs_other_sets"]
        assert versus["mean_diff"] == pytest.approx((own - theirs).mean())
        assert versus["n"] == 4 and versus["n_sets"] == 2
        assert versus["rank"] == 1 + int(theirs.mean() < own.mean())
    md = runner.invoke(app, ["report", "--model", folder.name, "--method", "random", "--db", str(db)])
    assert "Does a task respond most to its own set?" in md.output


def test_controls_on_own_task_only(tmp_path):
    folder, db, common = ingested_tiny(tmp_path)
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--examples", "4",
                              "--controls", "2", "--controls-on", "own"])
    assert res.exit_code == 0, res.output
    found = runner.invoke(app, ["sql", "SELECT t.name AS task, count_if(is_control) AS c, "
                                "count(*) AS n FROM evaluations e JOIN tasks t ON t.task_id = e.eval_task_id "
                                "GROUP BY ALL ORDER BY task", "--db", str(db), "-f", "json"])
    rows = json.loads(found.output)  # controls only on the set's own task
    assert [(r["task"][:7], r["c"], r["n"]) for r in rows] == [("task195", 0, 2), ("task379", 2, 4)]
    data = json.loads(runner.invoke(app, ["report", "--model", folder.name, "--db", str(db),
                                          "-f", "json"]).output)
    summary = data["summary"][0]
    assert summary["control_target_change"] is not None and summary["paired"]["n"] == 4
    assert summary["control_mean_abs_change"] is None  # controls did not cover the other task
    res = runner.invoke(app, ["ablate", *common, "--task", "task379", "--controls-on", "some"])
    assert res.exit_code == 2 and "unknown --controls-on 'some'" in res.output


def test_sets_with_more_controls_get_their_rows_and_a_set_level_test(tmp_path):
    folder, db, common = ingested_tiny(tmp_path)
    for task, n in (("task195", 2), ("task379", 4)):
        res = runner.invoke(app, ["ablate", *common, "--task", task, "--examples", "4",
                                  "--controls", str(n), "--controls-on", "own", "--eval-task",
                                  "task195", "--eval-task", "task379"])
        assert res.exit_code == 0, res.output
    data = json.loads(runner.invoke(app, ["report", "--model", folder.name, "--db", str(db),
                                          "-f", "json"]).output)
    assert [r.split(" (")[0] for r in data["rows"]] == ["task195"] * 3 + ["task379"] * 5
    assert all(any(v is not None for v in row) for row in data["rel_change"])  # no empty rows
    assert len(data["intervals"]) == len(data["rows"])
    level = {s["set"]: s["set_level"] for s in data["summary"]}
    assert (level["task195"]["n_controls"], level["task379"]["n_controls"]) == (2, 4)
    stored = json.loads(runner.invoke(app, ["sql", """
        SELECT t.name AS task, e.is_control, avg(x.gold_prob) AS mean
        FROM evaluations e JOIN neuron_sets s USING (set_id) JOIN tasks t ON t.task_id = s.task_id
        JOIN evaluation_examples x USING (eval_id)
        WHERE e.eval_task_id = s.task_id GROUP BY e.eval_id, t.name, e.is_control""",
        "--db", str(db), "-f", "json"]).output)
    for task in ("task195", "task379"):  # the set's own-task mean against its controls' means
        own = [r["mean"] for r in stored if r["task"].startswith(task) and not r["is_control"]]
        controls = [r["mean"] for r in stored if r["task"].startswith(task) and r["is_control"]]
        assert level[task]["own_mean"] == pytest.approx(own[0])
        assert level[task]["controls_mean"] == pytest.approx(np.mean(controls))
        assert level[task]["controls_sd"] == pytest.approx(np.std(controls, ddof=1))
    markdown = runner.invoke(app, ["report", "--model", folder.name, "--db", str(db)]).output
    assert "Set-level test" in markdown and " / 5 | " in markdown
    # beyond 3 controls a set's markdown matrix shows their mean: here the fourth seed's row
    last = "".join(f" {v:+.3f} |" if v is not None else "  |" for v in data["rel_change"][-1])
    assert f"| task379 (random, mean of 1 more seeds) |{last}" in markdown
    assert "task379 (random, seed 3)" not in markdown and "task379 (random, seed 2)" in markdown
    assert [r["name"] for r in data["display_rows"]][-1] == "task379 (random, mean of 1 more seeds)"
    assert data["display_rows"][-1]["values"] == pytest.approx(data["rel_change"][-1])
    from PIL import Image

    png = tmp_path / "r.png"  # the plot shows the same 8 rows: taller with every row
    assert runner.invoke(app, ["plot", "report", "--model", folder.name, "--db", str(db),
                               "-o", str(png)]).exit_code == 0
    assert Image.open(png).size[1] == round(130 * (1.8 + 0.45 * 8))
