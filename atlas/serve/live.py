"""The models a server loads for trying sets live (``atlas serve --model``): each held once,
with one generation slot, and the bounds every live request is held to. Requests only read the
model (hooks are removed after each) and the database."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from atlas.errors import Busy, NotEnabled, NotFound

if TYPE_CHECKING:  # a server without models loads no torch
    from atlas.models.loading import LoadedModel

HOW_TO_ENABLE = ("this server loads no model; start it with `atlas serve --model MODEL` (the "
                 "sets' model) to try sets live")


@dataclass(frozen=True)
class LiveLimits:
    """What one live request may ask for."""

    max_new_tokens: int = 64
    max_prompt_tokens: int = 512
    wait_s: float = 5.0  # how long a request waits for a busy model before a 429


@dataclass
class _Slot:
    loaded: LoadedModel
    lock: threading.Lock = field(default_factory=threading.Lock)


class LiveModels:
    """The loaded models by name, one request at a time each.

    Args:
        models: the loaded models (none: live requests answer 404 with how to enable them).
        limits: the bounds of a request.
    """

    def __init__(self, models: list[LoadedModel] | None = None,
                 limits: LiveLimits | None = None):
        self.limits = limits or LiveLimits()
        self._slots = {m.name: _Slot(m) for m in models or []}

    @property
    def names(self) -> list[str]:
        return list(self._slots)

    def loaded(self) -> list[LoadedModel]:
        return [s.loaded for s in self._slots.values()]

    def _slot(self, name: str | None) -> _Slot:
        if not self._slots:
            raise NotEnabled(HOW_TO_ENABLE)
        if name is None:
            if len(self._slots) > 1:
                raise NotFound(f"several models are loaded ({', '.join(self._slots)}); name one "
                               "in 'model'")
            return next(iter(self._slots.values()))
        if name not in self._slots:
            raise NotFound(f"model '{name}' is not loaded here; loaded: {', '.join(self._slots)}")
        return self._slots[name]

    @contextmanager
    def using(self, name: str | None) -> Iterator[LoadedModel]:
        """The model ``name`` (None: the only one), held for this request alone; a request
        that waits longer than ``limits.wait_s`` for it is refused (429)."""
        slot = self._slot(name)
        if not slot.lock.acquire(timeout=self.limits.wait_s):
            raise Busy(f"model '{slot.loaded.name}' is busy with another request; retry in a "
                       "moment")
        try:
            yield slot.loaded
        finally:
            slot.lock.release()
