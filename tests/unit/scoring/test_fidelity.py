"""CGVST against an independent implementation of the paper's released code.

The released code (``CGV_activation.py`` with its ``utils.py``) renders the Llama-2-chat template
with jinja2 and empty BOS/EOS strings, encodes with one BOS, finds its hard-coded special-token
ids with ``find_all_sublists`` (which returns j + 1 for every position j of a match), predicts
``input_ids[i]`` from ``logits[i - 1]``, and sums ``|Σ_j up_proj.weight.grad[n, j]|`` of the loss
``mean(CE[:28]) + mean(CE[28:])`` over examples. The real Llama vocabulary makes the prompts
identical token for token.
"""

from __future__ import annotations

import json
import random

import duckdb
import jinja2
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from atlas.scoring import cgvst
from atlas.tasks import render_reference, special_token_targets
from atlas.tasks.prompts import format_for
from cli.main import app
from tests.helpers import CHATML, LLAMA2, SHARED, SNI_DIR, build_tokenizer, save_tiny, tiny_config

TOKENIZERS = SHARED / "tokenizers"
RELEASED_SPECIAL_IDS = [[518, 25580, 29962], [518, 29914, 25580, 29962]]  # " [INST]", " [/INST]"


@pytest.fixture(scope="module")
def llama_tok():
    if not (TOKENIZERS / "llama-spm.gguf").is_file():
        pytest.skip(f"the Llama vocabulary is not at {TOKENIZERS}/llama-spm.gguf")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZERS), gguf_file="llama-spm.gguf")
    tok.chat_template = LLAMA2
    return tok


