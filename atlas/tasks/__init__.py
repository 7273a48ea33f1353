"""Tasks (Super-NaturalInstructions and tabular files), splits and few-shot prompts."""

from atlas.tasks.prompts import (
    Example,
    PromptFormat,
    build_messages,
    format_for,
    pick_demos,
    render_reference,
    scoring_examples,
    special_token_targets,
)
from atlas.tasks.sni import PAPER_TASKS, Instance, Task, expand_task_names, load_task
from atlas.tasks.split import Split, split_task, subsample

__all__ = [
    "PAPER_TASKS",
    "Example",
    "Instance",
    "PromptFormat",
    "Split",
    "Task",
    "build_messages",
    "expand_task_names",
    "format_for",
    "load_task",
    "pick_demos",
    "render_reference",
    "scoring_examples",
    "special_token_targets",
    "split_task",
    "subsample",
]
