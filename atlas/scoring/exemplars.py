"""What each neuron responds to: its top contexts of each sign, quantile samples and density.

One forward pass over a corpus of token sequences records, per neuron (activation site: the
down projection's input, signed for gated MLPs):

- **exemplars**: the ``k`` contexts with the highest activation and the ``k`` with the lowest
  (most negative), each a window of ``before`` tokens, the peak and ``after`` tokens, with the
  neuron's activation on every token of the window (NaN past a sequence's edge);
- **density**: per corpus part (a task), the number of tokens, how many are above 0 and the
  sum, over every token; and a histogram over the fixed signed bins :data:`EDGES` of up to
  ``hist_tokens`` token positions per part drawn uniformly (seeded), the same positions for
  every neuron (every position when the part has fewer; None: every position);
- **quantile samples**: the activations on ``n_samples`` token positions drawn uniformly
  (seeded) from the corpus, the same positions for every neuron, from which each neuron's
  quantile bins are read (:func:`quantile_bins`).

Contexts are distinct text: a position counts only where its window's tokens (and the peak's
place in it) occur for the first time in the corpus, in input order, so few-shot demonstrations
repeated across prompts appear once. Exemplars are ordered by value, ties by input order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from atlas.histogram import EDGES, N_BINS
from atlas.models.adapters import Adapter, adapter_for
from atlas.models.batching import length_groups, padded

SIGNS = (1, -1)


def window_key(ids: Sequence[int], pos: int, before: int, after: int) -> tuple:
    """The text of the window around ``pos`` (clipped at the sequence's edges) and the peak's
    place in it: equal keys are the same context."""
    start = max(0, pos - before)
    return tuple(ids[start:pos + after + 1]), pos - start


def first_occurrences(sequences: Sequence[Sequence[int]], before: int, after: int
                      ) -> list[torch.Tensor]:
    """Per sequence, bool [len]: whether each position's window is the first of its text in the
    corpus (input order, then position)."""
    seen: set[tuple] = set()
    out = []
    for ids in sequences:
        keep = torch.zeros(len(ids), dtype=torch.bool)
        for pos in range(len(ids)):
            key = window_key(ids, pos, before, after)
            if key not in seen:
                seen.add(key)
                keep[pos] = True
        out.append(keep)
    return out


@dataclass
class Exemplars:
    """The record of one pass: per sign (index 0: highest, 1: lowest), [2, n_layers, k, d_mlp]
    activation, sequence index and position (−1 and NaN where the corpus has fewer contexts),
    and the window's activations [2, n_layers, k, d_mlp, before + 1 + after]; per part, its
    density; the sampled positions and their activations [n_samples, n_layers, d_mlp]."""

    value: torch.Tensor
    seq: torch.Tensor
    pos: torch.Tensor
    window: torch.Tensor
    density: dict[int, Density]
    sample_positions: list[tuple[int, int]]
    sample_values: torch.Tensor
    before: int
    after: int


@dataclass
class Density:
    """One part's activation density per neuron: tokens, tokens above 0 and the sum [n_layers,
    d_mlp], and counts per bin of :data:`EDGES` [n_layers, d_mlp, N_BINS]."""

    n_tokens: int
    n_positive: torch.Tensor
    total: torch.Tensor
    hist: torch.Tensor  # over the part's histogram positions (sum: how many)


@dataclass
class _Batch:
    seqs: torch.Tensor  # long [batch]: each row's index in the corpus (its input order)
    keep: torch.Tensor  # bool [batch, pos]: real tokens whose window is a first occurrence
    real: torch.Tensor  # bool [batch, pos]: real tokens (not padding)
    samples: list[tuple[int, int, int]]  # (row in batch, position, sample index)
    hist_rows: torch.Tensor  # long [n]: the kept tokens (by their place among the kept) the
    # histogram counts
    kept_at: torch.Tensor  # long [n_kept]: the kept tokens' places in the flattened batch


@dataclass
class _LayerState:
    """One layer's best contexts so far, neuron-major: per sign (0: highest, 1: lowest) and
    neuron, the ``k`` best signed values (value × sign, descending; −inf where empty), their
    sequence and position (−1 where empty) and windows."""

    value: torch.Tensor  # [2, d_mlp, k]
    seq: torch.Tensor  # [2, d_mlp, k]
    pos: torch.Tensor  # [2, d_mlp, k]
    window: torch.Tensor  # [2, d_mlp, k, width]
    n_positive: torch.Tensor = field(default=None)
    total: torch.Tensor = field(default=None)
    hist: torch.Tensor = field(default=None)


class ExemplarProbe:
    """Forward pre-hooks on every down projection that feed the record of one pass."""

    def __init__(self, adapter: Adapter, k: int, before: int, after: int,
                 sample_positions: list[tuple[int, int]]):
        self.adapter, self.k, self.before, self.after = adapter, k, before, after
        self.width = before + 1 + after
        self.sample_positions = sample_positions
        d = adapter.d_mlp
        self.layers = [_LayerState(torch.full((2, d, k), -torch.inf), torch.full((2, d, k), -1),
                                   torch.full((2, d, k), -1),
                                   torch.full((2, d, k, self.width), torch.nan))
                       for _ in range(adapter.n_layers)]
        self.sample_values = torch.full((len(sample_positions), adapter.n_layers, d), torch.nan)
        self.density: dict[int, Density] = {}
        self.batch: _Batch | None = None
        self.handles: list = []
        self._part: int | None = None
        self._n_tokens = 0

    def __enter__(self) -> ExemplarProbe:
        for layer, down in enumerate(self.adapter.downs):
            self.handles.append(down.register_forward_pre_hook(self._hook(layer)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def begin_part(self, part: int) -> None:
        """Count the density of the following batches under ``part`` (a task id)."""
        self.end_part()
        self._part, self._n_tokens = part, 0
        for state in self.layers:
            d = self.adapter.d_mlp
            state.n_positive = torch.zeros(d, dtype=torch.long)
            state.total = torch.zeros(d, dtype=torch.float64)
            state.hist = torch.zeros(d, N_BINS, dtype=torch.long)

    def end_part(self) -> None:
        if self._part is None:
            return
        self.density[self._part] = Density(
            self._n_tokens, torch.stack([s.n_positive for s in self.layers]),
            torch.stack([s.total for s in self.layers]).float(),
            torch.stack([s.hist for s in self.layers]))
        self._part = None

    def _hook(self, layer: int):
        def hook(module, inputs):
            if self.batch is not None:  # a pass this probe does not record leaves it alone
                self._record(layer, inputs[0].detach().float())  # [batch, pos, d_mlp]

        return hook

    def _record(self, layer: int, act: torch.Tensor) -> None:
        batch, state = self.batch, self.layers[layer]
        n_rows, n_pos, d = act.shape
        kept_at = batch.kept_at.to(act.device)  # [n_kept]: the kept tokens' places in the batch
        kept = act.reshape(n_rows * n_pos, d).index_select(0, kept_at)  # [n_kept, d_mlp]
        if layer == 0:
            self._n_tokens += kept.shape[0]
        if state.n_positive is not None:
            self._count(state, kept, batch.hist_rows.to(act.device))
        for row, pos, sample in batch.samples:
            self.sample_values[sample, layer] = act[row, pos].cpu()
        if kept.shape[0] == 0:
            return
        for s, sign in enumerate(SIGNS):
            kth = state.value[s, :, -1]  # [d_mlp]: each neuron's k-th best so far (signed)
            if torch.isfinite(kth).all():  # every neuron holds k: the few tokens that reach it
                self._reaching(state, s, act, kept, kth)
                continue
            # only the neurons whose best in this batch reaches their k-th best so far can
            # change (an equal value may win on input order); amax: 20x faster than aminmax
            best = kept.amax(0) if sign > 0 else -kept.amin(0)  # [d_mlp]
            neurons = torch.nonzero(best.cpu() >= kth).flatten()  # [r]
            if neurons.numel():
                self._candidates(state, s, act, kept, neurons)

    def _reaching(self, state: _LayerState, s: int, act: torch.Tensor, kept: torch.Tensor,
                  kth: torch.Tensor) -> None:
        """Merge the kept tokens [n_kept, d_mlp] whose value of sign ``s`` reaches their
        neuron's ``kth`` best so far (a tie may win on input order): once every neuron holds k
        contexts, few tokens do, and one comparison finds them."""
        sign, n_pos = SIGNS[s], act.shape[1]
        token, neuron = reaching(kept, kth * sign, sign)
        if not len(token):
            return
        value = (kept[token, neuron] * sign).cpu()  # [c]
        at = self.batch.kept_at.to(kept.device)[token].cpu()
        neuron = neuron.cpu()
        # by neuron, each neuron's best first (ties by input order); at most k each
        order = best_first(value, self.batch.seqs[at // n_pos] * (n_pos + 1) + at % n_pos)
        order = order[torch.argsort(neuron[order], stable=True)]
        grouped = neuron[order]
        rank = torch.arange(len(order)) - torch.searchsorted(grouped, grouped)
        order, rank = order[rank < self.k], rank[rank < self.k]
        neurons, slot = torch.unique_consecutive(neuron[order], return_inverse=True)
        # [r, n_cand] candidates, the missing ones −inf (never kept: every neuron holds k)
        n_cand = int(rank.max()) + 1
        values = torch.full((len(neurons), n_cand), -torch.inf)
        places = torch.zeros((len(neurons), n_cand), dtype=torch.long)
        values[slot, rank], places[slot, rank] = value[order], at[order]
        self._take(state, s, act, neurons, values, places // n_pos, places % n_pos)

    def _candidates(self, state: _LayerState, s: int, act: torch.Tensor, kept: torch.Tensor,
                    neurons: torch.Tensor) -> None:
        """The batch's best ``k`` contexts of sign ``s`` for ``neurons`` [r], merged into the
        layer's state."""
        batch, sign, n_pos = self.batch, SIGNS[s], act.shape[1]
        on = neurons.to(act.device)
        n_cand = min(self.k, len(kept))
        columns = kept if len(on) == kept.shape[1] else kept.index_select(1, on)  # [n_kept, r]
        values, indices = columns.topk(n_cand, dim=0, largest=sign > 0)  # [n_cand, r]
        at = batch.kept_at.to(act.device)[indices.T].cpu()  # [r, n_cand]
        self._take(state, s, act, neurons, (values.T * sign).cpu(), at // n_pos, at % n_pos)

    def _take(self, state: _LayerState, s: int, act: torch.Tensor, neurons: torch.Tensor,
              values: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor) -> None:
        """Merge candidates [r, n_cand] of ``neurons`` [r] (signed values, batch rows and
        positions) into the layer's state; their windows are read only where they enter it."""
        order = self._merge(state, s, neurons, values, self.batch.seqs[rows], pos)  # [r, k]
        changed = torch.nonzero((order >= self.k).any(1)).flatten()  # rows with a new context
        if not changed.numel():
            return
        order = order[changed]
        expand = (-1, -1, self.width)
        window = state.window[s, neurons[changed]].gather(  # [c, k, width]
            1, order.clamp(max=self.k - 1)[..., None].expand(*expand))
        row, slot = torch.nonzero(order >= self.k, as_tuple=True)
        cand, src = order[row, slot] - self.k, changed[row]
        window[row, slot] = self._windows(act, rows[src, cand], pos[src, cand], neurons[src])
        state.window[s, neurons[changed]] = window

    def _windows(self, act: torch.Tensor, rows: torch.Tensor, pos: torch.Tensor,
                 neurons: torch.Tensor) -> torch.Tensor:
        """The activations [n, width] of ``neurons`` [n] in the windows around (``rows``,
        ``pos``) of the batch, NaN beyond the sequence's real tokens and its edges."""
        n_pos, device = act.shape[1], act.device
        where = pos[:, None] + (torch.arange(self.width) - self.before)  # [n, width]
        inside = (where >= 0) & (where < n_pos)
        where = where.clamp(0, n_pos - 1)
        rows = rows[:, None]
        window = act[rows.to(device), where.to(device), neurons[:, None].to(device)].cpu()
        return window.masked_fill(~(inside & self.batch.real[rows, where]), torch.nan)

    def _count(self, state: _LayerState, kept: torch.Tensor, hist_rows: torch.Tensor) -> None:
        """Add a batch's kept tokens [n_kept, d_mlp] to the part's density: above 0 and the sum
        over all of them, the histogram over ``hist_rows`` (float passes: a bool reduction is
        several times slower on a CPU)."""
        state.n_positive += torch.sign(kept).clamp_(min=0).sum(0).long().cpu()
        state.total += kept.sum(0).double().cpu()
        if hist_rows.numel():
            state.hist += histogram(kept.index_select(0, hist_rows), dim=0).cpu()

    def _merge(self, state: _LayerState, s: int, neurons: torch.Tensor, value: torch.Tensor,
               seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Keep, for ``neurons`` [r], the values and places of the k best of the stored and the
        new candidates [r, n_cand] (signed values): by value, ties by input order. Returns each
        kept one's place [r, k] among the stored (below k) and the new (k and above)."""
        value = torch.cat([state.value[s, neurons], value], 1)  # [r, k + n_cand]
        seq = torch.cat([state.seq[s, neurons], seq], 1)
        pos = torch.cat([state.pos[s, neurons], pos], 1)
        order = best_first(value, seq * (pos.max().item() + 2) + pos)[:, :self.k]
        state.value[s, neurons] = value.gather(1, order)
        state.seq[s, neurons], state.pos[s, neurons] = seq.gather(1, order), pos.gather(1, order)
        return order

    def result(self) -> Exemplars:
        self.end_part()
        # [2, d_mlp, k, ...] per layer -> [2, n_layers, k, d_mlp, ...]
        stack = lambda name: torch.stack([getattr(st, name) for st in self.layers], 1  # noqa: E731
                                         ).transpose(2, 3).contiguous()
        value = stack("value")  # [2, n_layers, k, d_mlp]
        value = value * torch.tensor(SIGNS, dtype=value.dtype).view(2, 1, 1, 1)
        return Exemplars(value.masked_fill(~torch.isfinite(value), torch.nan), stack("seq"),
                         stack("pos"), stack("window"), self.density, self.sample_positions,
                         self.sample_values, self.before, self.after)


def reaching(values: torch.Tensor, bound: torch.Tensor, sign: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The (row, neuron) places of ``values`` [n, d_mlp] at or above each neuron's ``bound``
    [d_mlp] (sign 1) or at or below it (sign -1), row by row (on a CPU in NumPy: twice as fast
    as torch's compare and nonzero)."""
    if values.device.type != "cpu":
        bound = bound.to(values.device)[None]
        return torch.nonzero(values >= bound if sign > 0 else values <= bound, as_tuple=True)
    array = values.numpy()
    limit = bound.numpy().astype(array.dtype)[None]
    flat = torch.from_numpy(np.flatnonzero(array >= limit if sign > 0 else array <= limit))
    return flat // values.shape[1], flat % values.shape[1]


def best_first(value: torch.Tensor, place: torch.Tensor) -> torch.Tensor:
    """Per row (last dimension), the order of the entries by ``value`` (float, descending), ties by
    ``place`` (int, ascending): one sort of a combined int64 key while the places fit in 31
    bits (the value's float32 bits made monotone above them), else two stable sorts."""
    if place.max() < 2 ** 31 and place.min() >= -1:
        bits = ((-value).float() + 0.0).view(torch.int32)  # + 0.0: -0.0 is 0.0
        monotone = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).long()  # ascending with -value
        return torch.argsort((monotone << 32) + place + 1, dim=-1)
    order = torch.argsort(place, dim=-1, stable=True)
    return order.gather(-1, torch.argsort(-value.gather(-1, order), dim=-1, stable=True))


def histogram(values: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Each neuron's counts in the bins of :data:`EDGES` (bin i holds ``EDGES[i-1] < x <=
    EDGES[i]``, as ``torch.bucketize``) over ``dim`` of ``values`` (float32 [d_mlp, n] by
    default): long [d_mlp, N_BINS]. A value's bin is how many edges it lies above: one
    byte-wide compare and add per edge (on a CPU in NumPy, whose compares are several times
    faster than torch's), then one bincount."""
    d = values.shape[1 - dim]
    neuron = torch.arange(0, d * N_BINS, N_BINS, dtype=torch.int32, device=values.device)
    neuron = neuron[None, :] if dim == 0 else neuron[:, None]  # broadcast along ``dim``
    if values.device.type == "cpu":
        array = values.numpy()
        bins = np.zeros(array.shape, dtype=np.uint8)
        for edge in np.array(EDGES, dtype=np.float32):
            np.add(bins, array > edge, out=bins, casting="unsafe")
        bins = torch.from_numpy(bins)
    else:
        bins = torch.zeros_like(values, dtype=torch.uint8)
        for edge in EDGES:
            bins += values > edge
    index = bins.int() + neuron  # [d_mlp, n] or [n, d_mlp]: each neuron's bins apart
    return torch.bincount(index.flatten(), minlength=N_BINS * d).view(d, N_BINS)


def histogram_positions(keeps: list[torch.Tensor], parts: Sequence[int], n: int | None,
                        seed: int) -> list[torch.Tensor]:
    """Per sequence, bool [len]: the kept positions each part's histogram counts, ``n`` per part
    drawn uniformly without replacement (all of them when fewer, or when ``n`` is None)."""
    if n is None:
        return keeps
    out = [torch.zeros_like(keep) for keep in keeps]
    for part in dict.fromkeys(parts):
        members = [i for i, p in enumerate(parts) if p == part]
        drawn = sample_positions([keeps[i] for i in members], n, seed)
        for local, pos in drawn:
            out[members[local]][pos] = True
    return out


def sample_positions(keeps: list[torch.Tensor], n: int, seed: int) -> list[tuple[int, int]]:
    """``n`` (sequence, position) pairs drawn uniformly without replacement from the kept
    positions (all of them when fewer), in corpus order."""
    pairs = [(i, int(p)) for i, keep in enumerate(keeps) for p in torch.nonzero(keep).flatten()]
    if len(pairs) <= n:
        return pairs
    chosen = np.random.default_rng(seed).choice(len(pairs), size=n, replace=False)
    return [pairs[i] for i in sorted(chosen)]


@dataclass
class CorpusIndex:
    """What a recording needs to know of the whole corpus before its first batch: per sequence
    the positions that count (first occurrences) and those the histogram counts, and the
    sampled positions (by sequence: (position, sample index))."""

    keeps: list[torch.Tensor]
    in_hist: list[torch.Tensor]
    samples: list[tuple[int, int]]
    by_seq: dict[int, list[tuple[int, int]]]

    def batch(self, group: list[int], lengths: list[int], mask: torch.Tensor) -> _Batch:
        """The probe's view of one batch: ``group`` the corpus indices of its rows, right-padded
        to ``mask`` [batch, pos]."""
        keep = torch.zeros_like(mask, dtype=torch.bool)
        hist = torch.zeros_like(keep)
        for row, (i, n) in enumerate(zip(group, lengths)):
            keep[row, :n] = self.keeps[i]
            hist[row, :n] = self.in_hist[i]
        samples = [(row, pos, index) for row, i in enumerate(group)
                   for pos, index in self.by_seq.get(i, [])]
        return _Batch(torch.tensor(group, dtype=torch.long), keep, mask.bool(), samples,
                      torch.nonzero(hist.flatten()[keep.flatten()]).flatten(),
                      torch.nonzero(keep.flatten()).flatten())


def index_corpus(sequences: Sequence[Sequence[int]], parts: Sequence[int], *, before: int,
                 after: int, n_samples: int, seed: int, hist_tokens: int | None) -> CorpusIndex:
    keeps = first_occurrences(sequences, before, after)
    samples = sample_positions(keeps, n_samples, seed)
    by_seq: dict[int, list[tuple[int, int]]] = {}
    for index, (seq, pos) in enumerate(samples):
        by_seq.setdefault(seq, []).append((pos, index))
    return CorpusIndex(keeps, histogram_positions(keeps, parts, hist_tokens, seed), samples,
                       by_seq)


@torch.no_grad()
def record_exemplars(model: nn.Module, sequences: Sequence[Sequence[int]], parts: Sequence[int],
                     *, k: int = 8, before: int = 8, after: int = 4, n_samples: int = 64,
                     seed: int = 0, batch_size: int = 8, max_batch_tokens: int | None = 1024,
                     pad_id: int = 0, hist_tokens: int | None = None, on_batch=None
                     ) -> Exemplars:
    """One forward pass over ``sequences`` recording every neuron's exemplars.

    Args:
        model: a loaded causal LM of a supported family.
        sequences: token ids, one list per text.
        parts: per sequence, the part (task id) whose density it counts in.
        k: contexts kept per neuron and sign.
        before, after: tokens of each window before and after the peak.
        n_samples: token positions sampled for quantiles.
        seed: seed of the sampled positions.
        hist_tokens: token positions per part the histogram counts (drawn with ``seed``;
            None: every position).
        on_batch: called with (n_sequences, n_tokens) after each batch.

    Returns:
        :class:`Exemplars`.
    """
    adapter = adapter_for(model)
    device = next(model.parameters()).device
    index = index_corpus(sequences, parts, before=before, after=after, n_samples=n_samples,
                         seed=seed, hist_tokens=hist_tokens)
    probe = ExemplarProbe(adapter, k, before, after, index.samples)
    groups = []
    for part in dict.fromkeys(parts):  # each part's sequences together, parts in order
        members = [i for i, p in enumerate(parts) if p == part]
        groups += [(part, [members[j] for j in g]) for g in
                   length_groups([len(sequences[i]) for i in members], batch_size, max_batch_tokens)]
    with probe:
        current = None
        for part, group in groups:
            if part != current:
                probe.begin_part(part)
                current = part
            record_batch(model, probe, index, sequences, group, pad_id, device)
            if on_batch is not None:
                on_batch(len(group), sum(len(sequences[i]) for i in group))
    return probe.result()


def record_batch(model: nn.Module, probe: ExemplarProbe, index: CorpusIndex,
                 sequences: Sequence[Sequence[int]], group: list[int], pad_id: int,
                 device: torch.device) -> None:
    """One forward pass over the sequences ``group`` (corpus indices), right-padded, recorded
    by ``probe`` (whose hooks are installed)."""
    ids, mask = padded([sequences[i] for i in group], pad_id)
    probe.batch = index.batch(group, [len(sequences[i]) for i in group], mask)
    try:
        model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False,
              logits_to_keep=1)
    finally:
        probe.batch = None


def merge_records(records: list[Exemplars]) -> Exemplars:
    """One record of several passes over disjoint parts of one corpus (sequence indices of the
    same corpus): per neuron and sign the best ``k`` of all, by value, ties by input order;
    the parts' densities; each sample's values from the pass that read it."""
    first = records[0]
    k = first.value.shape[2]
    value = torch.cat([r.value for r in records], 2)  # [2, n_layers, n·k, d_mlp]
    seq, pos = torch.cat([r.seq for r in records], 2), torch.cat([r.pos for r in records], 2)
    window = torch.cat([r.window for r in records], 2)
    sign = torch.tensor(SIGNS, dtype=value.dtype).view(2, 1, 1, 1)
    key = (value * sign).nan_to_num(nan=-torch.inf)  # larger is better, empty slots last
    big = int(pos.max()) + 2
    order = torch.argsort(torch.where(seq < 0, torch.iinfo(torch.int64).max // 2, seq * big + pos),
                          dim=2, stable=True)
    order = order.gather(2, torch.argsort(-key.gather(2, order), dim=2, stable=True))[:, :, :k]
    samples = first.sample_values.clone()
    for r in records[1:]:
        read = ~torch.isnan(r.sample_values)
        samples[read] = r.sample_values[read]
    return Exemplars(value.gather(2, order), seq.gather(2, order), pos.gather(2, order),
                     window.gather(2, order[..., None].expand(-1, -1, -1, -1, window.shape[-1])),
                     {p: d for r in records for p, d in r.density.items()},
                     first.sample_positions, samples, first.before, first.after)


@dataclass
class QuantileBins:
    """Per neuron, its sampled values in ``n_bins`` equal-count bins (ascending): each bin's
    lowest and highest value and its median sample's value and index, each [n_bins, n_layers,
    d_mlp] (a bin left empty by fewer samples than bins is dropped)."""

    low: np.ndarray
    high: np.ndarray
    value: np.ndarray
    index: np.ndarray


def quantile_bins(values: np.ndarray, n_bins: int = 4) -> QuantileBins:
    """Every neuron's quantile bins from the sampled values [n_samples, n_layers, d_mlp]."""
    order = np.argsort(values, axis=0, kind="stable")  # per neuron, sample indices ascending
    chunks = [c for c in np.array_split(np.arange(len(values)), n_bins) if len(c)]

    def at(rank: int) -> tuple[np.ndarray, np.ndarray]:
        index = order[rank]  # [n_layers, d_mlp]
        return np.take_along_axis(values, index[None], 0)[0], index

    mids = [at(c[len(c) // 2]) for c in chunks]
    shape = (0, *values.shape[1:])
    stack = lambda arrays: np.stack(arrays) if arrays else np.zeros(shape)  # noqa: E731
    return QuantileBins(stack([at(c[0])[0] for c in chunks]), stack([at(c[-1])[0] for c in chunks]),
                        stack([v for v, _ in mids]), stack([i for _, i in mids]).astype(np.int64))
