"""The results' evidence section: what the CGVST sets of the language-ID tasks respond to and
promote, counted over their neurons against random neurons (`atlas describe`'s stored run).

For a group of neurons (a task's CGVST set, its part specific to the task and its part shared
with most tasks, from `atlas split`):

- **own-task exemplars**: the share of a neuron's top positive exemplars that come from the
  task's own texts, averaged over the group (the corpus holds every task's texts; a neuron
  indifferent to the task has about the task's share of the corpus's tokens);
- **label peaks**: the share of those exemplars whose peak token belongs to one of the task's
  labels (the language names the task answers with);
- **label promotion**: the share of the group's neurons whose 20 most promoted tokens include a
  token of a label.

Each group is set against 200 random groups drawn with its per-layer counts (seeded): the
random groups' mean, their 95% range and the share of them at or above the group (a one-sided
empirical p).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from atlas.query.core import rows
from atlas.store import arrays
from atlas.tasks.sni import load_task

LANGUAGE_TASKS = ["task533", "task447", "task896"]
PARTS = [("cgvst", "the whole set"), ("cgvst-specific", "specific part"),
         ("cgvst-shared", "shared part")]
N_RANDOM = 200
SEED = 0


def label_token(token: str, labels: list[str]) -> bool:
    """A token is a label's when its text (spaces and case ignored), at least 3 characters, is a
    label or the start of one ("Span" for Spanish)."""
    text = token.strip().lower()
    return len(text) >= 3 and any(label.lower().startswith(text) for label in labels)


@dataclass
class NeuronFacts:
    """Per neuron of one model [n_layers, d_mlp]: the counts the measures average."""

    n_exemplars: np.ndarray  # its positive exemplars
    own: dict[int, np.ndarray]  # task id -> those from the task's texts
    label_peak: dict[int, np.ndarray]  # task id -> those peaking on a label token of the task
    label_promoted: dict[int, np.ndarray]  # task id -> bool: a label token among its promoted
    token_share: dict[int, float]  # task id -> the task's share of the corpus's tokens


def neuron_facts(engine, model_id: int, evidence_id: int, shape: tuple[int, int],
                 labels: dict[int, list[str]]) -> NeuronFacts:
    with engine.connect() as conn:
        duck = conn.connection.driver_connection
        ex = duck.execute("""
            SELECT layer, neuron, task_id, token FROM exemplar_peaks
            WHERE evidence_id = ? AND sign = 1""", [evidence_id]).fetchnumpy()
        logits = duck.execute("""
            SELECT l.layer, l.neuron, list(v.token) AS tokens
            FROM (SELECT layer, neuron, unnest(promoted_ids) AS token_id FROM neuron_logits
                  WHERE model_id = ?) l
            JOIN vocab v ON v.model_id = ? AND v.token_id = l.token_id
            GROUP BY l.layer, l.neuron""", [model_id, model_id]).fetchall()
        density = duck.execute("""
            SELECT task_id, max(n_tokens) FROM neuron_density WHERE evidence_id = ?
            GROUP BY task_id""", [evidence_id]).fetchall()
    layer, neuron = ex["layer"].astype(np.int64), ex["neuron"].astype(np.int64)
    count = np.zeros(shape)
    np.add.at(count, (layer, neuron), 1)
    own, peak, promoted = {}, {}, {}
    for task_id, words in labels.items():
        mine = ex["task_id"] == task_id
        on_label = np.array([label_token(t, words) for t in ex["token"]], dtype=bool)
        own[task_id], peak[task_id] = np.zeros(shape), np.zeros(shape)
        np.add.at(own[task_id], (layer[mine], neuron[mine]), 1)
        np.add.at(peak[task_id], (layer[on_label], neuron[on_label]), 1)
        flags = np.zeros(shape, dtype=bool)
        for lay, neu, tokens in logits:
            flags[lay, neu] = any(label_token(t, words) for t in tokens)
        promoted[task_id] = flags
    total = sum(n for _, n in density)
    return NeuronFacts(count, own, peak, promoted, {t: n / total for t, n in density})


def measures(facts: NeuronFacts, task_id: int, mask: np.ndarray) -> np.ndarray:
    """[own-task exemplar share, label-peak share, label-promotion share] of the neurons of
    ``mask`` (means over neurons)."""
    n = np.maximum(facts.n_exemplars[mask], 1)
    return np.array([(facts.own[task_id][mask] / n).mean(),
                     (facts.label_peak[task_id][mask] / n).mean(),
                     facts.label_promoted[task_id][mask].mean()])


def random_masks(mask: np.ndarray, n: int, seed: int):
    rng = np.random.default_rng(seed)
    counts = mask.sum(1)
    for _ in range(n):
        out = np.zeros_like(mask)
        for layer, k in enumerate(counts):
            out[layer, rng.choice(mask.shape[1], size=int(k), replace=False)] = True
        yield out


def evidence_lines(engine, models: list[str], titles: dict[str, str],
                   sni_dirs: tuple[str, ...] | None) -> list[str]:
    """The section's lines (empty when no evidence of the models is stored)."""
    lines: list[str] = []
    for name in models:
        found = rows(engine, """
            SELECT e.evidence_id, m.model_id, m.n_layers, m.d_mlp FROM evidence_runs e
            JOIN models m USING (model_id) WHERE m.name = :n AND e.status = 'complete'
            ORDER BY e.evidence_id DESC LIMIT 1""", n=name)
        if not found:
            continue
        info = found[0]
        shape = (info["n_layers"], info["d_mlp"])
        tasks = rows(engine, """
            SELECT DISTINCT s.task_id, t.name FROM task_sets s JOIN tasks t USING (task_id)
            WHERE s.model_id = :m AND s.method = 'cgvst' ORDER BY t.name""", m=info["model_id"])
        tasks = [t for t in tasks if t["name"].split("_")[0] in LANGUAGE_TASKS]
        labels = {t["task_id"]: sorted({o for inst in load_task(t["name"], sni_dirs).instances
                                        for o in inst.outputs}) for t in tasks}
        facts = neuron_facts(engine, info["model_id"], info["evidence_id"], shape, labels)
        if not lines:
            lines += _preamble()
        lines += [f"### {titles.get(name, name)} (evidence run {info['evidence_id']})", "",
                  "| task | neurons | n | own-task exemplars | random | p | label peaks "
                  "| random | p | label promotion | random | p |",
                  "|---|---|---:|---:|---|---:|---:|---|---:|---:|---|---:|"]
        for t in tasks:
            lines += _task_rows(engine, info["model_id"], t, facts, shape)
        lines += ["", "Labels and share of the corpus's tokens: " + "; ".join(
            f"{t['name'].split('_')[0]} {', '.join(labels[t['task_id']])} "
            f"({facts.token_share[t['task_id']]:.1%})" for t in tasks) + ".", ""]
    return lines


