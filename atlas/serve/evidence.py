"""A served atlas's memory of neuron evidence: what every neuron's answer shares (a model's
complete runs, a run's contexts, the vocabulary) and, for the token search, a run's exemplars by
the token they peak on; a neuron's own rows are read by SQL (a few small queries). Keys carry the
atlas state, so a replaced file is read again. Gives the same rows as
:class:`atlas.query.evidence.SqlEvidence`."""

from __future__ import annotations

from typing import Any

import numpy as np

from atlas.query.core import fetch, rows
from atlas.query.evidence import SqlEvidence
from atlas.serve.cache import LRU, counted
from atlas.store.arrays import _duck

PEAK_BYTES = 256 << 20  # a Llama-7B-sized run's exemplars by token: about 85 MB
LOGIT_BYTES = 128 << 20  # a Llama-7B-sized model's logit effects: about 113 MB (a model's
# larger than this is read a neuron at a time)


class EvidenceMemory:
    """What the server keeps of evidence runs (bounded; shared by every request)."""

    def __init__(self, max_bytes: int = PEAK_BYTES):
        self.contexts = LRU(8, counted)
        self.runs = LRU(256, counted)
        self.vocab = LRU(8, counted)
        self.peaks = LRU(max_bytes, lambda p: p.nbytes)
        self.logits = LRU(LOGIT_BYTES, lambda t: t.nbytes)

    def source(self, eng: Any, stamp: tuple) -> RememberedEvidence:
        """The evidence rows for one request on ``eng`` at atlas state ``stamp``."""
        return RememberedEvidence(self, eng, stamp)


class RememberedEvidence(SqlEvidence):
    """:class:`SqlEvidence` with what its answers share read from :class:`EvidenceMemory`."""

    def __init__(self, memory: EvidenceMemory, eng: Any, stamp: tuple):
        super().__init__(eng)
        self.memory, self.stamp = memory, stamp

    def _runs(self, model_id: int) -> list[dict]:
        return self.memory.runs.get(("runs", model_id, self.stamp), lambda: rows(
            self.engine, "SELECT evidence_id, (params->'neurons') IS NULL AS whole FROM "
                         "evidence_runs WHERE model_id = :m AND status = 'complete' "
                         "ORDER BY evidence_id DESC", m=model_id))

    def run_for(self, model_id: int, layer: int, neuron: int) -> int | None:
        runs = self._runs(model_id)
        if runs and runs[0]["whole"]:  # the newest run holds every neuron
            return runs[0]["evidence_id"]
        return super().run_for(model_id, layer, neuron) if runs else None

    def newest_whole(self, model_id: int) -> int | None:
        runs = self._runs(model_id)
        whole = [r["evidence_id"] for r in runs if r["whole"]]
        return whole[0] if whole else (runs[0]["evidence_id"] if runs else None)

    def task_names(self) -> dict[int, str]:
        return self.memory.runs.get(("tasks", self.stamp), super().task_names)

    def token_neurons(self, evidence_id: int, token: str, sign: int, limit: int) -> list[dict]:
        peaks = self.memory.peaks.get(("peaks", evidence_id, self.stamp),
                                      lambda: Peaks.read(self.engine, evidence_id))
        return peaks.neurons(token, sign, limit)

    def contexts(self, evidence_id: int, ids: list[int]) -> dict[int, dict]:
        every = self.memory.contexts.get(("contexts", evidence_id, self.stamp), lambda: {
            r.pop("context_id"): r for r in rows(self.engine, """
                SELECT c.context_id, c.tokens, c.peak, c.instance_id, t.name AS task
                FROM evidence_contexts c JOIN tasks t USING (task_id)
                WHERE c.evidence_id = :e""", e=evidence_id)})
        return {i: every[i] for i in ids}

    def logits(self, model_id: int, layer: int, neuron: int) -> tuple[list, list]:
        n_bytes = self.memory.runs.get(("logit bytes", model_id, self.stamp), lambda: fetch(
            self.engine, "SELECT coalesce(sum(8 * (len(promoted) + len(suppressed))), 0) "
                         "FROM neuron_logits WHERE model_id = ?", model_id)[0][0])
        if n_bytes <= self.memory.logits.max_bytes:  # the model's table kept in memory
            found = self.memory.logits.get(("logits", model_id, self.stamp),
                                           lambda: LogitTable.read(self.engine, model_id)
                                           ).row(layer, neuron)
        else:
            found = fetch(self.engine, """
                SELECT promoted_ids, promoted, suppressed_ids, suppressed FROM neuron_logits
                WHERE model_id = ? AND layer = ? AND neuron = ?""", model_id, layer, neuron)
        if not found:
            return [], []
        vocab = self.memory.vocab.get(("vocab", model_id, self.stamp), lambda: [
            r["token"] for r in rows(self.engine, "SELECT token FROM vocab WHERE model_id = :m "
                                                  "ORDER BY token_id", m=model_id)])
        promoted_ids, promoted, suppressed_ids, suppressed = found[0]

        def side(ids: list[int], values: list[float]) -> list[dict]:
            return [{"token": vocab[t] if t < len(vocab) else "", "token_id": t,
                     "logit": float(v)} for t, v in zip(ids, values)]

        return side(promoted_ids, promoted), side(suppressed_ids, suppressed)


