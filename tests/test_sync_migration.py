"""Migrations 0002 to 0020 upgrade an existing 0001 database in place, keeping its
data, matches the models exactly, and downgrades cleanly; processes starting
together upgrade once; a database newer than the code is a clear error. On
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import Session, SQLModel, select

from hub.crypto import Cipher
from hub.db import DatabaseUnavailable, alembic_config, make_engine, migrate
from hub.models import (Connection, IdempotentCreate, Organization, SyncConfig, SyncConflict, SyncRecord, SyncRun,
                        WebhookEvent, WebhookEventState)
from hub.sync.store import record_hash

SYNC_TABLES = {"sync_configs", "sync_states", "sync_records", "sync_conflicts", "sync_runs", "sync_leases",
               "webhook_event_states", "pending_revocations"}


def tables(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


def test_migrations_upgrade_a_0001_database_in_place_and_back(database_url, tmp_path):
    engine = make_engine(database_url)
    migrate(engine, "0001")
    assert not SYNC_TABLES & tables(engine)
    cipher = Cipher.from_settings("test-secret-key", tmp_path)
    with Session(engine) as session:
        session.add(Organization(id="org1", name="acme"))
        session.commit()
    with engine.begin() as connection:  # the 0001 columns only: the models have grown since
        connection.execute(sa.text(
            "INSERT INTO connections (id, organization_id, provider, category, name, status, sync_enabled, "
            "sync_frequency_minutes, config, credentials_encrypted, credentials_version, created_at, updated_at) "
            "VALUES ('conn1', 'org1', 'example', 'productivity', 'Notes', 'connected', false, 60, '{}', :secret, 0, "
            "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"secret": cipher.encrypt_json({"api_key": "k"})})
        connection.execute(sa.text(
            "INSERT INTO webhook_events (id, provider, dedup_key, connection_id, type, action, payload, status, "
            "attempts, received_at) VALUES ('ev1', 'example', 'evt_1', 'conn1', 'note.updated', 'updated', "
            "'{\"id\": \"note_1\"}', 'pending', 0, CURRENT_TIMESTAMP)"))
    migrate(engine, "0003")
    with engine.begin() as connection:  # 0004 rebuilds webhook_events on SQLite: the states it owns stay
        connection.execute(sa.text("INSERT INTO webhook_event_states (event_id, next_attempt_at) "
                                   "VALUES ('ev1', '2026-01-01 00:00:00')"))

    migrate(engine)
    assert SYNC_TABLES <= tables(engine)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0021"
        assert compare_metadata(MigrationContext.configure(connection), SQLModel.metadata) == []
    with Session(engine) as session:
        connection = session.get(Connection, "conn1")
        assert connection.name == "Notes" and cipher.decrypt_json(connection.credentials_encrypted) == {"api_key": "k"}
        event = session.get(WebhookEvent, "ev1")
        assert event.payload == {"id": "note_1"} and event.raw is None
        assert session.get(WebhookEventState, "ev1").next_attempt_at.year == 2026
        # Deduplicated per connection: another connection's evt_1 is its own event, a second one at conn1 is not.
        session.add(WebhookEvent(id="ev2", provider="example", dedup_key="evt_1", connection_id="conn2", type="x"))
        session.commit()
        session.add(WebhookEvent(id="ev3", provider="example", dedup_key="evt_1", connection_id="conn1", type="x"))
        with pytest.raises(sa.exc.IntegrityError):
            session.commit()
        session.rollback()
        session.delete(session.get(WebhookEvent, "ev2"))  # the downgrade's per-provider constraint refuses it
        session.commit()
        session.add(SyncConfig(id="cfg1", organization_id="org1", connection_id="conn1", entity="notes",
                               mappings=[{"source": "title", "target": "subject"}]))
        session.add(SyncRecord(connection_id="conn1", entity="notes", remote_id="note_1", data={"id": "note_1"},
                               content_hash=record_hash({"id": "note_1"})))
        session.commit()
        record = session.exec(select(SyncRecord)).one()
        assert record.remote_id == "note_1"
        session.add(SyncConflict(connection_id="conn1", entity="notes", record_id=record.id, remote_id="note_1",
                                 policy="review"))
        session.commit()
    command.downgrade(alembic_config(engine), "0004")  # drops sent_change; the records' conflicts stay
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM sync_conflicts")).scalar() == 1
        assert "sent_change" not in {c["name"] for c in sa.inspect(connection).get_columns("sync_records")}
    migrate(engine)
    with Session(engine) as session:
        session.delete(session.get(Connection, "conn1"))
        session.commit()
        assert session.exec(select(SyncRecord)).all() == [] and session.get(SyncConfig, "cfg1") is None

    command.downgrade(alembic_config(engine), "0001")
    assert not SYNC_TABLES & tables(engine)
    with Session(engine) as session:
        assert session.get(Organization, "org1").name == "acme"
    engine.dispose()



def test_an_upgrade_across_0011_fills_in_how_each_connections_last_run_ended(database_url):
    """It left last_sync_status empty (beside a last_sync_at) until the connection's next run."""
    engine = make_engine(database_url)
    migrate(engine, "0010")
    with Session(engine) as session:
        session.add(Organization(id="org1", name="acme"))
        session.commit()
    with engine.begin() as connection:
        for connection_id in ("ok", "broken", "never"):
            connection.execute(sa.text(
                "INSERT INTO connections (id, organization_id, provider, category, name, status, sync_enabled, "
                "sync_frequency_minutes, config, credentials_encrypted, credentials_version, created_at, updated_at, "
                "last_sync_at) VALUES (:id, 'org1', 'example', 'productivity', :id, 'connected', false, 60, '{}', "
                "'x', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, :at)"),
                {"id": connection_id, "at": None if connection_id == "never" else datetime(2026, 3, 2, tzinfo=timezone.utc)})
    day = lambda n: datetime(2026, 3, n, tzinfo=timezone.utc)  # noqa: E731
    with Session(engine) as session:
        for run_id, connection_id, status, finished, error in (
                ("r1", "ok", "failed", day(1), "timed out"), ("r2", "ok", "succeeded", day(2), None),
                ("r3", "broken", "succeeded", day(1), None), ("r4", "broken", "failed", day(2), "provider said no"),
                ("r5", "broken", "running", None, None)):
            session.add(SyncRun(id=run_id, organization_id="org1", connection_id=connection_id, status=status,
                                finished_at=finished, error=error))
        session.commit()
    migrate(engine)
    with Session(engine) as session:
        ok, broken, never = (session.get(Connection, c) for c in ("ok", "broken", "never"))
        assert (ok.last_sync_status, ok.last_sync_run_id, ok.last_sync_error) == ("succeeded", "r2", None)
        assert (broken.last_sync_status, broken.last_sync_run_id, broken.last_sync_error) == (
            "failed", "r4", "provider said no")
        assert (never.last_sync_status, never.last_sync_run_id, never.last_sync_at) == (None, None, None)
    engine.dispose()


