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


CANDIDATES = 2  # with a bfloat16 product: k·CANDIDATES candidates each way, rescored exactly
RESCORE_CHUNK = 128  # neurons rescored at a time


@torch.no_grad()

@torch.no_grad()
def logit_effects(model: nn.Module, k: int = 20, bf16_candidates: bool | None = None
                  ) -> LogitEffects:
    """The ``k`` tokens each neuron's output direction promotes and suppresses most.

    Args:
        model: a loaded causal LM of a supported family.
        k: tokens kept each way.
        bf16_candidates: find ``CANDIDATES · k`` candidates each way with a bfloat16 product,
            then rank them by their float32 values (None: where the CPU or GPU computes
            bfloat16 natively). The values are always float32; the chosen tokens equal the
            float32 ranking unless a token's bfloat16 rounding error exceeds its gap to the
            last candidate.

    Returns:
        :class:`LogitEffects`, each tensor [n_layers, d_mlp, k].
    """
    adapter, read = adapter_for(model), readout(model)
    if bf16_candidates is None:
        bf16_candidates = _fast_bf16(read.device)
    read_t = (read.bfloat16() if bf16_candidates else read).T.contiguous()  # [d_model, vocab]
    per_layer = []
    for layer in range(adapter.n_layers):
        directions = _directions(adapter, layer)  # [d_model, d_mlp]
        if bf16_candidates:
            approx = directions.T.bfloat16() @ read_t  # [d_mlp, vocab]
            sides = [_rescored(approx, read, directions, k, largest) for largest in (True, False)]
        else:
            exact = directions.T @ read_t  # [d_mlp, vocab]: one row per neuron
            sides = [tuple(exact.topk(k, dim=1, largest=largest)) for largest in (True, False)]
        (top, top_ids), (bottom, bottom_ids) = sides
        per_layer.append((top_ids, top, bottom_ids, bottom))
    return LogitEffects(*(torch.stack([p[i] for p in per_layer]).contiguous() for i in range(4)))


def _directions(adapter: Adapter, layer: int) -> torch.Tensor:
    directions = adapter.down_columns(layer).detach().float()  # [d_model, d_mlp]
    if adapter.spec.centred_norm:
        directions = directions - directions.mean(0, keepdim=True)
    return directions


def _rescored(approx: torch.Tensor, read: torch.Tensor, directions: torch.Tensor, k: int,
              largest: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The top ``k`` (``largest``) of each row among ``approx``'s candidates, by float32 value:
    (values, token ids), each [d_mlp, k]."""
    candidates = approx.topk(min(CANDIDATES * k, approx.shape[1]), dim=1,
                             largest=largest).indices  # [d_mlp, n_cand]
    values = torch.empty(candidates.shape, dtype=torch.float32, device=read.device)
    for start in range(0, candidates.shape[0], RESCORE_CHUNK):
        part = slice(start, start + RESCORE_CHUNK)
        rows = read[candidates[part]]  # [chunk, n_cand, d_model]
        values[part] = torch.bmm(rows, directions.T[part, :, None]).squeeze(-1)
    best = values.topk(k, dim=1, largest=largest)
    return best.values, candidates.gather(1, best.indices)


def _fast_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    from atlas.models.loading import native_bf16

    return native_bf16()
