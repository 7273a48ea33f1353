"""Log-probabilities of a classification task's labels after each query's prompt.

Labels are tokenized **in context**, as lm-evaluation-harness does: the prompt and the prompt
followed by the label are tokenized whole, and the label's tokens are what the second adds. Each
(query, label) pair is one token sequence whose last ``n_label`` tokens are scored.

With fixed demonstrations every sequence of a task starts with the same tokens (system prompt
and demonstrations). :func:`score_sequences` with ``cache_prefix`` encodes that shared prefix
once, keeps its KV cache, and scores the (query + label) suffixes in right-padded batches on
copies of it; without, every sequence is encoded from scratch (the reference the cached path is
tested against).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from atlas.errors import AtlasError
from atlas.models.batching import check_context, length_groups
from atlas.models.heads import logits_at


@dataclass
class Scored:
    """A token sequence whose last ``n_label`` tokens are a label after a prompt."""

    ids: list[int]
    n_label: int


def label_sequences(fmt, prompt_text: str, labels: list[str], prompt_rule: str) -> list[Scored]:
    """One sequence per label: ``prompt_text + label`` tokenized whole; the label's tokens are
    those after the prompt's own tokenization."""
    context = fmt.tokenize(prompt_text, prompt_rule)["input_ids"]
    out = []
    for label in labels:
        whole = fmt.tokenize(prompt_text + label, prompt_rule)["input_ids"]
        n_label = len(whole) - len(context)
        if n_label < 1:
            raise AtlasError(f"label '{label}' adds no token after the prompt; labels must be "
                             "non-empty text")
        twin = next((labels[k] for k, other in enumerate(out) if other.ids == whole), None)
        if twin is not None:
            raise AtlasError(f"labels '{twin}' and '{label}' give the same tokens after the prompt; "
                             "they cannot be told apart: merge or rename them in the task file")
        out.append(Scored(whole, n_label))
    return out


def _accepts_cache_kwarg(model) -> bool:
    return "cache" in inspect.signature(model.forward).parameters


def _forward(model, ids: torch.Tensor, mask: torch.Tensor | None = None, cache=None):
    """A forward pass returning (logits, cache); uses the ``cache`` argument where the installed
    transformers has it (``past_key_values`` before)."""
    kwargs = {"input_ids": ids, "use_cache": True}
    if mask is not None:
        kwargs["attention_mask"] = mask
    if cache is not None:
        kwargs["cache" if _accepts_cache_kwarg(model) else "past_key_values"] = cache
    out = model(**kwargs)
    new_cache = out["cache"] if "cache" in out else out["past_key_values"]
    return out.logits, new_cache


def _common_prefix(sequences: list[Scored]) -> int:
    """Tokens shared by every sequence, leaving each its label and the token that predicts the
    label's first token."""
    first = sequences[0].ids
    n = min(len(s.ids) - s.n_label - 1 for s in sequences)
    for s in sequences[1:]:
        k = 0
        while k < n and s.ids[k] == first[k]:
            k += 1
        n = k
    return n


def _label_positions(s: Scored, start: int) -> list[int]:
    """Positions (relative to ``start``) whose logits predict the label's tokens."""
    first = len(s.ids) - s.n_label
    return [p - start for p in range(first - 1, len(s.ids) - 1)]


def _sum_logprobs(logits: torch.Tensor, spans: list[tuple[int, list[int]]]) -> list[float]:
    """``logits`` [n_pairs, vocab] for consecutive spans of (sequence, label tokens)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    out, at = [], 0
    for _, tokens in spans:
        rows = torch.arange(at, at + len(tokens), device=logp.device)
        out.append(float(logp[rows, torch.tensor(tokens, device=logp.device)].double().sum()))
        at += len(tokens)
    return out


@torch.no_grad()
def score_sequences(model, sequences: list[Scored], *, cache_prefix: bool = True,
                    batch_size: int = 16) -> torch.Tensor:
    """Σ log p(label tokens | everything before them) for each sequence: float64 [n]."""
    device = next(model.parameters()).device
    check_context(model.config, max(len(s.ids) for s in sequences), "an evaluation prompt",
                  "use fewer --shots")
    out = torch.zeros(len(sequences), dtype=torch.float64)
    if not cache_prefix:
        for k, s in enumerate(sequences):
            positions = _label_positions(s, 0)
            with logits_at(model, [0] * len(positions), positions):
                logits, _ = _forward(model, torch.tensor([s.ids], device=device))
            out[k] = _sum_logprobs(logits[0], [(k, s.ids[-s.n_label:])])[0]
        return out
    n_prefix = _common_prefix(sequences)
    prefix_cache = None
    if n_prefix:  # only its cache is used: the head computes one row, not [n_prefix, vocab]
        with logits_at(model, [0], [n_prefix - 1]):
            _, prefix_cache = _forward(model, torch.tensor([sequences[0].ids[:n_prefix]],
                                                           device=device))
    # Single-token labels after the same context share one logits row: encode each context once.
    contexts: dict[tuple[int, ...], list[int]] = {}
    multi = []
    for k, s in enumerate(sequences):
        if s.n_label == 1:
            contexts.setdefault(tuple(s.ids[:-1]), []).append(k)
        else:
            multi.append(k)
    context_list = list(contexts)
    for batch in length_groups([len(c) for c in context_list], batch_size):
        suffixes = [list(context_list[c][n_prefix:]) for c in batch]
        picks = [(row, len(suffix) - 1) for row, suffix in enumerate(suffixes)]
        logp = F.log_softmax(_suffix_logits(model, prefix_cache, n_prefix, suffixes, picks, device)
                             .float(), dim=-1)  # [n_contexts, vocab]
        for row, c in enumerate(batch):
            for k in contexts[context_list[c]]:
                out[k] = float(logp[row, sequences[k].ids[-1]].double())
    for batch in length_groups([len(sequences[k].ids) for k in multi], batch_size):
        group = [multi[i] for i in batch]
        suffixes = [sequences[k].ids[n_prefix:] for k in group]
        picks = [(row, p) for row, k in enumerate(group)
                 for p in _label_positions(sequences[k], n_prefix)]
        spans = [(k, sequences[k].ids[-sequences[k].n_label:]) for k in group]
        logits = _suffix_logits(model, prefix_cache, n_prefix, suffixes, picks, device)
        for k, value in zip(group, _sum_logprobs(logits, spans)):
            out[k] = value
    return out


def _suffix_logits(model, prefix_cache, n_prefix: int, suffixes: list[list[int]],
                   picks: list[tuple[int, int]], device) -> torch.Tensor:
    """Right-padded ``suffixes`` run on copies of the prefix cache; the logits at ``picks``
    ((row, position in the suffix) pairs): [n_picks, vocab]."""
    width = max(len(suffix) for suffix in suffixes)
    ids = torch.zeros((len(suffixes), width), dtype=torch.long)
    mask = torch.zeros((len(suffixes), n_prefix + width), dtype=torch.long)
    mask[:, :n_prefix] = 1
    for row, suffix in enumerate(suffixes):  # right padding: real tokens keep their positions
        ids[row, : len(suffix)] = torch.tensor(suffix)
        mask[row, n_prefix : n_prefix + len(suffix)] = 1
    cache = None
    if prefix_cache is not None:
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(suffixes))
    with logits_at(model, [r for r, _ in picks], [p for _, p in picks]):
        logits, _ = _forward(model, ids.to(device), mask.to(device), cache)
    return logits[0]