def test_a_database_upgraded_by_the_unreleased_0005_gets_its_column(database_url):
    """An early 0005 added create_sent, not sent_change: such a database is
    at 0005 without the column, and 0006 adds it."""
    engine = make_engine(database_url)
    migrate(engine, "0005")
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            connection.execute(sa.text("ALTER TABLE sync_records DROP COLUMN sent_change"))
        else:
            connection.execute(sa.text("ALTER TABLE sync_records DROP COLUMN sent_change"))
        connection.execute(sa.text("ALTER TABLE sync_records ADD COLUMN create_sent "
                                   + ("TEXT" if connection.dialect.name == "sqlite" else "JSON")))
        connection.execute(sa.text("INSERT INTO organizations (id, name, created_at) VALUES ('o', 'o', CURRENT_TIMESTAMP)"))
        connection.execute(sa.text(
            "INSERT INTO connections (id, organization_id, provider, category, name, status, sync_enabled, "
            "sync_frequency_minutes, credentials_version, created_at, updated_at, config) VALUES ('c', 'o', 'x', 'x', "
            "'x', 'connected', false, 60, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '{}')"))
        connection.execute(sa.text(
            "INSERT INTO sync_records (id, connection_id, entity, data, deleted, local_version, push_attempts, "
            "updated_at, create_sent) VALUES ('r', 'c', 'e', '{}', false, 1, 0, CURRENT_TIMESTAMP, "
            "'{\"key\": \"hub-r\", \"data\": {\"email\": \"a@b.c\"}}')"))
    migrate(engine)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("sync_records")}
    assert "sent_change" in columns
    with Session(engine) as session:
        assert session.get(SyncRecord, "r").sent_change == {"key": "hub-r", "data": {"email": "a@b.c"}}
    engine.dispose()


