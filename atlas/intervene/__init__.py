"""Interventions on stored neuron sets: inhibit (factor 0) or amplify (factor > 1).

Names are imported on first use: reading a report loads no torch."""

from importlib import import_module

_EXPORTS = {"Intervention": "spec", "apply": "spec", "random_control": "spec"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"atlas.intervene.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'atlas.intervene' has no attribute '{name}'")
