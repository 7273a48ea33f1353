"""Neuron evidence from the store: what a neuron responds to (its exemplars of both signs,
quantile samples, density per task) and what it writes (its promoted and suppressed tokens),
and the neurons that respond most to a token."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from sqlalchemy.engine import Engine

from atlas.errors import AtlasError, NotFound
from atlas.histogram import EDGES
from atlas.query.core import fetch, resolve_model, rows


@dataclass(frozen=True)
class Context:
    """A token window of a stored text: its tokens and the neuron's activation on each."""

    task: str
    instance_id: str
    tokens: list[str]
    activations: list[float] | None  # per token (exemplars), None for a quantile sample
    peak: int  # the peak token's place in ``tokens``
    activation: float  # at the peak


@dataclass(frozen=True)
class NeuronEvidence:
    """What one neuron responds to and writes (empty lists where nothing is stored)."""

    model: str
    layer: int
    neuron: int
    evidence_id: int | None  # the complete evidence run read (the newest)
    top: list[Context]  # highest activations, best first
    bottom: list[Context]  # lowest (most negative) activations, lowest first
    quantiles: list[dict[str, Any]]  # bin, low, high, and one sample context
    density: list[dict[str, Any]]  # per task: n_tokens, share_positive, mean, hist
    promoted: list[dict[str, Any]]  # token, token_id, logit (per unit of activation)
    suppressed: list[dict[str, Any]]
    edges: list[float] = field(default_factory=lambda: list(EDGES))  # the histogram's bin edges

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON, as ``dataclasses.asdict`` gives them (without its deep
        copy: the lists are shared)."""
        return {**vars(self), "top": [vars(c) for c in self.top],
                "bottom": [vars(c) for c in self.bottom],
                "quantiles": [{**q, "sample": vars(q["sample"])} for q in self.quantiles]}


def latest_evidence(engine: Engine, model_id: int, layer: int | None = None,
                    neuron: int | None = None) -> int | None:
    """The evidence run read: the newest complete run of the model that covers every neuron
    (else the newest), or with ``layer`` and ``neuron`` the newest that holds that neuron."""
    if layer is not None:
        found = rows(engine, """
            SELECT max(d.evidence_id) AS e FROM neuron_density d JOIN evidence_runs r
            USING (evidence_id) WHERE r.model_id = :m AND r.status = 'complete'
            AND d.layer = :l AND d.neuron = :n""", m=model_id, l=layer, n=neuron)
    else:
        found = rows(engine, """
            SELECT evidence_id AS e FROM evidence_runs WHERE model_id = :m AND status = 'complete'
            ORDER BY (params->'neurons') IS NULL DESC, evidence_id DESC LIMIT 1""", m=model_id)
    return found[0]["e"] if found else None


class NeuronRows(NamedTuple):
    """A neuron's stored rows in one evidence run."""

    exemplars: list[dict]  # sign, rank, activation, activations, context_id; highest sign
    # first, by rank
    samples: list[dict]  # bin, low, high, activation, context_id; by bin
    density: list[dict]  # task_id, n_tokens, n_positive, mean, hist


class EvidenceRows(Protocol):
    """Where a neuron's stored evidence is read from: the database (:class:`SqlEvidence`), or a
    server that keeps what answers share (:mod:`atlas.serve.evidence`): the same rows."""

    def run_for(self, model_id: int, layer: int, neuron: int) -> int | None: ...
    def neuron_rows(self, evidence_id: int, layer: int, neuron: int) -> NeuronRows: ...
    def task_names(self) -> dict[int, str]: ...
    def contexts(self, evidence_id: int, ids: list[int]) -> dict[int, dict]: ...
    def logits(self, model_id: int, layer: int, neuron: int) -> tuple[list, list]: ...
    def newest_whole(self, model_id: int) -> int | None: ...
    def token_neurons(self, evidence_id: int, token: str, sign: int, limit: int
                      ) -> list[dict]: ...


