"""Database engine, sessions and migrations.

SQLite (a file in the data directory) by default, PostgreSQL when
``HUB_DATABASE_URL`` says so. The schema is created and upgraded in place by
Alembic migrations (``hub/migrations``), run at startup.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.util import CommandError
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).parent / "migrations"


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
            cursor.close()

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


def _create_private(path: str | None) -> None:
    """Create a new SQLite file readable by its owner only (tenants' records
    are in it): SQLite creates its WAL and shared-memory files with the
    database file's permissions. An existing file is left as it is."""
    if not path or path == ":memory:" or path.startswith("file:"):
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
