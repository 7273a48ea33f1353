"""Exemplars against a brute force that keeps every activation of a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atlas.histogram import EDGES
from atlas.models.adapters import adapter_for
from atlas.scoring.exemplars import record_exemplars, window_key
from tests.helpers import tiny_model


def all_activations(model, sequences) -> list[torch.Tensor]:
    """Each sequence alone, unpadded: activations [n_layers, len, d_mlp]."""
    adapter = adapter_for(model)
    out = []
    for ids in sequences:
        seen = []
        hooks = [d.register_forward_pre_hook(lambda m, i, seen=seen: seen.append(i[0][0].detach().float()))
                 for d in adapter.downs]
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
        for h in hooks:
            h.remove()
        out.append(torch.stack(seen))
    return out


def brute_force(acts, sequences, layer, neuron, sign, k, before, after):
    """Every position's (value, input order, window key), first occurrence of each window text
    only, the k best by value then input order."""
    seen, cands = set(), []
    for i, ids in enumerate(sequences):
        for p in range(len(ids)):
            key = window_key(ids, p, before, after)
            if key in seen:
                continue
            seen.add(key)
            cands.append((sign * float(acts[i][layer, p, neuron]), i, p))
    cands.sort(key=lambda c: (-c[0], c[1], c[2]))
    return cands[:k]


def corpus():
    rng = np.random.default_rng(3)
    demo = [int(t) for t in rng.integers(5, 200, 12)]  # repeated in every "prompt"
    seqs = [demo + [int(t) for t in rng.integers(5, 200, int(n))] for n in rng.integers(1, 30, 9)]
    seqs.append([7, 8])  # shorter than a window: edges on both sides
    seqs.append(demo[:5])  # a prefix of the demonstration: its windows differ at the edge
    return seqs


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_exemplars_equal_brute_force(family):
    model = tiny_model(family, vocab=256)
    seqs = corpus()
    parts = [1] * 6 + [2] * (len(seqs) - 6)
    k, before, after = 4, 3, 2
    rec = record_exemplars(model, seqs, parts, k=k, before=before, after=after, n_samples=10,
                           batch_size=3, max_batch_tokens=None)
    acts = all_activations(model, seqs)
    adapter = adapter_for(model)
    for layer in range(adapter.n_layers):
        for neuron in range(adapter.d_mlp):
            for s, sign in enumerate((1, -1)):
                want = brute_force(acts, seqs, layer, neuron, sign, k, before, after)
                got_values = rec.value[s, layer, :, neuron].tolist()
                assert got_values == pytest.approx([sign * v for v, _, _ in want], abs=1e-5)
                for r, (value, i, p) in enumerate(want):
                    gi, gp = int(rec.seq[s, layer, r, neuron]), int(rec.pos[s, layer, r, neuron])
                    # a tie may be kept at another context of the same value
                    assert (gi, gp) == (i, p) or sign * float(acts[gi][layer, gp, neuron]) == \
                        pytest.approx(value, abs=1e-5)
                    window = rec.window[s, layer, r, neuron]
                    for o, v in enumerate(window.tolist()):
                        q = gp - before + o
                        if 0 <= q < len(seqs[gi]):
                            assert v == pytest.approx(float(acts[gi][layer, q, neuron]), abs=1e-5)
                        else:
                            assert math.isnan(v)
    # the repeated demonstration is one context: no two exemplars of a neuron share a window text
    keys = {window_key(seqs[int(i)], int(p), before, after)
            for i, p in zip(rec.seq[0, 0, :, 0], rec.pos[0, 0, :, 0])}
    assert len(keys) == k


def test_density_and_samples_count_the_distinct_positions():
    model = tiny_model("llama", vocab=256)
    seqs = corpus()
    parts = [1] * 6 + [2] * (len(seqs) - 6)
    rec = record_exemplars(model, seqs, parts, k=2, before=3, after=2, n_samples=7, seed=1)
    acts = all_activations(model, seqs)
    seen, per_part = set(), {1: [], 2: []}
    for i, ids in enumerate(seqs):
        for p in range(len(ids)):
            key = window_key(ids, p, 3, 2)
            if key not in seen:
                seen.add(key)
                per_part[parts[i]].append(acts[i][:, p])  # [n_layers, d_mlp]
    for part, values in per_part.items():
        values = torch.stack(values)  # [n, n_layers, d_mlp]
        dens = rec.density[part]
        assert dens.n_tokens == len(values)
        assert torch.equal(dens.n_positive, (values > 0).sum(0))
        assert torch.allclose(dens.total, values.sum(0), atol=1e-4)
        want = torch.bucketize(values, torch.tensor(EDGES))
        assert torch.equal(dens.hist[1, 5], torch.bincount(want[:, 1, 5], minlength=len(EDGES) + 1))
        assert int(dens.hist.sum(-1)[0, 0]) == len(values)
    assert len(rec.sample_positions) == 7
    for (i, p), row in zip(rec.sample_positions, rec.sample_values):
        assert torch.allclose(row, acts[i][:, p], atol=1e-5)


def test_a_sampled_histogram_counts_its_positions_only():
    from atlas.scoring.exemplars import first_occurrences, histogram_positions

    model = tiny_model("llama", vocab=256)
    seqs = corpus()
    parts = [1] * 6 + [2] * (len(seqs) - 6)
    full = record_exemplars(model, seqs, parts, k=2, before=3, after=2, n_samples=7, seed=1)
    rec = record_exemplars(model, seqs, parts, k=2, before=3, after=2, n_samples=7, seed=1,
                           hist_tokens=5)
    acts = all_activations(model, seqs)
    chosen = histogram_positions(first_occurrences(seqs, 3, 2), parts, 5, 1)
    for part in (1, 2):
        values = torch.stack([acts[i][:, p] for i, mask in enumerate(chosen) if parts[i] == part
                              for p in torch.nonzero(mask).flatten()])  # [5, n_layers, d_mlp]
        assert len(values) == 5
        want = torch.bucketize(values, torch.tensor(EDGES))
        assert torch.equal(rec.density[part].hist[0, 7],
                           torch.bincount(want[:, 0, 7], minlength=len(EDGES) + 1))
        assert int(rec.density[part].hist.sum(-1)[1, 3]) == 5
        # share above 0 and the sum still count every token
        assert torch.equal(rec.density[part].n_positive, full.density[part].n_positive)
        assert rec.density[part].n_tokens == full.density[part].n_tokens
    assert torch.equal(rec.value, full.value)


def test_quantile_bins_equal_a_per_neuron_sort():
    from atlas.scoring.exemplars import quantile_bins

    rng = np.random.default_rng(0)
    values = rng.normal(size=(10, 2, 3)).astype(np.float32)
    values[:, 1, 2] = 0.5  # ties: the stable order keeps sample order
    got = quantile_bins(values, 4)
    assert got.low.shape == (4, 2, 3)
    for layer in range(2):
        for neuron in range(3):
            column = values[:, layer, neuron]
            ranked = sorted(range(10), key=lambda i: (column[i], i))
            for b, chunk in enumerate([ranked[0:3], ranked[3:6], ranked[6:8], ranked[8:10]]):
                assert got.low[b, layer, neuron] == column[chunk[0]]
                assert got.high[b, layer, neuron] == column[chunk[-1]]
                assert got.index[b, layer, neuron] == chunk[len(chunk) // 2]
                assert got.value[b, layer, neuron] == column[chunk[len(chunk) // 2]]
    assert quantile_bins(values[:2], 4).low.shape == (2, 2, 3)  # fewer samples than bins


def test_histogram_counts_equal_bucketize_also_on_the_edges():
    from atlas.scoring.exemplars import histogram

    gen = torch.Generator().manual_seed(0)
    values = torch.randn(7, 300, generator=gen) * 3
    values[:, :len(EDGES)] = torch.tensor(EDGES)  # exactly on every edge
    values[:, -1] = 0.0
    want = torch.stack([torch.bincount(torch.bucketize(row, torch.tensor(EDGES)),
                                       minlength=len(EDGES) + 1) for row in values])
    assert torch.equal(histogram(values), want)


@pytest.mark.parametrize("offset", [0, -1, 2 ** 33])  # one key; empty slots (-1); two sorts
def test_best_first_orders_by_value_then_place(offset):
    from atlas.scoring.exemplars import best_first

    gen = torch.Generator().manual_seed(1)
    value = torch.randint(-3, 3, (50, 16), generator=gen).float() * 0.5  # many ties
    value[value == 1.0] = -torch.inf
    value[:, 0], value[:, 1] = 0.0, -0.0  # equal values with other bits
    place = torch.randperm(1000, generator=gen)[:800].view(50, 16) + offset
    got = best_first(value, place)
    for row in range(50):
        want = sorted(range(16), key=lambda i: (-float(value[row, i]), int(place[row, i])))
        assert got[row].tolist() == want