def _start_a_hub(url: str) -> None:
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()


def test_processes_starting_together_upgrade_once_and_a_newer_database_is_a_clear_error(database_url):
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=_start_a_hub, args=(database_url,)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(90)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    engine = make_engine(database_url)
    with engine.begin() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0021"
        connection.execute(sa.text("UPDATE alembic_version SET version_num = '0999'"))
    with pytest.raises(DatabaseUnavailable, match="upgraded by a newer hub"):
        migrate(engine)
    engine.dispose()


def test_an_unreachable_database_is_a_one_line_error():
    engine = make_engine("postgresql://nobody:secret@127.0.0.1:1/none")
    with pytest.raises(DatabaseUnavailable, match="cannot use the database") as raised:
        migrate(engine)
    assert "secret" not in str(raised.value)


@pytest.mark.postgres
def test_times_come_back_in_utc_whatever_the_postgresql_server_time_zone(pg_server, tmp_path):
    """A server (or database) in another time zone answered every time in
    it: the API's timestamps changed with the database, and a plugin's
    ``since`` was not the UTC the hookspec promises."""
    import psycopg
    from fastapi.testclient import TestClient

    from hub.api.main import create_app
    from hub.config import Settings
    from hub.plugins import PluginRegistry
    from hub.sync.leases import db_now
    from hub.testing import postgres
    from tests.conftest import make_org

    url = postgres.create_database(pg_server, "hub_kolkata")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER DATABASE hub_kolkata SET timezone TO 'Asia/Kolkata'")
        conn.execute("CREATE SCHEMA hub_own")
    # The URL's own options (the hub in a schema of its own) still apply.
    url += "?options=-csearch_path%3Dhub_own"
    app = create_app(Settings(data_dir=tmp_path, database_url=url, secret_key="k"), PluginRegistry())
    with TestClient(app):
        make_org(app)
        hub = app.state.hub
        with hub.session() as session:
            organization = session.exec(select(Organization)).one()
            assert organization.created_at.utcoffset().total_seconds() == 0
            assert db_now(session).utcoffset().total_seconds() == 0
            assert session.execute(sa.text("SHOW timezone")).scalar() == "UTC"
            assert session.execute(sa.text("SHOW search_path")).scalar() == "hub_own"
            assert session.execute(sa.text("SELECT count(*) FROM hub_own.organizations")).scalar() == 1


def test_listing_pages_read_an_index_in_their_order_not_a_sort_of_everything(database_url):
    """Each page of a connection's records (by id) and of its webhook events
    (newest first) is read from an index in that order: without one, every
    page of a 60,000-record entity sorted all of them (SQLite, about 40 ms a
    page); and PostgreSQL walked the primary key through the other tenants'
    records to the first page of a tenant holding most of the table."""
    from hub.services.webhooks import list_events
    from hub.sync import stored

    engine = _migrated_with_connections(database_url, *("small", "big"))
    with engine.begin() as db:  # the big tenant's ids after the small one's, as they are created
        db.execute(SyncRecord.__table__.insert(), [
            {"id": f"{i:08d}", "connection_id": "small" if i < 4000 else "big", "entity": "notes",
             "remote_id": str(i), "data": {}, "deleted": False, "local_version": 0, "push_attempts": 0,
             "updated_at": datetime(2026, 1, 1)} for i in range(12000)])
        if db.dialect.name == "postgresql":
            db.exec_driver_sql("ANALYZE")
    seen: list[tuple[str, object]] = []

    def note(_conn, _cursor, statement, parameters, _context, _many):
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    class Hub:  # what the listings use of one
        def session(self):
            return Session(engine)

    sa.event.listen(engine, "before_cursor_execute", note)
    config = SyncConfig(id="cfg1", connection_id="big", entity="notes")
    page, _next = stored.list_records(Hub(), Connection(id="big"), config, mapped=False, cursor=None, limit=50,
                                      include_deleted=False)
    assert [r["id"] for r in page] == [f"{i:08d}" for i in range(4000, 4050)]
    list_events(Hub(), "big", cursor=stored.encode_cursor({"r": "2026-01-01T00:00:00", "id": "x"}, "webhook-events:big"))
    sa.event.remove(engine, "before_cursor_execute", note)
    plans = {}
    with engine.connect() as db:
        explain = "EXPLAIN QUERY PLAN" if db.dialect.name == "sqlite" else "EXPLAIN"
        for statement, parameters in seen:
            plan = " | ".join(str(row[-1]) for row in db.exec_driver_sql(f"{explain} {statement}", parameters))
            plans["records" if "sync_records" in statement else "events"] = plan
    assert "ix_sync_records_list" in plans["records"] and "TEMP B-TREE" not in plans["records"], plans
    assert "sync_records_pkey" not in plans["records"] and "Sort" not in plans["records"], plans
    if engine.dialect.name == "sqlite":  # (PostgreSQL rightly scans a table with no events)
        assert "ix_webhook_events_connection_received" in plans["events"] and "TEMP B-TREE" not in plans["events"]
        # A later page starts at its cursor in the index, not at the newest event.
        assert "received_at<?" in plans["events"], plans