class LogitTable:
    """One model's logit effects: per neuron (rows by layer, then neuron) its promoted and
    suppressed token ids and logits, each column flat with its offsets."""

    COLUMNS = ("promoted_ids", "promoted", "suppressed_ids", "suppressed")

    def __init__(self, keys: np.ndarray, columns: dict[str, tuple[np.ndarray, np.ndarray]]):
        self.keys, self.columns = keys, columns
        self.nbytes = keys.nbytes + sum(o.nbytes + v.nbytes for o, v in columns.values())

    @classmethod
    def read(cls, engine: Any, model_id: int) -> LogitTable:
        duck = _duck(engine.conn)
        table = duck.execute(f"""
            SELECT layer, neuron, {', '.join(cls.COLUMNS)} FROM neuron_logits
            WHERE model_id = ? ORDER BY layer, neuron""", [model_id]).to_arrow_table()
        keys = (table["layer"].to_numpy().astype(np.int64) << 32) | table["neuron"].to_numpy()
        columns = {}
        for name in cls.COLUMNS:
            lists = table[name].combine_chunks()
            columns[name] = lists.offsets.to_numpy(), lists.values.to_numpy()
        return cls(keys, columns)

    def row(self, layer: int, neuron: int) -> list[tuple]:
        """[(promoted_ids, promoted, suppressed_ids, suppressed)] of the neuron, as lists ([]
        when it has none)."""
        key = (layer << 32) | neuron
        at = int(self.keys.searchsorted(key))
        if at == len(self.keys) or self.keys[at] != key:
            return []
        return [tuple(values[offsets[at]:offsets[at + 1]].tolist()
                      for offsets, values in (self.columns[c] for c in self.COLUMNS))]


class Peaks:
    """One run's exemplars by the token they peak on: per normalised token text its contexts,
    and every exemplar (context, layer, neuron, sign, activation) sorted by context."""

    def __init__(self, by_token: dict[str, list[tuple[int, str]]], columns: dict[str, np.ndarray]):
        self.by_token, self.columns = by_token, columns
        self.nbytes = sum(a.nbytes for a in columns.values())

    @staticmethod
    def key(text: str) -> str:
        return text.strip(" ").lower()  # as SQL's lower(trim(...))

    @classmethod
    def read(cls, engine: Any, evidence_id: int) -> Peaks:
        duck = _duck(engine.conn)
        by_token: dict[str, list[tuple[int, str]]] = {}
        for context_id, text in duck.execute(
                "SELECT context_id, tokens[peak + 1] FROM evidence_contexts WHERE evidence_id = ?",
                [evidence_id]).fetchall():
            by_token.setdefault(cls.key(text), []).append((context_id, text))
        columns = duck.sql("""
            SELECT context_id, layer, neuron, sign, activation FROM neuron_exemplars
            WHERE evidence_id = ? ORDER BY context_id""", params=[evidence_id]).fetchnumpy()
        return cls(by_token, {k: np.asarray(v) for k, v in columns.items()})

    def neurons(self, token: str, sign: int, limit: int) -> list[dict]:
        contexts = self.by_token.get(self.key(token), [])
        ctx = self.columns["context_id"]
        parts, texts = [], []
        for context_id, text in contexts:
            # the needles in the haystack's own dtype: a wider one would copy the haystack
            start, end = ctx.searchsorted(np.array([context_id, context_id + 1], ctx.dtype))
            parts.append(np.arange(start, end))
            texts += [text] * (end - start)
        if not parts:
            return []
        at = np.concatenate(parts)
        texts_at = np.array(texts, dtype=object)
        mine = self.columns["sign"][at] == sign
        at, texts_at = at[mine], texts_at[mine]
        found: dict[tuple[int, int], dict] = {}
        for i, text in zip(at, texts_at):
            key = (int(self.columns["layer"][i]), int(self.columns["neuron"][i]))
            row = found.setdefault(key, {"layer": key[0], "neuron": key[1], "n_exemplars": 0,
                                         "peak": 0.0, "tokens": set()})
            row["n_exemplars"] += 1
            row["peak"] = max(row["peak"], abs(float(self.columns["activation"][i])))
            row["tokens"].add(text)
        ranked = sorted(found.values(), key=lambda r: (-r["n_exemplars"], -r["peak"],
                                                        r["layer"], r["neuron"]))[:limit]
        return [{**r, "tokens": sorted(r["tokens"])} for r in ranked]
