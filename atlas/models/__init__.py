"""Model loading and per-architecture neuron adapters (imported on first use: torch is heavy)."""

from importlib import import_module

from atlas.models.names import DEFAULT_MODEL as DEFAULT_MODEL

_EXPORTS = {
    "ALIASES": "loading",
    "ARCHITECTURES": "adapters",
    "Adapter": "adapters",
    "ArchSpec": "adapters",
    "LoadedModel": "loading",
    "adapter_for": "adapters",
    "load_model": "loading",
}
__all__ = sorted([*_EXPORTS, "DEFAULT_MODEL"])


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"atlas.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'atlas.models' has no attribute '{name}'")
