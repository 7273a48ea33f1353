"""Named scoring methods: what each targets, how it reduces, how sums become scores.

``cgvst``         CGVST as the paper's released code computes it: up-weight gradient variation,
                  the logits at every role-marker token predicting the next token, loss =
                  mean(earlier turns) + mean(last demonstration and query)
``cgvst_marker``  the same gradient score predicting the marker tokens themselves, one mean,
                  prompts with the real BOS/EOS (atlas's first reading of the method)
``gv``            the same gradient score with every token as a target (all-tokens variant)
``grad_x_act``    attribution ``|Σ_t a·∂L/∂a|`` at the activation site, cgvst's targets and loss
``act_mean``    mean |activation| over all tokens
``act_prob``    probability that the activation (the down projection's input) is > 0, over all tokens
``gate_prob``   probability that ``act(gate(x)) > 0``, over all tokens (LAPE's input, as released)
``lape``        language activation probability entropy (Tang et al., 2024) with tasks as
                languages, exactly as the released ``identify.py`` (see :func:`lape_sets`)
``random``      seeded uniform scores: the control
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
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
    def prompt_rule(self) -> str:
        """The prompt rule (rendering and special tokens) of the method's examples."""
        return "marker" if self.targets == "marker" else "reference"


METHODS: dict[str, Method] = {
    "cgvst": Method("cgvst", "up_weight_grad", "reference"),
    "cgvst_marker": Method("cgvst_marker", "up_weight_grad", "marker"),
    "gv": Method("gv", "up_weight_grad", "all"),
    "grad_x_act": Method("grad_x_act", "grad_x_act", "reference"),
    "act_mean": Method("act_mean", "act_abs_sum", None, per_token=True),
    "act_prob": Method("act_prob", "act_pos_count", None, per_token=True),
    "gate_prob": Method("gate_prob", "gate_pos_count", None, per_token=True),
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


# The released identify.py's constants: 1% of all neurons by entropy, the 95th percentile of
# every activation probability as both the filter and the assignment bar.
LAPE_TOP_RATE = 0.01
LAPE_FILTER_RATE = 0.95
LAPE_BAR_RATE = 0.95
LAPE_RULE = f"lape:{LAPE_TOP_RATE:g}"


def _kth_smallest(values: torch.Tensor, rate: float) -> float:
    """``values.kthvalue(round(len · rate))`` of the released code (1-based k)."""
    k = min(max(round(values.numel() * rate), 1), values.numel())
    return float(values.kthvalue(k).values)


def lape_sets(act_prob: torch.Tensor, top_rate: float = LAPE_TOP_RATE,
              filter_rate: float = LAPE_FILTER_RATE, bar_rate: float = LAPE_BAR_RATE
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """LAPE as the released ``identify.py`` computes it, tasks in the role of languages.

    From activation probabilities ``act_prob`` [n_tasks, n_layers, d_mlp]: normalise each
    neuron's probabilities over tasks (q), take their entropy H; a neuron none of whose
    probabilities exceeds the ``filter_rate`` quantile of all probabilities is dismissed; the
    ``round(top_rate · n_layers · d_mlp)`` lowest-entropy neurons are selected globally (ties
    at the cut broken by position, where the released ``topk`` leaves them unspecified); each
    selected neuron belongs to every task whose probability exceeds the ``bar_rate`` quantile,
    so sets differ in size, may overlap and may be empty.

    Returns (scores, masks), both [n_tasks, n_layers, d_mlp]: ``log K − H`` where the neuron
    passes the filter and the task's probability exceeds the bar (else 0), and the sets.
    """
    n_tasks, n_layers, d_mlp = act_prob.shape
    if n_tasks < 2:
        raise AtlasError("lape compares tasks: give at least two --task values")
    probs = act_prob.float().permute(1, 2, 0)  # [n_layers, d_mlp, n_tasks]
    normed = probs / probs.sum(-1, keepdim=True)
    normed[torch.isnan(normed)] = 0
    log_q = torch.where(normed > 0, normed.log(), torch.zeros_like(normed))
    entropy = -(normed * log_q).sum(-1)  # [n_layers, d_mlp]
    flat = probs.flatten()
    above_filter = probs > _kth_smallest(flat, filter_rate)  # [n_layers, d_mlp, n_tasks]
    entropy[~above_filter.any(-1)] = math.inf
    k = round(entropy.numel() * top_rate)
    chosen = torch.from_numpy(np.argsort(entropy.flatten().numpy(), kind="stable")[:k])
    selected = torch.zeros(entropy.numel(), dtype=torch.bool)
    selected[chosen] = True
    above_bar = probs > _kth_smallest(flat, bar_rate)  # [n_layers, d_mlp, n_tasks]
    assigned = above_bar & selected.view(n_layers, d_mlp, 1)
    specific = (math.log(n_tasks) - entropy).clamp_min(0)  # [n_layers, d_mlp]
    passes = above_bar & torch.isfinite(entropy)[..., None]
    scores = torch.where(passes, specific[..., None], torch.zeros_like(probs))
    return scores.permute(2, 0, 1).contiguous(), assigned.permute(2, 0, 1).contiguous()