class SqlEvidence:
    """A neuron's evidence read by SQL, a few small queries per neuron."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def run_for(self, model_id: int, layer: int, neuron: int) -> int | None:
        return latest_evidence(self.engine, model_id, layer, neuron)

    def neuron_rows(self, evidence_id: int, layer: int, neuron: int) -> NeuronRows:
        """The neuron's exemplars, quantile samples and density rows (three lookups)."""
        def read(table: str, columns: tuple[str, ...], order: str) -> list[dict]:
            return [dict(zip(columns, r)) for r in fetch(
                self.engine, f"SELECT {', '.join(columns)} FROM {table} WHERE evidence_id = ? "
                             f"AND layer = ? AND neuron = ? ORDER BY {order}",
                evidence_id, layer, neuron)]

        return NeuronRows(
            read("neuron_exemplars", ("sign", "rank", "activation", "activations", "context_id"),
                 "sign DESC, rank"),
            read("neuron_quantiles", ("bin", "low", "high", "activation", "context_id"), "bin"),
            read("neuron_density", ("task_id", "n_tokens", "n_positive", "mean", "hist"),
                 "task_id"))

    def task_names(self) -> dict[int, str]:
        """task id -> name."""
        return {r["task_id"]: r["name"] for r in rows(self.engine,
                                                      "SELECT task_id, name FROM tasks")}

    def contexts(self, evidence_id: int, ids: list[int]) -> dict[int, dict]:
        """context id -> task, instance_id, tokens, peak."""
        return {r.pop("context_id"): r for r in rows(self.engine, """
            SELECT c.context_id, c.tokens, c.peak, c.instance_id, t.name AS task
            FROM evidence_contexts c JOIN tasks t USING (task_id)
            WHERE c.evidence_id = :e AND list_contains(:ids, c.context_id)""",
                                                      e=evidence_id, ids=sorted(set(ids)))}

    def logits(self, model_id: int, layer: int, neuron: int) -> tuple[list, list]:
        return _logits(self.engine, model_id, layer, neuron)

    def newest_whole(self, model_id: int) -> int | None:
        """The run a token search reads (see :func:`latest_evidence`)."""
        return latest_evidence(self.engine, model_id)

    def token_neurons(self, evidence_id: int, token: str, sign: int, limit: int) -> list[dict]:
        """layer, neuron, n_exemplars, peak, tokens of the neurons whose ``sign`` exemplars
        peak on ``token``; most exemplars first, then the largest |activation|."""
        # the contexts peaking on the token first (a small table), then their exemplars
        return rows(self.engine, """
            WITH c AS (SELECT context_id, tokens[peak + 1] AS token FROM evidence_contexts
                       WHERE evidence_id = :e
                       AND lower(trim(tokens[peak + 1])) = lower(trim(:tok)))
            SELECT x.layer, x.neuron, count(*) AS n_exemplars, max(abs(x.activation)) AS peak,
                   list(DISTINCT c.token ORDER BY c.token) AS tokens
            FROM neuron_exemplars x JOIN c USING (context_id)
            WHERE x.evidence_id = :e AND x.sign = :s
            GROUP BY x.layer, x.neuron
            ORDER BY n_exemplars DESC, peak DESC, x.layer, x.neuron LIMIT :lim""",
                    e=evidence_id, s=sign, tok=token, lim=limit)


