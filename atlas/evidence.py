"""The evidence job: what each neuron of a model responds to and what it writes, stored.

``describe`` runs one forward pass over the texts of some tasks (each instance's prompt and
answer, from the scoring half, as ingest reads them) and records every neuron's exemplars,
quantile samples and per-task density (:mod:`atlas.scoring.exemplars`), and, once per model,
its direct logit effects (:mod:`atlas.models.unembed`). A run is stored whole or not at all;
a run with the same params is reused.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import torch
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.models.batching import length_groups
from atlas.models.loading import LoadedModel
from atlas.models.unembed import logit_effects
from atlas.naming import params_key
from atlas.scoring.exemplars import (
    SIGNS,
    ExemplarProbe,
    Exemplars,
    index_corpus,
    merge_records,
    quantile_bins,
    record_batch,
    record_exemplars,
)
from atlas.store import evidence as store
from atlas.store.runs import DatabaseRuns, register_model
from atlas.tasks.prompts import PromptFormat, scoring_examples
from atlas.tasks.sni import Task
from atlas.tasks.split import split_task, subsample
from atlas.versions import library_versions

N_QUANTILE_BINS = 4


@dataclass
class DescribeOptions:
    """What an evidence run reads and keeps (all stored in its params)."""

    examples: int = 20  # texts per task, from the scoring half
    shots: int = 0  # demonstrations per text (0: each instance's prompt and answer alone)
    k: int = 8  # exemplars per neuron and sign
    before: int = 8  # window tokens before the peak
    after: int = 4  # and after it
    n_samples: int = 64  # token positions sampled for quantile bins
    hist_tokens: int = 2048  # token positions per task the histogram counts (0: every one)
    seed: int = 0
    split_seed: int = 0
    batch_size: int = 8
    logit_k: int = 20  # tokens kept each way per neuron
    set_ids: list[int] = field(default_factory=list)  # keep only these sets' neurons (by id)
    sets_of: list[str] = field(default_factory=list)  # and those of the current sets of methods
    sni_dir: list[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("examples", "k", "n_samples", "batch_size", "logit_k"):
            if getattr(self, name) < 1:
                raise AtlasError(f"--{name.replace('_', '-')} must be at least 1")
        if self.before < 0 or self.after < 0 or self.shots < 0 or self.hist_tokens < 0:
            raise AtlasError("--before, --after, --shots and --hist-tokens must be 0 or more")


@dataclass
class DescribeResult:
    evidence_id: int
    status: str  # computed | reused
    n_sequences: int
    n_tokens: int
    seconds: float


@dataclass
class Corpus:
    """The texts of one run: token ids, and per text its task id and instance id."""

    sequences: list[list[int]]
    task_ids: list[int]
    instance_ids: list[str]


def build_corpus(loaded: LoadedModel, tasks: list[Task], task_ids: list[int],
                 options: DescribeOptions) -> Corpus:
    fmt = PromptFormat.for_tokenizer(loaded.tokenizer)
    corpus = Corpus([], [], [])
    for task, task_id in zip(tasks, task_ids):
        split = split_task(task, options.split_seed)
        queries = subsample(split.score, options.examples, options.seed)
        for ex in scoring_examples(task, queries, fmt, options.shots, options.seed,
                                   prompt_rule="marker", pool=split.score):
            corpus.sequences.append(ex.encoded.input_ids)
            corpus.task_ids.append(task_id)
            corpus.instance_ids.append(str(ex.instance.id))
    return corpus


def vocabulary(tokenizer) -> list[str]:
    """Each token id's text as it reads in a decoded string."""
    return [tokenizer.decode([i]) for i in range(len(tokenizer))]


