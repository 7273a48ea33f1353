"""Names the atlas gives: a task's short id. (No dependencies: every layer may use it.)"""

from __future__ import annotations

import re

SNI_ID = re.compile(r"task\d+")


def sni_id(name: str) -> str | None:
    """The SNI id of a task name (``task195`` of ``task195_sentiment140_...``), or None for a task
    that is not an SNI task (a file of the user's)."""
    head = name.split("_")[0]
    return head if SNI_ID.fullmatch(head) else None


def short_task_id(name: str) -> str:
    """A task's short id: its SNI id, or the whole name for any other task (never a prefix that
    two of the user's tasks could share)."""
    return sni_id(name) or name
