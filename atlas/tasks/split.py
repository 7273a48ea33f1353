"""A deterministic, seeded split of a task into a scoring half and a held-out evaluation half."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from atlas.errors import AtlasError
from atlas.tasks.sni import Instance, Task


@dataclass(frozen=True)
class Split:
    score: list[Instance]
    evaluate: list[Instance]
    seed: int
    stratified: bool
    split_rule: str = "stratified"


SPLIT_RULES = ("stratified", "file")


def split_task(task: Task, seed: int = 0, score_fraction: float = 0.5,
               split_rule: str = "stratified") -> Split:
    """``stratified``: shuffle with ``seed`` and halve; classification tasks are split per label,
    since some SNI files are sorted by label. ``file``: the released code's split, the first
    part of the file scores and the rest evaluates. Both halves keep the file's order."""
    if split_rule not in SPLIT_RULES:
        raise AtlasError(f"unknown split '{split_rule}'; choose one of {', '.join(SPLIT_RULES)}")
    if split_rule == "file":
        cut = int(len(task.instances) * score_fraction)
        return Split(task.instances[:cut], task.instances[cut:], seed, False, "file")
    labels = task.labels
    groups: dict[str, list[int]] = defaultdict(list)
    for k, inst in enumerate(task.instances):
        groups[inst.output if labels else ""].append(k)
    rng = random.Random(seed)
    score_idx: list[int] = []
    for key in sorted(groups):
        members = groups[key][:]
        rng.shuffle(members)
        score_idx.extend(members[: round(len(members) * score_fraction)])
    chosen = set(score_idx)
    score = [inst for k, inst in enumerate(task.instances) if k in chosen]
    evaluate = [inst for k, inst in enumerate(task.instances) if k not in chosen]
    return Split(score, evaluate, seed, labels is not None)


def subsample(instances: list[Instance], n: int | None, seed: int) -> list[Instance]:
    """A seeded subsample of ``n`` instances (all when n is None or larger), in file order."""
    if n is None or n >= len(instances):
        return list(instances)
    keep = set(random.Random(seed).sample(range(len(instances)), n))
    return [inst for k, inst in enumerate(instances) if k in keep]
