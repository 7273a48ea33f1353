"""Logit effects against the real final norm and unembedding modules of each family."""

from __future__ import annotations

import pytest
import torch

from atlas.models.adapters import adapter_for
from atlas.models.unembed import logit_effects
from tests.helpers import tiny_model


def through_modules(model, direction: torch.Tensor) -> torch.Tensor:
    """W_U · (g ⊙ d) from the model's own final norm and head: the norm divides by the
    direction's RMS (or std, after centring) and adds its bias, both undone here."""
    spec = adapter_for(model).spec
    norm = model.get_submodule(spec.final_norm)
    x = direction[None, None, :]
    with torch.no_grad():
        if spec.centred_norm:  # LayerNorm: (d − mean) / std · g + b
            scale = torch.sqrt(direction.var(unbiased=False) + norm.eps)
            normed = (norm(x) - norm.bias) * scale
        else:  # RMSNorm: d / rms · g
            eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
            normed = norm(x) * torch.sqrt(direction.pow(2).mean() + eps)
        return model.get_output_embeddings()(normed)[0, 0]  # [vocab]


@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_logit_effects_equal_the_modules_product(family, bf16):
    """Both ways of finding the tokens (a float32 product; bfloat16 candidates rescored in
    float32) against the model's own modules."""
    model = tiny_model(family, vocab=300)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert tied == (family != "llama")  # both kinds of unembedding are covered
    k = 5
    got = logit_effects(model, k=k, bf16_candidates=bf16)
    adapter = adapter_for(model)
    for layer in range(adapter.n_layers):
        directions = adapter.down_columns(layer).detach().float()
        for neuron in (0, 7, adapter.d_mlp - 1):
            want = through_modules(model, directions[:, neuron])
            top, bottom = want.topk(k), want.topk(k, largest=False)
            assert got.promoted[layer, neuron].tolist() == pytest.approx(top.values.tolist(), abs=1e-4)
            assert got.suppressed[layer, neuron].tolist() == pytest.approx(bottom.values.tolist(),
                                                                          abs=1e-4)
            assert got.promoted_ids[layer, neuron].tolist() == top.indices.tolist()
            assert got.suppressed_ids[layer, neuron].tolist() == bottom.indices.tolist()
