"""Held-out evaluation of tasks, with or without an intervention."""

from atlas.evaluate.metrics import METRICS, Score, evaluate, exact_match, label_likelihood, label_prob

__all__ = ["METRICS", "Score", "evaluate", "exact_match", "label_likelihood", "label_prob"]
