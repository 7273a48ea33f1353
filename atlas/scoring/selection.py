"""Select a neuron set from scores: global top rate (the paper's 5%) or per-layer top-k."""

from __future__ import annotations

import numpy as np
import torch

from atlas.errors import AtlasError


def top_rate(scores: torch.Tensor, rate: float = 0.05) -> torch.Tensor:
    """Global top ``rate`` of all neurons: bool mask [n_layers, d_mlp] with int(numel·rate) set.

    Ties are broken by position (stable sort), so the selection is deterministic."""
    if not 0 < rate <= 1:
        raise AtlasError(f"selection rate {rate} must lie in (0, 1]; e.g. 0.05 for the top 5%")
    flat = scores.flatten().numpy()
    k = int(flat.size * rate)
    if k == 0:
        raise AtlasError(f"rule top:{rate:g} selects no neuron of {flat.size}; use a rate of at "
                         f"least {1 / flat.size:.2g}")
    order = np.argsort(-flat, kind="stable")[:k]
    mask = np.zeros(flat.size, dtype=bool)
    mask[order] = True
    return torch.from_numpy(mask.reshape(scores.shape))


def per_layer_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` highest-scoring neurons of every layer: bool mask [n_layers, d_mlp]."""
    n_layers, d_mlp = scores.shape
    if not 0 < k <= d_mlp:
        raise AtlasError(f"per-layer k={k} must lie in 1..{d_mlp}")
    order = np.argsort(-scores.numpy(), axis=1, kind="stable")[:, :k]
    mask = np.zeros((n_layers, d_mlp), dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return torch.from_numpy(mask)


def require_finite(scores, what: str) -> None:
    """Refuse NaN or infinite scores (a tensor or an array), naming where they came from."""
    bad = int((~np.isfinite(np.asarray(scores))).sum())
    if bad:
        raise AtlasError(f"{what} has {bad} non-finite score(s) (NaN or inf); check the model's "
                         "dtype (try --dtype float32) and the examples")


def parse_rule(selection_rule: str) -> tuple[str, float]:
    """``top:0.05`` (global rate) or ``layer:64`` (per-layer k)."""
    kind, _, value = selection_rule.partition(":")
    try:
        if kind == "top":
            return kind, float(value or 0.05)
        if kind == "layer":
            return kind, int(value)
    except ValueError:
        pass
    raise AtlasError(f"selection rule '{selection_rule}' not understood; use top:RATE or layer:K")


def select(scores: torch.Tensor, selection_rule: str = "top:0.05") -> torch.Tensor:
    kind, value = parse_rule(selection_rule)
    return top_rate(scores, value) if kind == "top" else per_layer_top_k(scores, int(value))
