"""Interventions on stored neuron sets: inhibit (factor 0) or amplify (factor > 1)."""

from atlas.intervene.spec import Intervention, apply, random_control

__all__ = ["Intervention", "apply", "random_control"]
