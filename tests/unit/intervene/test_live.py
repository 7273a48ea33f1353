"""Trying sets live: side-by-side generation against the library's own generation (plain and
under ``apply``), activations against a direct forward pass's hook values, on tiny models of
three families; and the stored sets' checks."""

from __future__ import annotations

import pytest
import torch

from atlas.errors import AtlasError, NotFound
from atlas.intervene.live import encode_prompt, generate_side_by_side, neuron_activations
from atlas.intervene.spec import Intervention, apply
from atlas.intervene.trying import (
    TryOptions,
    interventions,
    parse_neuron,
    set_activations,
    stored_sets,
    try_sets,
)
from atlas.models.adapters import adapter_for
from tests.helpers import build_tokenizer, ingested_tiny, tiny_model

FAMILIES = ["llama", "gemma3_text", "gpt2"]
NEW = 10


def _mask(model, share: float = 0.3, seed: int = 0) -> torch.Tensor:
    adapter = adapter_for(model)
    g = torch.Generator().manual_seed(seed)
    return torch.rand(adapter.n_layers, adapter.d_mlp, generator=g) < share


def _hf_greedy(model, ids: list[int]) -> list[int]:
    """The transformers generation loop's greedy tokens (no stop token)."""
    out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW,
                         min_new_tokens=NEW, eos_token_id=None, pad_token_id=0)
    return out[0, len(ids):].tolist()


def _tokens(output) -> list[int]:
    return [s.token_id for s in output.steps]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.mark.parametrize("family", FAMILIES)
def test_side_by_side_matches_generation_plain_and_under_apply(family, tok):
    model = tiny_model(family)
    ids = encode_prompt(tok, "the quick brown fox", chat=True)
    mask = _mask(model)
    off, same = Intervention.from_mask(mask, 0.0, "off"), Intervention.from_mask(mask, 1.0, "one")
    result = generate_side_by_side(model, tok, ids, [off, same], max_new_tokens=NEW)
    default, inhibited, unchanged = result.outputs
    plain = _hf_greedy(model, ids)
    with apply(model, off):
        under_apply = _hf_greedy(model, ids)
    for output, expected in ((default, plain), (inhibited, under_apply)):
        got = _tokens(output)
        assert got == expected[:len(got)]
        assert len(got) == NEW or output.stop == "end"
    assert _tokens(unchanged) == _tokens(default) and unchanged.diverged_at is None
    first_diff = next((k for k, (a, b) in enumerate(zip(plain, under_apply)) if a != b), None)
    assert inhibited.diverged_at == first_diff
    assert all(len(s.top) == 5 and s.top[0].prob >= s.top[-1].prob for s in default.steps)
    assert not any(m._forward_pre_hooks for m in model.modules())  # hooks removed


def test_sampling_uses_the_same_draws_in_every_row(tok):
    model = tiny_model("llama")
    ids = encode_prompt(tok, "sampled", chat=False)
    one = Intervention.from_mask(_mask(model), 1.0, "one")
    a = generate_side_by_side(model, tok, ids, [one], max_new_tokens=NEW, temperature=1.0, seed=3)
    b = generate_side_by_side(model, tok, ids, [], max_new_tokens=NEW, temperature=1.0, seed=3)
    c = generate_side_by_side(model, tok, ids, [], max_new_tokens=NEW, temperature=1.0, seed=4)
    assert _tokens(a.outputs[0]) == _tokens(a.outputs[1]) == _tokens(b.outputs[0])
    assert _tokens(b.outputs[0]) != _tokens(c.outputs[0])  # the seed matters
    assert _tokens(b.outputs[0]) != _tokens(generate_side_by_side(
        model, tok, ids, [], max_new_tokens=NEW).outputs[0])  # and it is not greedy


