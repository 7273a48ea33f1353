"""The ingestion job: score every (task, method) for one loaded model into the store.

Runs are idempotent (same model, task, method and params reuse the complete run), checkpointed
every ``checkpoint_every`` examples and resumable after an interruption. Where runs are kept is a
:class:`~atlas.store.runs.RunStore`: the database, or Parquet shards on Ray workers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from sqlalchemy.engine import Engine

from atlas.errors import AtlasError
from atlas.evidence import DescribeOptions, IngestEvidence
from atlas.models.loading import LoadedModel
from atlas.naming import params_key
from atlas.presets import apply_preset
from atlas.progress import Reporter
from atlas.scoring.engine import CPU_BATCH_TOKENS, GRADIENT_REDUCTIONS, reduce_neurons
from atlas.scoring.methods import LAPE_RULE, Method, get_method, lape_sets, random_scores
from atlas.scoring.selection import require_finite, select
from atlas.store import repository as repo
from atlas.store.runs import RunStore
from atlas.tasks.prompts import Example, PromptFormat, scoring_examples
from atlas.tasks.sni import Instance, Task, load_task
from atlas.tasks.split import split_task, subsample
from atlas.versions import library_versions

# What each target rule predicts and how the loss reduces it (stored with every run).
TARGET_RULES = {
    "reference": {
        "special_tokens": "the logits at every role-marker token (trailing whitespace included) "
                          "predict the next token",
        "loss": "mean CE of the first four user/assistant turns' targets + mean CE of the rest, "
                "as released (mean(CE[:28]) + mean(CE[28:]) on Llama-2-chat; an empty group "
                "contributes nothing); |.| per example, summed",
        "rendering": "chat template with empty BOS/EOS strings, tokenized with special tokens",
    },
    "marker": {
        "special_tokens": "every token of each user/assistant role marker in the template text",
        "loss": "mean cross-entropy over each example's targets; |.| per example, summed",
        "rendering": "chat template with the real BOS/EOS, tokenized without special tokens",
    },
}
# --exemplars is on by default up to this many neurons (SmolLM2: 46,080; Gemma 3 270M: 36,864)
AUTO_EXEMPLAR_NEURONS = 65_536
# How lape selects (stored with its runs): the released identify.py, tasks as languages.
LAPE_SELECTION = ("identify.py: act(gate) > 0 probabilities normalised over tasks, entropy; "
                  "neurons with no probability above the 95th percentile of all dismissed; the "
                  "round(0.01 * n_layers * d_mlp) lowest entropies (ties by position); each "
                  "assigned to every task whose probability exceeds that percentile")


@dataclass
class IngestOptions:
    methods: list[str] = field(default_factory=lambda: ["cgvst"])
    shots: int = 5
    examples: int | None = None
    seed: int = 0
    split_seed: int = 0
    score_fraction: float = 0.5
    batch_size: int = 8
    max_batch_tokens: int | None = None
    max_tokens: int | None = None
    checkpoint_every: int = 16
    selection_rule: str = "top:0.05"
    force: bool = False
    skip_missing: bool = False
    sni_dir: str | None = None
    split: str = "stratified"  # or "file": the released code's file-order halves
    demos_include_query: bool = False  # the released code may pick the query as a demonstration
    join_outputs: bool = False  # the released code answers with all gold outputs joined
    # the released data rules: every Definition part joined, instances without outputs kept,
    # and only the released rendering's marker tokens
    released_data: bool = False
    preset: str | None = None
    # exemplars kept per neuron and sign, recorded in the scoring pass (0: off; None: 8 for a
    # model of at most AUTO_EXEMPLAR_NEURONS neurons, else off)
    exemplars: int | None = None

    def __post_init__(self) -> None:
        if self.exemplars is not None and self.exemplars < 0:
            raise AtlasError(f"--exemplars must be 0 (off) or more (got {self.exemplars})")
        if self.examples is not None and self.examples < 1:
            raise AtlasError(f"--examples must be at least 1 (got {self.examples}); "
                             "leave it out to score the whole half")
        if self.shots < 0:
            raise AtlasError(f"--shots must be 0 or more (got {self.shots})")
        if self.preset is not None:
            apply_preset(self, self.preset)


@dataclass
class IngestResult:
    task: str
    method: str
    run_id: int | str  # run id, or a shard folder on Ray workers
    status: str  # computed | resumed | reused
    n_examples: int
    n_tokens: int
    n_skipped: int
    seconds: float
    n_selected: int


@dataclass
class Prepared:
    """One task's scoring queries and demonstration pool; examples are encoded per rule."""

    task: Task
    queries: list[Instance]
    pool: list[Instance]
    split: dict
    limit: int | None
    options: IngestOptions
    fmt: PromptFormat
    _encoded: dict[str, tuple[list[Example], int]] = field(default_factory=dict)

    def examples(self, prompt_rule: str) -> tuple[list[Example], int]:
        """(kept examples, number skipped as too long) under a prompt rule."""
        if prompt_rule not in self._encoded:
            o = self.options
            examples = scoring_examples(self.task, self.queries, self.fmt, o.shots, o.seed,
                                        prompt_rule=prompt_rule, pool=self.pool,
                                        demos_include_query=o.demos_include_query,
                                        join_outputs=o.join_outputs)
            kept = [ex for ex in examples if ex.encoded.targets
                    and (not self.limit or len(ex.encoded.input_ids) <= self.limit)]
            if examples and not kept:
                raise AtlasError(
                    f"every example of task '{self.task.name}' is longer than {self.limit} "
                    "tokens; use fewer --shots or a larger --max-tokens")
            self._encoded[prompt_rule] = (kept, len(examples) - len(kept))
        return self._encoded[prompt_rule]