def neuron_evidence(engine: Engine, model: str | dict, layer: int, neuron: int,
                    source: EvidenceRows | None = None) -> NeuronEvidence:
    """The evidence of neuron ``neuron`` in ``layer`` of ``model`` (an identity spec).

    Args:
        engine: the atlas database.
        model: NAME, NAME@DTYPE, NAME@REVISION or #ID (or the resolved model's row).
        layer, neuron: the neuron.
        source: where the rows are read (default: by SQL).

    Returns:
        :class:`NeuronEvidence`; a neuron outside the model is a NotFound error.
    """
    info = model if isinstance(model, dict) else resolve_model(engine, model)
    if not (0 <= layer < info["n_layers"] and 0 <= neuron < info["d_mlp"]):
        raise NotFound(f"neuron {layer}/{neuron} is outside {info['name']} "
                       f"({info['n_layers']} layers × {info['d_mlp']} neurons)")
    source = source or SqlEvidence(engine)
    evidence_id = source.run_for(info["model_id"], layer, neuron)
    top, bottom, quantiles, density = [], [], [], []
    if evidence_id is not None:
        exemplars, samples, counts = source.neuron_rows(evidence_id, layer, neuron)
        found = source.contexts(evidence_id, [r["context_id"] for r in exemplars + samples])

        def context(r: dict, activations: list[float] | None) -> Context:
            c = found[r["context_id"]]
            return Context(c["task"], c["instance_id"], list(c["tokens"]), activations,
                           c["peak"], r["activation"])

        for r in exemplars:
            (top if r["sign"] > 0 else bottom).append(
                context(r, [float(v) for v in r["activations"]]))
        quantiles = [{"bin": r["bin"], "low": r["low"], "high": r["high"],
                      "sample": context(r, None)} for r in samples]
        density = _density(counts, source.task_names())
    promoted, suppressed = source.logits(info["model_id"], layer, neuron)
    return NeuronEvidence(info["name"], layer, neuron, evidence_id, top, bottom, quantiles,
                          density, promoted, suppressed)


def _density(counts: list[dict], names: dict[int, str]) -> list[dict[str, Any]]:
    """Per task, by name: n_tokens, share_positive (None without tokens), mean, hist."""
    return sorted(({"task": names[r["task_id"]], "n_tokens": r["n_tokens"],
                    "share_positive": r["n_positive"] / r["n_tokens"] if r["n_tokens"] else None,
                    "mean": r["mean"], "hist": r["hist"]} for r in counts),
                  key=lambda r: r["task"])


def _logits(engine: Engine, model_id: int, layer: int, neuron: int) -> tuple[list, list]:
    """The neuron's promoted and suppressed tokens with their texts (one query)."""
    found = rows(engine, """
        WITH l AS (SELECT * FROM neuron_logits WHERE model_id = :m AND layer = :l
                   AND neuron = :n),
        p AS (SELECT 1 AS side, unnest(promoted_ids) AS token_id, unnest(promoted) AS logit,
                     generate_subscripts(promoted_ids, 1) AS i FROM l
              UNION ALL
              SELECT 2, unnest(suppressed_ids), unnest(suppressed),
                     generate_subscripts(suppressed_ids, 1) FROM l)
        SELECT p.side, p.token_id, p.logit, coalesce(v.token, '') AS token
        FROM p LEFT JOIN vocab v ON v.model_id = :m AND v.token_id = p.token_id
        ORDER BY p.side, p.i""", m=model_id, l=layer, n=neuron)
    side = {1: [], 2: []}
    for r in found:
        side[r["side"]].append({"token": r["token"], "token_id": r["token_id"],
                                "logit": float(r["logit"])})
    return side[1], side[2]


def neurons_for_token(engine: Engine, model: str | dict, token: str, limit: int = 20,
                      sign: int = 1, source: EvidenceRows | None = None
                      ) -> list[dict[str, Any]]:
    """The neurons whose stored exemplars peak most strongly on ``token`` (its text, matched
    with surrounding spaces ignored and case-insensitively), strongest first: layer, neuron,
    the number of its exemplars that peak there, the largest such activation.

    Args:
        engine: the atlas database.
        model: an identity spec (or the resolved model's row).
        token: the token's text, e.g. "Spanish".
        limit: how many neurons.
        sign: 1 for the highest activations, -1 for the lowest.
        source: where the rows are read (default: by SQL).
    """
    info = model if isinstance(model, dict) else resolve_model(engine, model)
    source = source or SqlEvidence(engine)
    evidence_id = source.newest_whole(info["model_id"])
    if evidence_id is None:
        raise NotFound(f"no evidence of {info['name']} is stored; run atlas describe first")
    return source.token_neurons(evidence_id, token, sign, limit)


ORDERS = {"score": "score DESC NULLS LAST, layer, neuron",
          "specificity": "ratio DESC NULLS LAST, score DESC NULLS LAST, layer, neuron"}