def describe(engine: Engine, loaded: LoadedModel, tasks: list[Task], options: DescribeOptions,
             say: Callable[[str], None] = print) -> DescribeResult:
    """Record and store the evidence of every neuron of ``loaded`` on ``tasks``.

    Args:
        engine: the atlas database, open for writing.
        loaded: the model.
        tasks: the tasks whose texts are read.
        options: what is read and kept.
        say: progress messages.

    Returns:
        :class:`DescribeResult` (a run with the same params is reused, not recomputed).
    """
    runs = DatabaseRuns(engine)
    runs.register_model(loaded)
    model_id = runs.model_id
    task_ids = [runs.task_id(t) for t in tasks]
    chosen = None
    if options.set_ids or options.sets_of:
        chosen = store.chosen_neurons(engine, model_id, (loaded.n_layers, loaded.d_mlp),
                                      options.set_ids, options.sets_of)
    params = {"model": loaded.name, "revision": loaded.revision, "dtype": loaded.dtype,
              "tasks": {t.name: t.data_hash for t in tasks}, "prompt_rule": "marker",
              **{k: v for k, v in asdict(options).items()
                 if k != "sni_dir" and not (k in ("set_ids", "sets_of") and not v)}}
    if chosen is not None:  # which neurons, not only how they were named
        params["neurons"] = {"n": int(chosen.sum()),
                             "hash": hashlib.sha256(np.packbits(chosen).tobytes()).hexdigest()}
    key = params_key(params)
    ensure_logits(engine, loaded, model_id, options.logit_k, say)
    found = store.find_complete(engine, model_id, key)
    if found is not None:
        say(f"reusing complete evidence run {found}")
        return DescribeResult(found, "reused", 0, 0, 0.0)
    evidence_id = store.open_run(engine, model_id, {**params, "versions": library_versions()},
                                 key)
    started = time.perf_counter()
    corpus = build_corpus(loaded, tasks, task_ids, options)
    record = record_exemplars(loaded.model, corpus.sequences, corpus.task_ids, k=options.k,
                              before=options.before, after=options.after,
                              n_samples=options.n_samples, seed=options.seed,
                              batch_size=options.batch_size, pad_id=_pad_id(loaded.tokenizer),
                              hist_tokens=options.hist_tokens or None)
    tables = evidence_tables(evidence_id, record, corpus, store.read_vocab(engine, model_id),
                             chosen)
    n_tokens = sum(d.n_tokens for d in record.density.values())
    store.complete_run(engine, evidence_id, tables, len(corpus.sequences), n_tokens)
    return DescribeResult(evidence_id, "computed", len(corpus.sequences), n_tokens,
                          time.perf_counter() - started)


def ensure_logits(engine: Engine, loaded: LoadedModel, model_id: int, k: int,
                  say: Callable[[str], None]) -> None:
    """The model's logit effects and vocabulary, stored once."""
    if store.has_logits(engine, model_id):
        return
    started = time.perf_counter()
    store.write_logits(engine, model_id, logits_table(model_id, logit_effects(loaded.model, k)),
                       vocabulary(loaded.tokenizer))
    say(f"logit effects of {loaded.n_layers * loaded.d_mlp} neurons stored "
        f"({time.perf_counter() - started:.1f} s)")


