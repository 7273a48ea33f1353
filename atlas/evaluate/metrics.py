"""Task accuracy on held-out examples: label likelihood (accuracy and gold-label probability),
exact match (greedy generation) and the released code's exact match (``reference_em``).

Every scorer takes the prompt recipe as keywords: ``prompt_rule`` (``marker``: real BOS/EOS, as atlas's
evaluation always did; ``reference``: empty BOS/EOS and the tokenizer's special tokens),
``fixed_demos`` (the same demonstrations for every query, from ``pool``), ``demos_include_query``
and ``join_outputs`` (see :func:`atlas.tasks.build_messages`)."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field

import torch

from atlas.errors import AtlasError
from atlas.evaluate.labels import label_sequences, score_sequences
from atlas.models.batching import check_context, length_groups, padded
from atlas.models.loading import LoadedModel
from atlas.tasks.prompts import PromptFormat, build_messages, pick_demos, pick_fixed_demos
from atlas.tasks.sni import Instance, Task


@dataclass
class Outcome:
    """What one held-out example scored."""

    instance_id: str
    gold: str
    predicted: str | None
    correct: bool
    gold_logprob: float | None = None  # label metrics: Σ log p(gold label | prompt)
    gold_prob: float | None = None  # label metrics: p(gold) normalised over the labels


@dataclass
class Score:
    value: float
    n: int
    examples: list[Outcome] = field(default_factory=list)


def _label_outcomes(task: Task, queries: list[Instance], scores: torch.Tensor,
                    gold: torch.Tensor) -> list[Outcome]:
    probs = torch.softmax(scores.double(), dim=1)  # [n_queries, n_labels]
    best = scores.argmax(1)
    return [Outcome(q.id, q.output, task.labels[int(best[k])], bool(best[k] == gold[k]),
                    float(scores[k, gold[k]]), float(probs[k, gold[k]]))
            for k, q in enumerate(queries)]


def prompt_text(fmt: PromptFormat, task: Task, query: Instance, pool: list[Instance], shots: int,
                seed: int, prompt_rule: str = "marker", demos_include_query: bool = False,
                join_outputs: bool = False, fixed_demos: bool = False) -> str:
    """The evaluation prompt of ``query``, up to where the answer starts. Demonstrations come
    from ``pool``: the same seeded ones for every query (``fixed_demos``, a shared prefix) or
    drawn per query."""
    demos = (pick_fixed_demos(pool, shots, seed) if fixed_demos
             else pick_demos(pool, query, shots, seed, demos_include_query))
    messages = build_messages(task.definition, demos, query, False, join_outputs)
    return fmt.render_text(messages, prompt_rule, add_generation_prompt=True)


def prompt_ids(fmt: PromptFormat, task: Task, query: Instance, pool: list[Instance], shots: int,
               seed: int, prompt_rule: str = "marker", **recipe) -> list[int]:
    return fmt.tokenize(prompt_text(fmt, task, query, pool, shots, seed, prompt_rule, **recipe),
                        prompt_rule)["input_ids"]


def label_scores(loaded: LoadedModel, fmt: PromptFormat, task: Task, queries: list[Instance],
                 pool: list[Instance], shots: int, seed: int, batch_size: int = 8,
                 prompt_rule: str = "marker", **recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ log p(label | prompt) of every label for every query: [n_queries, n_labels], and the
    gold label's index: [n_queries]. Labels are tokenized in context; the prompts' shared prefix
    is encoded once (see :mod:`atlas.evaluate.labels`)."""
    labels = task.labels
    if not labels:
        raise AtlasError(f"task '{task.name}' is not a classification task; use --metric exact_match")
    sequences = []
    for query in queries:
        text = prompt_text(fmt, task, query, pool, shots, seed, prompt_rule, **recipe)
        sequences += label_sequences(fmt, text, labels, prompt_rule)
    scores = score_sequences(loaded.model, sequences, batch_size=batch_size)
    gold = torch.tensor([labels.index(q.output) for q in queries])
    return scores.view(len(queries), len(labels)), gold


def label_likelihood(loaded: LoadedModel, fmt: PromptFormat, task: Task, queries: list[Instance],
                     pool: list[Instance], shots: int, seed: int, batch_size: int = 8,
                     **recipe) -> Score:
    """Accuracy when the label with the highest log-probability after the prompt is the answer."""
    scores, gold = label_scores(loaded, fmt, task, queries, pool, shots, seed, batch_size, **recipe)
    outcomes = _label_outcomes(task, queries, scores, gold)
    return Score(sum(o.correct for o in outcomes) / len(outcomes), len(outcomes), outcomes)


