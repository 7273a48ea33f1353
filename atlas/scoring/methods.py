"""Named scoring methods: what each targets, how it reduces, how sums become scores.

``cgvst``         CGVST as the paper's released code computes it: up-weight gradient variation,
                  the logits at every role-marker token predicting the next token, loss =
                  mean(earlier turns) + mean(last demonstration and query)
``cgvst_marker``  the same gradient score predicting the marker tokens themselves, one mean,
                  prompts with the real BOS/EOS (atlas's first reading of the method)
``gv``            the same gradient score with every token as a target (all-tokens variant)
``grad_x_act``    attribution ``|Σ_t a·∂L/∂a|`` at the activation site, cgvst's targets and loss
``act_mean``    mean |activation| over all tokens
``act_prob``    probability that the activation is > 0, over all tokens (LAPE's input)
``lape``        activation-probability entropy across a set of tasks (see :func:`lape_scores`)
``random``      seeded uniform scores: the control
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from atlas.errors import AtlasError


@dataclass(frozen=True)
class Method:
    name: str
    reduction: str | None  # engine reduction; None for methods computed without a model pass
    targets: str | None  # "reference" | "marker" | "all" | None (forward-only: every token)
    per_token: bool = False  # divide the sums by the number of tokens

    @property
    def needs_grad(self) -> bool:
        return self.targets is not None

    @property
    def rule(self) -> str:
        """The prompt rule (rendering and special tokens) of the method's examples."""
        return "marker" if self.targets == "marker" else "reference"


METHODS: dict[str, Method] = {
    "cgvst": Method("cgvst", "up_weight_grad", "reference"),
    "cgvst_marker": Method("cgvst_marker", "up_weight_grad", "marker"),
    "gv": Method("gv", "up_weight_grad", "all"),
    "grad_x_act": Method("grad_x_act", "grad_x_act", "reference"),
    "act_mean": Method("act_mean", "act_abs_sum", None, per_token=True),
    "act_prob": Method("act_prob", "act_pos_count", None, per_token=True),
    "lape": Method("lape", None, None),
    "random": Method("random", None, None),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise AtlasError(f"unknown method '{name}'; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def random_scores(n_layers: int, d_mlp: int, seed: int) -> torch.Tensor:
    """Seeded uniform scores [n_layers, d_mlp]: the random-neuron control."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n_layers, d_mlp, generator=gen, dtype=torch.float32)


def lape_scores(act_prob: torch.Tensor) -> torch.Tensor:
    """LAPE scores per task from activation probabilities ``act_prob`` [n_tasks, n_layers, d_mlp].

    Following language activation probability entropy (Tang et al., 2024): normalise each neuron's
    activation probabilities across tasks to a distribution q, take its entropy H. A neuron is
    specific to task k when H is low and its mass sits on k: score_k = q_k · (log K − H).
    """
    n_tasks = act_prob.shape[0]
    if n_tasks < 2:
        raise AtlasError("lape compares tasks: give at least two --task values")
    total = act_prob.sum(0, keepdim=True).clamp_min(1e-12)
    q = act_prob / total  # [n_tasks, n_layers, d_mlp]
    entropy = -(q * q.clamp_min(1e-12).log()).sum(0)  # [n_layers, d_mlp]
    return q * (math.log(n_tasks) - entropy)
