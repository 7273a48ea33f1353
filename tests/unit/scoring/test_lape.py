"""LAPE against an independent re-implementation of the released identify.py, and its input
(the activation function's output, not the activation site) against a direct forward pass."""

from __future__ import annotations

import pytest
import torch

from atlas.models.adapters import adapter_for
from atlas.scoring import lape_sets, reduce_neurons
from tests.helpers import tiny_model


def released_identify(over_zero: torch.Tensor, n: torch.Tensor) -> list[list[torch.Tensor]]:
    """identify.py line by line: over_zero [layers, inter, langs], n [langs]; returns
    final_indice (one list of per-layer index tensors per language with any neuron)."""
    top_rate, filter_rate, activation_bar_ratio = 0.01, 0.95, 0.95
    num_layers = over_zero.size(0)
    activation_probs = over_zero / n
    normed = activation_probs / activation_probs.sum(dim=-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_probs = torch.where(normed > 0, normed.log(), 0)
    entropy = -torch.sum(normed * log_probs, dim=-1)
    flattened_probs = activation_probs.flatten()
    top_prob_value = flattened_probs.kthvalue(round(len(flattened_probs) * filter_rate)).values.item()
    top_position = (activation_probs > top_prob_value).sum(dim=-1)
    entropy[top_position == 0] = torch.inf
    flattened_entropy = entropy.flatten()
    top_entropy_value = round(len(flattened_entropy) * top_rate)
    _, index = flattened_entropy.topk(top_entropy_value, largest=False)
    row_index = index // entropy.size(1)
    col_index = index % entropy.size(1)
    selected_probs = activation_probs[row_index, col_index].transpose(0, 1)
    bar = flattened_probs.kthvalue(round(len(flattened_probs) * activation_bar_ratio)).values.item()
    lang, indice = torch.where(selected_probs > bar)
    merged_index = torch.stack((row_index, col_index), dim=-1)
    final_indice = []
    for index in indice.split(torch.bincount(lang).tolist()):
        lang_index = sorted(tuple(row.tolist()) for row in merged_index[index])
        layer_index = [[] for _ in range(num_layers)]
        for layer, h in lang_index:
            layer_index[layer].append(h)
        final_indice.append([torch.tensor(h).long() for h in layer_index])
    return final_indice


def as_masks(final_indice, n_tasks: int, n_layers: int, d_mlp: int) -> torch.Tensor:
    masks = torch.zeros(n_tasks, n_layers, d_mlp, dtype=torch.bool)
    for k, per_layer in enumerate(final_indice):
        for layer, idx in enumerate(per_layer):
            masks[k, layer, idx] = True
    return masks


def hand_made(seed: int, n_tasks: int = 4, n_layers: int = 5, d_mlp: int = 200):
    """Counts with distinct entropies (no ties at the cut), a few neurons strong in two tasks,
    and the last task's probabilities all low (it gets no neuron)."""
    gen = torch.Generator().manual_seed(seed)
    n = torch.tensor([1000] * n_tasks)
    over_zero = torch.randint(0, 400, (n_layers, d_mlp, n_tasks), generator=gen)
    over_zero[..., -1] = torch.randint(0, 50, (n_layers, d_mlp), generator=gen)
    over_zero[0, :3, 0] = 990 - torch.arange(3)  # task-0 specialists
    over_zero[0, :3, 1:] = torch.arange(3)[:, None] + 1
    over_zero[1, :2, :2] = torch.tensor([[985, 984], [983, 982]])  # shared by tasks 0 and 1
    over_zero[1, :2, 2:] = torch.tensor([[1, 0], [2, 0]])
    return over_zero, n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lape_equals_the_released_identify(seed):
    over_zero, n = hand_made(seed)
    n_layers, d_mlp, n_tasks = over_zero.shape
    expected = as_masks(released_identify(over_zero, n), n_tasks, n_layers, d_mlp)
    probs = (over_zero / n).permute(2, 0, 1)  # [tasks, layers, d_mlp]
    scores, masks = lape_sets(probs)
    assert torch.equal(masks, expected)
    assert int(masks[:2, 1, :2].all(0).sum()) == 2  # neurons in several tasks
    assert not masks[-1].any()  # a task assigned none
    assert (scores[masks] > 0).all() and (scores >= 0).all()
    assert masks.flatten(1).any(0).sum() <= round(n_layers * d_mlp * 0.01)


def test_ties_at_the_cut_are_broken_by_position():
    n_tasks, n_layers, d_mlp = 2, 1, 300
    probs = torch.full((n_tasks, n_layers, d_mlp), 0.1)
    probs[0, 0, 100:110] = 0.9  # ten equally specific neurons, three selected (1% of 300)
    scores, masks = lape_sets(probs)
    assert masks[0, 0].nonzero().flatten().tolist() == [100, 101, 102]
    assert not masks[1].any()
    assert torch.allclose(scores[0, 0, 100:110], scores[0, 0, 100].expand(10))


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "phi3", "gpt2"])
def test_gate_prob_counts_the_activation_function_output(family):
    model = tiny_model(family)
    adapter = adapter_for(model)
    ids = [[5, 9, 14, 3, 7, 21], [8, 2, 40, 6]]
    outputs = []
    handles = [act.register_forward_hook(lambda m, i, o: outputs.append(o.detach()))
               for act in adapter.acts]
    expected = torch.zeros(adapter.n_layers, adapter.d_mlp)
    with torch.no_grad():
        for row in ids:
            outputs.clear()
            model(input_ids=torch.tensor([row]))
            for layer, out in enumerate(outputs):
                expected[layer] += (out[0, :, : adapter.d_mlp] > 0).float().sum(0)
    for handle in handles:
        handle.remove()
    got = reduce_neurons(model, ids, [[1], [1]], reduction="gate_pos_count", batch_size=2)
    assert torch.equal(got, expected)
    if family != "gpt2":  # gated: another site than act(gate) * up
        act = reduce_neurons(model, ids, [[1], [1]], reduction="act_pos_count", batch_size=2)
        assert not torch.equal(act, got)
