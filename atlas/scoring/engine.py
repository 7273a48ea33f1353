"""The scoring engine: one batched pass over examples, per-layer hooks, one reduction.

Every scorer reduces, per layer and neuron, something it reads at the MLP during a forward pass
(and, for gradient scorers, during an activation-only backward pass). Parameters never get
gradients: the up projection's output of the first layer becomes the autograd leaf.

Reductions (all summed over examples, accumulated in float32):

- ``up_weight_grad``: ``|Σ_j ∂L_i/∂W_up[n, j]| = |Σ_t ∂L_i/∂u[t, n] · Σ_j x[t, j]|`` (CGVST, GV)
- ``grad_x_act``: ``|Σ_t a[t, n] · ∂L_i/∂a[t, n]|`` at the activation site
- ``act_abs_sum``: ``Σ_t |a[t, n]|`` (forward only)
- ``act_pos_count``: ``Σ_t [a[t, n] > 0]`` (forward only)
- ``gate_pos_count``: ``Σ_t [act(gate(x))[t, n] > 0]``, the activation function's output (forward
  only; LAPE's count as released, which for gated MLPs is not the activation site)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from atlas.errors import AtlasError
from atlas.models.adapters import Adapter, adapter_for
from atlas.models.batching import check_context, length_groups, padded
from atlas.models.heads import logits_at

REDUCTIONS = ("up_weight_grad", "grad_x_act", "act_abs_sum", "act_pos_count", "gate_pos_count")
# On a CPU, padded batches beyond about a thousand tokens run slower per token (measured with
# bench/scoring_throughput.py), so CPU batches are capped there unless a budget is given.
CPU_BATCH_TOKENS = 1024
GRADIENT_REDUCTIONS = ("up_weight_grad", "grad_x_act")


Groups = list[list[int]]  # one example's loss groups of positions t predicted from t − 1
Targets = Sequence[int] | Sequence[Sequence[int]]  # positions (one group) or groups


def as_groups(targets: Targets) -> Groups:
    """One example's targets as loss groups: a flat list of positions is one group."""
    if targets and all(isinstance(t, int) for t in targets):
        return [list(targets)]
    return [list(g) for g in targets]


@dataclass
class Batch:
    input_ids: torch.Tensor  # [batch, pos]
    attention_mask: torch.Tensor  # [batch, pos]
    targets: list[Groups]  # per example, loss groups of positions t predicted from t-1
    n_tokens: int
    indices: list[int]  # positions of the batch's examples in the input list


def make_batches(
    input_ids: Sequence[Sequence[int]],
    targets: Sequence[Targets],
    batch_size: int,
    pad_id: int = 0,
    max_batch_tokens: int | None = None,
) -> list[Batch]:
    """Right-padded batches; examples are sorted by length so padding stays small."""
    batches = []
    for group in length_groups([len(ids) for ids in input_ids], batch_size, max_batch_tokens):
        ids, mask = padded([input_ids[i] for i in group], pad_id)
        batches.append(
            Batch(ids, mask, [as_groups(targets[i]) for i in group],
                  sum(len(input_ids[i]) for i in group), group)
        )
    return batches


def _check_targets(input_ids: Sequence[Sequence[int]], targets: Sequence[Targets]) -> None:
    if len(input_ids) != len(targets):
        raise AtlasError(f"{len(input_ids)} inputs but {len(targets)} target lists; give one each")
    for i, (ids, tgt) in enumerate(zip(input_ids, targets)):
        groups = as_groups(tgt)
        if not groups or not all(groups):
            raise AtlasError(f"example {i} has an empty target group; every group needs a position")
        flat = [t for g in groups for t in g]
        if min(flat) < 1 or max(flat) >= len(ids):
            raise AtlasError(f"example {i}: target positions must lie in 1..{len(ids) - 1}")


def _check_context(model: nn.Module, input_ids: Sequence[Sequence[int]]) -> None:
    check_context(model.config, max((len(ids) for ids in input_ids), default=0), "a prompt",
                  "use fewer shots or skip long examples (--max-tokens)")