def released_conversations(shot: int, n: int, seed: int) -> list[list[dict]]:
    """``data_construct`` on the first (scoring) half of task195 in file order; demonstrations
    sampled from the whole half (the query may be one)."""
    data = json.loads((SNI_DIR / "task195_sentiment140_classification.json").read_text())
    instruction = "".join(data["Definition"])
    instances = data["Instances"]
    train = instances[: len(instances) // 2]
    rng = random.Random(seed)
    out = []
    for inst in train[:n]:
        messages = [{"role": "system", "content": instruction}]
        for demo in rng.sample(train, shot):
            messages += [{"role": "user", "content": "".join(demo["input"])},
                         {"role": "assistant", "content": "".join(demo["output"])}]
        messages += [{"role": "user", "content": "".join(inst["input"])},
                     {"role": "assistant", "content": "".join(inst["output"])}]
        out.append(messages)
    return out


def find_all_sublists(main: list[int], sub: list[int]) -> list[list[int]]:
    return [[j + 1 for j in range(i, i + len(sub))]
            for i in range(len(main) - len(sub) + 1) if main[i : i + len(sub)] == sub]


def released_prompt(tok, messages) -> tuple[list[int], list[int]]:
    """(input ids, sorted target positions) exactly as the released code builds them."""
    text = jinja2.Template(LLAMA2).render(messages=messages, bos_token="", eos_token="")
    ids = tok.encode(text)
    found = find_all_sublists(ids, RELEASED_SPECIAL_IDS[0]) + find_all_sublists(ids, RELEASED_SPECIAL_IDS[1])
    return ids, sorted(p for occurrence in found for p in occurrence)


def released_scores(model, prompts) -> torch.Tensor:
    """Batch 1, real weight gradients of every parameter, the 28/rest loss."""
    n_layers = model.config.num_hidden_layers
    total = torch.zeros(n_layers, model.config.intermediate_size, dtype=torch.float64)
    model.requires_grad_(True)
    for ids, index in prompts:
        x = torch.tensor([ids])
        labels = x[0, index]
        logits = model(input_ids=x).logits[0]
        before = [i - 1 for i in index]
        loss = (F.cross_entropy(logits[before[:28]], labels[:28])
                + F.cross_entropy(logits[before[28:]], labels[28:]))
        model.zero_grad()
        loss.backward()
        for layer in range(n_layers):
            grad = model.model.layers[layer].mlp.up_proj.weight.grad
            total[layer] += grad.double().sum(1).abs()
    model.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    return total


def _tiny_llama(vocab: int):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = tiny_config("llama", vocab)
    cfg.attn_implementation = "eager"
    return AutoModelForCausalLM.from_config(cfg).eval()


def test_rendering_and_targets_equal_the_released_code(llama_tok):
    tok = llama_tok
    for messages in released_conversations(shot=5, n=6, seed=0):
        ids, index = released_prompt(tok, messages)
        assert render_reference(tok, messages) == ids
        assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
        assert len(index) == 42
        assert special_token_targets(ids, tok) == [index[:28], index[28:]]
        labels = tok.convert_ids_to_tokens([ids[p] for p in index])
        turns = [m for m in messages if m["role"] != "system"]
        for k in range(6):  # per turn: INST ] first-of-user-text / INST ] first-of-answer
            user, answer = turns[2 * k], turns[2 * k + 1]
            first_user = "▁<<" if k == 0 else tok.tokenize(user["content"].strip())[0]
            assert labels[7 * k : 7 * k + 7] == ["INST", "]", first_user, "/", "INST", "]",
                                                 tok.tokenize(answer["content"])[0]]
        assert labels[-1] == tok.tokenize(messages[-1]["content"])[0]  # the gold answer


@pytest.mark.parametrize("batch_size", [1, 4])
def test_cgvst_equals_the_released_algorithm(llama_tok, batch_size):
    tok = llama_tok
    model = _tiny_llama(len(tok))
    conversations = released_conversations(shot=5, n=5, seed=1)
    prompts = [released_prompt(tok, m) for m in conversations]
    expected = released_scores(model, prompts)
    ids = [render_reference(tok, m) for m in conversations]
    groups = [special_token_targets(i, tok) for i in ids]
    got = cgvst(model, ids, groups, batch_size=batch_size)
    rel = float((got.double() - expected).abs().max() / expected.abs().max())
    assert rel < 1e-5
    one_group = cgvst(model, ids, [sorted(p for g in gs for p in g) for gs in groups],
                      batch_size=batch_size)
    assert float((one_group.double() - expected).abs().max() / expected.abs().max()) > 1e-3


@pytest.mark.parametrize("shot", range(9))
def test_loss_groups_and_scores_equal_the_released_code_at_every_shot_count(llama_tok, shot):
    """mean(CE[:28]) + mean(CE[28:]): with 3 or fewer shots the second mean is empty (NaN as a
    value) and contributes no gradient; the scores stay finite and equal the released ones."""
    tok = llama_tok
    conversations = released_conversations(shot=shot, n=3, seed=shot)
    prompts = [released_prompt(tok, m) for m in conversations]
    ids = [render_reference(tok, m) for m in conversations]
    groups = [special_token_targets(i, tok) for i in ids]
    for (_, index), got in zip(prompts, groups):
        assert got == [g for g in (index[:28], index[28:]) if g]
    model = _tiny_llama(len(tok))
    expected = released_scores(model, prompts)
    assert bool(torch.isfinite(expected).all())
    scores = cgvst(model, ids, groups, batch_size=2)
    assert float((scores.double() - expected).abs().max() / expected.abs().max()) < 1e-5


def test_preset_reference_uses_only_the_released_marker_ids(llama_tok):
    from atlas.tasks.prompts import PromptFormat

    released = PromptFormat.for_tokenizer(llama_tok, released_markers=True)
    assert sorted(list(m.ids) for m in released.marker_tokens) == sorted(RELEASED_SPECIAL_IDS)
    assert released.describe()["marker_rendering"] == "released only"
    default = PromptFormat.for_tokenizer(llama_tok)
    assert len(default.marker_tokens) > len(released.marker_tokens)  # also "[", "INST", "]"
    assert "marker_rendering" not in default.describe()


def test_one_shot_has_a_single_group_and_never_nan(llama_tok):
    tok = llama_tok
    one_shot = released_conversations(shot=1, n=2, seed=0)
    zero_shot = [[m[0], *m[-2:]] for m in one_shot]
    for messages, n_targets in [(one_shot[0], 14), (zero_shot[0], 7)]:
        ids = render_reference(tok, messages)
        groups = special_token_targets(ids, tok)
        assert len(groups) == 1 and len(groups[0]) == n_targets
    model = _tiny_llama(len(tok))
    ids = [render_reference(tok, m) for m in zero_shot]
    scores = cgvst(model, ids, [special_token_targets(i, tok) for i in ids])
    assert bool(torch.isfinite(scores).all()) and bool((scores > 0).any())


def test_marker_rule_keeps_the_marker_tokens_in_one_group(llama_tok):
    messages = released_conversations(shot=5, n=1, seed=0)[0]
    ids = render_reference(llama_tok, messages)
    (group,) = special_token_targets(ids, llama_tok, prompt_rule="marker")
    assert "".join(llama_tok.convert_ids_to_tokens([ids[p] for p in group])) == \
        "▁[INST]▁[/INST]" * 6


def test_chatml_targets_run_to_the_first_content_token():
    tok = build_tokenizer(CHATML)
    fmt = format_for(tok)
    messages = released_conversations(shot=5, n=1, seed=0)[0]
    ids = render_reference(tok, messages)
    groups = special_token_targets(ids, tok)
    assert all(m.ids[0] == tok.convert_tokens_to_ids("<|im_start|>") for m in fmt.marker_tokens)
    # 6 user + 6 assistant markers: the first four pairs, then the last two pairs
    first, last = groups
    text = tok.decode([ids[p] for p in first])
    assert text.count("\n") == 8
    turns = [m for m in messages if m["role"] != "system"]
    assert text.startswith("user\n") and "assistant\n" in text
    assert tok.decode([ids[p] for p in last]).count("\n") == 4
    answer_start = tok.decode([ids[last[-1]]])
    assert turns[-1]["content"].startswith(answer_start)


def test_preset_reference_end_to_end(tmp_path):
    folder = save_tiny("llama", tmp_path / "tiny")
    long_text = " ".join(["the weather was lovely today"] * 260)
    instances = [{"id": f"i{k}", "input": long_text if k in (3, 11) else f"sentence number {k}",
                  "output": ["yes" if k % 2 else "no"]} for k in range(40)]
    task_file = tmp_path / "tinyref.json"
    task_file.write_text(json.dumps({"Definition": ["Answer yes or no."], "Instances": instances}))
    db = tmp_path / "a.duckdb"
    runner = CliRunner()
    res = runner.invoke(app, ["ingest", "--model", str(folder), "--task", str(task_file),
                              "--preset", "reference", "--db", str(db)])
    assert res.exit_code == 0, res.output
    con = duckdb.connect(str(db), read_only=True)
    (params, n_examples, n_skipped), = con.execute(
        "SELECT params, n_examples, n_skipped FROM runs").fetchall()
    con.close()
    params = json.loads(params)
    assert params["split"]["rule"] == "file" and params["split"]["n_score"] == 20
    assert params["shots"] == 5 and params["max_tokens"] == 1300 and params["examples"] is None
    assert params["prompt"]["rule"] == "reference" and params["preset"] == "reference"
    assert n_skipped > 0 and n_examples + n_skipped == 20  # long prompts skipped, not truncated
    res = runner.invoke(app, ["ablate", "--model", str(folder), "--task", "tinyref", "--eval-task",
                              str(task_file), "--preset", "reference", "--db", str(db)])
    assert res.exit_code == 0, res.output
    con = duckdb.connect(str(db), read_only=True)
    evals = con.execute("SELECT metric, n, params FROM evaluations").fetchall()
    con.close()
    assert {e[0] for e in evals} == {"reference_em"} and len(evals) == 5  # 3 controls
    assert {e[1] for e in evals} == {20}  # the whole second half of the file
    assert json.loads(evals[0][2])["split"] == "evaluation half (file)"


def test_preset_reference_reads_data_as_released(tmp_path):
    from atlas.ingest import IngestOptions
    from atlas.intervene.experiment import AblateOptions, _capped
    from atlas.tasks.sni import load_task
    from atlas.tasks.split import split_task

    instances = [{"id": f"i{k}", "input": f"text {k}", "output": [] if k == 2 else ["yes", "!"]}
                 for k in range(6600)]
    path = tmp_path / "multi.json"
    path.write_text(json.dumps({"Definition": ["First part. ", "Second part."],
                                "Instances": instances}))
    default, released = load_task(str(path)), load_task(str(path), released=True)
    assert default.definition == "First part. " and len(default.instances) == 6599
    assert released.definition == "First part. Second part." and len(released.instances) == 6600
    assert released.instances[2].outputs == () and released.instances[2].output == ""
    assert default.data_hash != released.data_hash
    assert IngestOptions(preset="reference").released_data
    options = AblateOptions(preset="reference")
    assert options.released_data and options.max_instances == 6500
    split = split_task(_capped(released, options.max_instances), split_rule="file")
    # CGV_eval.py: Instances[:6500], then halves; scoring (CGV_activation.py) keeps all
    assert [i.id for i in split.evaluate] == [f"i{k}" for k in range(3250, 6500)]
    assert len(split_task(released, split_rule="file").score) == 3300
