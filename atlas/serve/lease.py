"""One read-only open of the atlas file, shared by the requests in flight.

Opening DuckDB costs about 25 ms (a new database instance, its caches empty), more than most
answers. Requests that overlap share one open instance, each with its own connection; the file
is closed ``linger_s`` after the last request in flight is answered (at once when an atlas writer
waits for it), so a server under load keeps it open and an idle one does not hold it. When a
writer waits (:func:`atlas.store.db.writer_waiting`), new requests wait until the ones in flight
are answered, the file is closed and the writer has it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from atlas.store.db import lock_wait, writer_waiting

POLL_S = 0.005


class SharedOpen:
    """Keeps ``open_anchor()`` (a connection) open while at least one request holds it."""

    def __init__(self, open_anchor: Callable[[], Any], path: Path, linger_s: float = 0.0):
        self._open_anchor = open_anchor
        self._path = path
        self._linger_s = linger_s  # how long the file stays open after the last request
        self._idle = 0  # counts the times the last request left; a lingering close checks it
        self._cond = threading.Condition()
        self._users = 0
        self._anchor: Any = None
        self._draining = False
        self._memo: dict[str, Any] = {}  # what holds while the file stays open (see ``once``)

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._cond:
            self._yield_to_writer()
            if self._anchor is None:
                self._anchor = self._open_anchor()  # waits for the file lock if need be
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    self._idle += 1
                    if self._linger_s > 0 and not writer_waiting(self._path):
                        threading.Thread(target=self._linger, args=(self._idle,),
                                         daemon=True).start()
                    else:
                        self._close()

    def _linger(self, idle: int) -> None:
        """Close the file ``linger_s`` after the last request left (idle time number ``idle``),
        or as soon as a writer waits for it, unless a request came meanwhile."""
        deadline = time.monotonic() + self._linger_s
        while True:
            with self._cond:
                if self._users or self._anchor is None or self._idle != idle:
                    return  # a request came (its last leaving starts another linger)
                if time.monotonic() >= deadline or writer_waiting(self._path):
                    self._close()
                    return
            time.sleep(POLL_S)

    def _close(self) -> None:
        """Close the file (the condition's lock held, no request in flight)."""
        self._anchor.close()
        self._anchor = None
        self._memo.clear()
        self._draining = False
        self._cond.notify_all()

    def once(self, key: str, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per open of the file (called inside ``hold``): while the server
        holds the file open no writer can change it, so what is read of it holds until the
        last request in flight is answered."""
        with self._cond:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]

    def _yield_to_writer(self) -> None:
        """Wait (the condition's lock held) while a writer waits for the file, up to the lock
        wait; then opening waits for the writer's lock in the usual way."""
        if self._users == 0 and self._anchor is not None and writer_waiting(self._path):
            self._close()  # lingering open: the writer first
        deadline = time.monotonic() + lock_wait()
        while time.monotonic() < deadline and (self._draining or writer_waiting(self._path)):
            if self._users:
                self._draining = True  # no newcomers until the file is closed
            self._cond.wait(POLL_S)

    @property
    def users(self) -> int:
        """Requests holding the open now (this one included, inside ``hold``)."""
        return self._users

    @property
    def is_open(self) -> bool:
        return self._anchor is not None
