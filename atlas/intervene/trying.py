"""Trying stored sets on your own text: the sets read by id, checked against the loaded model,
turned into the same :class:`~atlas.intervene.spec.Intervention` that ``atlas ablate``
evaluates, and the answers of :mod:`atlas.intervene.live` with what they used (set ids, the
model's stored identity). Nothing is written."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy.engine import Engine

from atlas.errors import AtlasError, NotFound
from atlas.intervene import live
from atlas.intervene.spec import Intervention
from atlas.models.loading import LoadedModel
from atlas.query.core import rows

MAX_VALUES = 64  # an activations answer lists every neuron's value per token up to this many


@dataclass(frozen=True)
class ModelIdentity:
    """The loaded model, and the stored model of the same name, revision and dtype (if any)."""

    name: str
    revision: str
    dtype: str
    model_id: int | None


@dataclass(frozen=True)
class StoredSet:
    set_id: int
    name: str
    task: str | None
    method: str
    model_id: int
    size: int
    neurons: dict[int, list[int]] = field(repr=False, compare=False)  # layer -> neurons

    def summary(self) -> dict:
        return {"set_id": self.set_id, "name": self.name, "task": self.task,
                "method": self.method, "model_id": self.model_id, "size": self.size}


@dataclass
class TryOptions:
    """How the sets are tried (0 inhibits, > 1 amplifies)."""

    factor: float = 0.0
    union: bool = False  # one intervention of all sets and neurons, not one per set
    max_new_tokens: int = 32
    top_k: int = 5
    temperature: float = 0.0
    seed: int = 0
    chat: bool = True  # the prompt as a user turn of the chat template, when there is one

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.top_k < 1:
            raise AtlasError("--max-new-tokens and --top must be at least 1")
        if self.temperature < 0:
            raise AtlasError("--temperature must be 0 (greedy) or more")


@dataclass
class TryAnswer:
    model: ModelIdentity
    sets: list[StoredSet]
    neurons: list[tuple[int, int]]  # neurons given one by one
    factor: float
    result: live.SideBySide

    def to_dict(self) -> dict:
        """As JSON (``atlas try --format json`` and ``POST /generate``)."""
        return {"model": asdict(self.model), "sets": [s.summary() for s in self.sets],
                "neurons": [list(n) for n in self.neurons], "factor": self.factor,
                **asdict(self.result)}


@dataclass
class ActivationsAnswer:
    model: ModelIdentity
    sets: list[StoredSet]
    neurons: list[tuple[int, int]]
    activations: live.Activations

    def to_dict(self, top: int = 5) -> dict:
        """As JSON (``atlas activations --format json`` and ``POST /activations``): per token a
        summary, and every neuron's value when at most ``MAX_VALUES`` neurons are read."""
        acts = self.activations
        return {"model": asdict(self.model), "sets": [s.summary() for s in self.sets],
                "neurons": [list(n) for n in self.neurons],
                "read": [list(n) for n in acts.neurons], "tokens": acts.tokens,
                "token_ids": acts.token_ids,
                "per_token": [asdict(t) for t in acts.per_token(top)],
                "values": acts.values.tolist() if len(acts.neurons) <= MAX_VALUES else None,
                "seconds": acts.seconds}


def model_identity(engine: Engine, loaded: LoadedModel) -> ModelIdentity:
    found = rows(engine, "SELECT model_id FROM models WHERE name = :n AND revision = :r AND "
                         "dtype = :d", n=loaded.name, r=loaded.revision, d=loaded.dtype)
    return ModelIdentity(loaded.name, loaded.revision, loaded.dtype,
                         found[0]["model_id"] if found else None)


def stored_sets(engine: Engine, set_ids: list[int], loaded: LoadedModel) -> list[StoredSet]:
    """The sets ``set_ids`` (by id), each checked to be a set of the loaded model (same name,
    revision and shape; any dtype)."""
    out = []
    for set_id in set_ids:
        found = rows(engine, """
            SELECT s.set_id, s.name, s.method, s.size, s.model_id, t.name AS task,
                   m.name AS model, m.revision, m.n_layers, m.d_mlp
            FROM neuron_sets s JOIN models m USING (model_id) LEFT JOIN tasks t USING (task_id)
            WHERE s.set_id = :sid""", sid=set_id)
        if not found:
            raise NotFound(f"no set with id {set_id}; `atlas sql \"SELECT set_id, name FROM "
                           "neuron_sets\"` lists them")
        row = found[0]
        if (row["model"], row["revision"]) != (loaded.name, loaded.revision) or \
                (row["n_layers"], row["d_mlp"]) != (loaded.n_layers, loaded.d_mlp):
            raise AtlasError(f"set {set_id} belongs to {row['model']} (revision "
                             f"{row['revision'][:12]}), not the loaded {loaded.name} (revision "
                             f"{loaded.revision[:12]}); load its model")
        members = rows(engine, "SELECT layer, neuron FROM neuron_set_members WHERE set_id = :sid "
                               "ORDER BY layer, neuron", sid=set_id)
        neurons: dict[int, list[int]] = {}
        for m in members:
            neurons.setdefault(int(m["layer"]), []).append(int(m["neuron"]))
        out.append(StoredSet(set_id, row["name"], row["task"], row["method"], row["model_id"],
                             row["size"], neurons))
    return out


