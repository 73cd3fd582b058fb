"""Database engine, sessions and migrations.

SQLite (a file in the data directory) by default, PostgreSQL when
``HUB_DATABASE_URL`` says so. The schema is created and upgraded in place by
Alembic migrations (``hub/migrations``), run at startup.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)

#: SQLite's page cache per connection, in KiB (SQLite's own default is 2 MiB).
#: A pull's records land all over the index of provider ids: with the small
#: cache, its pages were read and written again and again (a full pull of
#: 50,000 records spent about a sixth more CPU).
SQLITE_CACHE_KIB = 8192
#: A commit that takes SQLite's write-ahead log past this many pages (4 KiB
#: each) copies the log into the database file itself, there and then: only
#: should the checkpointer thread (:class:`_Checkpointer`) fall behind.
#: SQLite's default, 1,000, made a pull's writer do it every few pages.
SQLITE_AUTOCHECKPOINT_PAGES = 10_000
#: How long after a commit the checkpointer copies the log (the commits of a
#: burst share one checkpoint).
CHECKPOINT_DELAY = 0.25


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str) -> sa.Engine:
    """:raises DatabaseUnavailable: the URL is not one, or its driver is not installed."""
    try:
        return _make_engine(normalize_url(url))
    except sa.exc.ArgumentError:
        raise DatabaseUnavailable("HUB_DATABASE_URL is not a database URL (sqlite:////path/to/hub.db or "
                                  "postgresql://user:password@host/db)") from None
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        where = sa.engine.make_url(url).render_as_string(hide_password=True)
        raise DatabaseUnavailable(f"cannot use the database {where}: its driver is not installed ({exc})") from None


def _make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        _create_private(sa.engine.make_url(url).database)
        # (hide_parameters: a statement's values, a tenant's data among them, stay out of errors and logs.)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True)

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # noqa: ANN001
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_AUTOCHECKPOINT_PAGES}")
            cursor.close()

        if _on_disk(engine.url.database):
            sa.event.listen(engine, "commit", lambda connection: _CHECKPOINTER.soon(connection.engine))
        return engine
    engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, hide_parameters=True)
    if engine.dialect.name == "postgresql":

        @sa.event.listens_for(engine, "connect")
        def _utc_session(dbapi_connection, _record):  # noqa: ANN001
            # Times the database computes (now(), clock_timestamp()) come back in UTC whatever the
            # server's own zone. (Set here, not as connect_args options: those would replace the
            # URL's own ``?options=``, a search_path say.) Committed: a rollback would undo it.
            cursor = dbapi_connection.cursor()
            cursor.execute("SET TIME ZONE 'UTC'")
            cursor.close()
            dbapi_connection.commit()

    return engine


def _on_disk(path: str | None) -> bool:
    return bool(path) and path != ":memory:" and not path.startswith("file:")


class _Checkpointer:
    """Copies SQLite's write-ahead log into the database file in a thread of
    its own, shortly after commits, rather than in the committing thread.

    A checkpoint writes every page of the log again, with an fsync: done by
    the connection whose commit filled the log (SQLite's way), it held up
    that writer, a pull's pages or an API request, tens of milliseconds.
    This thread's checkpoints are ``PASSIVE``: they never wait for a reader
    or a writer, and copy what they can. One thread serves every engine of
    the process; it holds them weakly and sleeps while nothing commits.
    """

    def __init__(self) -> None:
        self._due: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def soon(self, engine: sa.Engine) -> None:
        with self._wake:
            self._due.add(engine)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._due:
                    self._wake.wait()
            time.sleep(CHECKPOINT_DELAY)
            with self._wake:
                engines = list(self._due)
                self._due.clear()
            for engine in engines:
                checkpoint(engine)
            del engines  # (held no longer than the checkpoint: an engine let go is freed)


def checkpoint(engine: sa.Engine) -> None:
    """Copy what the write-ahead log of the engine's SQLite file holds into the
    file, as far as readers allow (``PASSIVE``). A file gone (a test's, a
    removed data directory) is not made again."""
    database = engine.url.database
    if not _on_disk(database) or not os.path.exists(database):
        return
    try:
        with engine.connect() as connection:  # (left without a commit: that would call for another checkpoint)
            connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sa.exc.SQLAlchemyError:
        # The next commit's checkpoint tries again; SQLite's own, past SQLITE_AUTOCHECKPOINT_PAGES, remains.
        log.debug("checkpointing %s failed", database, exc_info=True)


_CHECKPOINTER = _Checkpointer()
# A child forked while the thread held the lock would wait for it forever; its thread is not copied either.
os.register_at_fork(after_in_child=lambda: _CHECKPOINTER.__init__())


def _create_private(path: str | None) -> None:
    """Create a new SQLite file readable by its owner only (tenants' records
    are in it): SQLite creates its WAL and shared-memory files with the
    database file's permissions. An existing file is left as it is."""
    if not _on_disk(path):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:  # a directory missing or not ours: SQLite says so in its own words
        pass


def alembic_config(engine: sa.Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


#: Alembic's command context is global to the process: one upgrade at a time.
_MIGRATING = threading.Lock()


@contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    """On a SQLite file, processes upgrade one at a time (its DDL is not in
    the upgrade's transaction: two would both create the tables)."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    lock_path = f"{database}.migrate-lock"
    try:
        lock_file = open(lock_path, "a")  # noqa: SIM115 (closed below)
    except OSError as exc:
        where = engine.url.render_as_string(hide_password=True)
        directory = Path(database).parent
        reason = (f"its directory {directory} does not exist" if isinstance(exc, FileNotFoundError)
                  else f"cannot create {lock_path} ({exc.strerror or exc})")
        raise DatabaseUnavailable(f"cannot use the database {where} (HUB_DATABASE_URL): {reason}") from None
    with lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached, or its schema is newer than this hub's."""


def migrate(engine: sa.Engine, revision: str = "head") -> None:
    """Bring the database schema up to ``revision`` (in place, keeping data).

    On PostgreSQL, processes starting together (the API, workers, a CLI
    command) upgrade one at a time (``hub/migrations/env.py``).

    :raises DatabaseUnavailable: the database cannot be reached, or it was
        upgraded by a newer hub (a revision these migrations do not know).
    """
    where = engine.url.render_as_string(hide_password=True)
    try:
        with _MIGRATING, _sqlite_file_lock(engine):
            command.upgrade(alembic_config(engine), revision)
    except sa.exc.OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        raise DatabaseUnavailable(f"cannot use the database {where}: {reason}") from None
    except CommandError as exc:
        if "Can't locate revision" not in str(exc):
            raise
        raise DatabaseUnavailable(
            f"the database {where} was upgraded by a newer hub ({exc}): run that version, or restore a backup "
            f"taken before the upgrade") from None


@contextmanager
def session_scope(engine: sa.Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session
