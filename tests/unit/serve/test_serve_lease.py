"""The server's shared open of the database: closed when idle, let go to a waiting writer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from atlas.serve.lease import SharedOpen
from atlas.store import open_db
from atlas.store.db import connect, writer_waiting
from tests.helpers import ROOT_DIR

pytestmark = pytest.mark.system  # a server, a browser or subprocesses

WRITE = """
import sys, time
from atlas.store import open_db, repository as repo
start = time.monotonic()
with open_db(sys.argv[1]).begin() as conn:
    repo.ensure_task(conn, "task_written", "test", 0, "h")
print(round(time.monotonic() - start, 2))
"""


@pytest.fixture()
def atlas_file(tmp_path):
    path = tmp_path / "a.duckdb"
    open_db(path).dispose()
    return path


def _lease(path, linger_s: float = 0.0):
    """The server's lease: the anchor is a connection of the sandboxed read-only engine."""
    return SharedOpen(connect(path, read_only=True).connect, path, linger_s)


def test_open_only_while_a_request_holds_it(atlas_file):
    lease = _lease(atlas_file)
    with lease.hold():
        assert lease.is_open
        with lease.hold():  # a second request shares the open file
            assert lease.is_open
        assert lease.is_open
    assert not lease.is_open
    with open_db(atlas_file).begin():  # so a writer opens it at once
        pass


def test_what_is_read_once_holds_until_the_file_is_closed(atlas_file):
    """The atlas stamp is read once per open: requests in flight together share it, and a
    writer's change (only possible while the file is closed) is read after it."""
    lease = _lease(atlas_file)
    reads = []
    read = lambda: reads.append(len(reads)) or len(reads)  # noqa: E731
    with lease.hold():
        with lease.hold():
            assert lease.once("stamp", read) == 1
        assert lease.once("stamp", read) == 1
    with open_db(atlas_file).begin() as conn:  # a writer between two opens
        conn.exec_driver_sql("CREATE TABLE t (x INT)")
    with lease.hold():
        assert lease.once("stamp", read) == 2
    assert len(reads) == 2


def test_a_waiting_writer_gets_the_file_from_overlapping_requests(atlas_file):
    """Requests overlap without a gap; the writer still gets in, well within its lock wait."""
    lease = _lease(atlas_file)
    stop = threading.Event()
    held = [0]

    def request_loop() -> None:
        while not stop.is_set():
            with lease.hold():
                held[0] += 1
                time.sleep(0.03)

    loops = [threading.Thread(target=request_loop) for _ in range(3)]
    for t in loops:
        t.start()
        time.sleep(0.01)  # staggered: some request is always in flight
    try:
        out = subprocess.run([sys.executable, "-c", WRITE, str(atlas_file)], cwd=ROOT_DIR,
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "ATLAS_LOCK_WAIT": "8"})
        after = held[0]
        time.sleep(0.3)
        assert held[0] > after  # requests go on once the writer is done
    finally:
        stop.set()
        for t in loops:
            t.join()
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 5
    assert not writer_waiting(atlas_file) and not (atlas_file.parent / "a.duckdb.wait").exists()


def test_a_lingering_open_closes_when_idle_and_at_once_for_a_writer(atlas_file):
    """`atlas serve --linger`: the file stays open a while after the last request (DuckDB's
    caches stay warm under load), closes when that time passes, and a writer in another
    process gets it at once, not after the linger."""
    lease = _lease(atlas_file, linger_s=0.4)
    with lease.hold():
        lease.once("stamp", lambda: 1)
    assert lease.is_open
    with lease.hold():  # a request within the linger shares the open file and what it read
        assert lease.once("stamp", lambda: 2) == 1
    time.sleep(1.0)
    assert not lease.is_open
    lease = _lease(atlas_file, linger_s=60)
    with lease.hold():
        pass
    assert lease.is_open
    out = subprocess.run([sys.executable, "-c", WRITE, str(atlas_file)], cwd=ROOT_DIR,
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "ATLAS_LOCK_WAIT": "8"})
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) < 5 and not lease.is_open
