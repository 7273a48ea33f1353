"""Names and keys the atlas gives: a task's short id, the params key, the configuration id.
(No dependencies: every layer may use it.)"""

from __future__ import annotations

import hashlib
import json
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


def params_key(params: dict) -> str:
    """The key of a run's or an evaluation's params: what identifies it in the store (24 hex
    digits of the SHA-256 of the params as sorted JSON)."""
    return _digest(params)[:24]


def config_id(params: dict) -> str:
    """A short id of an evaluation configuration (its params without the evaluated task's
    data): 12 hex digits, given as `--config` to tell configurations apart."""
    return _digest(params)[:12]


def _digest(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()
