"""What each neuron writes: the tokens its output direction promotes and suppresses.

A neuron n of layer l adds ``a · W_down[:, n]`` to the residual stream. Read directly through the
final norm's scale ``g`` and the unembedding ``W_U``, its effect on the logits per unit of
activation is ``W_U · (g ⊙ W_down[:, n])`` (``g = 1 + weight`` where the family's norm scales so;
the direction is centred first where the final norm is a centring LayerNorm). What this leaves
out: the norm's input-dependent division by the residual stream's RMS (a positive factor per
token, so the ranking of tokens is unchanged), a LayerNorm's bias (the same for every neuron),
and everything the later layers do with the direction (the "direct" path only).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from atlas.models.adapters import Adapter, adapter_for


@dataclass
class LogitEffects:
    """Per neuron, the ``k`` most promoted and most suppressed tokens with their logit change
    per unit of activation: ids long and values float32, each [n_layers, d_mlp, k] (promoted
    in decreasing, suppressed in increasing order of value)."""

    promoted_ids: torch.Tensor
    promoted: torch.Tensor
    suppressed_ids: torch.Tensor
    suppressed: torch.Tensor


def norm_scale(model: nn.Module) -> torch.Tensor:
    """The final norm's per-channel scale ``g`` as float32 [d_model]."""
    spec = adapter_for(model).spec
    weight = model.get_submodule(spec.final_norm).weight
    return weight.detach().float() + spec.norm_offset


@torch.no_grad()
def readout(model: nn.Module) -> torch.Tensor:
    """The unembedding through the final norm's scale, ``W_U · diag(g)``: float32 [vocab,
    d_model] (one matrix for every layer's directions)."""
    unembed = model.get_output_embeddings().weight.detach().float()  # [vocab, d_model]
    return unembed * norm_scale(model)[None, :]


@torch.no_grad()
def layer_logit_effects(adapter: Adapter, layer: int, read: torch.Tensor) -> torch.Tensor:
    """Every neuron's direct logit effect in ``layer`` through ``read`` (:func:`readout`):
    float32 [vocab, d_mlp]."""
    directions = adapter.down_columns(layer).detach().float()  # [d_model, d_mlp]
    if adapter.spec.centred_norm:
        directions = directions - directions.mean(0, keepdim=True)
    return read @ directions


@torch.no_grad()
def logit_effects(model: nn.Module, k: int = 20) -> LogitEffects:
    """The ``k`` tokens each neuron's output direction promotes and suppresses most.

    Args:
        model: a loaded causal LM of a supported family.
        k: tokens kept each way.

    Returns:
        :class:`LogitEffects`, each tensor [n_layers, d_mlp, k].
    """
    adapter, read = adapter_for(model), readout(model)
    per_layer = []
    for layer in range(adapter.n_layers):
        effects = layer_logit_effects(adapter, layer, read)  # [vocab, d_mlp]
        top = effects.topk(k, dim=0)
        bottom = effects.topk(k, dim=0, largest=False)
        per_layer.append((top.indices.T, top.values.T, bottom.indices.T, bottom.values.T))
    return LogitEffects(*(torch.stack([p[i] for p in per_layer]).contiguous() for i in range(4)))
