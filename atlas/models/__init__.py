"""Model loading and per-architecture neuron adapters."""

from atlas.models.adapters import ARCHITECTURES, Adapter, ArchSpec, adapter_for
from atlas.models.loading import ALIASES, DEFAULT_MODEL, LoadedModel, load_model

__all__ = [
    "ALIASES",
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "Adapter",
    "ArchSpec",
    "LoadedModel",
    "adapter_for",
    "load_model",
]