class IngestEvidence:
    """Exemplars recorded by ``atlas ingest`` in the forward pass of its scoring, stored as one
    evidence run of the scored prompts.

    The corpus is every task's scored examples under one prompt rule, in task order. A task's
    pass is read live when it runs whole in this process (:meth:`observe`); tasks whose runs
    were reused or resumed are read by :meth:`finish` in a pass of their own, batched as the
    scoring pass batches them, so the rows are those of an uninterrupted ingest. Nothing is
    stored until every task is read; the run is then written in one transaction.

    Args:
        engine: the atlas database, open for writing.
        loaded: the model.
        tasks: per task: the task, its stored id and its examples' (ids, instance id) in scoring
            order.
        params: what identifies the run (the ingest's prompt settings).
        options: k, window, samples, histogram and seed.
        batching: (examples per checkpoint chunk, batch size, tokens per batch) of the pass.
        prompt_rule: the rule of the corpus's examples.
    """

    def __init__(self, engine: Engine, loaded: LoadedModel,
                 tasks: list[tuple[Task, int, list[tuple[list[int], str]]]], params: dict,
                 options: DescribeOptions, batching: tuple[int, int, int | None],
                 prompt_rule: str):
        self.engine, self.loaded, self.options, self.batching = engine, loaded, options, batching
        self.prompt_rule = prompt_rule
        self.corpus = Corpus([], [], [])
        self.offsets: dict[str, int] = {}
        for task, task_id, examples in tasks:
            self.offsets[task.name] = len(self.corpus.sequences)
            for ids, instance in examples:
                self.corpus.sequences.append(ids)
                self.corpus.task_ids.append(task_id)
                self.corpus.instance_ids.append(instance)
        self.task_ids = {task.name: task_id for task, task_id, _ in tasks}
        self.sizes = {task.name: len(examples) for task, _, examples in tasks}
        self.params = {**params, "tasks": {t.name: t.data_hash for t, _, _ in tasks},
                       "source": "ingest", "k": options.k, "before": options.before,
                       "after": options.after, "n_samples": options.n_samples,
                       "hist_tokens": options.hist_tokens, "seed": options.seed}
        self.key = params_key(self.params)
        self.index = index_corpus(self.corpus.sequences, self.corpus.task_ids,
                                  before=options.before, after=options.after,
                                  n_samples=options.n_samples, seed=options.seed,
                                  hist_tokens=options.hist_tokens or None)
        self.records: dict[str, Exemplars] = {}
        self.model_id = register_model(engine, loaded)

    def complete(self) -> int | None:
        """The complete evidence run of these params, when one is stored."""
        return store.find_complete(self.engine, self.model_id, self.key)

    def reads(self, task_name: str, prompt_rule: str) -> bool:
        """Whether a scoring pass of ``task_name`` under ``prompt_rule`` is read live (its task
        not read yet, its examples the corpus's)."""
        return (prompt_rule == self.prompt_rule and task_name in self.offsets
                and task_name not in self.records)

    @contextmanager
    def observe(self, task_name: str) -> Iterator[Callable[[int], Callable]]:
        """Record one task's whole scoring pass: yields ``at(chunk_start)``, the
        ``before_batch`` of the chunk that starts at that example; the task's record is kept
        when the pass ends without error."""
        probe = self._probe(task_name)
        offset = self.offsets[task_name]

        def at(chunk_start: int) -> Callable:
            def before_batch(batch) -> Callable[[], None]:
                group = [offset + chunk_start + i for i in batch.indices]
                probe.batch = self.index.batch(
                    group, [len(self.corpus.sequences[i]) for i in group], batch.attention_mask)

                def after() -> None:
                    probe.batch = None
                return after
            return before_batch

        with probe:
            yield at
        self.records[task_name] = probe.result()

    def finish(self, say: Callable[[str], None]) -> int:
        """Read the tasks not read live, store the run; its id."""
        missing = [name for name in self.offsets if name not in self.records]
        if missing:
            say(f"recording exemplars of {len(missing)} task(s) whose runs were reused")
        for name in missing:
            self.records[name] = self._read(name)
        record = merge_records([self.records[name] for name in self.offsets])
        ensure_logits(self.engine, self.loaded, self.model_id, self.options.logit_k, say)
        evidence_id = store.open_run(self.engine, self.model_id,
                                     {**self.params, "versions": library_versions()}, self.key)
        tables = evidence_tables(evidence_id, record, self.corpus,
                                 store.read_vocab(self.engine, self.model_id))
        n_tokens = sum(d.n_tokens for d in record.density.values())
        store.complete_run(self.engine, evidence_id, tables, len(self.corpus.sequences), n_tokens)
        return evidence_id

    def _probe(self, task_name: str) -> ExemplarProbe:
        """A probe of one task's pass, counting its density under the task."""
        probe = ExemplarProbe(self.loaded.adapter, self.options.k, self.options.before,
                              self.options.after, self.index.samples)
        probe.begin_part(self.task_ids[task_name])
        return probe

    @torch.no_grad()
    def _read(self, task_name: str) -> Exemplars:
        """A task's pass of its own, in the scoring pass's chunks and batches."""
        chunk, batch_size, max_tokens = self.batching
        offset, size = self.offsets[task_name], self.sizes[task_name]
        probe = self._probe(task_name)
        sequences = self.corpus.sequences
        with probe:
            for start in range(0, size, chunk):
                members = list(range(offset + start, offset + min(start + chunk, size)))
                for group in length_groups([len(sequences[i]) for i in members], batch_size,
                                           max_tokens):
                    record_batch(self.loaded.model, probe, self.index, sequences,
                                 [members[j] for j in group], _pad_id(self.loaded.tokenizer),
                                 self.loaded.device)
        return probe.result()


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad if pad is not None else (tokenizer.eos_token_id or 0))


