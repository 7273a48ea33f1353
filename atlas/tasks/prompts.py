"""Few-shot conversations, chat-template rendering and the special-token rules.

A scoring example is the paper's k-shot conversation: system = the task Definition, k
demonstrations (user = input, assistant = output), then the query with its gold answer.

Role markers are found by rendering, never by hard-coded ids: a probe conversation is rendered
with empty BOS/EOS strings; the template text that opens the second user message and the second
assistant message gives the user and assistant markers (``<|im_start|>user``, ``[INST]``,
``[/INST]`` ...). A marker's *tokens* are the tokens of that text up to the message's content
(its trailing whitespace included: ``<|im_start|>user\n``); every tokenization of them that the
probe shows is matched in token ids, as the released code matches its hard-coded ids.

Two target rules (``token t is predicted from the logits at t − 1``):

``reference``  the released code's rule. Prompts are rendered with empty BOS/EOS strings and
               tokenized with the tokenizer's own special tokens (one BOS). The logits *at* every
               marker token predict the next token, so the targets are the marker's later tokens
               and the first token of each message (the gold answer's included). Two groups, as
               released at every shot count: the targets of the first four user/assistant turns
               (the released ``mean(CE[:28])``: 7 targets a turn on Llama-2-chat), then the rest;
               the loss is the sum of the groups' mean cross-entropies, and an empty group
               contributes nothing (the released empty mean is NaN but has no gradient).
``marker``     the marker tokens themselves, one group, on prompts rendered with the real BOS/EOS.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from atlas.errors import AtlasError
from atlas.tasks.sni import Instance, Task

# For models without a chat template (base models): plain-text role markers.
BUILTIN_TEMPLATE = (
    "{% for m in messages %}{{ '### ' + m['role'] | capitalize }}:\n{{ m['content'] }}\n\n"
    "{% endfor %}{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
_SENTINELS = ("\x01U1\x01", "\x01A1\x01", "\x01U2\x01", "\x01A2\x01")
# Natural contents for finding marker tokens in context (a sentinel byte would split them off).
_PROBE = ("Probe definition.", "First question", "First answer", "Second question",
          "Second answer", "Third question", "Third answer")
RULES = ("reference", "marker")
# With the reference rule, the markers of the first four user/assistant turns (user and
# assistant each) form the first loss group, as the released ``CE[:28]`` on Llama-2-chat.
FIRST_GROUP_MARKERS = 8


def build_messages(
    definition: str, demos: list[Instance], query: Instance, with_answer: bool,
    join_outputs: bool = False,
) -> list[dict[str, str]]:
    """The k-shot conversation. ``join_outputs`` answers with all gold outputs joined (as the
    released code does); by default the first output is the answer."""

    def answer(inst: Instance) -> str:
        return "".join(inst.outputs) if join_outputs else inst.output

    messages = [{"role": "system", "content": definition}] if definition else []
    for demo in demos:
        messages += [
            {"role": "user", "content": demo.input},
            {"role": "assistant", "content": answer(demo)},
        ]
    messages.append({"role": "user", "content": query.input})
    if with_answer:
        messages.append({"role": "assistant", "content": answer(query)})
    return messages


def pick_demos(pool: list[Instance], query: Instance, shots: int, seed: int,
               include_query: bool = False) -> list[Instance]:
    """``shots`` demonstrations from ``pool``, seeded per query. The query itself is never one
    unless ``include_query`` (the released code samples from the whole half, query included)."""
    candidates = list(pool) if include_query else [inst for inst in pool if inst.id != query.id]
    rng = random.Random(f"{seed}:{query.id}")
    return rng.sample(candidates, min(shots, len(candidates)))


def pick_fixed_demos(pool: list[Instance], shots: int, seed: int) -> list[Instance]:
    """``shots`` demonstrations from ``pool``, the same for every query (a shared prompt prefix)."""
    return random.Random(f"{seed}:fixed").sample(list(pool), min(shots, len(pool)))


@dataclass
class Encoded:
    input_ids: list[int]
    target_groups: list[list[int]]  # positions t (≥ 1) predicted from t − 1, per loss group
    answer_start: int  # first token position of the final assistant content (or len)

    @property
    def targets(self) -> list[int]:
        return sorted(t for group in self.target_groups for t in group)


@dataclass(frozen=True)
class MarkerTokens:
    """One tokenization of a role marker: its ids, of which the first ``n_core`` cover the
    marker text and the rest its trailing whitespace."""

    ids: tuple[int, ...]
    n_core: int


@dataclass
class PromptFormat:
    """How one tokenizer turns conversations into tokens, and where its role markers are."""

    tokenizer: object
    template: str | None = None  # None: the tokenizer's own chat template
    template_name: str = "model"
    system_in_user: bool = False
    markers: dict[str, str] = field(default_factory=dict)
    marker_tokens: list[MarkerTokens] = field(default_factory=list)
    # only the marker tokenizations of the released rendering (empty BOS/EOS, special tokens),
    # as the released code's hard-coded ids; by default every tokenization the probe shows
    released_markers: bool = False

    @classmethod
    def for_tokenizer(cls, tokenizer, released_markers: bool = False) -> PromptFormat:
        own = getattr(tokenizer, "chat_template", None)
        fmt = cls(tokenizer, None if own else BUILTIN_TEMPLATE, "model" if own else "builtin",
                  released_markers=released_markers)
        fmt.system_in_user = not fmt._accepts_system()
        fmt.markers = fmt._find_markers()
        fmt.marker_tokens = fmt._find_marker_tokens()
        return fmt

    @property
    def template_hash(self) -> str:
        text = self.template or self.tokenizer.chat_template
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        described = {
            "template": self.template_name,
            "template_hash": self.template_hash,
            "system_in_user": self.system_in_user,
            "markers": self.markers,
            "marker_ids": [list(m.ids) for m in self.marker_tokens],
        }
        if self.released_markers:  # only then: the default's params keys stay as they were
            described["marker_rendering"] = "released only"
        return described

    def render(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = False, **variables
    ) -> str:
        if self.system_in_user and messages and messages[0]["role"] == "system":
            first, rest = messages[1], messages[2:]
            merged = {"role": "user", "content": messages[0]["content"] + "\n\n" + first["content"]}
            messages = [merged, *rest]
        if self.template:
            variables["chat_template"] = self.template
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **variables
        )

    def render_text(self, messages: list[dict[str, str]], prompt_rule: str = "reference",
                    add_generation_prompt: bool = False) -> str:
        """The prompt text: empty BOS/EOS strings for the reference rule, the real ones else."""
        _check_rule(prompt_rule)
        empty = {"bos_token": "", "eos_token": ""} if prompt_rule == "reference" else {}
        return self.render(messages, add_generation_prompt, **empty)

    def tokenize(self, text: str, prompt_rule: str = "reference") -> dict:
        """Ids and offsets; the reference rule adds the tokenizer's own special tokens (one BOS),
        as ``tokenizer.encode`` does in the released code."""
        return self.tokenizer(text, add_special_tokens=prompt_rule == "reference",
                              return_offsets_mapping=True)

    def _accepts_system(self) -> bool:
        try:
            self.render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
        except Exception:  # templates raise their own errors for unsupported roles
            return False
        return True

    def _find_markers(self) -> dict[str, str]:
        """Role markers from a probe conversation rendered with empty BOS/EOS strings: the text
        between two messages minus the previous message's closing text (what follows it at the
        end of a conversation); where that leaves nothing (Llama-2 closes a user turn with
        ``[/INST]``), the whole text between them."""
        u1, a1, u2, a2 = _SENTINELS
        turns = [("user", u1), ("assistant", a1), ("user", u2), ("assistant", a2)]
        messages = [{"role": role, "content": content} for role, content in turns]
        empty = {"bos_token": "", "eos_token": ""}
        full = self.render(messages, **empty)
        before_last_answer = self.render(messages[:3], **empty)

        def marker(left: str, right: str, closing: str) -> str:
            gap = full[full.index(left) + len(left) : full.index(right)]
            opener = gap[len(closing) :] if closing and gap.startswith(closing) else gap
            return opener.strip() or gap.strip()

        assistant_closing = full[full.index(a2) + len(a2) :]
        user_closing = before_last_answer[before_last_answer.index(u2) + len(u2) :]
        markers = {
            "user": marker(a1, u2, assistant_closing),
            "assistant": marker(u2, a2, user_closing),
        }
        if not all(markers.values()):
            raise AtlasError(
                "the chat template puts no text before user or assistant messages; "
                "special tokens cannot be found (use a template with role markers)"
            )
        return markers

    def _find_marker_tokens(self) -> list[MarkerTokens]:
        """Every tokenization of a marker (with its trailing whitespace) in a probe conversation
        rendered both ways: at the start of a prompt and after a message."""
        system, *turns = _PROBE
        messages = [{"role": "system", "content": system}] + [
            {"role": "user" if k % 2 == 0 else "assistant", "content": c}
            for k, c in enumerate(turns)]
        found: dict[tuple[int, ...], MarkerTokens] = {}
        for prompt_rule in ("reference",) if self.released_markers else RULES:
            text = self.render_text(messages, prompt_rule)
            enc = self.tokenize(text, prompt_rule)
            for start, core_end, span_end in _marker_spans(text, self.markers, _PROBE):
                core = [p for p, (s, e) in enumerate(enc["offset_mapping"])
                        if e > s and s < core_end and e > start]
                tail = [p for p, (s, e) in enumerate(enc["offset_mapping"])
                        if e > s and s >= core_end and e <= span_end]
                ids = tuple(enc["input_ids"][p] for p in core + tail)
                if core and ids not in found:
                    found[ids] = MarkerTokens(ids, len(core))
        if not found:
            raise AtlasError("the role markers of the chat template could not be located in its "
                             "tokens; use a template whose markers are plain text or special tokens")
        return list(found.values())

    def encode(self, messages: list[dict[str, str]], prompt_rule: str = "reference",
               add_generation_prompt: bool = False) -> Encoded:
        """Render and tokenize a conversation and locate its special-token targets."""
        text = self.render_text(messages, prompt_rule, add_generation_prompt)
        enc = self.tokenize(text, prompt_rule)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        groups = special_token_targets(ids, self, prompt_rule)
        answer_start = len(ids)
        content_spans = _content_spans(text, [m["content"] for m in messages])
        if messages and messages[-1]["role"] == "assistant" and content_spans:
            char = content_spans[-1][0]
            answer_start = next((p for p, (s, e) in enumerate(offsets) if e > char), len(ids))
        return Encoded(ids, groups, answer_start)


def _check_rule(prompt_rule: str) -> None:
    if prompt_rule not in RULES:
        raise AtlasError(f"unknown prompt rule '{prompt_rule}'; choose one of {', '.join(RULES)}")


def _find_all(text: str, needle: str) -> list[int]:
    found, start = [], text.find(needle)
    while start != -1:
        found.append(start)
        start = text.find(needle, start + len(needle))
    return found


def _content_spans(text: str, contents: list[str] | tuple[str, ...]) -> list[tuple[int, int]]:
    """Character spans of each message's content in the rendered text, found in order."""
    spans, cursor = [], 0
    for content in contents:
        needle = content.strip()
        if not needle:
            continue
        start = text.find(needle, cursor)
        if start == -1:
            continue
        spans.append((start, start + len(needle)))
        cursor = start + len(needle)
    return spans


