"""Trying sets live: generation with and without interventions side by side, and the
activations of a set's neurons on a text.

The runs of one prompt share a batch: row 0 is the unmodified model, row ``i + 1`` runs under
intervention ``i`` (the same :class:`~atlas.intervene.spec.Intervention` and hooks that
``atlas ablate`` evaluates, restricted to that row), one forward per step over a KV cache. With
a temperature, every row uses the same random draws (Gumbel-max with shared noise), so rows
part only where their distributions do.
"""

from __future__ import annotations

import inspect
import time
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from atlas.errors import AtlasError
from atlas.intervene.spec import Intervention, apply
from atlas.models.adapters import adapter_for
from atlas.tasks.prompts import format_for

END_OF_TURN = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")


@dataclass(frozen=True)
class TokenProb:
    token_id: int
    token: str
    prob: float


@dataclass(frozen=True)
class Step:
    """One generated token, its probability and the top next tokens it was chosen among."""

    token_id: int
    token: str
    prob: float
    top: list[TokenProb]  # the most probable next tokens (temperature 1), best first


@dataclass
class Output:
    """One row's generation: the unmodified model's (``label`` "default") or an
    intervention's."""

    label: str
    factor: float | None  # None for the unmodified model
    n_neurons: int
    text: str
    steps: list[Step]
    stop: str  # "end" (a stop token) or "length"
    diverged_at: int | None = None  # first step whose token differs from the default's


@dataclass
class SideBySide:
    prompt_ids: list[int]
    prompt_tokens: list[str]
    outputs: list[Output]  # the default first
    first_token_s: float  # until every row's first token was chosen
    seconds: float


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each id's text as it reads in a decoded string."""
    return [tokenizer.decode([i]) for i in ids]


def encode_prompt(tokenizer, text: str, chat: bool = True) -> list[int]:
    """The prompt's ids: as the user's turn of the model's chat template (with the assistant's
    opening) when ``chat`` and the model has a template, else the text with the tokenizer's own
    special tokens."""
    if chat and getattr(tokenizer, "chat_template", None):
        fmt = format_for(tokenizer)
        rendered = fmt.render_text([{"role": "user", "content": text}], "marker",
                                   add_generation_prompt=True)
        return list(fmt.tokenize(rendered, "marker")["input_ids"])
    return list(tokenizer(text)["input_ids"])


def stop_ids(tokenizer, model: nn.Module) -> set[int]:
    """The ids that end an answer: the model's end-of-sequence ids and its end-of-turn token."""
    found: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (eos, tokenizer.eos_token_id):
        found.update(value if isinstance(value, list) else [] if value is None else [value])
    vocab = tokenizer.get_vocab()
    found.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return {int(i) for i in found}


@dataclass
class _Rows:
    """What each row has generated so far."""

    n: int
    steps: list[list[Step]] = field(default_factory=list)
    done: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.steps = [[] for _ in range(self.n)]
        self.done = [False] * self.n


def generate_side_by_side(model: nn.Module, tokenizer, prompt_ids: list[int],
                          interventions: list[Intervention], *, max_new_tokens: int = 32,
                          top_k: int = 5, temperature: float = 0.0, seed: int = 0,
                          stops: set[int] | None = None) -> SideBySide:
    """Generate from ``prompt_ids`` unmodified and under each intervention, in one batch.

    Args:
        model: the model (not changed: hooks are removed on exit).
        tokenizer: its tokenizer.
        prompt_ids: the prompt.
        interventions: one row each (none: the unmodified model alone).
        max_new_tokens: tokens generated at most per row.
        top_k: next tokens listed at each step.
        temperature: 0 greedy; above 0 sampled, the same draws in every row.
        seed: the draws' seed.
        stops: the ids that end an output (None: the model's, see :func:`stop_ids`).

    Returns:
        :class:`SideBySide`, the default output first.
    """
    if any(spec.positions is not None for spec in interventions):
        raise AtlasError("interventions tried live touch every position (positions=None)")
    started = time.perf_counter()
    device = next(model.parameters()).device
    rows = _Rows(1 + len(interventions))
    ids = torch.tensor([prompt_ids] * rows.n, device=device)  # [rows, pos]
    stops = stop_ids(tokenizer, model) if stops is None else stops
    noise = torch.Generator().manual_seed(seed)
    first_token_s = 0.0
    with ExitStack() as stack, torch.inference_mode():
        for row, spec in enumerate(interventions, start=1):
            stack.enter_context(apply(model, spec, rows=[row]))
        out = model(input_ids=ids, use_cache=True)
        cache_name = _cache_argument(model)  # once, not per step
        for step in range(max_new_tokens):
            logits = out.logits[:, -1].float()  # [rows, vocab]
            choice = _choose(logits, temperature, noise)
            _record(rows, tokenizer, logits, choice, top_k, stops)
            if step == 0:
                first_token_s = time.perf_counter() - started
            if all(rows.done) or step == max_new_tokens - 1:
                break
            out = model(input_ids=choice[:, None], use_cache=True, **{cache_name: _cache(out)})
    outputs = [_output(tokenizer, rows, r, None if r == 0 else interventions[r - 1], stops)
               for r in range(rows.n)]
    return SideBySide(list(prompt_ids), token_texts(tokenizer, prompt_ids), outputs,
                      first_token_s, time.perf_counter() - started)