def logits_table(model_id: int, effects) -> pa.Table:
    n_layers, d_mlp, k = effects.promoted.shape
    n = n_layers * d_mlp

    def lists(t: torch.Tensor, dtype) -> pa.Array:
        flat = t.reshape(n * k).numpy().astype(dtype)
        return pa.ListArray.from_arrays(np.arange(0, n * k + 1, k, dtype=np.int32), flat)

    return pa.table({
        "model_id": pa.array(np.full(n, model_id, dtype=np.int32)),
        "layer": pa.array(np.repeat(np.arange(n_layers, dtype=np.int16), d_mlp)),
        "neuron": pa.array(np.tile(np.arange(d_mlp, dtype=np.int32), n_layers)),
        "promoted_ids": lists(effects.promoted_ids, np.int32),
        "promoted": lists(effects.promoted, np.float32),
        "suppressed_ids": lists(effects.suppressed_ids, np.int32),
        "suppressed": lists(effects.suppressed, np.float32),
    })


def evidence_tables(evidence_id: int, rec: Exemplars, corpus: Corpus, vocab: list[str],
                    chosen: np.ndarray | None = None) -> dict[str, pa.Table]:
    """The run's rows: contexts, exemplars, quantile samples and density, as Arrow tables;
    only the neurons of ``chosen`` (bool [n_layers, d_mlp]) when given. Each table's rows come
    in (layer, neuron) order, so a neuron's lookups read one row group (zone maps on layer and
    neuron)."""
    n_signs, n_layers, k, d_mlp = rec.value.shape
    if chosen is None:
        chosen = np.ones((n_layers, d_mlp), dtype=bool)
    by_neuron = lambda t: t.numpy().transpose(1, 3, 0, 2, *range(4, t.dim()))  # noqa: E731
    # [n_layers, d_mlp, sign (1, then -1), rank, ...]
    valid = (by_neuron(rec.seq) >= 0) & chosen[:, :, None, None]
    seq, pos = by_neuron(rec.seq)[valid], by_neuron(rec.pos)[valid]
    bins = quantile_bins(rec.sample_values.numpy(), N_QUANTILE_BINS)
    sample_seq = np.array([s for s, _ in rec.sample_positions], dtype=np.int64)
    sample_pos = np.array([p for _, p in rec.sample_positions], dtype=np.int64)
    index = bins.index.transpose(1, 2, 0)  # [n_layers, d_mlp, bin]
    in_chosen = np.broadcast_to(chosen[:, :, None], index.shape)
    q_layer, q_neuron, q_bin = (a[in_chosen] for a in np.indices(index.shape))
    q_index = index[in_chosen]
    q_seq, q_pos = sample_seq[q_index], sample_pos[q_index]
    # contexts: the distinct (sequence, position) pairs, in that order
    width = int(max(pos.max(initial=0), q_pos.max(initial=0))) + 1
    keys, inverse = np.unique(np.concatenate([seq * width + pos, q_seq * width + q_pos]),
                              return_inverse=True)
    inverse = inverse.reshape(-1)
    contexts = _contexts_table(evidence_id, np.stack([keys // width, keys % width], 1), rec,
                               corpus, vocab)
    grid = np.indices(valid.shape)
    windows = by_neuron(rec.window)[valid]  # [n, width]
    kept = ~np.isnan(windows)
    exemplars = pa.table({
        "evidence_id": pa.array(np.full(len(seq), evidence_id, dtype=np.int32)),
        "layer": pa.array(grid[0][valid].astype(np.int16)),
        "neuron": pa.array(grid[1][valid].astype(np.int32)),
        "sign": pa.array(np.array(SIGNS, dtype=np.int16)[grid[2][valid]]),
        "rank": pa.array(grid[3][valid].astype(np.int16) + 1),
        "context_id": pa.array(inverse[:len(seq)].astype(np.int32)),
        "activation": pa.array(by_neuron(rec.value)[valid].astype(np.float32)),
        "activations": pa.ListArray.from_arrays(
            np.concatenate([[0], np.cumsum(kept.sum(1))]).astype(np.int32),
            windows[kept].astype(np.float32)),
    })
    pick = lambda a: a.transpose(1, 2, 0)[in_chosen]  # noqa: E731  [bin, layer, neuron] arrays
    quantile_table = pa.table({
        "evidence_id": pa.array(np.full(len(q_index), evidence_id, dtype=np.int32)),
        "layer": pa.array(q_layer.astype(np.int16)),
        "neuron": pa.array(q_neuron.astype(np.int32)),
        "bin": pa.array(q_bin.astype(np.int16)),
        "low": pa.array(pick(bins.low).astype(np.float32)),
        "high": pa.array(pick(bins.high).astype(np.float32)),
        "activation": pa.array(pick(bins.value).astype(np.float32)),
        "context_id": pa.array(inverse[len(seq):].astype(np.int32)),
    })
    return {"evidence_contexts": contexts, "neuron_exemplars": exemplars,
            "neuron_quantiles": quantile_table,
            "neuron_density": _density_table(evidence_id, rec, chosen)}


def _contexts_table(evidence_id: int, pairs: np.ndarray, rec: Exemplars, corpus: Corpus,
                    vocab: list[str]) -> pa.Table:
    token_ids, tokens, peaks = [], [], []
    for s, p in pairs:
        ids = corpus.sequences[s]
        start = max(0, p - rec.before)
        window = ids[start:p + rec.after + 1]
        token_ids.append(window)
        tokens.append([vocab[t] if t < len(vocab) else "" for t in window])
        peaks.append(p - start)
    n = len(pairs)
    return pa.table({
        "evidence_id": pa.array(np.full(n, evidence_id, dtype=np.int32)),
        "context_id": pa.array(np.arange(n, dtype=np.int32)),
        "task_id": pa.array(np.array([corpus.task_ids[s] for s, _ in pairs], dtype=np.int32)),
        "instance_id": pa.array([corpus.instance_ids[s] for s, _ in pairs], pa.string()),
        "token_ids": pa.array(token_ids, pa.list_(pa.int32())),
        "tokens": pa.array(tokens, pa.list_(pa.string())),
        "peak": pa.array(np.array(peaks, dtype=np.int16)),
    })


def _density_table(evidence_id: int, rec: Exemplars, chosen: np.ndarray) -> pa.Table:
    """Per chosen neuron and task (tasks by id), its density: rows in (layer, neuron, task)
    order."""
    tasks = sorted(rec.density)
    stack = lambda name: np.stack([getattr(rec.density[t], name).numpy() for t in tasks],  # noqa: E731
                                  2)[chosen]  # [n, n_tasks, ...]: chosen neurons, in order
    hist = stack("hist")  # [n, n_tasks, n_bins]
    n, n_tasks, n_bins = hist.shape
    layer, neuron = np.nonzero(chosen)
    n_tokens = np.array([rec.density[t].n_tokens for t in tasks], dtype=np.int64)
    return pa.table({
        "evidence_id": pa.array(np.full(n * n_tasks, evidence_id, dtype=np.int32)),
        "task_id": pa.array(np.tile(np.array(tasks, dtype=np.int32), n)),
        "layer": pa.array(np.repeat(layer.astype(np.int16), n_tasks)),
        "neuron": pa.array(np.repeat(neuron.astype(np.int32), n_tasks)),
        "n_tokens": pa.array(np.tile(n_tokens.astype(np.int32), n)),
        "n_positive": pa.array(stack("n_positive").ravel().astype(np.int32)),
        "mean": pa.array((stack("total") / np.maximum(n_tokens, 1).astype(np.float32)).ravel()),
        "hist": pa.ListArray.from_arrays(np.arange(0, n * n_tasks * n_bins + 1, n_bins,
                                                   dtype=np.int32),
                                         hist.reshape(-1).astype(np.int32)),
    })