@pytest.mark.parametrize("family", FAMILIES)
def test_activations_equal_a_direct_forward_pass(family, tok):
    model = tiny_model(family)
    adapter = adapter_for(model)
    ids = encode_prompt(tok, "some text to read", chat=False)
    neurons = {0: [5, 1], adapter.n_layers - 1: [adapter.d_mlp - 1]}
    captured = {}
    handles = [adapter.downs[layer].register_forward_pre_hook(
        lambda m, inputs, layer=layer: captured.__setitem__(layer, inputs[0][0].detach().clone()))
        for layer in range(adapter.n_layers)]
    with torch.no_grad():
        model(input_ids=torch.tensor([ids]))
    for h in handles:
        h.remove()
    acts = neuron_activations(model, tok, ids, neurons)
    assert acts.neurons == [(0, 1), (0, 5), (adapter.n_layers - 1, adapter.d_mlp - 1)]
    for col, (layer, n) in enumerate(acts.neurons):
        torch.testing.assert_close(torch.from_numpy(acts.values[:, col]), captured[layer][:, n])
    summary = acts.per_token(top=2)
    assert len(summary) == len(ids)
    for p, t in enumerate(summary):
        assert t.n_firing == int((acts.values[p] > 0).sum())
        assert t.top[0].value == pytest.approx(float(acts.values[p].max()))


def test_interventions_one_per_set_or_their_union():
    from atlas.intervene.trying import StoredSet

    a = StoredSet(1, "a", "t", "cgvst", 1, 2, {0: [1, 2]})
    b = StoredSet(2, "b", "t", "cgvst", 1, 2, {0: [2], 1: [0]})
    each = interventions([a, b], [(1, 5)], 0.0, union=False)
    assert [s.neurons for s in each] == [{0: [1, 2]}, {0: [2], 1: [0]}, {1: [5]}]
    (union,) = interventions([a, b], [(1, 5)], 2.0, union=True)
    assert union.neurons == {0: [1, 2], 1: [0, 5]} and union.factor == 2.0
    with pytest.raises(AtlasError, match="nothing to intervene"):
        interventions([], [], 0.0, False)
    assert parse_neuron("3/117") == parse_neuron("3:117") == (3, 117)
    with pytest.raises(AtlasError, match="LAYER/NEURON"):
        parse_neuron("3-117")


@pytest.fixture(scope="module")
def tiny_atlas(tmp_path_factory):
    from atlas.models.loading import load_model
    from atlas.store import open_db

    folder, db, _ = ingested_tiny(tmp_path_factory.mktemp("live"))
    loaded = load_model(str(folder), device="cpu", dtype="float32")
    engine = open_db(db, read_only=True, create=False)
    yield engine, loaded
    engine.dispose()


def test_a_stored_set_tried_is_the_ablation_mask(tiny_atlas):
    from atlas.intervene.experiment import set_mask

    engine, loaded = tiny_atlas
    answer = try_sets(engine, loaded, "hello", [1], [], TryOptions(factor=0.0, max_new_tokens=6))
    (stored,) = answer.sets
    mask = set_mask(engine, 1, loaded.n_layers, loaded.d_mlp)
    assert stored.neurons == Intervention.from_mask(mask, 0.0).neurons
    ids = encode_prompt(loaded.tokenizer, "hello", chat=True)
    with apply(loaded.model, Intervention.from_mask(mask, 0.0)):
        expected = generate_side_by_side(loaded.model, loaded.tokenizer, ids, [],
                                         max_new_tokens=6).outputs[0]
    assert _tokens(answer.result.outputs[1]) == _tokens(expected)
    assert answer.model.model_id == 1 and answer.model.dtype == "float32"
    assert answer.to_dict()["sets"][0]["set_id"] == 1


def test_sets_are_checked_against_the_loaded_model(tiny_atlas):
    engine, loaded = tiny_atlas
    with pytest.raises(NotFound, match="no set with id 999"):
        stored_sets(engine, [999], loaded)
    other = type(loaded)(**{**loaded.__dict__, "revision": "other"})
    with pytest.raises(AtlasError, match="belongs to tiny"):
        stored_sets(engine, [1], other)
    with pytest.raises(AtlasError, match="at most 3 are taken"):
        set_activations(engine, loaded, "a longer text than three tokens", [1], [], False, 3)
