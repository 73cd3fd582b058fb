"""SQLite's write-ahead log is copied into the database file by the hub's
checkpointer thread, not by the connection whose commit filled it."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

import hub.db
from hub.db import SQLITE_AUTOCHECKPOINT_PAGES, SQLITE_CACHE_KIB, _Checkpointer, checkpoint, make_engine

#: Written in one commit: past SQLite's default of 1,000 log pages, under the hub's.
BIG_COMMIT_BYTES = 8 * 2**20


class Noted:
    """A checkpointer that only notes which engines asked."""

    def __init__(self) -> None:
        self.asked: list[object] = []

    def soon(self, engine: object) -> None:
        self.asked.append(engine)


def fill(engine, size: int = BIG_COMMIT_BYTES) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, body TEXT)")
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO blobs (body) VALUES (?)", [("x" * 4000,) for _ in range(size // 4000)])


def test_a_big_commit_leaves_the_checkpoint_to_the_checkpointer(tmp_path, monkeypatch):
    noted = Noted()
    monkeypatch.setattr(hub.db, "_CHECKPOINTER", noted)
    database = tmp_path / "hub.db"
    engine = make_engine(f"sqlite:///{database}")
    try:
        fill(engine)
        # The committing connection did not copy the log into the file (SQLite's default would have)...
        assert database.stat().st_size < BIG_COMMIT_BYTES / 4
        assert os.path.getsize(f"{database}-wal") > BIG_COMMIT_BYTES
        # ...it asked the checkpointer to, once per commit.
        assert noted.asked and all(asked is engine for asked in noted.asked)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == SQLITE_AUTOCHECKPOINT_PAGES
            assert connection.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB
    finally:
        engine.dispose()


def test_the_checkpointer_copies_the_log_into_the_file_soon_after_a_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(hub.db, "_CHECKPOINTER", _Checkpointer())
    database = tmp_path / "hub.db"
    engine = make_engine(f"sqlite:///{database}")
    try:
        fill(engine)
        deadline = time.monotonic() + 30
        while database.stat().st_size < BIG_COMMIT_BYTES and time.monotonic() < deadline:
            time.sleep(0.05)
        assert database.stat().st_size >= BIG_COMMIT_BYTES
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM blobs").scalar() == BIG_COMMIT_BYTES // 4000
    finally:
        engine.dispose()


def test_a_checkpoint_does_not_make_a_removed_database_again(tmp_path):
    database = tmp_path / "hub.db"
    engine = make_engine(f"sqlite:///{database}")
    fill(engine, 4000)
    engine.dispose()
    for path in tmp_path.iterdir():
        path.unlink()
    checkpoint(engine)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_a_database_in_memory_asks_for_no_checkpoint(url, monkeypatch):
    noted = Noted()
    monkeypatch.setattr(hub.db, "_CHECKPOINTER", noted)
    engine = make_engine(url)
    try:
        fill(engine, 4000)
        assert noted.asked == []
    finally:
        engine.dispose()


def test_a_forked_child_checkpoints_with_a_thread_of_its_own(tmp_path):
    database = tmp_path / "hub.db"
    engine = make_engine(f"sqlite:///{database}")
    fill(engine, 4000)
    holding, forked = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # as the checkpointer's thread does, at times
        with hub.db._CHECKPOINTER._wake:
            holding.set()
            forked.wait(30)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holding.wait(30)
    child = os.fork()
    if child == 0:  # pragma: no cover (the child reports by its exit code)
        signal.alarm(20)  # (a child left waiting for the lock ends, SIGALRM)
        try:
            engine.dispose(close=False)
            fill(engine)
            deadline = time.monotonic() + 30
            while database.stat().st_size < BIG_COMMIT_BYTES and time.monotonic() < deadline:
                time.sleep(0.05)
            os._exit(0 if database.stat().st_size >= BIG_COMMIT_BYTES else 1)
        finally:
            os._exit(2)
    forked.set()
    holder.join()
    _pid, status = os.waitpid(child, 0)
    engine.dispose()
    assert os.waitstatus_to_exitcode(status) == 0