def test_a_connections_open_conflicts_and_last_webhook_are_read_from_indexes(database_url):
    """Every answer about connections counts their open conflicts and finds
    their newest webhook event: from indexes, not by reading every event and
    conflict kept (a GROUP BY took 90 ms for 300,000 events on PostgreSQL)."""
    from hub.services.connections import public

    engine = _migrated_with_connections(database_url, *("quiet", "busy"))
    with engine.begin() as db:
        db.execute(SyncRecord.__table__.insert(), [
            {"id": f"r{i:05d}", "connection_id": "busy", "entity": "notes", "remote_id": str(i), "data": {},
             "deleted": False, "local_version": 0, "push_attempts": 0, "updated_at": datetime(2026, 1, 1)}
            for i in range(3000)])
        db.execute(SyncConflict.__table__.insert(), [
            {"id": f"c{i:05d}", "connection_id": "busy", "entity": "notes", "record_id": f"r{i:05d}",
             "policy": "review", "status": "open" if i % 100 == 0 else "resolved",
             "created_at": datetime(2026, 1, 1)} for i in range(3000)])
        db.execute(WebhookEvent.__table__.insert(), [
            {"id": f"e{i:05d}", "provider": "example", "dedup_key": f"d{i}", "connection_id": "busy",
             "type": "note.updated", "action": "changed", "status": "processed", "attempts": 0,
             "received_at": datetime(2026, 1, 1, 0, i // 60 % 60, i % 60)} for i in range(3000)])
        if db.dialect.name == "postgresql":
            db.exec_driver_sql("ANALYZE")
    seen: list[tuple[str, object]] = []

    def note(_conn, _cursor, statement, parameters, _context, _many):
        if "webhook_events" in statement:
            seen.append((statement, parameters))

    class Hub:  # what public() uses of one
        def session(self):
            return Session(engine)

    with Session(engine) as session:
        rows = [session.get(Connection, "quiet"), session.get(Connection, "busy")]
    sa.event.listen(engine, "before_cursor_execute", note)
    quiet, busy = public(Hub(), rows)
    sa.event.remove(engine, "before_cursor_execute", note)
    assert (quiet.open_conflicts, quiet.last_webhook_at) == (0, None)
    assert busy.open_conflicts == 30 and busy.last_webhook_at == datetime(2026, 1, 1, 0, 49, 59, tzinfo=timezone.utc)
    [(statement, parameters)] = seen
    with engine.connect() as db:
        explain = "EXPLAIN QUERY PLAN" if db.dialect.name == "sqlite" else "EXPLAIN"
        plan = " | ".join(str(row[-1]) for row in db.exec_driver_sql(f"{explain} {statement}", parameters))
    assert "ix_webhook_events_connection_received" in plan and "ix_sync_conflicts_open" in plan, plan
    assert "Seq Scan on webhook_events" not in plan and "HashAggregate" not in plan, plan


def test_a_full_pass_ages_out_records_older_than_the_listing_window(database_url):
    """Where the provider lists only recent records (``listed_for_days``),
    the sweep after a full pass leaves older unseen records alone, on both
    databases' JSON (creation times with any offset, or none at all)."""
    from datetime import timedelta

    from hub.sync.store import sweep_unseen
    from hub.types import EntityField, EntitySchema

    engine = _migrated_with_connections(database_url, "shop")
    now = datetime(2026, 11, 27, 12, tzinfo=timezone.utc)
    east = timezone(timedelta(hours=13))  # (its local date is a day ahead of UTC's)
    created = {"aged": "2026-09-01T10:00:00-05:00", "edge": (now - timedelta(days=58)).isoformat(),
               "aged_east": (now - timedelta(days=60, hours=2)).astimezone(east).isoformat(),
               "young": "2026-11-20T23:30:00-05:00", "undated": None}
    with Session(engine) as session:
        for name, when in created.items():
            session.add(SyncRecord(connection_id="shop", entity="orders", remote_id=name,
                                   data={"id": name, "created_at": when} if when else {"id": name},
                                   last_seen_at=now - timedelta(days=1)))
        session.commit()
        schema = EntitySchema("orders", "Orders", (EntityField("id"), EntityField("created_at", "datetime")),
                              listed_for_days=60, created_field="created_at")
        counts = sweep_unseen(session, connection_id="shop", entity="orders", seen_since=now, now=now,
                              policy="provider_wins", schema=schema)
        session.commit()
        gone = {r.remote_id for r in session.exec(select(SyncRecord).where(SyncRecord.deleted.is_(True)))}
    assert counts.deleted == 3 and gone == {"edge", "young", "undated"}


def test_erasing_a_record_for_privacy_leaves_nothing_of_it(database_url):
    """Its stored copy, its conflicts and the bodies of its webhook events go,
    on both databases; the connection's other records stay (until all are erased)."""
    from hub.sync.store import erase

    engine = _migrated_with_connections(database_url, "shop")
    with Session(engine) as session:
        for remote_id in ("ada", "grace"):
            record = SyncRecord(connection_id="shop", entity="customers", remote_id=remote_id,
                                data={"email": f"{remote_id}@example.com"})
            session.add(record)
            session.flush()
            session.add(SyncConflict(connection_id="shop", entity="customers", record_id=record.id,
                                     remote_id=remote_id, policy="review", remote_data=record.data))
            session.add(WebhookEvent(provider="shopify", dedup_key=remote_id, connection_id="shop",
                                     type="customer.updated", entity="customers", record_id=remote_id,
                                     payload=record.data, raw=record.data))
        for key, made in (("k1", {"id": 7, "email": "ada@example.com"}), ("k2", {"id": 8})):
            session.add(IdempotentCreate(connection_id="shop", key=key, fingerprint="f", status="done", record=made))
        session.commit()
        now = datetime(2026, 11, 27, tzinfo=timezone.utc)
        erase(session, connection_id="shop", entity="customers", remote_id="7", now=now)  # (made through the API)
        assert [c.key for c in session.exec(select(IdempotentCreate))] == ["k2"]
        assert erase(session, connection_id="shop", entity="customers", remote_id="ada", now=now) == 1
        session.commit()
        kept = {r.remote_id: (r.deleted, r.data) for r in session.exec(select(SyncRecord))}
        assert kept == {"grace": (False, {"email": "grace@example.com"}), "ada": (True, {}), "7": (True, {})}
        assert [c.remote_id for c in session.exec(select(SyncConflict))] == ["grace"]
        bodies = {e.record_id: (e.raw, e.payload) for e in session.exec(select(WebhookEvent))}
        assert bodies["ada"] == (None, None) and bodies["grace"][0] == {"email": "grace@example.com"}
        assert erase(session, connection_id="shop", entity=None, remote_id=None, now=now) == 3
        session.commit()
        assert session.exec(select(SyncRecord)).all() == [] and session.exec(select(SyncConflict)).all() == []


def _migrated_with_connections(database_url: str, *connection_ids: str) -> sa.Engine:
    """A database migrated to the head, with an organization holding these connections."""
    engine = make_engine(database_url)
    migrate(engine)
    with Session(engine) as session:
        session.add(Organization(id="org1", name="acme"))
        session.flush()
        for connection_id in connection_ids:
            session.add(Connection(id=connection_id, organization_id="org1", provider="example", category="x",
                                   name=connection_id))
        session.commit()
    return engine