def _cache_argument(model: nn.Module) -> str:
    """The name under which a forward pass takes the KV cache (``cache`` in newer transformers,
    ``past_key_values`` before)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache(out):
    """The KV cache an output carries."""
    return out["cache"] if "cache" in out else out["past_key_values"]


def _choose(logits: torch.Tensor, temperature: float, noise: torch.Generator) -> torch.Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    uniform = torch.rand(logits.shape[-1], generator=noise).clamp_(1e-10, 1 - 1e-10)
    gumbel = -torch.log(-torch.log(uniform)).to(logits.device)  # [vocab], shared by every row
    return (logits / temperature + gumbel).argmax(-1)


def _record(rows: _Rows, tokenizer, logits: torch.Tensor, choice: torch.Tensor, top_k: int,
            stops: set[int]) -> None:
    probs = logits.softmax(-1)  # [rows, vocab]
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    for r in range(rows.n):
        if rows.done[r]:
            continue
        chosen = int(choice[r])
        listed = [TokenProb(int(i), tokenizer.decode([int(i)]), float(p))
                  for p, i in zip(top.values[r], top.indices[r])]
        rows.steps[r].append(Step(chosen, tokenizer.decode([chosen]), float(probs[r, chosen]),
                                  listed))
        rows.done[r] = chosen in stops


def _output(tokenizer, rows: _Rows, r: int, spec: Intervention | None, stops: set[int]
            ) -> Output:
    steps = rows.steps[r]
    ended = bool(steps) and steps[-1].token_id in stops
    ids = [s.token_id for s in (steps[:-1] if ended else steps)]
    default = [s.token_id for s in rows.steps[0]]
    diverged = None
    if r:
        diverged = next((k for k, s in enumerate(steps)
                         if k >= len(default) or s.token_id != default[k]), None)
    return Output("default" if spec is None else (spec.label or f"intervention {r}"),
                  None if spec is None else spec.factor, 0 if spec is None else spec.size,
                  tokenizer.decode(ids, skip_special_tokens=True), steps,
                  "end" if ended else "length", diverged)


# ---- activations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeuronValue:
    layer: int
    neuron: int
    value: float


@dataclass(frozen=True)
class TokenActivity:
    """The set's activity on one token."""

    token: str
    n_firing: int  # neurons of the set above 0
    mean: float
    max_abs: float
    top: list[NeuronValue]  # the set's neurons with the highest activations on it


@dataclass
class Activations:
    """The activations of chosen neurons on every token of a text."""

    token_ids: list[int]
    tokens: list[str]
    neurons: list[tuple[int, int]]  # (layer, neuron), in layer then neuron order
    values: np.ndarray  # [pos, n_neurons] float32
    seconds: float

    def per_token(self, top: int = 5) -> list[TokenActivity]:
        out = []
        for p, token in enumerate(self.tokens):
            row = self.values[p]  # [n_neurons]
            order = np.argsort(-row, kind="stable")[:top]
            out.append(TokenActivity(
                token, int((row > 0).sum()), float(row.mean()) if row.size else 0.0,
                float(np.abs(row).max()) if row.size else 0.0,
                [NeuronValue(*self.neurons[i], float(row[i])) for i in order]))
        return out


class _Enough(Exception):
    """Raised in the last layer read: the rest of the forward pass is not needed."""


def neuron_activations(model: nn.Module, tokenizer, input_ids: list[int],
                       neurons: dict[int, list[int]]) -> Activations:
    """The activations (down projection inputs) of ``neurons`` on every token of one text.

    Args:
        model: the model.
        tokenizer: its tokenizer (for the tokens' texts).
        input_ids: the text's ids.
        neurons: layer -> neuron indices.

    Returns:
        :class:`Activations`; the forward pass stops after the last layer read.
    """
    started = time.perf_counter()
    adapter = adapter_for(model)
    layers = sorted(layer for layer, idx in neurons.items() if idx)
    if not layers:
        raise AtlasError("no neurons chosen; give a set with members or a neuron")
    for layer in layers:
        if not 0 <= layer < adapter.n_layers or max(neurons[layer]) >= adapter.d_mlp:
            raise AtlasError(f"a neuron of layer {layer} is outside the model "
                             f"({adapter.n_layers} layers × {adapter.d_mlp} neurons)")
    chosen = {layer: sorted(set(neurons[layer])) for layer in layers}
    captured: dict[int, torch.Tensor] = {}

    def reader(layer: int):
        index = torch.tensor(chosen[layer], dtype=torch.long)

        def hook(module, inputs):
            act = inputs[0][0]  # [pos, d_mlp]
            captured[layer] = act[:, index.to(act.device)].float().cpu()
            if layer == layers[-1]:
                raise _Enough

        return hook

    handles = [adapter.downs[layer].register_forward_pre_hook(reader(layer)) for layer in layers]
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            model(input_ids=torch.tensor([input_ids], device=device), use_cache=False)
    except _Enough:
        pass
    finally:
        for handle in handles:
            handle.remove()
    values = torch.cat([captured[layer] for layer in layers], dim=1).numpy()  # [pos, n]
    order = [(layer, n) for layer in layers for n in chosen[layer]]
    return Activations(list(input_ids), token_texts(tokenizer, input_ids), order,
                       values.astype(np.float32), time.perf_counter() - started)
