"""Where the neurons are, per architecture family: a declarative mapping of module paths.

A neuron is one channel of an MLP's intermediate activation, the input of the down projection
(for gated MLPs ``act(gate(x)) * up(x)``). Each family names, relative to the model:

- ``layers``: the ModuleList of transformer blocks,
- ``up``: the MLP's up (first) projection inside a block, whose weight CGVST differentiates,
- ``down``: the down projection inside a block; its input is the activation site,
- ``act``: the activation function's module inside a block; its output is ``act(gate(x))`` for
  gated MLPs (where LAPE counts activations, as released) and the activation site otherwise,
- ``up_part``: which slice of the up projection's output is ``up(x)`` (phi3 fuses gate and up),
- ``centred_norm``: the MLP's input comes from a centring LayerNorm, so ``Σ_j x[t, j]`` depends
  only on the norm's affine parameters (exactly 0 untrained) and CGVST is degenerate; the final
  norm centres the residual stream too,
- ``final_norm``: the norm before the unembedding, relative to the model,
- ``norm_offset``: what the final norm adds to its weight to get its scale (Gemma scales by
  ``1 + weight``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from atlas.errors import AtlasError


@dataclass(frozen=True)
class ArchSpec:
    layers: str
    up: str
    down: str
    act: str = "mlp.act_fn"
    up_part: Literal["all", "second_half"] = "all"
    centred_norm: bool = False
    final_norm: str = "model.norm"
    norm_offset: float = 0.0


_GATED = ArchSpec(layers="model.layers", up="mlp.up_proj", down="mlp.down_proj")
_GEMMA = ArchSpec(layers="model.layers", up="mlp.up_proj", down="mlp.down_proj", norm_offset=1.0)

ARCHITECTURES: dict[str, ArchSpec] = {
    "llama": _GATED,
    "mistral": _GATED,
    "qwen2": _GATED,
    "qwen3": _GATED,
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3_text": _GEMMA,
    "phi3": ArchSpec("model.layers", "mlp.gate_up_proj", "mlp.down_proj", "mlp.activation_fn",
                     "second_half"),
    "gpt2": ArchSpec("transformer.h", "mlp.c_fc", "mlp.c_proj", "mlp.act", centred_norm=True,
                     final_norm="transformer.ln_f"),
    "gpt_neox": ArchSpec("gpt_neox.layers", "mlp.dense_h_to_4h", "mlp.dense_4h_to_h", "mlp.act",
                         centred_norm=True, final_norm="gpt_neox.final_layer_norm"),
}


def _in_features(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    # transformers' Conv1D (gpt2) stores its weight as [in, out]
    return int(module.weight.shape[0])


@dataclass
class Adapter:
    """The resolved neuron sites of one loaded model."""

    family: str
    spec: ArchSpec
    ups: list[nn.Module]
    downs: list[nn.Module]
    acts: list[nn.Module]
    n_layers: int
    d_mlp: int

    def down_columns(self, layer: int) -> torch.Tensor:
        """Each neuron's output direction in the residual stream: [d_model, d_mlp]."""
        weight = self.downs[layer].weight
        # nn.Linear stores [out, in] = [d_model, d_mlp]; transformers' Conv1D (gpt2) [in, out]
        return weight if isinstance(self.downs[layer], nn.Linear) else weight.T

    def up_slice(self, up_out: torch.Tensor) -> torch.Tensor:
        """The ``up(x)`` part of the up projection's output: [..., d_mlp]."""
        if self.spec.up_part == "second_half":
            return up_out[..., self.d_mlp :]
        return up_out


def context_length(config) -> int | None:
    """The model's maximum number of positions, where its config states one."""
    for attr in ("max_position_embeddings", "n_positions"):
        if getattr(config, attr, None):
            return int(getattr(config, attr))
    return None


def family_of(model: nn.Module) -> str:
    return str(getattr(model.config, "model_type", type(model).__name__))


def adapter_for(model: nn.Module) -> Adapter:
    """Resolve the neuron sites of ``model``; unsupported families get an AtlasError."""
    family = family_of(model)
    spec = ARCHITECTURES.get(family)
    if spec is None:
        raise AtlasError(
            f"unsupported architecture '{family}'; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    layers = model.get_submodule(spec.layers)
    ups = [block.get_submodule(spec.up) for block in layers]
    downs = [block.get_submodule(spec.down) for block in layers]
    acts = [block.get_submodule(spec.act) for block in layers]
    return Adapter(
        family=family,
        spec=spec,
        ups=ups,
        downs=downs,
        acts=acts,
        n_layers=len(layers),
        d_mlp=_in_features(downs[0]),
    )