def task_seed(seed: int, task_name: str) -> int:
    """A per-task seed, so that each task's random set differs."""
    return int(hashlib.sha256(f"{seed}:{task_name}".encode()).hexdigest()[:8], 16)


def load_tasks(names: list[str], options: IngestOptions, say: Callable[[str], None]) -> list[Task]:
    tasks = []
    for name in names:
        try:
            tasks.append(load_task(name, options.sni_dir, options.released_data))
        except AtlasError as err:
            if not options.skip_missing or "not found" not in str(err):
                raise
            say(f"skipping task '{name}': {err}")
    if not tasks:
        raise AtlasError("no task to ingest; check --task and --sni-dir")
    return tasks


def _prepare(loaded: LoadedModel, fmt: PromptFormat, task: Task, options: IngestOptions) -> Prepared:
    split = split_task(task, options.split_seed, options.score_fraction, options.split)
    available = len(split.score) - (0 if options.demos_include_query else 1)
    if options.shots > available:
        raise AtlasError(
            f"task '{task.name}' has {len(split.score)} scoring instances, too few for "
            f"{options.shots} demonstrations per prompt; use --shots {max(available, 0)} or fewer")
    queries = subsample(split.score, options.examples, options.seed)
    split_info = {"rule": split.split_rule, "seed": split.seed, "fraction": options.score_fraction,
                  "stratified": split.stratified, "n_score": len(split.score),
                  "n_evaluate": len(split.evaluate)}
    limit = options.max_tokens or loaded.max_positions
    return Prepared(task, queries, split.score, split_info, limit, options, fmt)


def _identity(loaded: LoadedModel, method: Method, prep: Prepared, fmt: PromptFormat,
              options: IngestOptions) -> dict:
    if method.name == "random":
        return {"method": "random", "seed": options.seed, "seed_rule": "sha256(seed:task name)"}
    target = TARGET_RULES[method.prompt_rule]
    return {
        "method": method.name,
        "targets": method.targets,
        "reduction": method.reduction,
        "shots": options.shots,
        "seed": options.seed,
        "examples": options.examples,
        "max_tokens": options.max_tokens or loaded.max_positions,
        "split": prep.split,
        "demos": {"pool": "whole scoring half", "include_query": options.demos_include_query},
        "answer": "all outputs joined" if options.join_outputs else "first output",
        "data_hash": prep.task.data_hash,
        "prompt": {**fmt.describe(), "rule": method.prompt_rule, "rendering": target["rendering"]},
        "special_tokens": "every token" if method.targets == "all" else target["special_tokens"],
        "loss": target["loss"],
        "preset": options.preset,
    }