def _marker_spans(text: str, markers: dict[str, str], contents) -> list[tuple[int, int, int]]:
    """(start, end of the marker text, end of its trailing whitespace) of every marker in the
    template text (not inside a message's content)."""
    content_spans = _content_spans(text, contents)
    spans = []
    for marker in markers.values():
        for start in _find_all(text, marker):
            if any(s <= start < e for s, e in content_spans):
                continue
            end = span_end = start + len(marker)
            while span_end < len(text) and text[span_end].isspace():
                span_end += 1
            spans.append((start, end, span_end))
    return sorted(spans)


def _match_all(ids: list[int], sub: tuple[int, ...]) -> list[int]:
    n = len(sub)
    return [i for i in range(len(ids) - n + 1) if tuple(ids[i : i + n]) == sub]


_FORMATS: dict[int, tuple[object, str | None, PromptFormat]] = {}


def format_for(tokenizer) -> PromptFormat:
    """The :class:`PromptFormat` of ``tokenizer`` (cached while its chat template stays)."""
    template = getattr(tokenizer, "chat_template", None)
    cached = _FORMATS.get(id(tokenizer))
    if cached and cached[0] is tokenizer and cached[1] == template:
        return cached[2]
    fmt = PromptFormat.for_tokenizer(tokenizer)
    _FORMATS[id(tokenizer)] = (tokenizer, template, fmt)
    return fmt