def _task_rows(engine, model_id: int, task: dict, facts: NeuronFacts, shape: tuple[int, int]
               ) -> list[str]:
    out = []
    short = task["name"].split("_")[0]
    for method, what in PARTS:
        found = rows(engine, "SELECT set_id FROM task_sets WHERE model_id = :m AND task_id = :t "
                             "AND method = :me", m=model_id, t=task["task_id"], me=method)
        if not found:
            continue
        with engine.connect() as conn:
            mask = arrays.read_set_mask(conn, found[0]["set_id"], *shape)
        observed = measures(facts, task["task_id"], mask)
        drawn = np.array([measures(facts, task["task_id"], r)
                          for r in random_masks(mask, N_RANDOM, SEED)])
        cells = []
        for k in range(3):
            lo, hi = np.percentile(drawn[:, k], [2.5, 97.5])
            p = (1 + (drawn[:, k] >= observed[k]).sum()) / (1 + N_RANDOM)
            cells.append(f"{observed[k]:.3f} | {drawn[:, k].mean():.3f} [{lo:.3f}, {hi:.3f}] | "
                         f"{p:.3f}")
        out.append(f"| {short} | {what} | {int(mask.sum())} | {' | '.join(cells)} |")
    return out


def _preamble() -> list[str]:
    return [
        "", "## What the language-ID sets respond to and promote (neuron evidence)", "",
        "From the stored evidence run of each model (`atlas describe` on the 100 scoring "
        "examples of every task, each instance alone): for each language-ID task's CGVST set, "
        "and where `atlas split` made them its part specific to the task and its part shared "
        "with most tasks, three counts averaged over the neurons — **own-task exemplars**, the "
        "share of a neuron's top 8 positive exemplars that come from the task's own texts (a "
        "neuron indifferent to the task sits near the task's share of the tokens); **label "
        "peaks**, the share of those exemplars whose peak token is a token of one of the task's "
        "labels (a language name, or its start: ≥ 3 characters); **label promotion**, the share "
        "of neurons with a label token among the 20 tokens their output promotes most "
        "(`W_U · (g ⊙ W_down[:, n])`). Each against 200 random groups with the same per-layer "
        "counts (seed 0): their mean, 95% range and the one-sided empirical p of the group "
        "(share of random groups at or above it, (1 + k) / 201).", ""]