class Ingestor:
    """Scores tasks with methods for one loaded model, keeping runs in a :class:`RunStore`."""

    def __init__(self, loaded: LoadedModel, options: IngestOptions, runs: RunStore,
                 reporter: Reporter | None = None, evidence_db: Engine | None = None):
        select(torch.zeros(loaded.n_layers, loaded.d_mlp), options.selection_rule)  # a rule that selects
        for name in options.methods:
            get_method(name)
        self.loaded = loaded
        self.options = options
        self.runs = runs
        self.reporter = reporter or Reporter()
        self.evidence_db = evidence_db  # where --exemplars are stored (None: not recorded)
        self.recorder: IngestEvidence | None = None
        self.fmt = PromptFormat.for_tokenizer(loaded.tokenizer, options.released_data)
        # (task, method) -> sums, n_examples, n_tokens, n_skipped of a pass shared with another
        self._shared: dict[tuple[str, str], tuple] = {}
        runs.register_model(loaded)
        gradient = any(get_method(m).reduction == "up_weight_grad" for m in options.methods)
        if gradient and loaded.adapter.spec.centred_norm:
            self.reporter.message(
                f"warning: {loaded.adapter.family} feeds its MLP from a centring LayerNorm, so "
                "Σ_j x[t, j] depends only on the norm's affine parameters; CGVST/GV scores of "
                "this model say little about the neurons (see README, Method)")

    @property
    def shape(self) -> tuple[int, int]:
        return (self.loaded.n_layers, self.loaded.d_mlp)

    def run(self, tasks: list[Task]) -> list[IngestResult]:
        prepared = [_prepare(self.loaded, self.fmt, task, self.options) for task in tasks]
        self.recorder = self._recorder(prepared)
        results, stored = [], set()
        for method in (get_method(m) for m in self.options.methods):
            if method.name == "lape":
                results += self._lape(prepared)
                continue
            for prep in prepared:
                if (prep.task.name, method.name) in stored:
                    continue
                results.append(self._one(prep, method))
                # the runs computed in the same pass are stored now: an interrupted job keeps them
                for task, name in [k for k in self._shared if k[0] == prep.task.name]:
                    results.append(self._one(prep, get_method(name)))
                    stored.add((task, name))
        if self.recorder is not None:
            evidence_id = self.recorder.finish(self.reporter.message)
            self.reporter.message(f"exemplars stored as evidence run {evidence_id}")
        return results

    def _recorder(self, prepared: list[Prepared]) -> IngestEvidence | None:
        """What records --exemplars in the scoring pass (None: off, or already stored): the
        examples of the first method that reads them, every task."""
        k = self.options.exemplars
        if k is None:
            k = 8 if self.loaded.n_layers * self.loaded.d_mlp <= AUTO_EXEMPLAR_NEURONS else 0
        if not k or self.evidence_db is None:
            return None
        reading = [get_method(m) for m in self.options.methods if m not in ("random", "lape")]
        rule = reading[0].prompt_rule if reading else "reference"
        tasks = [(p.task, self.runs.task_id(p.task),
                  [(ex.encoded.input_ids, str(ex.instance.id)) for ex in p.examples(rule)[0]])
                 for p in prepared]
        corpus = hashlib.sha256(repr([ids for _, _, ex in tasks for ids, _ in ex]).encode())
        params = {"model": self.loaded.name, "revision": self.loaded.revision,
                  "dtype": self.loaded.dtype, "prompt_rule": rule, "shots": self.options.shots,
                  "corpus": corpus.hexdigest()}
        device_tokens = CPU_BATCH_TOKENS if self.loaded.device.type == "cpu" else None
        recorder = IngestEvidence(
            self.evidence_db, self.loaded, tasks, params,
            DescribeOptions(k=k, seed=self.options.seed),
            (self.options.checkpoint_every, self.options.batch_size,
             self.options.max_batch_tokens or device_tokens), rule)
        found = recorder.complete()
        if found is not None:
            self.reporter.message(f"exemplars: reusing complete evidence run {found}")
            return None
        return recorder

    def _one(self, prep: Prepared, method: Method) -> IngestResult:
        identity = _identity(self.loaded, method, prep, self.fmt, self.options)
        return self._run_scored(prep, method, identity,
                                lambda handle: self._compute(prep, method, handle))

    def _run_scored(self, prep: Prepared, method: Method, identity: dict,
                    compute: Callable, selection_rule: str | None = None,
                    mask_of: Callable | None = None) -> IngestResult:
        """Reuse, resume or compute one run. Its set is ``selection_rule`` (default: the
        options') applied to its scores, or ``mask_of(scores)`` for a method with its own
        selection."""
        selection_rule = selection_rule or self.options.selection_rule
        key = params_key(identity)
        label = f"{prep.task.short_name} · {method.name}"
        done = self.runs.find_complete(prep.task, method.name, key)
        if done and self.options.force:
            self.runs.check_replaceable(done)  # before hours of compute, not after
        if done and not self.options.force:
            self.reporter.message(f"{label}: reusing complete run {done.ref} (--force recomputes)")
            n_selected = self.runs.ensure_set(done, selection_rule, select)
            return IngestResult(prep.task.name, method.name, done.ref, "reused", done.n_examples,
                                done.n_tokens, done.n_skipped, 0.0, n_selected)
        params = {**identity, "rule": selection_rule, "batch_size": self.options.batch_size,
                  "device": str(self.loaded.device), "versions": library_versions()}
        handle = self.runs.open_run(prep.task, method.name, params, key)
        started = time.perf_counter()
        try:
            scores, n_examples, n_tokens, n_skipped, resumed = compute(handle)
            require_finite(scores, f"run {handle} ({label})")
            mask = mask_of(scores) if mask_of else select(scores, selection_rule)
            done = self.runs.complete(handle, prep.task, method.name, scores, mask, selection_rule,
                                      n_examples, n_tokens, n_skipped)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            self.runs.fail(handle, f"{type(err).__name__}: {err}")
            raise
        return IngestResult(prep.task.name, method.name, done.ref,
                            "resumed" if resumed else "computed", n_examples, n_tokens,
                            n_skipped, time.perf_counter() - started, done.n_selected)

    def _companions(self, prep: Prepared, method: Method) -> list[Method]:
        """Requested methods still to compute whose pass equals ``method``'s (same prompts,
        targets and loss; another gradient reduction): they share its pass."""
        if method.reduction not in GRADIENT_REDUCTIONS:
            return []
        found = []
        for other in (get_method(m) for m in self.options.methods):
            if (other.name == method.name or other.reduction not in GRADIENT_REDUCTIONS
                    or (other.prompt_rule, other.targets, other.per_token)
                    != (method.prompt_rule, method.targets, method.per_token)
                    or (prep.task.name, other.name) in self._shared):
                continue
            identity = _identity(self.loaded, other, prep, self.fmt, self.options)
            if self.options.force or not self.runs.find_complete(prep.task, other.name,
                                                                 params_key(identity)):
                found.append(other)
        return found

    def _compute(self, prep: Prepared, method: Method, handle):
        if method.name == "random":
            seed = task_seed(self.options.seed, prep.task.name)
            return random_scores(*self.shape, seed), 0, 0, 0, False
        shared = self._shared.pop((prep.task.name, method.name), None)
        if shared is not None:  # computed in another method's pass over the same examples
            return (*shared, False)
        examples, n_skipped = prep.examples(method.prompt_rule)
        ckpt = self.runs.load_checkpoint(handle, self.shape)
        resumed = ckpt is not None
        # a fresh pass also computes the companions' reductions (kept in memory until their turn)
        companions = [] if resumed else self._companions(prep, method)
        companion_sums = [torch.zeros(self.shape) for _ in companions]
        if resumed:
            self.reporter.message(f"{prep.task.short_name} · {method.name}: resuming run {handle} "
                                  f"from example {ckpt.n_done} of {len(examples)}")
        else:
            ckpt = repo.Checkpoint(self.options.checkpoint_every, 0, 0, torch.zeros(self.shape))
        self.reporter.start(f"{prep.task.short_name} · {method.name}", len(examples))
        self.reporter.advance(ckpt.n_done, ckpt.n_tokens)
        tokenizer = self.loaded.tokenizer
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        read = self.recorder is not None and not resumed and \
            self.recorder.reads(prep.task.name, method.prompt_rule)
        try:
            with self.recorder.observe(prep.task.name) if read else nullcontext() as at:
                self._passes(examples, method, companions, ckpt, companion_sums, handle, pad_id,
                             at)
        finally:
            self.reporter.finish()
        for companion, total in zip(companions, companion_sums):
            self._shared[(prep.task.name, companion.name)] = (
                total, ckpt.n_done, ckpt.n_tokens, n_skipped)
        scores = ckpt.sums / max(ckpt.n_tokens, 1) if method.per_token else ckpt.sums
        return scores, ckpt.n_done, ckpt.n_tokens, n_skipped, resumed

    def _passes(self, examples: list[Example], method: Method, companions: list[Method],
                ckpt, companion_sums: list[torch.Tensor], handle, pad_id: int, at) -> None:
        """The scoring pass over ``examples`` from the checkpoint on, chunk by chunk, each chunk
        checkpointed; ``at(chunk_start)``, when given, reads each batch for --exemplars."""
        while ckpt.n_done < len(examples):
            chunk = examples[ckpt.n_done : ckpt.n_done + ckpt.chunk_size]
            ids = [ex.encoded.input_ids for ex in chunk]
            targets = [
                list(range(1, len(i))) if method.targets == "all" else ex.encoded.target_groups
                for i, ex in zip(ids, chunk)
            ]
            sums = reduce_neurons(
                self.loaded.model, ids, targets,
                reduction=(method.reduction, *(c.reduction for c in companions)),
                batch_size=self.options.batch_size,
                max_batch_tokens=self.options.max_batch_tokens, pad_id=pad_id,
                on_batch=self.reporter.advance,
                before_batch=at(ckpt.n_done) if at is not None else None,
            )
            ckpt.sums += sums[0]
            for total, part in zip(companion_sums, sums[1:]):
                total += part
            ckpt.n_done += len(chunk)
            ckpt.n_tokens += sum(len(i) for i in ids)
            self.runs.save_checkpoint(handle, ckpt)

    def _lape(self, prepared: list[Prepared]) -> list[IngestResult]:
        """LAPE needs every task's activation probabilities at the released site (gate_prob):
        ensure those runs, then select as the released identify.py does (its own rule)."""
        if len(prepared) < 2:
            raise AtlasError("method lape compares tasks: give at least two --task values")
        prob_method = get_method("gate_prob")
        prob_runs = [self._one(prep, prob_method) for prep in prepared]
        probs = torch.stack([self.runs.read_scores(r.run_id, self.shape) for r in prob_runs])
        scores, masks = lape_sets(probs)
        method = get_method("lape")
        names = [p.task.name for p in prepared]
        results = []
        for k, prep in enumerate(prepared):
            identity = {**_identity(self.loaded, prob_method, prep, self.fmt, self.options),
                        "method": "lape", "tasks": names, "selection": LAPE_SELECTION}
            run = prob_runs[k]
            results.append(self._run_scored(
                prep, method, identity,
                lambda handle, k=k, run=run: (scores[k], run.n_examples, run.n_tokens,
                                              run.n_skipped, False),
                selection_rule=LAPE_RULE, mask_of=lambda _, k=k: masks[k]))
        return results
