"""Tasks (Super-NaturalInstructions and tabular files), splits and few-shot prompts."""

from atlas.tasks.prompts import Example, PromptFormat, build_messages, pick_demos, scoring_examples
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
    "load_task",
    "pick_demos",
    "scoring_examples",
    "split_task",
    "subsample",
]