def example_losses(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Each example's loss, Σ over its groups of the mean cross-entropy over the group: [batch].

    Logits are computed only for each example's own target positions: a pre-hook on the output
    head gathers those (row, position) pairs from the hidden states, so a batch costs one head
    row per target, not the union of every example's positions on every row."""
    rows, positions, weights = [], [], []
    for row, groups in enumerate(batch.targets):
        for group in groups:
            rows += [row] * len(group)
            positions += [t - 1 for t in group]  # logits at t − 1 predict token t
            weights += [1.0 / len(group)] * len(group)
    ids = batch.input_ids.to(device)
    row_idx = torch.tensor(rows, device=device)
    pos_idx = torch.tensor(positions, device=device)
    with logits_at(model, rows, positions):
        logits = model(input_ids=ids, attention_mask=batch.attention_mask.to(device),
                       logits_to_keep=0, use_cache=False).logits[0]  # [n_targets, vocab]
    labels = ids[row_idx, pos_idx + 1].to(logits.device)
    ce = F.cross_entropy(logits.float(), labels, reduction="none")  # [n_targets]
    weighted = ce * torch.tensor(weights, device=ce.device)
    return torch.zeros(len(batch.targets), device=ce.device).index_add(
        0, row_idx.to(ce.device), weighted)


class _Probe:
    """Per-layer hooks that feed one reduction into a float32 accumulator [n_layers, d_mlp]."""

    def __init__(self, adapter: Adapter, reduction: str):
        self.adapter = adapter
        self.reduction = reduction
        # one float32 accumulator per layer, on that layer's device (models may span GPUs)
        self.acc: list[torch.Tensor | None] = [None] * adapter.n_layers
        self._mask: dict[torch.device, torch.Tensor] = {}
        self.handles: list = []

    def set_mask(self, attention_mask: torch.Tensor) -> None:
        self._mask = {attention_mask.device: attention_mask.float()}

    def mask(self, device: torch.device) -> torch.Tensor:
        """The attention mask [batch, pos] as float32 on ``device``."""
        if device not in self._mask:
            self._mask[device] = next(iter(self._mask.values())).to(device)
        return self._mask[device]

    def add(self, layer: int, value: torch.Tensor) -> None:
        if self.acc[layer] is None:
            self.acc[layer] = torch.zeros_like(value)
        self.acc[layer] += value

    def result(self) -> torch.Tensor:
        """[n_layers, d_mlp] float32 on the CPU (zeros for layers never reached)."""
        return torch.stack([
            torch.zeros(self.adapter.d_mlp) if a is None else a.cpu() for a in self.acc])

    def __enter__(self) -> _Probe:
        gradient = self.reduction in GRADIENT_REDUCTIONS
        for layer, (up, down) in enumerate(zip(self.adapter.ups, self.adapter.downs)):
            if gradient:
                self.handles.append(up.register_forward_hook(self._up_hook(layer)))
            if self.reduction == "gate_pos_count":
                self.handles.append(
                    self.adapter.acts[layer].register_forward_hook(self._gate_hook(layer)))
            elif self.reduction != "up_weight_grad":
                self.handles.append(down.register_forward_pre_hook(self._act_hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def _up_hook(self, layer: int) -> Callable:
        def hook(module, inputs, out):
            if not out.requires_grad:  # first layer: the autograd leaf
                out.requires_grad_(True)
            if self.reduction != "up_weight_grad":
                return None
            x_sum = inputs[0].float().sum(-1) * self.mask(out.device)  # [batch, pos]

            def on_grad(grad: torch.Tensor) -> None:
                g_up = self.adapter.up_slice(grad).float()  # [batch, pos, d_mlp]
                per_example = torch.einsum("bpn,bp->bn", g_up, x_sum)
                self.add(layer, per_example.abs().sum(0))

            out.register_hook(on_grad)
            return None

        return hook

    def _gate_hook(self, layer: int) -> Callable:
        def hook(module, inputs, out):
            gate = out[..., : self.adapter.d_mlp]  # [batch, pos, d_mlp]
            mask = self.mask(gate.device)[..., None]
            self.add(layer, ((gate.detach() > 0).float() * mask).sum((0, 1)))

        return hook

    def _act_hook(self, layer: int) -> Callable:
        def hook(module, inputs):
            act = inputs[0]  # [batch, pos, d_mlp]
            if self.reduction == "grad_x_act":
                act_detached = act.detach()

                def on_grad(grad: torch.Tensor) -> None:
                    prod = torch.einsum("bpn,bpn->bn", grad.float(), act_detached.float())
                    self.add(layer, prod.abs().sum(0))

                act.register_hook(on_grad)
                return None
            mask = self.mask(act.device)[..., None]
            if self.reduction == "act_abs_sum":
                self.add(layer, (act.detach().float().abs() * mask).sum((0, 1)))
            else:  # act_pos_count
                self.add(layer, ((act.detach() > 0).float() * mask).sum((0, 1)))
            return None

        return hook


@contextmanager
def _frozen(model: nn.Module):
    """Temporarily mark every parameter as not requiring grad (restored on exit)."""
    previous = [(p, p.requires_grad) for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in previous:
            param.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def reduce_neurons(
    model: nn.Module,
    input_ids: Sequence[Sequence[int]],
    targets: Sequence[Targets],
    *,
    reduction: str | tuple[str, ...],
    batch_size: int = 8,
    max_batch_tokens: int | None = None,
    pad_id: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    before_batch: Callable[[Batch], Callable[[], None]] | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """Run ``reduction`` over all examples; float32 CPU tensor [n_layers, d_mlp].

    A tuple of reductions (all gradient or all forward-only) shares one pass over the examples
    and gives one tensor per reduction, each equal to its own pass's.
    ``on_batch(n_examples, n_tokens)`` is called after each batch (for progress bars);
    ``before_batch(batch)`` before each batch's forward pass, returning what to call after it
    (another reader of the same pass, e.g. exemplar recording).
    """
    reductions = (reduction,) if isinstance(reduction, str) else tuple(reduction)
    if not reductions:
        raise AtlasError("give at least one reduction")
    for name in reductions:
        if name not in REDUCTIONS:
            raise AtlasError(f"unknown reduction '{name}'; choose one of {', '.join(REDUCTIONS)}")
    gradient = reductions[0] in GRADIENT_REDUCTIONS
    if any((r in GRADIENT_REDUCTIONS) != gradient for r in reductions):
        raise AtlasError("one pass cannot mix gradient and forward-only reductions")
    _check_targets(input_ids, targets)
    _check_context(model, input_ids)
    adapter = adapter_for(model)
    device = model_device(model)
    if max_batch_tokens is None and device.type == "cpu":
        max_batch_tokens = CPU_BATCH_TOKENS
    was_training = model.training
    model.eval()
    try:
        with _frozen(model), ExitStack() as stack:
            probes = [stack.enter_context(_Probe(adapter, r)) for r in reductions]
            for batch in make_batches(input_ids, targets, batch_size, pad_id, max_batch_tokens):
                for probe in probes:
                    probe.set_mask(batch.attention_mask.to(device))
                after = before_batch(batch) if before_batch is not None else None
                if gradient:
                    with torch.enable_grad():
                        example_losses(model, batch, device).sum().backward()
                else:
                    with torch.no_grad():
                        model(
                            input_ids=batch.input_ids.to(device),
                            attention_mask=batch.attention_mask.to(device),
                            logits_to_keep=1,
                            use_cache=False,
                        )
                if after is not None:
                    after()
                if on_batch is not None:
                    on_batch(len(batch.targets), batch.n_tokens)
    finally:
        model.train(was_training)
    results = [probe.result() for probe in probes]
    return results[0] if isinstance(reduction, str) else results


def cgvst(
    model: nn.Module,
    input_ids: Sequence[Sequence[int]],
    targets: Sequence[Targets],
    *,
    batch_size: int = 8,
) -> torch.Tensor:
    """CGVST scores ``Σ_i |Σ_j ∂L_i/∂W_up[l][n, j]|``: float32 CPU tensor [n_layers, d_mlp].

    ``targets[i]`` lists the positions t (1 ≤ t < len) whose token is predicted from t−1, or a
    list of such groups; ``L_i = Σ_g mean over g of the cross-entropy`` (one group: the mean).
    No weight gradient is computed.
    """
    return reduce_neurons(
        model, input_ids, targets, reduction="up_weight_grad", batch_size=batch_size
    )