def parse_neuron(text: str) -> tuple[int, int]:
    """``LAYER/NEURON`` (or ``LAYER:NEURON``) as a pair of ints."""
    parts = text.replace(":", "/").split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise AtlasError(f"bad neuron '{text}'; write LAYER/NEURON, e.g. 3/117")
    return int(parts[0]), int(parts[1])


def _group(pairs: list[tuple[int, int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for layer, neuron in pairs:
        out.setdefault(layer, []).append(neuron)
    return out


def _merged(parts: list[dict[int, list[int]]]) -> dict[int, list[int]]:
    out: dict[int, set[int]] = {}
    for part in parts:
        for layer, neurons in part.items():
            out.setdefault(layer, set()).update(neurons)
    return {layer: sorted(n) for layer, n in sorted(out.items())}


def interventions(sets: list[StoredSet], neurons: list[tuple[int, int]], factor: float,
                  union: bool) -> list[Intervention]:
    """One intervention per set (and one for the neurons given one by one), or their union."""
    parts = [(f"set {s.set_id} {s.name}", s.neurons) for s in sets]
    if neurons:
        parts.append((", ".join(f"{layer}/{n}" for layer, n in neurons), _group(neurons)))
    if not parts:
        raise AtlasError("nothing to intervene on; give --set ID or --neuron LAYER/NEURON")
    if union and len(parts) > 1:
        parts = [(" ∪ ".join(label for label, _ in parts), _merged([p for _, p in parts]))]
    return [Intervention(_merged([p]), factor, None, label) for label, p in parts]


def _encoded(loaded: LoadedModel, text: str, chat: bool, max_tokens: int | None,
             new_tokens: int = 0) -> list[int]:
    ids = live.encode_prompt(loaded.tokenizer, text, chat)
    if not ids:
        raise AtlasError("the text has no tokens; give some text")
    if max_tokens is not None and len(ids) > max_tokens:
        raise AtlasError(f"the text is {len(ids)} tokens; at most {max_tokens} are taken here "
                         "(shorten it)")
    room = loaded.max_positions
    if room is not None and len(ids) + new_tokens > room:
        raise AtlasError(f"{len(ids)} prompt tokens + {new_tokens} new ones exceed "
                         f"{loaded.name}'s context of {room}; shorten the text")
    return ids


def try_sets(engine: Engine, loaded: LoadedModel, prompt: str, set_ids: list[int],
             neurons: list[tuple[int, int]], options: TryOptions,
             max_prompt_tokens: int | None = None) -> TryAnswer:
    """Generate from ``prompt`` with the model unmodified and with the sets scaled.

    Args:
        engine: the atlas database (read only).
        loaded: the model the sets belong to.
        prompt: the user's text.
        set_ids: stored sets, by id.
        neurons: single neurons (layer, neuron).
        options: factor, union, generation settings.
        max_prompt_tokens: a longer prompt is refused (None: the model's context is the bound).

    Returns:
        :class:`TryAnswer`: the outputs side by side, and the sets and model used.
    """
    sets = stored_sets(engine, set_ids, loaded)
    specs = interventions(sets, neurons, options.factor, options.union)
    ids = _encoded(loaded, prompt, options.chat, max_prompt_tokens, options.max_new_tokens)
    result = live.generate_side_by_side(
        loaded.model, loaded.tokenizer, ids, specs, max_new_tokens=options.max_new_tokens,
        top_k=options.top_k, temperature=options.temperature, seed=options.seed)
    return TryAnswer(model_identity(engine, loaded), sets, list(neurons), options.factor, result)


def set_activations(engine: Engine, loaded: LoadedModel, text: str, set_ids: list[int],
                    neurons: list[tuple[int, int]], chat: bool = False,
                    max_tokens: int | None = None) -> ActivationsAnswer:
    """The activations of the sets' neurons (and of single neurons) on every token of ``text``.

    Args:
        engine: the atlas database (read only).
        loaded: the model.
        text: the text (as is; ``chat`` renders it as a user turn first).
        set_ids: stored sets, by id (their union is read).
        neurons: single neurons (layer, neuron).
        chat: render the text with the chat template first.
        max_tokens: a longer text is refused (None: the model's context is the bound).

    Returns:
        :class:`ActivationsAnswer`.
    """
    sets = stored_sets(engine, set_ids, loaded)
    chosen = _merged([s.neurons for s in sets] + [_group(neurons)])
    ids = _encoded(loaded, text, chat, max_tokens)
    acts = live.neuron_activations(loaded.model, loaded.tokenizer, ids, chosen)
    return ActivationsAnswer(model_identity(engine, loaded), sets, list(neurons), acts)
