"""Interventions: scale chosen neurons at the activation site (the down projection's input).

A spec is small and serialisable (JSON); :func:`apply` installs it as forward pre-hooks and removes
every hook on exit, also on error. Factor 0 inhibits, factor > 1 amplifies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from atlas.errors import AtlasError
from atlas.models.adapters import adapter_for


@dataclass(frozen=True)
class Intervention:
    neurons: dict[int, list[int]]  # layer -> neuron indices
    factor: float = 0.0
    positions: list[int] | None = None  # token positions to touch; None: all
    label: str = field(default="", compare=False)

    @classmethod
    def from_mask(cls, mask: torch.Tensor, factor: float, label: str = "") -> Intervention:
        neurons = {int(layer): torch.nonzero(mask[layer]).flatten().tolist()
                   for layer in range(mask.shape[0]) if bool(mask[layer].any())}
        return cls(neurons, factor, None, label)

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.neurons.values())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Intervention:
        data = json.loads(text)
        data["neurons"] = {int(k): v for k, v in data["neurons"].items()}
        return cls(**data)


@contextmanager
def apply(model: nn.Module, spec: Intervention, rows: list[int] | None = None
          ) -> Iterator[nn.Module]:
    """Scale ``spec``'s neurons by ``spec.factor`` while the context is open.

    Args:
        model: the model (its adapter finds the down projections).
        spec: the intervention.
        rows: the batch rows it touches (None: every row); the others run unchanged, so one
            batch can hold the unmodified and the intervened runs of one prompt side by side.
    """
    adapter = adapter_for(model)
    handles = []
    try:
        for layer, indices in spec.neurons.items():
            if not 0 <= layer < adapter.n_layers:
                raise AtlasError(f"intervention layer {layer} outside 0..{adapter.n_layers - 1}")
            if indices and max(indices) >= adapter.d_mlp:
                raise AtlasError(f"intervention neuron {max(indices)} ≥ d_mlp {adapter.d_mlp}")
            down = adapter.downs[layer]
            scale = torch.ones(adapter.d_mlp)
            scale[torch.tensor(indices, dtype=torch.long)] = spec.factor
            handles.append(down.register_forward_pre_hook(_scaler(scale, spec.positions, rows)))
        yield model
    finally:
        for handle in handles:
            handle.remove()


def _scaler(scale: torch.Tensor, positions: list[int] | None, rows: list[int] | None):
    cache: dict = {}

    def hook(module, inputs):
        act = inputs[0]  # [batch, pos, d_mlp]
        key = (act.device, act.dtype)
        if key not in cache:
            cache[key] = scale.to(device=act.device, dtype=act.dtype)
        factor = cache[key]
        if positions is None and rows is None:
            return (act * factor, *inputs[1:])
        out = act.clone()
        batch = slice(None) if rows is None else torch.tensor(rows, device=act.device)
        pos = (slice(None) if positions is None else
               torch.tensor([p for p in positions if p < act.shape[1]], dtype=torch.long,
                            device=act.device))
        if rows is None:
            out[:, pos] = out[:, pos] * factor
        elif positions is None:
            out[batch] = out[batch] * factor
        else:
            out[batch[:, None], pos] = out[batch[:, None], pos] * factor
        return (out, *inputs[1:])

    return hook


def random_control(mask: torch.Tensor, seed: int) -> torch.Tensor:
    """A random set with the same per-layer counts as ``mask`` (bool [n_layers, d_mlp])."""
    rng = np.random.default_rng(seed)
    out = torch.zeros_like(mask)
    for layer in range(mask.shape[0]):
        k = int(mask[layer].sum())
        out[layer, torch.from_numpy(rng.choice(mask.shape[1], size=k, replace=False))] = True
    return out
