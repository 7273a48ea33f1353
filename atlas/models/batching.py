"""Batches of token sequences, one rule for every job: sequences sorted by length and grouped
greedily (at most ``batch_size`` each, and at most ``max_tokens`` padded tokens when given), padded
on one side; and the one check that a sequence fits the model's context."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from atlas.errors import AtlasError
from atlas.models.adapters import context_length


def length_groups(lengths: Sequence[int], batch_size: int,
                  max_tokens: int | None = None) -> list[list[int]]:
    """Indices of ``lengths`` in groups of similar length (little padding): sorted ascending,
    each group filled up to ``batch_size`` members and ``max_tokens`` padded tokens."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if groups:
            group = groups[-1]
            fits = max_tokens is None or lengths[i] * (len(group) + 1) <= max_tokens
            if len(group) < batch_size and fits:  # sorted: lengths[i] is the group's width
                group.append(i)
                continue
        groups.append([i])
    return groups


def padded(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right"
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask), both long [n, width]: ``right`` keeps real tokens at their
    positions, ``left`` ends every row at the same place (for generation)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(0, len(seq)) if side == "right" else slice(width - len(seq), width)
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def check_context(config, longest: int, what: str, fix: str) -> None:
    """Refuse ``what`` of ``longest`` tokens beyond the model's context, naming ``fix``."""
    limit = context_length(config)
    if limit and longest > limit:
        raise AtlasError(f"{what} of {longest} tokens exceeds the model's context of {limit}; "
                         f"{fix}")
