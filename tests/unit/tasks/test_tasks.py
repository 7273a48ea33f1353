"""Tasks, splits, demonstrations and special-token discovery."""

from __future__ import annotations

import pytest

from atlas.errors import AtlasError
from atlas.models import ARCHITECTURES, adapter_for
from atlas.tasks import PromptFormat, load_task, pick_demos, scoring_examples, split_task
from atlas.tasks.sni import expand_task_names
from tests.helpers import LLAMA2, SNI_DIR, build_tokenizer


@pytest.fixture(scope="module")
def task512():
    return load_task("task512", SNI_DIR)


def test_load_by_id_and_full_name(task512):
    full = load_task("task512_twitter_emotion_classification", SNI_DIR)
    assert full.data_hash == task512.data_hash and len(task512.instances) == 460
    assert task512.labels == ["anger", "fear", "joy", "love", "sadness", "surprise"]
    assert expand_task_names(["paper", "task190"])[-1] == "task190"
    assert len(expand_task_names(["paper"])) == 8


def test_split_is_seeded_stratified_and_disjoint(task512):
    a, b = split_task(task512, seed=0), split_task(task512, seed=0)
    assert [i.id for i in a.score] == [i.id for i in b.score]
    assert {i.id for i in a.score}.isdisjoint({i.id for i in a.evaluate})
    assert len(a.score) + len(a.evaluate) == len(task512.instances)
    for label in task512.labels:  # the file is sorted by label: stratification keeps every label
        n_score = sum(i.output == label for i in a.score)
        n_eval = sum(i.output == label for i in a.evaluate)
        assert abs(n_score - n_eval) <= 1
    assert [i.id for i in split_task(task512, seed=1).score] != [i.id for i in a.score]


def test_demos_never_include_the_query(task512):
    pool = task512.instances[:10]
    for query in pool:
        demos = pick_demos(pool, query, 5, seed=3)
        assert len(demos) == 5 and query.id not in {d.id for d in demos}
        assert demos == pick_demos(pool, query, 5, seed=3)


def _decoded_targets(tok, encoded):
    return [tok.decode([encoded.input_ids[p]]) for p in encoded.targets]


def test_chatml_markers_and_targets(task512):
    tok = build_tokenizer()
    fmt = PromptFormat.for_tokenizer(tok)
    assert fmt.markers == {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"}
    ex = scoring_examples(task512, task512.instances[:4], fmt, 2, seed=0, prompt_rule="marker")[0].encoded
    text = "".join(_decoded_targets(tok, ex))
    # 3 user + 3 assistant turns (2 demos + query), each marker fully covered
    assert text.count("<|im_start|>") == 6 and text.count("user") == 3
    assert tok.decode(ex.input_ids[ex.answer_start:]).startswith(task512.instances[0].output)


def test_llama2_template_gives_inst_tokens(task512):
    tok = build_tokenizer(LLAMA2)
    fmt = PromptFormat.for_tokenizer(tok)
    assert fmt.markers == {"user": "[INST]", "assistant": "[/INST]"}
    ex = scoring_examples(task512, task512.instances[:4], fmt, 2, seed=0, prompt_rule="marker")[0].encoded
    joined = "".join(_decoded_targets(tok, ex)).replace(" ", "")
    assert joined == "[INST][/INST]" * 3
    assert "<s>" not in joined and "SYS" not in joined


def test_builtin_template_for_models_without_one(task512):
    tok = build_tokenizer(None)
    fmt = PromptFormat.for_tokenizer(tok)
    assert fmt.template_name == "builtin"
    assert fmt.markers == {"user": "### User:", "assistant": "### Assistant:"}
    ex = scoring_examples(task512, task512.instances[:3], fmt, 1, seed=0, prompt_rule="marker")[0].encoded
    assert "".join(_decoded_targets(tok, ex)).count("User") == 2


def test_missing_and_malformed_tasks(tmp_path):
    with pytest.raises(AtlasError, match="not found"):
        load_task("task9999", SNI_DIR)
    bad = tmp_path / "t.json"
    bad.write_text('{"Definition": ["x"]}')
    with pytest.raises(AtlasError, match="lacks the SNI field"):
        load_task(str(bad))
    table = tmp_path / "t.jsonl"
    table.write_text('{"input": "a", "output": "x"}\n{"input": "b", "output": "y"}\n')
    task = load_task(str(table))
    assert [i.output for i in task.instances] == ["x", "y"]


def test_unsupported_architecture_lists_supported():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                 intermediate_size=37))
    with pytest.raises(AtlasError, match="unsupported architecture 'bert'") as err:
        adapter_for(model)
    assert all(family in str(err.value) for family in ARCHITECTURES)


def test_demonstrations_come_from_the_whole_half_when_queries_are_subsampled(task512):
    from types import SimpleNamespace

    from atlas.ingest import IngestOptions, _prepare

    tok = build_tokenizer()
    fmt = PromptFormat.for_tokenizer(tok)
    prep = _prepare(SimpleNamespace(max_positions=None), fmt, task512,
                    IngestOptions(examples=3, shots=5))
    assert len(prep.queries) == 3 and len(prep.pool) == len(split_task(task512).score)
    examples, _ = prep.examples("reference")
    queries = {q.id for q in prep.queries}
    texts = [tok.decode(ex.encoded.input_ids) for ex in examples]
    outside = [i for i in prep.pool if i.id not in queries and any(i.input in t for t in texts)]
    assert len(outside) >= 10  # 3 prompts × 5 demonstrations, drawn beyond the 3 queries
    with pytest.raises(AtlasError, match="too few for 500 demonstrations"):
        _prepare(SimpleNamespace(max_positions=None), fmt, task512, IngestOptions(shots=500))
    with pytest.raises(AtlasError, match="--examples must be at least 1"):
        IngestOptions(examples=0)