def set_neurons(engine: Engine, set_id: int, limit: int = 50, order: str = "score"
                ) -> list[dict[str, Any]]:
    """The neurons of a stored set with a one-line summary each, highest score first (or most
    specific to the set's task first: its score in the set's run against its mean score in the
    model's other runs of that run's method). A set without a run (imported) lists its members
    without scores.

    Args:
        engine: the atlas database.
        set_id: the set.
        limit: how many neurons.
        order: ``score`` or ``specificity``.

    Returns:
        Rows: layer, neuron, score, others_mean, ratio, top_tokens (the peak tokens of its three
        highest exemplars, when evidence is stored), promoted (the five tokens its output
        promotes most).
    """
    if order not in ORDERS:
        raise AtlasError(f"unknown order '{order}'; choose score or specificity")
    found = rows(engine, "SELECT model_id FROM neuron_sets WHERE set_id = :sid", sid=set_id)
    if not found:
        raise NotFound(f"no set with id {set_id}")
    model_id = found[0]["model_id"]
    ranked = rows(engine, f"""
        WITH s AS (SELECT ns.set_id, ns.model_id, ns.task_id, ns.run_id, r.method
                   FROM neuron_sets ns LEFT JOIN runs r USING (run_id) WHERE ns.set_id = :sid),
        own AS (SELECT m.layer, m.neuron, sc.score FROM neuron_set_members m
                JOIN s USING (set_id) LEFT JOIN neuron_scores sc ON sc.run_id = s.run_id
                AND sc.layer = m.layer AND sc.neuron = m.neuron),
        others AS (SELECT sc.layer, sc.neuron, avg(sc.score) AS other
                   FROM s JOIN runs r ON r.model_id = s.model_id AND r.method = s.method
                   AND r.task_id <> s.task_id AND r.status = 'complete'
                   JOIN neuron_scores sc ON sc.run_id = r.run_id
                   JOIN own ON own.layer = sc.layer AND own.neuron = sc.neuron
                   GROUP BY sc.layer, sc.neuron)
        SELECT own.layer, own.neuron, own.score, others.other AS others_mean,
               own.score / nullif(others.other, 0) AS ratio
        FROM own LEFT JOIN others USING (layer, neuron)
        ORDER BY {ORDERS[order]} LIMIT :lim""", sid=set_id, lim=limit)
    return _with_summaries(engine, model_id, ranked)


def _with_summaries(engine: Engine, model_id: int, ranked: list[dict]) -> list[dict[str, Any]]:
    if not ranked:
        return []
    keys = [r["layer"] * 2**20 + r["neuron"] for r in ranked]
    evidence_id = latest_evidence(engine, model_id)
    peaks: dict[tuple, list[str]] = {}
    if evidence_id is not None:
        for r in rows(engine, """
                SELECT layer, neuron, list(token ORDER BY rank) AS tokens FROM exemplar_peaks
                WHERE evidence_id = :e AND sign = 1 AND rank <= 3
                AND list_contains(:keys, layer * 1048576 + neuron) GROUP BY layer, neuron""",
                      e=evidence_id, keys=keys):
            peaks[(r["layer"], r["neuron"])] = list(r["tokens"])
    promoted: dict[tuple, list[str]] = {}
    for r in rows(engine, """
            WITH p AS (SELECT layer, neuron, unnest(promoted_ids[1:5]) AS token_id,
                              generate_subscripts(promoted_ids[1:5], 1) AS i
                       FROM neuron_logits WHERE model_id = :m
                       AND list_contains(:keys, layer * 1048576 + neuron))
            SELECT p.layer, p.neuron, list(v.token ORDER BY p.i) AS tokens
            FROM p JOIN vocab v ON v.model_id = :m AND v.token_id = p.token_id
            GROUP BY p.layer, p.neuron""", m=model_id, keys=keys):
        promoted[(r["layer"], r["neuron"])] = list(r["tokens"])
    return [{**r, "top_tokens": peaks.get((r["layer"], r["neuron"]), []),
             "promoted": promoted.get((r["layer"], r["neuron"]), [])} for r in ranked]
