"""Logits only where they are needed: the output head computes rows for chosen positions."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def logits_at(model: nn.Module, rows: Sequence[int], positions: Sequence[int]) -> Iterator[None]:
    """While active, a forward pass's logits are ``[1, n_pairs, vocab]``: the output head sees
    only the hidden states at (``rows[i]``, ``positions[i]``). Works for every architecture whose
    head is ``get_output_embeddings()`` (soft-capping after it applies as usual)."""
    row_idx = torch.as_tensor(list(rows), dtype=torch.long)
    pos_idx = torch.as_tensor(list(positions), dtype=torch.long)

    def gather(module, args):
        hidden = args[0]  # [batch, pos, d_model]
        picked = hidden[row_idx.to(hidden.device), pos_idx.to(hidden.device)]  # [n_pairs, d_model]
        return (picked[None], *args[1:])

    handle = model.get_output_embeddings().register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()