def render_reference(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """The released code's prompt ids: the chat template rendered with empty BOS/EOS strings,
    then tokenized with the tokenizer's special tokens (one BOS)."""
    fmt = format_for(tokenizer)
    return fmt.tokenize(fmt.render_text(messages, "reference"), "reference")["input_ids"]


def special_token_targets(input_ids: list[int], tokenizer, prompt_rule: str = "reference"
                          ) -> list[list[int]]:
    """Loss groups of target positions t (token t predicted from the logits at t − 1).

    ``reference``: every token after a marker token (the marker's later tokens and the first
    token of the message), grouped as [the first four user/assistant turns, the rest]; an empty
    group is left out. ``marker``: the marker tokens
    themselves, one group. ``tokenizer`` may also be a :class:`PromptFormat`."""
    _check_rule(prompt_rule)
    fmt = tokenizer if isinstance(tokenizer, PromptFormat) else format_for(tokenizer)
    ids = list(input_ids)
    occurrences: dict[int, set[int]] = {}  # marker end -> target positions
    for marker in fmt.marker_tokens:
        for i in _match_all(ids, marker.ids):
            if prompt_rule == "reference":
                end, positions = i + len(marker.ids), range(i + 1, i + len(marker.ids) + 1)
            else:
                end, positions = i + marker.n_core, range(max(i, 1), i + marker.n_core)
            occurrences.setdefault(end, set()).update(p for p in positions if p < len(ids))
    ordered = [sorted(occurrences[end]) for end in sorted(occurrences)]
    if prompt_rule == "marker":
        groups = [[p for occ in ordered for p in occ]]
    else:
        cut = min(FIRST_GROUP_MARKERS, len(ordered))
        groups = [[p for occ in ordered[:cut] for p in occ], [p for occ in ordered[cut:] for p in occ]]
    return [sorted(set(g)) for g in groups if g]


@dataclass
class Example:
    instance: Instance
    encoded: Encoded


def scoring_examples(
    task: Task, instances: list[Instance], fmt: PromptFormat, shots: int, seed: int, *,
    prompt_rule: str = "reference", pool: list[Instance] | None = None, demos_include_query: bool = False,
    join_outputs: bool = False,
) -> list[Example]:
    """The k-shot scoring conversations (with gold answers) of ``instances``; demonstrations
    come from ``pool`` (default: ``instances``), never the query unless ``demos_include_query``."""
    pool = instances if pool is None else pool
    examples = []
    for inst in instances:
        demos = pick_demos(pool, inst, shots, seed, demos_include_query)
        messages = build_messages(task.definition, demos, inst, True, join_outputs)
        examples.append(Example(inst, fmt.encode(messages, prompt_rule)))
    return examples
