"""Neuron scoring: the batched engine, the named methods, and set selection."""

from atlas.scoring.engine import cgvst, make_batches, reduce_neurons
from atlas.scoring.methods import METHODS, Method, get_method, lape_sets, random_scores
from atlas.scoring.selection import per_layer_top_k, select, top_rate

__all__ = [
    "METHODS",
    "Method",
    "cgvst",
    "get_method",
    "lape_sets",
    "make_batches",
    "per_layer_top_k",
    "random_scores",
    "reduce_neurons",
    "select",
    "top_rate",
]
