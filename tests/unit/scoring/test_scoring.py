"""The scoring engine against independent slow computations with real weight gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from atlas.errors import AtlasError
from atlas.models import adapter_for
from atlas.scoring import cgvst, reduce_neurons
from tests.helpers import FAMILIES, tiny_model


def _examples(seed: int = 1, n: int = 5, vocab: int = 600):
    gen = torch.Generator().manual_seed(seed)
    lengths = [7, 12, 9, 16, 5][:n]
    ids = [torch.randint(5, vocab, (length,), generator=gen).tolist() for length in lengths]
    targets = [sorted({1, length - 1, length // 2}) for length in lengths]
    return ids, targets


def _reference_cgvst(model, ids, targets) -> torch.Tensor:
    """The published algorithm: batch 1, loss.backward() with gradients for every parameter,
    then Σ_j of up_proj.weight.grad per neuron, abs, summed over examples."""
    adapter = adapter_for(model)
    model.requires_grad_(True)
    total = torch.zeros(adapter.n_layers, adapter.d_mlp, dtype=torch.float64)
    for seq, tgt in zip(ids, targets):
        model.zero_grad()
        x = torch.tensor([seq])
        logits = model(input_ids=x).logits[0]
        loss = F.cross_entropy(logits[[t - 1 for t in tgt]], x[0, tgt])
        loss.backward()
        for layer, up in enumerate(adapter.ups):
            grad = up.weight.grad.double()
            if grad.shape[0] != adapter.d_mlp and grad.shape[0] != 2 * adapter.d_mlp:
                grad = grad.T  # gpt2 Conv1D stores [in, out]
            grad = adapter.up_slice(grad.T).T  # phi3: the up half of gate_up
            total[layer] += grad.sum(1).abs()
    model.requires_grad_(False)
    model.zero_grad(set_to_none=True)
    return total.float()


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_cgvst_equals_weight_gradients(family):
    model = tiny_model(family)
    ids, targets = _examples()
    expected = _reference_cgvst(model, ids, targets)
    got = cgvst(model, ids, targets, batch_size=3)
    assert got.shape == expected.shape
    assert got.dtype == torch.float32
    assert _rel_err(got, expected) < 1e-4
    assert all(p.grad is None for p in model.parameters()), "no weight gradient may be computed"
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_batching_matches_batch_size_one(family):
    model = tiny_model(family, seed=3)
    ids, targets = _examples(seed=4)
    one = cgvst(model, ids, targets, batch_size=1)
    many = cgvst(model, ids, targets, batch_size=8)
    assert _rel_err(many, one) < 1e-4


def test_grad_x_act_matches_autograd():
    model = tiny_model("llama")
    adapter = adapter_for(model)
    ids, targets = _examples()
    acts = {}
    handles = [
        down.register_forward_pre_hook(lambda m, i, layer=layer: acts.__setitem__(layer, i[0]))
        for layer, down in enumerate(adapter.downs)
    ]
    expected = torch.zeros(adapter.n_layers, adapter.d_mlp)
    model.requires_grad_(True)
    for seq, tgt in zip(ids, targets):
        x = torch.tensor([seq])
        logits = model(input_ids=x).logits[0]
        loss = F.cross_entropy(logits[[t - 1 for t in tgt]], x[0, tgt])
        grads = torch.autograd.grad(loss, [acts[layer] for layer in range(adapter.n_layers)])
        for layer, g in enumerate(grads):
            expected[layer] += (g[0] * acts[layer][0]).sum(0).abs().detach()
    model.requires_grad_(False)
    for h in handles:
        h.remove()
    got = reduce_neurons(model, ids, targets, reduction="grad_x_act", batch_size=4)
    assert _rel_err(got, expected) < 1e-4


def test_forward_reductions_match_direct_activations():
    model = tiny_model("gpt2")
    adapter = adapter_for(model)
    ids, targets = _examples()
    seen = []
    handle = adapter.downs[1].register_forward_pre_hook(lambda m, i: seen.append(i[0][0]))
    with torch.no_grad():
        for seq in ids:
            model(input_ids=torch.tensor([seq]))
    handle.remove()
    acts = torch.cat(seen)  # [tokens, d_mlp]
    abs_sum = reduce_neurons(model, ids, targets, reduction="act_abs_sum", batch_size=3)
    pos = reduce_neurons(model, ids, targets, reduction="act_pos_count", batch_size=3)
    assert torch.allclose(abs_sum[1], acts.abs().sum(0), rtol=1e-4, atol=1e-5)
    assert torch.equal(pos[1], (acts > 0).float().sum(0))


def test_hooks_removed_and_bad_targets_rejected():
    model = tiny_model("llama")
    ids, targets = _examples()
    cgvst(model, ids, targets)
    adapter = adapter_for(model)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in adapter.ups + adapter.downs)
    with pytest.raises(AtlasError, match="target positions"):
        cgvst(model, [[1, 2, 3]], [[0]])
    with pytest.raises(AtlasError, match="context"):
        cgvst(model, [list(range(5, 600)) * 4], [[1]])


def test_device_map_loading_scores_like_a_plain_load(tmp_path):
    from atlas.models import load_model
    from tests.helpers import save_tiny

    folder = save_tiny("qwen2", tmp_path / "tiny")
    plain = load_model(str(folder), device="cpu")
    mapped = load_model(str(folder), device="cpu", device_map="auto")
    ids, targets = _examples(vocab=600)
    assert torch.allclose(cgvst(mapped.model, ids, targets), cgvst(plain.model, ids, targets),
                          rtol=1e-5, atol=1e-9)