def label_prob(loaded: LoadedModel, fmt: PromptFormat, task: Task, queries: list[Instance],
               pool: list[Instance], shots: int, seed: int, batch_size: int = 8,
               **recipe) -> Score:
    """Mean probability of the gold label, normalised over the task's labels: a continuous
    version of label_likelihood that still moves when accuracy sits at chance."""
    scores, gold = label_scores(loaded, fmt, task, queries, pool, shots, seed, batch_size, **recipe)
    outcomes = _label_outcomes(task, queries, scores, gold)
    return Score(sum(o.gold_prob for o in outcomes) / len(outcomes), len(outcomes), outcomes)


def normalise(text: str) -> str:
    text = text.strip().split("\n")[0].lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def greedy_answers(loaded: LoadedModel, prompts: list[list[int]], max_new: int,
                   batch_size: int = 8) -> list[list[int]]:
    """Greedy continuations (token ids, up to ``max_new``) of each prompt, batched by length
    with left padding."""
    tok = loaded.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    answers: dict[int, list[int]] = {}
    check_context(loaded.model.config, max(len(p) for p in prompts) + max_new,
                  "an evaluation prompt plus answer", "use fewer --shots")
    for group in length_groups([len(p) for p in prompts], batch_size):
        ids, mask = padded([prompts[i] for i in group], pad, side="left")  # for generation
        with torch.no_grad():
            out = loaded.model.generate(input_ids=ids.to(loaded.device),
                                        attention_mask=mask.to(loaded.device),
                                        max_new_tokens=max_new, do_sample=False, pad_token_id=pad)
        for row, i in enumerate(group):
            answers[i] = out[row, ids.shape[1]:].tolist()
    return [answers[i] for i in range(len(prompts))]


def exact_match(loaded: LoadedModel, fmt: PromptFormat, task: Task, queries: list[Instance],
                pool: list[Instance], shots: int, seed: int, batch_size: int = 8,
                **recipe) -> Score:
    """Greedy generation; correct when the normalised answer equals a normalised gold output."""
    tok = loaded.tokenizer
    max_new = max(len(tok(o, add_special_tokens=False)["input_ids"])
                  for q in queries for o in q.outputs) + 2
    prompts = [prompt_ids(fmt, task, q, pool, shots, seed, **recipe) for q in queries]
    answers = [tok.decode(a, skip_special_tokens=True)
               for a in greedy_answers(loaded, prompts, max_new, batch_size)]
    outcomes = [Outcome(q.id, q.output, a, normalise(a) in {normalise(o) for o in q.outputs})
                for a, q in zip(answers, queries)]
    return Score(sum(o.correct for o in outcomes) / len(outcomes), len(outcomes), outcomes)


REFERENCE_NEW_TOKENS = 20


def reference_em(loaded: LoadedModel, fmt: PromptFormat, task: Task, queries: list[Instance],
                 pool: list[Instance], shots: int, seed: int, batch_size: int = 8,
                 **recipe) -> Score:
    """The released code's evaluation: greedy, 20 new tokens, stopped at the end-of-sequence
    token or at the user marker (``[INST]``), correct when ``answer.strip().lower()`` equals the
    gold outputs joined, lower-cased."""
    tok = loaded.tokenizer
    prompts = [prompt_ids(fmt, task, q, pool, shots, seed, **recipe) for q in queries]
    stop_ids = {i for i in (tok.eos_token_id, getattr(loaded.model.generation_config,
                                                       "eos_token_id", None))
                if isinstance(i, int)}
    outcomes = []
    for ids, query in zip(greedy_answers(loaded, prompts, REFERENCE_NEW_TOKENS, batch_size), queries):
        cut = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
        text = tok.decode(ids[:cut], skip_special_tokens=True).split(fmt.markers["user"])[0]
        gold = "".join(query.outputs)
        outcomes.append(Outcome(query.id, gold, text, text.strip().lower() == gold.lower()))
    return Score(sum(o.correct for o in outcomes) / len(outcomes), len(outcomes), outcomes)


SCORERS = {"label_likelihood": label_likelihood, "label_prob": label_prob,
           "exact_match": exact_match, "reference_em": reference_em}
METRICS = tuple(SCORERS)


def evaluate(metric: str, *args, **kwargs) -> Score:
    if metric in SCORERS:
        return SCORERS[metric](*args, **kwargs)
    raise AtlasError(f"unknown metric '{metric}'; choose one of {', '.join(METRICS)}")
