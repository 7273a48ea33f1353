"""Few-shot conversations, chat-template rendering and the special-token (role-marker) rule.

A scoring example is the paper's k-shot conversation: system = the task Definition, k
demonstrations (user = input, assistant = output), then the query with its gold answer.

Special tokens are found by rendering, never by hard-coded ids. A probe conversation with
sentinel contents is rendered with empty BOS/EOS strings; the template text that opens the
second user message and the second assistant message gives the user and assistant
*role markers* (``<|im_start|>user``, ``[INST]``, ``[/INST]`` ...). Every token of every
occurrence of a marker in the template text of a rendered prompt is a target.
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


def build_messages(
    definition: str, demos: list[Instance], query: Instance, with_answer: bool
) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": definition}] if definition else []
    for demo in demos:
        messages += [
            {"role": "user", "content": demo.input},
            {"role": "assistant", "content": demo.output},
        ]
    messages.append({"role": "user", "content": query.input})
    if with_answer:
        messages.append({"role": "assistant", "content": query.output})
    return messages


def pick_demos(pool: list[Instance], query: Instance, shots: int, seed: int) -> list[Instance]:
    """``shots`` demonstrations from ``pool``, never the query itself; seeded per query."""
    candidates = [inst for inst in pool if inst.id != query.id]
    rng = random.Random(f"{seed}:{query.id}")
    return rng.sample(candidates, min(shots, len(candidates)))


@dataclass
class Encoded:
    input_ids: list[int]
    targets: list[int]  # special-token positions (≥ 1)
    answer_start: int  # first token position of the final assistant content (or len)


@dataclass
class PromptFormat:
    """How one tokenizer turns conversations into tokens, and where its role markers are."""

    tokenizer: object
    template: str | None = None  # None: the tokenizer's own chat template
    template_name: str = "model"
    system_in_user: bool = False
    markers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_tokenizer(cls, tokenizer) -> PromptFormat:
        own = getattr(tokenizer, "chat_template", None)
        fmt = cls(tokenizer, None if own else BUILTIN_TEMPLATE, "model" if own else "builtin")
        fmt.system_in_user = not fmt._accepts_system()
        fmt.markers = fmt._find_markers()
        return fmt

    @property
    def template_hash(self) -> str:
        text = self.template or self.tokenizer.chat_template
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return {
            "template": self.template_name,
            "template_hash": self.template_hash,
            "system_in_user": self.system_in_user,
            "markers": self.markers,
        }

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

    def encode(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> Encoded:
        """Tokenize a rendered conversation and locate its special tokens."""
        text = self.render(messages, add_generation_prompt)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        content_spans = _content_spans(text, [m["content"] for m in messages])
        marker_spans = [
            (start, start + len(marker))
            for marker in self.markers.values()
            for start in _find_all(text, marker)
            if not any(s <= start < e for s, e in content_spans)
        ]
        targets = [
            pos
            for pos, (start, end) in enumerate(offsets)
            if pos >= 1 and end > start and any(start < me and end > ms for ms, me in marker_spans)
        ]
        answer_start = len(ids)
        if messages and messages[-1]["role"] == "assistant" and content_spans:
            char = content_spans[-1][0]
            answer_start = next((p for p, (s, e) in enumerate(offsets) if e > char), len(ids))
        return Encoded(ids, targets, answer_start)


def _find_all(text: str, needle: str) -> list[int]:
    found, start = [], text.find(needle)
    while start != -1:
        found.append(start)
        start = text.find(needle, start + len(needle))
    return found


def _content_spans(text: str, contents: list[str]) -> list[tuple[int, int]]:
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


@dataclass
class Example:
    instance: Instance
    encoded: Encoded


def scoring_examples(
    task: Task, instances: list[Instance], fmt: PromptFormat, shots: int, seed: int
) -> list[Example]:
    """The k-shot scoring conversations (with gold answers) of ``instances``; demos come from
    the same list, never the query."""
    examples = []
    for inst in instances:
        demos = pick_demos(instances, inst, shots, seed)
        messages = build_messages(task.definition, demos, inst, with_answer=True)
        examples.append(Example(inst, fmt.encode(messages)))
    return examples
