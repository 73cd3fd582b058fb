"""The sync engine on the plugin contract: pages and cursors, incremental
watermarks, provider positions, deletions, crash resumption, faults, leases.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import tracemalloc
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import select

from hub import hookimpl
from hub.config import Settings
from hub.models import Connection, SyncConfig, SyncConflict, SyncLease, SyncRecord, SyncRun, SyncState, utcnow
from hub.sync import configs as config_service
from hub.sync.engine import SyncEngine, create_run
from hub.sync.leases import PLACE, Lease, new_owner, owner_alive
from hub.sync.scheduler import Scheduler, SyncService
from hub.sync.worker import LocalExecutor
from hub.sync.store import (apply_deletions, apply_records, entity_key, local_update, lock, sweep_unseen,
                            write_transaction)
from hub.types import EntitySchema, Page, ValidationFailed
from tests.sync_support import T0, Ledger, get_run, ledger_hub, make_connection, run, stored, stored_rows


@pytest.fixture
def ledger():
    return Ledger(items=250)


def push_both_ways(hub, connection) -> None:
    """Its items config pushes too, the hub's changes winning."""
    with hub.session() as session:
        config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == connection.id)).one()
        config.direction, config.conflict_policy = "both", "hub_wins"
        session.add(config)
        session.commit()


def push_now(hub, connection):
    """A push run of its items, executed here; the run as it ended."""
    new_run, _ = create_run(hub, connection, entity="items", direction="push")
    return run(SyncEngine(hub).execute(new_run.id))


async def sync(hub, connection, entity="items", full_refresh=False, **engine_options):
    new_run, _ = create_run(hub, connection, entity=entity, full_refresh=full_refresh)
    try:
        return await SyncEngine(hub, **engine_options).execute(new_run.id)
    finally:
        await hub.close()


def removed_while_disabled(hub, connection, ledger, item_id):
    """The items config disabled, ``item_id`` removed at the provider meanwhile
    (its deletion event ignored), then the config enabled again."""
    with hub.session() as session:
        config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == connection.id)).one()
    config_service.update_config(hub, connection, config.id, {"enabled": False})
    ledger.remove(item_id)
    config_service.update_config(hub, connection, config.id, {"enabled": True})


def state_of(hub, connection_id, entity="items") -> SyncState:
    with hub.session() as session:
        return session.exec(select(SyncState).where(SyncState.connection_id == connection_id,
                                                    SyncState.entity == entity)).one()


def test_full_pull_stores_every_record_once_and_records_the_run(hub, conn, ledger):
    result = run(sync(hub, conn))
    assert result.status == "succeeded", result.error
    assert (result.fetched, result.created, result.updated, result.deleted, result.pages) == (250, 250, 0, 0, 3)
    assert result.started_at and result.finished_at and result.direction == "pull"
    assert stored(hub, conn.id, "items") == ledger.items
    assert len(stored_rows(hub, conn.id, "items")) == 250
    state = state_of(hub, conn.id)
    assert state.pass_mode is None and state.cursor is None and state.last_full_pass_at is not None
    assert state.watermark.astimezone(timezone.utc) == datetime.fromisoformat(ledger.items["it_00249"]["updated_at"])
    assert [c[1] for c in ledger.calls] == [None, "100", "200"]


def test_incremental_pull_asks_for_changes_since_the_watermark(hub, conn, ledger):
    run(sync(hub, conn))
    watermark = datetime.fromisoformat(ledger.items["it_00249"]["updated_at"])
    ledger.put("it_00003", {"name": "changed"})
    ledger.put("it_00100", {"amount": 1})
    ledger.put("it_new", {"name": "new"})
    ledger.calls.clear()
    result = run(sync(hub, conn))
    assert ledger.calls == [("items", None, watermark)]
    assert (result.fetched, result.created, result.updated) == (4, 1, 2)
    assert stored(hub, conn.id, "items") == ledger.items


def test_a_failure_mid_pass_loses_nothing_and_the_next_run_resumes_at_the_committed_page(hub, conn, ledger):
    ledger.fail_on_call = 3
    failed = run(sync(hub, conn))
    assert failed.status == "failed" and failed.error_code == "provider_unavailable"
    assert "ledger is down" in failed.error
    assert state_of(hub, conn.id).cursor == "200" and state_of(hub, conn.id).pass_mode == "full"
    assert len(stored(hub, conn.id, "items")) == 200
    ledger.fail_on_call = None
    ledger.calls.clear()
    resumed = run(sync(hub, conn))
    assert resumed.status == "succeeded"
    assert [c[1] for c in ledger.calls] == ["200"]
    assert stored(hub, conn.id, "items") == ledger.items
    assert len(stored_rows(hub, conn.id, "items")) == 250


def test_a_saved_position_the_provider_refuses_starts_a_new_pass_instead_of_failing_for_ever(hub, conn, ledger):
    # Stripe's starting_after names the last customer of the committed page: deleted since,
    # Stripe answers 400 "No such customer" to every resume.
    ledger.fail_on_call = 3
    assert run(sync(hub, conn)).status == "failed" and state_of(hub, conn.id).cursor == "200"
    ledger.fail_on_call = None
    ledger.calls.clear()

    def refuse_the_saved_cursor(call):
        if ledger.calls[-1][1] == "200" and call == 1:
            raise ValidationFailed("No such customer: 'it_00199'")
    ledger.on_call = refuse_the_saved_cursor
    resumed = run(sync(hub, conn))
    assert resumed.status == "succeeded", resumed.error
    assert [c[1] for c in ledger.calls] == ["200", None, "100", "200"]
    assert stored(hub, conn.id, "items") == ledger.items and state_of(hub, conn.id).pass_mode is None


def test_a_full_refresh_starts_over_rather_than_resume_an_earlier_runs_pass(hub, conn, ledger):
    ledger.fail_on_call = 3
    assert run(sync(hub, conn)).status == "failed" and state_of(hub, conn.id).pass_mode == "full"
    ledger.fail_on_call = None
    ledger.calls.clear()
    refreshed = run(sync(hub, conn, full_refresh=True))
    assert refreshed.status == "succeeded" and refreshed.fetched == 250
    assert [c[1] for c in ledger.calls] == [None, "100", "200"]
    # An interrupted full refresh still resumes its own pass (the kill tests: test_sync_crash.py).
    ledger.fail_on_call = 2
    ledger.calls.clear()
    again, _ = create_run(hub, conn, entity="items", full_refresh=True)
    assert run(SyncEngine(hub).execute(again.id)).status == "failed"
    ledger.fail_on_call = None
    with hub.session() as session:
        session.get(SyncRun, again.id).status = "queued"
        session.commit()
    assert run(SyncEngine(hub).execute(again.id)).status == "succeeded"
    assert [c[1] for c in ledger.calls] == [None, "100", "100", "200"]

def test_a_page_whose_write_fails_is_fetched_again_by_the_next_run(hub, conn, ledger, monkeypatch):
    # The cursor after a page is committed with the page, never before it: a write that
    # fails (disk full) leaves the position at the page before, and nothing is skipped.
    import hub.sync.engine as engine_module

    real, writes = engine_module.apply_records, []

    def failing_second_write(*args, **kwargs):
        writes.append(kwargs["records"])
        if len(writes) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)
    monkeypatch.setattr(engine_module, "apply_records", failing_second_write)
    failed = run(sync(hub, conn, page_size=50))
    assert failed.status == "failed" and len(ledger.calls) >= 2
    # Pages share a transaction while the store keeps up; what was committed matches the position.
    committed = state_of(hub, conn.id).cursor
    assert len(stored(hub, conn.id, "items")) == int(committed or 0) < 100
    monkeypatch.setattr(engine_module, "apply_records", real)
    ledger.calls.clear()
    resumed = run(sync(hub, conn, page_size=50))
    assert resumed.status == "succeeded" and ledger.calls[0][1] == committed
    assert stored(hub, conn.id, "items") == ledger.items

def test_full_refresh_marks_records_the_provider_no_longer_lists_as_deleted(hub, conn, ledger):
    run(sync(hub, conn))
    for i in range(5):
        ledger.remove(f"it_{i:05d}")
    incremental = run(sync(hub, conn))
    assert incremental.deleted == 0
    full = run(sync(hub, conn, full_refresh=True))
    assert full.deleted == 5 and full.fetched == 245
    assert stored(hub, conn.id, "items") == ledger.items
    gone = [r for r in stored_rows(hub, conn.id, "items") if r.deleted]
    assert {r.remote_id for r in gone} == {f"it_{i:05d}" for i in range(5)}
    assert all(r.deleted_at is not None for r in gone)


def test_requests_made_at_once_while_none_is_queued_coalesce_into_one_run(hub, conn):
    """Each looked, found no queued run, and added one (a page's "sync now" clicked twice)."""
    import threading

    create_run(hub, conn, entity="items")  # (its config made)
    for _round in range(10):
        with hub.session() as session:
            session.execute(sa.delete(SyncRun.__table__))
            session.commit()
        together = threading.Barrier(8)
        made: list[str] = []

        def click():
            together.wait(10)
            made.append(create_run(hub, conn, entity="items", coalesce=True)[0].id)
        clicks = [threading.Thread(target=click) for _ in range(8)]
        for thread in clicks:
            thread.start()
        for thread in clicks:
            thread.join(30)
        assert len(made) == 8 and len(set(made)) == 1, made


def test_a_record_without_its_id_fails_the_pass_instead_of_deleting_what_is_stored(hub, conn, ledger):
    run(sync(hub, conn))
    del ledger.items["it_00120"]["id"]  # a plugin bug: records wrapped, or the id under another name
    failed = run(sync(hub, conn, full_refresh=True))
    assert failed.status == "failed" and failed.error_code == "provider_error"
    assert "without its id field 'id'" in failed.error
    assert failed.deleted == 0
    assert len(stored(hub, conn.id, "items")) == 250


def test_a_record_id_longer_than_the_store_holds_fails_the_pass_alike_on_every_database(hub, conn, ledger):
    """PostgreSQL failed on it (internal_error, the page's records lost) where SQLite stored it."""
    run(sync(hub, conn))
    ledger.put("it_" + "L" * 300, {"name": "an id too long"})
    failed = run(sync(hub, conn, full_refresh=True))
    assert failed.status == "failed" and failed.error_code == "provider_error", (failed.error_code, failed.error)
    assert "an id of 303 characters" in failed.error and "at most 255" in failed.error
    assert failed.deleted == 0
    assert len(stored(hub, conn.id, "items")) == 250


def test_a_deleted_id_longer_than_the_store_holds_is_passed_over_on_every_database(hub, conn, ledger):
    """Its tombstone failed the pass on PostgreSQL only (internal_error); no record has such an id."""
    ledger.remove("it_" + "L" * 300)
    ledger.remove("it_00003")
    done = run(sync(hub, conn, entity="changes"))
    assert done.status == "succeeded", (done.error_code, done.error)
    assert stored(hub, conn.id, "changes", include_deleted=True).keys() == \
        {f"it_{i:05d}" for i in range(250)}


def test_a_record_nested_deeper_than_the_api_writes_out_fails_the_pass(hub, conn, ledger):
    """Stored, it made every listing of the entity's records a 500."""
    run(sync(hub, conn))
    details: dict = {}
    for _ in range(300):
        details = {"a": details}
    ledger.put("it_00007", {"details": details})
    failed = run(sync(hub, conn))
    assert failed.status == "failed" and failed.error_code == "provider_error", (failed.error_code, failed.error)
    assert "nested more than 250 levels deep" in failed.error
    assert "details" not in stored(hub, conn.id, "items")["it_00007"]


def test_a_page_that_fails_to_store_lets_go_of_the_write_lock_at_once(hub, conn, ledger, monkeypatch):
    """The failed transaction stayed open (SQLite's write lock held) until the
    writer was closed through the thread pool, which writers waiting for that
    lock could fill: every write of the hub then waited 30 s and failed."""
    import sqlite3

    from hub.sync import engine as engine_module

    if hub.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")
    run(sync(hub, conn))
    del ledger.items["it_00120"]["id"]  # on the second page: the first is written in the same transaction
    lock_when_closed: list[str] = []
    close = engine_module._PageWriter.close

    def close_seeing_the_lock(writer):
        other = sqlite3.connect(hub.engine.url.database, timeout=0.2)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.rollback()
            lock_when_closed.append("free")
        except sqlite3.OperationalError:
            lock_when_closed.append("held")
        finally:
            other.close()
        return close(writer)
    monkeypatch.setattr(engine_module._PageWriter, "close", close_seeing_the_lock)
    failed = run(sync(hub, conn, full_refresh=True))
    assert failed.status == "failed" and "without its id field" in failed.error
    assert lock_when_closed == ["free"]


def test_cursors_going_round_in_a_cycle_fail_the_pass_instead_of_paging_forever(hub, conn, ledger):
    ledger.next_cursors = {None: "100", "100": "200", "200": "50", "50": "100"}
    failed = run(sync(hub, conn))
    assert failed.status == "failed" and failed.error_code == "provider_error"
    assert "again in one pass: its pages go round in a cycle" in failed.error
    assert len(ledger.calls) < 12
    ledger.next_cursors = dict.fromkeys((None, "50", "100", "200"), "100")  # the same cursor at once
    assert run(sync(hub, conn)).error_code == "provider_error"


def test_a_first_pull_inserting_pages_first_absorbs_records_already_stored(hub, conn, ledger):
    # Page 1 is all new, so page 2 is inserted before any lookup; three of its
    # records were stored already (a webhook came first): unchanged, older, deleted.
    schema = hub.provider("ledger").schema("items")
    older = dict(ledger.items["it_00160"], name="before", updated_at=(T0 - timedelta(days=1)).isoformat())
    with write_transaction(hub, entity_key(conn.id, "items")) as session:
        apply_records(session, connection_id=conn.id, schema=schema, policy="provider_wins",
                      records=[ledger.items["it_00150"], older], now=utcnow())
        apply_deletions(session, connection_id=conn.id, entity="items", policy="provider_wins",
                        remote_ids=["it_00170"], now=utcnow())
    result = run(sync(hub, conn))
    assert result.status == "succeeded", result.error
    assert (result.fetched, result.created, result.updated, result.deleted) == (250, 247, 2, 0)
    assert stored(hub, conn.id, "items") == ledger.items
    assert len(stored_rows(hub, conn.id, "items")) == 250


def test_a_page_larger_than_one_insert_statement_is_stored_whole_with_its_versions(hub, conn):
    # SQLite takes at most 1,000 new rows per INSERT: a page of 2,345 is split, and stored
    # alike whether it is inserted first (a first pull) or looked up first.
    schema = hub.provider("ledger").schema("items")
    records = [{"id": f"big_{i:05d}", "name": f"big {i}", "updated_at": (T0 + timedelta(seconds=i)).isoformat()}
               for i in range(2345)]
    now = utcnow()
    with write_transaction(hub, entity_key(conn.id, "items")) as session:
        first = apply_records(session, connection_id=conn.id, schema=schema, policy="provider_wins",
                              records=records[:1200], now=now, expect_new=True)
        second = apply_records(session, connection_id=conn.id, schema=schema, policy="provider_wins",
                               records=records[1000:], now=now)
    assert (first.created, second.created, second.updated) == (1200, 1145, 0)
    assert first.newest == T0 + timedelta(seconds=1199) and second.newest == T0 + timedelta(seconds=2344)
    rows = {r.remote_id: r for r in stored_rows(hub, conn.id, "items")}
    assert {key: row.data for key, row in rows.items()} == {r["id"]: r for r in records}
    assert len({row.id for row in rows.values()}) == 2345
    last = rows["big_02344"]
    assert (last.remote_updated_at, last.first_seen_at, last.deleted) == \
        (T0 + timedelta(seconds=2344), now, False)
    # Stored as the ORM stores a time, so that the database compares them alike.
    with hub.session() as session:
        same_time = session.execute(sa.select(sa.func.count()).select_from(SyncRecord).where(
            SyncRecord.first_seen_at == now, SyncRecord.remote_updated_at >= T0 + timedelta(seconds=1000))).scalar()
    assert same_time == 1345


def test_a_sqlite_built_with_fewer_parameters_gets_smaller_insert_statements(hub, conn):
    # SQLite before 3.32 (and some builds) allow 999 parameters per statement, not 32,766.
    if not hub.settings.database_url.startswith("sqlite"):
        pytest.skip("an SQLite limit")
    schema = hub.provider("ledger").schema("items")
    records = [{"id": f"few_{i:04d}", "name": f"few {i}"} for i in range(1200)]
    with write_transaction(hub, entity_key(conn.id, "items")) as session:
        driver = session.connection().connection.dbapi_connection
        driver.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)
        counts = apply_records(session, connection_id=conn.id, schema=schema, policy="provider_wins",
                               records=records, now=utcnow(), expect_new=True)
    assert counts.created == 1200
    assert stored(hub, conn.id, "items") == {r["id"]: r for r in records}


def test_versions_in_a_providers_local_time_keep_their_order(hub, conn):
    # Shopify writes updated_at in the shop's time zone. 12:00+02:00 is 10:00 UTC: a change
    # at 11:00 UTC is newer and must win, on SQLite (which keeps no offset) as on PostgreSQL.
    schema = hub.provider("ledger").schema("items")

    def apply(record):
        with write_transaction(hub, entity_key(conn.id, "items")) as session:
            return apply_records(session, connection_id=conn.id, schema=schema, policy="provider_wins",
                                 records=[record], now=utcnow())

    assert apply({"id": "zoned", "name": "first", "updated_at": "2026-01-01T12:00:00+02:00"}).created == 1
    [row] = stored_rows(hub, conn.id, "items")
    assert row.remote_updated_at == datetime(2026, 1, 1, 10, tzinfo=timezone.utc)
    assert apply({"id": "zoned", "name": "later", "updated_at": "2026-01-01T11:00:00Z"}).updated == 1
    assert apply({"id": "zoned", "name": "earlier", "updated_at": "2026-01-01T06:30:00-04:00"}).updated == 0
    assert stored(hub, conn.id, "items")["zoned"]["name"] == "later"


def test_a_provider_version_holding_the_tenants_change_is_no_conflict(hub, conn):
    # The provider's webhook for the hub's own push can arrive while the push is on its way.
    schema = hub.provider("ledger").schema("items")
    moment = datetime(2026, 3, 1, 9, tzinfo=timezone.utc)

    def apply(name, minutes):
        with write_transaction(hub, entity_key(conn.id, "items")) as session:
            return apply_records(session, connection_id=conn.id, schema=schema, policy="review", now=utcnow(),
                                 records=[{"id": "it_1", "name": name, "updated_at": (moment + timedelta(
                                     minutes=minutes)).isoformat()}])

    apply("provider", 0)
    with write_transaction(hub, entity_key(conn.id, "items")) as session:
        [row] = session.exec(select(SyncRecord).where(SyncRecord.connection_id == conn.id)).all()
        local_update(session, row, {"name": "tenant"}, utcnow())
    echo = apply("tenant", 1)
    assert (echo.updated, echo.conflicts) == (1, 0)
    [row] = stored_rows(hub, conn.id, "items")
    assert (row.data["name"], row.local_data, row.push_status) == ("tenant", {"name": "tenant"}, "pending")
    other = apply("someone else", 2)
    assert (other.updated, other.conflicts) == (0, 1)
    [row] = stored_rows(hub, conn.id, "items")
    assert (row.data["name"], row.push_status) == ("someone else", "conflict")
    with hub.session() as session:
        [conflict] = session.exec(select(SyncConflict)).all()
    assert conflict.local_data == {"op": "update", "data": {"name": "tenant"}}

def test_a_deletion_wins_over_an_update_of_the_same_second_delivered_after_it(hub, conn):
    # Providers date changes to the second: an update and the deletion of the same second
    # may arrive in either order. A record swept for not being listed comes back unchanged.
    schema = hub.provider("ledger").schema("items")
    moment = datetime(2026, 3, 1, 9, tzinfo=timezone.utc)

    def apply(record=None, deleted=None, version=None, sweep=False):
        with write_transaction(hub, entity_key(conn.id, "items")) as session:
            if deleted:
                return apply_deletions(session, connection_id=conn.id, entity="items", policy="provider_wins",
                                       remote_ids=[deleted], now=utcnow(), version=version)
            if sweep:
                return sweep_unseen(session, connection_id=conn.id, entity="items", seen_since=utcnow(),
                                    now=utcnow(), policy="provider_wins")
            return apply_records(session, connection_id=conn.id, schema=schema, policy="provider_wins",
                                 records=[record], now=utcnow())

    def item(key, name, when):
        return {"id": key, "name": name, "updated_at": when.isoformat()}

    apply(item("gone", "first", moment - timedelta(minutes=1)))
    assert apply(deleted="gone", version=moment).deleted == 1
    assert apply(item("gone", "renamed", moment)).updated == 0
    assert apply(deleted="never-seen", version=moment).deleted == 0  # a tombstone
    assert apply(item("never-seen", "created", moment)).created + apply(item("never-seen", "x", moment)).updated == 0
    assert apply(item("gone", "recreated", moment + timedelta(seconds=1))).updated == 1  # later: it exists again
    apply(item("listed", "kept", moment))
    assert apply(sweep=True).deleted == 2
    assert apply(item("listed", "kept", moment)).updated == 1
    rows = {row.remote_id: row for row in stored_rows(hub, conn.id, "items")}
    assert {key: (row.deleted, row.data.get("name")) for key, row in rows.items()} == {
        "gone": (True, "recreated"), "never-seen": (True, None), "listed": (False, "kept")}


def test_an_incremental_pass_misses_nothing_from_a_provider_east_of_utc(hub, conn, ledger):
    # The provider writes its times at +02:00: the watermark is the newest of them, in UTC.
    ledger.clock = ledger.clock.astimezone(timezone(timedelta(hours=2)))
    ledger.put("it_00001", {"name": "one"})
    assert run(sync(hub, conn)).status == "succeeded"
    assert state_of(hub, conn.id).watermark == T0 + timedelta(seconds=251)
    ledger.put("it_00002", {"name": "two"})
    second = run(sync(hub, conn))
    assert second.status == "succeeded" and second.fetched >= 1
    assert stored(hub, conn.id, "items") == ledger.items


def test_deleted_ids_and_the_providers_watermark_drive_the_next_pass(hub, conn, ledger):
    first = run(sync(hub, conn, entity="changes"))
    assert first.status == "succeeded" and stored(hub, conn.id, "changes") == ledger.items
    position = str(len(ledger.log))
    assert state_of(hub, conn.id, "changes").start_cursor == position
    ledger.remove("it_00007")
    ledger.put("it_00008", {"name": "eight"})
    ledger.calls.clear()
    second = run(sync(hub, conn, entity="changes"))
    assert ledger.calls == [("changes", position, None)]
    assert (second.fetched, second.updated, second.deleted) == (1, 1, 1)
    assert stored(hub, conn.id, "changes") == ledger.items


def test_records_changed_behind_the_cursor_during_a_pass_are_fetched_next_time(hub, conn, ledger):
    def change_mid_pass(call: int) -> None:
        if call == 2:
            ledger.clock = datetime.now(timezone.utc)
            ledger.put("it_00000", {"name": "changed behind the cursor"})
            ledger.put("it_00240", {"name": "changed ahead of the cursor"})

    ledger.on_call = change_mid_pass
    run(sync(hub, conn))
    assert stored(hub, conn.id, "items")["it_00000"]["name"] == "item 0"
    ledger.on_call = None
    run(sync(hub, conn))
    assert stored(hub, conn.id, "items") == ledger.items


def test_a_write_waiting_on_the_event_loop_waits_for_a_page_not_for_the_whole_pull(hub, conn, ledger):
    """An API handler or a token refresh may write from the event loop while a
    pull of the same process holds the entity's write lock (on SQLite, any
    write waits for it). The pull's idle transaction is committed by its own
    thread, so the loop waits a page at most; before, the loop waited for a
    commit only the loop could start (30 s, then "database is locked" on
    SQLite; forever on PostgreSQL)."""
    waited: list[float] = []

    def write_from_the_loop(call: int) -> None:
        if call != 2:
            return
        started = time.monotonic()
        with hub.session() as session:
            if session.connection().dialect.name == "postgresql":
                session.execute(sa.text("SET LOCAL lock_timeout = '20s'"))
            lock(session, entity_key(conn.id, "items"))
            session.execute(sa.update(Connection).where(Connection.id == conn.id).values(last_error="seen"))
            session.commit()
        waited.append(time.monotonic() - started)

    ledger.on_call = write_from_the_loop
    finished = run(sync(hub, conn))
    assert finished.status == "succeeded" and finished.created == 250
    assert len(waited) == 1 and waited[0] < 15, waited  # (not the 20 s lock timeout, nor SQLite's 30 s)
    with hub.session() as session:
        assert session.get(Connection, conn.id).last_error == "seen"
    assert stored(hub, conn.id, "items") == ledger.items


def test_deleting_the_config_during_a_pull_stops_the_run_and_leaves_no_records(hub, conn, ledger):
    from hub.sync import configs as config_service

    def delete_the_config(call: int) -> None:
        if call == 2:
            [config] = config_service.list_configs(hub, conn.id)
            config_service.delete_config(hub, conn.id, config.id)

    ledger.on_call = delete_the_config
    stopped = run(sync(hub, conn))
    assert stopped.status == "failed" and stopped.error_code == "sync_config_not_found", stopped.error
    assert config_service.list_configs(hub, conn.id) == []
    assert stored_rows(hub, conn.id, "items") == []


class ThreeEntities(Ledger):
    """The ledger with a third entity, ``later`` (a change log as ``changes``), synced after ``items``."""

    @hookimpl
    def entity_schemas(self):
        schemas = Ledger.entity_schemas(self)
        return [*schemas, EntitySchema("later", "Later", schemas[1].fields, updated_field="updated_at")]


def test_a_config_deleted_while_the_run_syncs_another_entity_is_skipped_and_the_run_goes_on(settings):
    """The run loaded its configs when it began: creating the state of one
    deleted since failed the run with internal_error (a foreign key on
    sync_states), and the configs after it were not synced."""
    ledger = ThreeEntities(items=5)
    hub = ledger_hub(settings, ledger)
    conn = make_connection(hub, "ledger", {"api_key": "k"})
    configs = {c.entity: c for c in config_service.ensure_configs(hub, conn, None)}
    assert sorted(configs) == ["changes", "items", "later"]

    def delete_items(call: int) -> None:
        if call == 1:  # the changes pass (the first), as it begins: the items config is deleted
            config_service.delete_config(hub, conn.id, configs["items"].id)

    ledger.on_call = delete_items
    new_run, _ = create_run(hub, conn)
    finished = run(SyncEngine(hub).execute(new_run.id))
    assert finished.status == "succeeded", (finished.error_code, finished.error)
    assert finished.error_code is None and finished.error == "skipped: the items sync config was deleted during the run"
    assert [entity for entity, _cursor, _since in ledger.calls] == ["changes", "later"]
    assert len(stored(hub, conn.id, "changes")) == len(stored(hub, conn.id, "later")) == 5
    assert stored_rows(hub, conn.id, "items") == []
    with hub.session() as session:
        assert session.get(SyncState, configs["items"].id) is None
    run(hub.close())


def test_memory_stays_bounded_by_a_page_whatever_the_number_of_records(tmp_path):
    def peak(items: int, database: str) -> int:
        ledger = Ledger()
        ledger.parsed_pages = True  # pages of new objects, as parsed responses are: kept ones would count
        for i in range(items):
            ledger.put(f"it_{i:05d}", {"name": f"item {i}", "details": {"blob": f"{i:04d}" * 250}})
        hub = ledger_hub(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / database}",
                                  secret_key="test-secret-key"), ledger)
        connection = make_connection(hub, "ledger", {"api_key": "k"})
        tracemalloc.start()
        try:
            result = run(sync(hub, connection))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            assert result.fetched == items

    peak(100, "warm-up.db")
    small, large = peak(300, "small.db"), peak(3000, "large.db")
    print(f"peak traced memory: 300 records {small / 1e6:.2f} MB, 3000 records {large / 1e6:.2f} MB")
    # 3000 records of 1 kB would be over 3 MB if the engine kept them.
    assert large < small + 1_000_000, (small, large)


def test_only_one_run_of_a_connection_at_a_time(hub, conn, ledger):
    ledger.on_call = lambda _call: None

    async def both():
        first, _ = create_run(hub, conn)
        second, _ = create_run(hub, conn, full_refresh=True)
        engine = SyncEngine(hub, page_size=50)
        try:
            return await asyncio.gather(engine.execute(first.id), engine.execute(second.id))
        finally:
            await hub.close()

    one, two = run(both())
    assert one.status == two.status == "succeeded"
    ordered = sorted([one, two], key=lambda r: r.started_at)
    assert ordered[1].started_at >= ordered[0].finished_at
    with hub.session() as session:
        assert session.exec(select(SyncLease)).all() == []


def test_a_lease_left_by_a_dead_process_is_taken_over_and_a_live_one_is_waited_for(hub, conn):
    with hub.session() as session:
        session.add(SyncLease(connection_id=conn.id, owner=f"{PLACE}:{2**22 + 12345}:dead",
                              expires_at=utcnow() + timedelta(minutes=5)))
        session.commit()
    assert run(sync(hub, conn)).status == "succeeded"
    with hub.session() as session:
        session.add(SyncLease(connection_id=conn.id, owner=f"{PLACE}:{os.getppid()}:alive",
                              expires_at=utcnow() + timedelta(minutes=5)))
        session.commit()
    busy = run(sync(hub, conn, lease_wait=0.3))
    assert busy.status == "failed" and busy.error_code == "sync_busy"


def test_an_interrupted_run_is_requeued_and_resumed_by_the_scheduler(hub, conn, ledger):
    ledger.fail_on_call = 2
    run(sync(hub, conn))
    ledger.fail_on_call = None
    interrupted, _ = create_run(hub, conn)
    with hub.session() as session:
        row = session.get(SyncRun, interrupted.id)
        row.status, row.owner = "running", f"{PLACE}:{2**22 + 12345}:gone"
        session.add(row)
        session.commit()

    async def recover():
        service = SyncService(hub, LocalExecutor(hub))
        submitted = await Scheduler(service, interval=60).recover()
        await service.executor.wait(timeout=20)
        await hub.close()
        return submitted

    assert run(recover()) == [interrupted.id]
    finished = get_run(hub, interrupted.id)
    assert finished.status == "succeeded" and finished.fetched == 150
    assert stored(hub, conn.id, "items") == ledger.items


def test_tombstones_older_than_the_retention_are_purged_by_the_scheduler(hub, conn, ledger):
    run(sync(hub, conn))
    for i in range(5):
        ledger.remove(f"it_{i:05d}")
    assert run(sync(hub, conn, full_refresh=True)).deleted == 5
    old = {f"it_{i:05d}" for i in range(3)}
    with hub.session() as session:
        for row in session.exec(select(SyncRecord).where(SyncRecord.remote_id.in_(old))):
            row.deleted_at = utcnow() - timedelta(days=hub.settings.sync_tombstone_days + 1)
            session.add(row)
        session.commit()
    scheduler = Scheduler(SyncService(hub, LocalExecutor(hub)), interval=60)
    assert scheduler.purge(utcnow()) == 3
    remaining = {r.remote_id for r in stored_rows(hub, conn.id, "items") if r.deleted}
    assert remaining == {"it_00003", "it_00004"}
    assert stored(hub, conn.id, "items") == ledger.items
    run(hub.close())


def test_old_sync_logs_and_applied_webhook_events_are_purged_by_the_scheduler(hub, conn, ledger, monkeypatch):
    """Every delivery (with its body) and every run was kept for good: a busy
    hub's database grew without end, customer data in it."""
    from hub.models import WebhookEvent, WebhookEventState
    from hub.sync import scheduler as scheduler_module

    monkeypatch.setattr(scheduler_module, "PURGE_BATCH", 2)  # several transactions
    runs = [run(sync(hub, conn)) for _ in range(4)]
    now = utcnow()
    old = now - timedelta(days=hub.settings.sync_log_retention_days + 1)
    with hub.session() as session:
        for finished in runs[:3]:
            session.execute(sa.update(SyncRun).where(SyncRun.id == finished.id).values(finished_at=old))
        queued = SyncRun(organization_id=conn.organization_id, connection_id=conn.id, entity="items",
                         direction="pull", trigger="manual", queued_at=old)
        session.add(queued)
        aged = now - timedelta(days=hub.settings.webhook_retention_days + 1)
        events = {}
        for name, status, received, processed in [
                ("applied", "processed", aged, aged), ("ignored", "ignored", aged, aged),
                ("failed", "failed", aged, None), ("pending", "pending", aged, None),
                ("recent", "processed", now, now), ("retried", "processed", aged, now)]:  # failed for weeks
            event = WebhookEvent(provider="ledger", dedup_key=name, connection_id=conn.id, type="item.updated",
                                 status=status, received_at=received, processed_at=processed,
                                 raw={"body": "customer data"})
            session.add(event)
            session.flush()
            session.add(WebhookEventState(event_id=event.id))
            events[name] = event.id
        session.commit()
    Scheduler(SyncService(hub, LocalExecutor(hub)), interval=60).purge(now)
    with hub.session() as session:
        assert set(session.exec(select(SyncRun.id))) == {runs[3].id, queued.id}
        assert set(session.exec(select(WebhookEvent.dedup_key))) == {"failed", "pending", "recent", "retried"}
        assert set(session.exec(select(WebhookEventState.event_id))) == {
            events["failed"], events["pending"], events["recent"], events["retried"]}
    keep_everything = hub.settings.model_copy(update={"sync_log_retention_days": 0, "webhook_retention_days": 0})
    monkeypatch.setattr(hub, "settings", keep_everything)
    Scheduler(SyncService(hub, LocalExecutor(hub)), interval=60).purge(now + timedelta(days=1000))
    with hub.session() as session:
        assert len(session.exec(select(SyncRun.id)).all()) == 2
    run(hub.close())


def test_hub_sync_says_so_when_the_connection_is_deleted_while_it_runs(hub, conn, ledger, monkeypatch):
    import threading

    from click.testing import CliRunner

    from hub import cli
    from hub.services.connections import delete_connection

    def delete_the_connection(call):
        if call == 2:  # as DELETE /connections/{id} does, from another thread
            deleting = threading.Thread(target=lambda: asyncio.run(
                delete_connection(hub, conn.organization_id, conn.id)))
            deleting.start()
            deleting.join(30)
    ledger.on_call = delete_the_connection
    monkeypatch.setattr(cli, "_hub", lambda: hub)
    result = CliRunner().invoke(cli.main, ["sync", conn.id, "--entity", "items"])
    assert result.exit_code == 1, result.output
    assert "its connection was deleted while it ran" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_hub_sync_resumes_an_interrupted_run_of_another_entity_first(hub, conn, ledger, monkeypatch):
    """Killed with --entity, a run was resumed only by `hub sync --entity`
    of the same entity: `hub sync` alone left it running in the logs."""
    from click.testing import CliRunner

    from hub import cli

    killed, _new = create_run(hub, conn, entity="items", trigger="cli")
    with hub.session() as session:  # marked running by a process that is gone (no lease)
        row = session.get(SyncRun, killed.id)
        row.status, row.owner = "running", "gone-host:1:99999999"
        session.add(row)
        session.commit()
    monkeypatch.setattr(cli, "_hub", lambda: hub)
    result = CliRunner().invoke(cli.main, ["sync", conn.id])
    assert result.exit_code == 0, result.output
    assert f"resuming interrupted run {killed.id}" in result.output
    with hub.session() as session:
        done = session.exec(select(SyncRun).where(SyncRun.connection_id == conn.id)).all()
    assert len(done) == 2 and {r.status for r in done} == {"succeeded"}, [(r.entity, r.status) for r in done]
    assert stored(hub, conn.id, "items") == ledger.items


class Recorder:
    """An executor that executes nothing: it records the runs submitted."""

    def __init__(self):
        self.runs = []

    def knows(self, run_id):
        return False

    async def submit(self, run):
        self.runs.append(run.id)


def scheduler_tick(hub, now, executor=None):
    """One tick of a scheduler at ``now``: the runs submitted (to ``executor``, a Recorder by default)."""
    async def tick():
        scheduler = Scheduler(SyncService(hub, executor or Recorder()), interval=60)
        try:
            return await scheduler.tick(now)
        finally:
            await scheduler.stop()
            await hub.close()
    return run(tick())


def scheduled_runs(hub, connection_id):
    with hub.session() as session:
        return session.exec(select(SyncRun).where(SyncRun.connection_id == connection_id,
                                                  SyncRun.trigger == "schedule")).all()


def test_a_connection_whose_every_config_has_its_own_schedule_gets_no_run_of_its_own(hub, conn):
    """Its scheduled run leaves out the configs with their own schedule: with
    every one, it found none and failed (sync_config_not_found) every
    sync_frequency_minutes."""
    for config in config_service.ensure_configs(hub, conn, None):
        config_service.update_config(hub, conn, config.id, {"schedule_minutes": 30})
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == conn.id)
                        .values(sync_enabled=True, sync_frequency_minutes=60, next_sync_at=None))
        session.commit()
    now = utcnow() + timedelta(minutes=31)
    submitted = scheduler_tick(hub, now)
    runs = scheduled_runs(hub, conn.id)
    assert [r.entity for r in runs if r.entity is None] == [] and len(submitted) == len(runs) == 2
    with hub.session() as session:
        assert session.get(Connection, conn.id).next_sync_at == now + timedelta(minutes=60)  # moved on all the same
    # One config following the connection's schedule again: the connection's run is back, for it.
    [items] = [c for c in config_service.list_configs(hub, conn.id) if c.entity == "items"]
    config_service.update_config(hub, conn, items.id, {"schedule_minutes": None})
    scheduler_tick(hub, now + timedelta(minutes=61))
    assert [r.entity for r in scheduled_runs(hub, conn.id) if r.entity is None] == [None]


def test_after_downtime_each_schedule_keeps_its_phase_and_catches_up_once(hub, conn):
    """Claimed, a schedule moved to now + a period: after downtime every overdue
    connection ran in step from then on, whenever each was due."""
    now = utcnow()
    config = config_service.create_config(hub, conn, entity="items", schedule_minutes=30)
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == conn.id).values(
            sync_enabled=True, sync_frequency_minutes=60, next_sync_at=now - timedelta(minutes=150)))
        session.execute(sa.update(SyncConfig).where(SyncConfig.id == config.id).values(
            next_sync_at=now - timedelta(minutes=100)))
        session.commit()
    config_service.create_config(hub, conn, entity="changes")  # (follows the connection's schedule)
    submitted = scheduler_tick(hub, now)
    assert len(submitted) == 2 and len(scheduled_runs(hub, conn.id)) == 2  # one run each, not one per period
    with hub.session() as session:
        assert session.get(Connection, conn.id).next_sync_at == now + timedelta(minutes=30)  # due at :30 as before
        assert session.get(SyncConfig, config.id).next_sync_at == now + timedelta(minutes=20)
    scheduler_tick(hub, now + timedelta(minutes=19))
    assert len(scheduled_runs(hub, conn.id)) == 2


async def until(condition, what: str, timeout: float = 30.0) -> None:
    """Wait on the event loop until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        await asyncio.sleep(0.02)


class SlowLedger(Ledger):
    """A ledger whose lists take a moment, noting how many runs show running
    meanwhile, once the ``runs`` expected are all made (the first may start
    while the scheduler still makes the others)."""

    hub = None
    runs = 0
    seen_running = seen_queued = 0

    @hookimpl
    async def list_records(self, entity, cursor, page_size, since):
        deadline = time.monotonic() + 30
        while True:
            with self.hub.session() as session:
                made = len(session.exec(select(SyncRun.id)).all())
                running = len(session.exec(select(SyncRun.id).where(SyncRun.status == "running")).all())
                queued = len(session.exec(select(SyncRun.id).where(SyncRun.status == "queued")).all())
            if made >= self.runs or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        SlowLedger.seen_running = max(SlowLedger.seen_running, running)
        SlowLedger.seen_queued = max(SlowLedger.seen_queued, queued)
        await asyncio.sleep(0.05)
        return Page(records=[], next_cursor=None)


def test_overdue_runs_of_many_connections_execute_a_few_at_a_time_the_others_queued(settings):
    """The embedded executor started every run submitted at once: after
    downtime, every overdue connection synced together."""
    ledger = SlowLedger()
    hub = SlowLedger.hub = ledger_hub(settings.model_copy(update={"sync_local_concurrency": 2}), ledger)
    SlowLedger.seen_running = SlowLedger.seen_queued = 0
    SlowLedger.runs = 6
    past = utcnow() - timedelta(hours=3)
    for i in range(6):
        make_connection(hub, "ledger", {"api_key": "k"}, org_name=f"org{i}", sync_enabled=True,
                        next_sync_at=past + timedelta(minutes=i))
    executor = LocalExecutor(hub)
    assert executor.concurrency == 2

    async def tick():
        scheduler = Scheduler(SyncService(hub, executor), interval=60)
        submitted = await scheduler.tick()
        await executor.wait(timeout=60)
        await scheduler.stop()
        await hub.close()
        return submitted

    submitted = run(tick())
    assert len(submitted) == 6
    # While two ran, the others waited their turn, and showed so.
    assert 1 <= SlowLedger.seen_running <= 2 and SlowLedger.seen_queued >= 4, (SlowLedger.seen_running,
                                                                              SlowLedger.seen_queued)
    with hub.session() as session:
        assert {r.status for r in session.exec(select(SyncRun))} == {"succeeded"}


def test_a_run_waiting_for_another_processs_run_of_its_connection_holds_no_slot(settings, monkeypatch):
    """The embedded executor took a slot before the connection's lease: a run
    waiting (up to 15 minutes) for another process's run of its connection
    kept the runs of idle connections queued."""
    hub = ledger_hub(settings.model_copy(update={"sync_local_concurrency": 1}), Ledger())
    busy = make_connection(hub, "ledger", {"api_key": "k"}, org_name="busy")
    idle = make_connection(hub, "ledger", {"api_key": "k"}, org_name="idle")
    _server_holding_the_lease(hub, busy.id)
    waiting, _ = create_run(hub, busy)
    free, _ = create_run(hub, idle)
    executor = LocalExecutor(hub)
    held_for: list[str] = []  # the runs that found their connection's lease held
    try_acquire = Lease.try_acquire

    def noting_a_lease_held(self):
        taken = try_acquire(self)
        if not taken:
            held_for.append(self.run_id)
        return taken

    monkeypatch.setattr(Lease, "try_acquire", noting_a_lease_held)

    async def execute():
        await executor.submit(waiting)
        await until(lambda: waiting.id in held_for, "its turn first: the other process's lease found held")
        await executor.submit(free)
        deadline = time.monotonic() + 30
        while get_run(hub, free.id).status not in ("succeeded", "failed") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await executor.stop()
        await hub.close()

    run(execute())
    assert get_run(hub, free.id).status == "succeeded"
    assert get_run(hub, waiting.id).status == "queued"  # still waiting its turn, not failed


class PausedLedger(Ledger):
    """A ledger whose lists wait for ``go`` (set by the test)."""

    go: asyncio.Event | None = None

    @hookimpl
    async def list_records(self, entity, cursor, page_size, since):
        await asyncio.wait_for(PausedLedger.go.wait(), timeout=20)
        return Page(records=[], next_cursor=None)


def test_a_run_waiting_for_a_slot_does_not_hold_its_connections_lease(settings):
    """Taking the lease before the slot kept another process's run of the
    connection out (it failed as busy after 15 minutes) while the run only
    waited for runs of other connections to end."""
    hub = ledger_hub(settings.model_copy(update={"sync_local_concurrency": 1}), PausedLedger())
    busy = make_connection(hub, "ledger", {"api_key": "k"}, org_name="busy")
    waiting = make_connection(hub, "ledger", {"api_key": "k"}, org_name="waiting")
    first, _ = create_run(hub, busy)
    second, _ = create_run(hub, waiting)
    executor = LocalExecutor(hub)

    class NotedSlots(asyncio.Semaphore):
        """The executor's slots, noting which run's task asked for one."""
        asked: list[str] = []

        async def acquire(self):
            NotedSlots.asked.append(asyncio.current_task().get_name())
            return await super().acquire()

    async def execute():
        PausedLedger.go = asyncio.Event()
        executor._slots = NotedSlots(1)
        await executor.submit(first)
        await until(lambda: get_run(hub, first.id).status == "running", "the first run under way")
        await executor.submit(second)
        await until(lambda: f"sync-run-{second.id}" in NotedSlots.asked, "the second run waiting for the slot")
        await asyncio.sleep(1.0)  # past a few lease tries
        with hub.session() as session:
            leases = {lease.connection_id for lease in session.exec(select(SyncLease))}
        PausedLedger.go.set()
        await executor.wait(timeout=20)
        await executor.stop()
        await hub.close()
        return leases

    assert run(execute()) == {busy.id}
    assert {get_run(hub, r.id).status for r in (first, second)} == {"succeeded"}


def _server_holding_the_lease(hub, connection_id) -> str:
    """Another live process (this one's parent) syncing the connection: its lease."""
    owner = f"{PLACE}:{os.getppid()}:server"
    with hub.session() as session:
        session.add(SyncLease(connection_id=connection_id, owner=owner, expires_at=utcnow() + timedelta(minutes=5)))
        session.commit()
    return owner


def _when_cli_run_exists(hub, connection_id, then):
    """Calls ``then(run)`` from a thread once ``hub sync`` has made its run
    and is under way with it. (Run in this process, it counts as alive once
    it waits for the lease; as a process of its own, it would from the start:
    a scheduler looking between the two took its run for a dead process's.)"""
    import threading

    def watch():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with hub.session() as session:
                made = session.exec(select(SyncRun).where(SyncRun.connection_id == connection_id,
                                                          SyncRun.trigger == "cli")).first()
            if made is not None and owner_alive(made.owner):
                return then(made)
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_a_server_leaves_hub_syncs_run_to_it_while_hub_sync_waits_for_the_connection(hub, conn, ledger,
                                                                                       monkeypatch):
    """A server's scheduler submitted every queued run its executor did not
    know, hub sync's too: the server executed it (no progress, --page-size
    ignored) and hub sync, given up waiting, exited 1 with "None: None"."""
    from click.testing import CliRunner

    from hub import cli

    _server_holding_the_lease(hub, conn.id)
    taken = []

    def server_ticks(_run):
        async def recover():
            service = SyncService(hub, LocalExecutor(hub))
            taken.extend(await Scheduler(service, interval=60).recover(everything=True))
            await service.executor.stop()  # (without the fix: its execution, waiting for the lease)
        asyncio.run(recover())
        with hub.session() as session:  # the server's run ends
            session.execute(sa.delete(SyncLease).where(SyncLease.connection_id == conn.id))
            session.commit()

    watcher = _when_cli_run_exists(hub, conn.id, server_ticks)
    monkeypatch.setattr(cli, "_hub", lambda: hub)
    result = CliRunner().invoke(cli.main, ["sync", conn.id, "--entity", "items", "--page-size", "50"])
    watcher.join(30)
    assert taken == []
    assert result.exit_code == 0, result.output
    assert "succeeded: fetched 250" in result.output and "pages 5" in result.output, result.output
    assert stored(hub, conn.id, "items") == ledger.items


def test_queued_runs_claimed_by_hub_sync_are_submitted_once_it_is_gone_or_silent(hub, conn):
    from hub.sync.engine import CLAIM_TTL

    waiting, _ = create_run(hub, conn, entity="items", trigger="cli", owner=f"{PLACE}:{os.getppid()}:cli")
    dead, _ = create_run(hub, conn, entity="items", trigger="cli", owner=f"{PLACE}:{2**22 + 12345}:cli")
    silent, _ = create_run(hub, conn, entity="items", trigger="cli", owner="other-host:1:cli")
    plain, _ = create_run(hub, conn, entity="items", coalesce=True)
    with hub.session() as session:  # on another machine: known only by the runs it notes it waits for
        session.execute(sa.update(SyncRun).where(SyncRun.id == silent.id)
                        .values(heartbeat_at=utcnow() - CLAIM_TTL - timedelta(seconds=1)))
        session.commit()
    assert plain.id not in (waiting.id, dead.id, silent.id)  # (no request coalesces into hub sync's run)
    recorder = Recorder()
    submitted = run(Scheduler(SyncService(hub, recorder), interval=60).recover(everything=True))
    assert sorted(submitted) == sorted(recorder.runs) == sorted([dead.id, silent.id, plain.id])


def test_hub_sync_giving_up_on_its_run_taken_up_elsewhere_says_so_and_leaves_it_running(hub, conn, monkeypatch):
    from click.testing import CliRunner

    from hub import cli

    server = _server_holding_the_lease(hub, conn.id)
    monkeypatch.setitem(SyncEngine.__init__.__kwdefaults__, "lease_wait", 3.0)  # (the taking up comes meanwhile)

    def taken_up(made):  # as a server that took hub sync for gone does
        with hub.session() as session:
            session.execute(sa.update(SyncRun).where(SyncRun.id == made.id).values(status="running", owner=server))
            session.commit()

    watcher = _when_cli_run_exists(hub, conn.id, taken_up)
    monkeypatch.setattr(cli, "_hub", lambda: hub)
    result = CliRunner().invoke(cli.main, ["sync", conn.id, "--entity", "items"])
    watcher.join(30)
    [made] = runs = _runs_of(hub, conn.id)
    assert made.status == "running" and made.error_code is None, runs
    assert result.exit_code == 3, result.output
    assert f"run {made.id} is running in another process" in result.output
    assert "None" not in result.output + result.output


def _runs_of(hub, connection_id):
    with hub.session() as session:
        return session.exec(select(SyncRun).where(SyncRun.connection_id == connection_id)).all()


def test_a_record_whose_push_keeps_failing_goes_after_the_others(hub, conn, ledger):
    # One record the provider keeps failing on must not hold back every later change.
    assert run(sync(hub, conn)).status == "succeeded"
    push_both_ways(hub, conn)
    with write_transaction(hub, entity_key(conn.id, "items")) as session:
        for item_id in ("it_00001", "it_00002"):  # it_00001 changed first
            row = session.exec(select(SyncRecord).where(SyncRecord.remote_id == item_id)).one()
            local_update(session, row, {"name": f"pushed {item_id}"}, utcnow())
    ledger.failing_updates = {"it_00001"}

    first = push_now(hub, conn)
    assert (first.status, first.pushed, first.failed) == ("failed", 0, 1)
    second = push_now(hub, conn)
    assert (second.status, second.pushed, second.failed) == ("failed", 1, 1)
    assert ledger.items["it_00002"]["name"] == "pushed it_00002"
    ledger.failing_updates = set()
    assert (push_now(hub, conn).pushed, ledger.items["it_00001"]["name"]) == (1, "pushed it_00001")


def test_a_push_sends_the_changes_made_before_it_began_and_leaves_later_ones_to_the_next(hub, conn, ledger,
                                                                                         monkeypatch):
    """A tenant writing steadily kept one push run going for as long as it
    wrote, and every other run of the connection waited behind it."""
    from hub.sync import engine as engine_module

    monkeypatch.setattr(engine_module, "PUSH_CLOCK_MARGIN", timedelta(0))  # (the changes below come at once)
    assert run(sync(hub, conn)).status == "succeeded"
    push_both_ways(hub, conn)

    def change(item_id: str) -> None:
        with write_transaction(hub, entity_key(conn.id, "items")) as session:
            row = session.exec(select(SyncRecord).where(SyncRecord.remote_id == item_id)).one()
            local_update(session, row, {"name": f"pushed {item_id}"}, utcnow())
    for item_id in ("it_00001", "it_00002", "it_00003"):
        change(item_id)
    made_meanwhile: list[str] = []

    def write_another(_record_id):
        if len(made_meanwhile) < 20:  # (bounded: without the fix it would go on)
            made_meanwhile.append(f"it_{100 + len(made_meanwhile):05d}")
            change(made_meanwhile[-1])
    ledger.on_update = write_another
    first = push_now(hub, conn)
    assert (first.status, first.pushed) == ("succeeded", 3)
    assert made_meanwhile == ["it_00100", "it_00101", "it_00102"]
    assert {ledger.items[i]["name"] for i in ("it_00001", "it_00002", "it_00003")} == \
        {"pushed it_00001", "pushed it_00002", "pushed it_00003"}
    ledger.on_update = None
    assert push_now(hub, conn).pushed == 3
    assert ledger.items["it_00102"]["name"] == "pushed it_00102"
    # A change stamped by a machine whose clock is ahead (it joined the queued run) is not left behind.
    monkeypatch.undo()
    with write_transaction(hub, entity_key(conn.id, "items")) as session:
        row = session.exec(select(SyncRecord).where(SyncRecord.remote_id == "it_00200")).one()
        local_update(session, row, {"name": "from a clock ahead"}, utcnow() + timedelta(seconds=5))
    assert push_now(hub, conn).pushed == 1
    assert ledger.items["it_00200"]["name"] == "from a clock ahead"


def test_integers_beyond_64_bits_and_odd_index_keys_are_stored_and_shown(hub, conn, ledger):
    # JSON allows any integer; orjson, which hashes records, stops at 64 bits. And "²" passes
    # str.isdigit, but is not an array index.
    from hub.sync.store import merged_view, update_payload

    ledger.put("it_big", {"name": "big", "amount": 10**30, "nested": {"low": -(2**70)}})
    assert run(sync(hub, conn)).status == "succeeded"
    assert stored(hub, conn.id, "items")["it_big"] == ledger.items["it_big"]
    assert run(sync(hub, conn, full_refresh=True)).updated == 0  # the same hash again
    with write_transaction(hub, entity_key(conn.id, "items")) as session:
        row = session.exec(select(SyncRecord).where(SyncRecord.remote_id == "it_big")).one()
        row.data = {**row.data, "tags": ["a", "b"]}
        local_update(session, row, {"tags": {"\u00b2": "x", "1": "B"}}, utcnow())
        assert merged_view(row)["tags"] == {"\u00b2": "x", "1": "B"}
        assert update_payload(row)["tags"] == {"\u00b2": "x", "1": "B"}
        local_update(session, row, {"tags": None}, utcnow())
        row.local_data = {"tags": {"1": "B"}}
        assert merged_view(row)["tags"] == ["a", "B"] and update_payload(row)["tags"] == ["a", "B"]


def test_a_scheduled_connection_whose_plugin_is_gone_shows_why_it_does_not_sync(hub, conn, ledger):
    """Uninstalled (or left out by HUB_PLUGINS): the scheduler said nothing and
    the connection kept showing ``connected``."""
    with hub.session() as session:
        gone = Connection(organization_id=conn.organization_id, provider="uninstalled", category="crm",
                          name="Gone", sync_enabled=True)
        session.add(gone)
        session.execute(sa.update(Connection).where(Connection.id == conn.id).values(sync_enabled=True))
        session.commit()
        session.refresh(gone)

    async def tick():
        service = SyncService(hub, LocalExecutor(hub))
        scheduler = Scheduler(service, interval=60)
        submitted = await scheduler.tick()
        await service.executor.wait(timeout=20)
        again = await scheduler.tick(utcnow() + timedelta(days=1))
        await service.executor.wait(timeout=20)
        await hub.close()
        return submitted, again

    submitted, _again = run(tick())
    with hub.session() as session:
        after = session.get(Connection, gone.id)
        runs = session.exec(select(SyncRun).where(SyncRun.connection_id == gone.id)).all()
    assert after.status == "error" and "no provider named 'uninstalled' is installed" in after.last_error
    assert runs == [] and len(submitted) == 1  # the other connection still syncs


def test_reenabling_after_an_interrupted_incremental_pass_still_makes_a_full_pass(hub, conn, ledger):
    assert run(sync(hub, conn)).status == "succeeded"          # full pass: watermark set
    for i in range(150):                                          # 150 changes: an incremental pass of 2 pages
        ledger.put(f"it_{i:05d}", {"name": f"changed {i}"})
    ledger.fail_on_call = len(ledger.calls) + 2                   # its 2nd page fails: pass left in progress
    assert run(sync(hub, conn)).status == "failed"
    assert state_of(hub, conn.id).pass_mode == "incremental"
    ledger.fail_on_call = None
    removed_while_disabled(hub, conn, ledger, "it_00200")
    assert state_of(hub, conn.id).watermark is None
    assert run(sync(hub, conn)).status == "succeeded"
    assert run(sync(hub, conn)).status == "succeeded"
    assert "it_00200" not in stored(hub, conn.id, "items"), \
        f"watermark after re-enable: {state_of(hub, conn.id).watermark}; the deletion was never swept"


def test_a_provider_hanging_on_a_revocation_does_not_hold_up_scheduling(hub, conn, monkeypatch):
    import hub.services.connections as connection_service

    started = []

    async def hangs(*_args, **_kwargs):
        started.append(True)
        await asyncio.sleep(3600)

    monkeypatch.setattr(connection_service, "retry_revocations", hangs)

    async def two_ticks():
        service = SyncService(hub, LocalExecutor(hub))
        scheduler = Scheduler(service, interval=60)
        try:
            await asyncio.wait_for(scheduler.tick(), timeout=30)  # (not the revocation's hour)
            await asyncio.sleep(0)  # the revocations start beside it
            await asyncio.wait_for(scheduler.tick(), timeout=30)  # and are not started twice
            return len(started)
        finally:
            await scheduler.stop()
            await hub.close()

    assert run(two_ticks()) == 1


def running_run(hub, conn) -> tuple[SyncRun, Lease]:
    """A run under way in a process of its own: shown running, its holder holding the lease."""
    queued, _ = create_run(hub, conn)
    holder = Lease(hub, conn.id, new_owner(), queued.id, ttl=60)
    assert holder.try_acquire()
    with hub.session() as session:
        row = session.get(SyncRun, queued.id)
        row.status, row.owner = "running", holder.owner
        session.add(row)
        session.commit()
    return queued, holder


def test_a_run_put_back_in_the_queue_stops_its_holder_at_its_next_page(hub, conn):
    """Its holder taken for gone (a clock ahead, a pid namespace of its own):
    the lease ends with the requeue, so the holder cannot go on beside the
    run's next execution, and its outcome is not recorded over the run's."""
    from hub.sync.engine import requeue
    from hub.sync.leases import LeaseLost

    queued, holder = running_run(hub, conn)
    assert requeue(hub, queued.id, holder.owner, "its holder looked gone")
    with pytest.raises(LeaseLost):
        holder.renew()
    SyncEngine(hub)._finish(queued.id, holder.owner, "succeeded", None)
    assert get_run(hub, queued.id).status == "queued"


def test_a_run_that_cannot_get_the_lease_is_failed_only_while_queued(hub, conn):
    """The same run executed twice (a queue job and `hub sync`): the second,
    waiting in vain for the lease the first holds, does not fail the run
    the first is executing."""
    executing, holder = running_run(hub, conn)

    async def second():
        try:
            return await SyncEngine(hub, lease_wait=0.3).execute(executing.id)
        finally:
            await hub.close()

    assert run(second()).status == "running"
    holder.release()


def test_a_holder_in_another_pid_namespace_of_this_host_counts_as_alive():
    """Containers sharing the host name (host networking) each have a pid 1:
    only this pid namespace's pids can be checked."""
    from hub.sync.leases import HOST, owner_alive

    assert PLACE.startswith(HOST)
    assert owner_alive(f"{HOST}/1:{os.getpid()}:not-ours")  # another namespace's process of the same pid
    assert not owner_alive(f"{PLACE}:{os.getpid()}:not-ours")  # this process, a lease it does not hold
    if PLACE != HOST:
        assert owner_alive(f"{HOST}:{2**22 + 1}:older-hub")  # an older hub's owner: left to expire


def test_lease_times_are_on_the_databases_clock_on_postgresql(hub, conn, monkeypatch):
    """A scheduler on a machine whose clock is 90 s ahead does not take a live
    worker elsewhere for gone."""
    from hub.sync import leases

    if hub.engine.dialect.name != "postgresql":
        pytest.skip("SQLite is on one machine: one clock")
    elsewhere = "another-machine/1:4242:abcdef"
    holder = leases.Lease(hub, conn.id, elsewhere, None, ttl=60)
    assert holder.try_acquire()
    monkeypatch.setattr(leases, "utcnow", lambda: utcnow() + timedelta(seconds=90))
    assert not leases.holder_gone(hub, conn.id, elsewhere)
    assert not leases.Lease(hub, conn.id, new_owner(), None, ttl=60).try_acquire()


def test_reenabling_after_an_interrupted_first_full_pass_starts_a_new_full_pass(hub, conn, ledger):
    """The interrupted pass used to be resumed: its sweep spared what it had
    listed before, and the passes after it were incremental."""
    ledger.fail_on_call = 3                                        # first (full) pass: 2 pages stored, then fails
    assert run(sync(hub, conn)).status == "failed"
    state = state_of(hub, conn.id)
    assert state.pass_mode == "full" and state.watermark is None
    ledger.fail_on_call = None
    removed_while_disabled(hub, conn, ledger, "it_00050")
    for _ in range(3):
        assert run(sync(hub, conn)).status == "succeeded"
    assert "it_00050" not in stored(hub, conn.id, "items"), "deleted while disabled, still live after 3 runs"


def test_reenabling_while_a_pass_runs_is_not_undone_by_that_pass(hub, conn, ledger):
    """The running pass stored its watermark over the reset: the passes after
    it were incremental, and a deletion made while the config was off stayed."""
    assert run(sync(hub, conn)).status == "succeeded"               # full pass: watermark set
    with hub.session() as session:
        config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == conn.id)).one()
    config_service.update_config(hub, conn, config.id, {"enabled": False})
    ledger.calls.clear()

    def toggle(call):
        if call == 2:   # while a (manual, entity-named) full-refresh pass runs: deletion, then re-enable
            ledger.remove("it_00050")                              # its deletion event is ignored (disabled)
            config_service.update_config(hub, conn, config.id, {"enabled": True})
    ledger.on_call = toggle
    assert run(sync(hub, conn, full_refresh=True)).status == "succeeded"
    ledger.on_call = None
    for _ in range(2):
        assert run(sync(hub, conn)).status == "succeeded"
    assert "it_00050" not in stored(hub, conn.id, "items"), "deleted while disabled, still live"


def test_a_webhook_batch_with_an_earlier_clock_does_not_get_a_listed_record_swept(hub, conn, ledger, monkeypatch):
    """A batch that read its clock before a full pass began (or on a host whose
    clock lags) set last_seen_at back on a record the pass had listed."""
    from hub.models import WebhookEvent, WebhookEventState
    from hub.services import webhooks as webhooks_module
    from hub.services.webhooks import WebhookProcessor

    assert run(sync(hub, conn)).status == "succeeded"              # 250 items stored
    record = dict(ledger.items["it_00000"])                         # listed on page 1
    with hub.session() as session:
        event = WebhookEvent(provider="ledger", dedup_key="evt_1", connection_id=conn.id,
                             organization_id=conn.organization_id, type="item.updated", entity="items",
                             action="updated", record_id="it_00000", payload=record)
        session.add(event)
        session.flush()
        session.add(WebhookEventState(event_id=event.id, occurred_at=utcnow()))
        session.commit()
    # The processor's batch reads its clock (webhooks.py:266) just before the full pass begins, then
    # waits for the records' lock (held by the pull) and applies the event after page 1 is stored.
    batch_clock = utcnow()
    ledger.calls.clear()

    def webhook_batch_gets_the_lock_now(call):
        if call == 3:
            monkeypatch.setattr(webhooks_module, "utcnow", lambda: batch_clock)
            WebhookProcessor(hub)._process_batch()
            monkeypatch.undo()
    ledger.on_call = webhook_batch_gets_the_lock_now
    run(sync(hub, conn, full_refresh=True))
    ledger.on_call = None
    assert "it_00000" in ledger.items
    assert "it_00000" in stored(hub, conn.id, "items"), "listed by the pass, exists, but marked deleted"


class _Restarting(Ledger):
    """Offset cursors; on call ``restart_on`` it cannot follow the cursor and
    lists again from the first record (``Page.restarted``)."""

    restart_on: int | None = None

    @hookimpl
    def list_records(self, entity, cursor, page_size, since):
        if self.restart_on is not None and len(self.calls) + 1 == self.restart_on:
            page = Ledger.list_records(self, entity, None, page_size, since)
            page.restarted = True
            return page
        return Ledger.list_records(self, entity, cursor, page_size, since)


def test_a_restarted_listing_makes_the_pass_full_and_its_cursors_are_no_cycle(settings):
    """A listing that starts over hands out its cursors again: that failed the
    run as pages going round in a cycle."""
    ledger = _Restarting(items=50)
    hub = ledger_hub(settings, ledger)
    connection = make_connection(hub, "ledger", {"api_key": "k"})
    assert run(sync(hub, connection, page_size=100)).status == "succeeded"
    ledger.remove("it_00005")  # gone, and only a full listing shows it
    ledger.calls.clear()
    ledger.restart_on = 3
    result = run(sync(hub, connection, full_refresh=True, page_size=10))
    assert result.status == "succeeded", result.error
    assert stored(hub, connection.id, "items") == ledger.items and result.deleted == 1


def test_a_restarted_listing_of_a_since_pass_marks_nothing_deleted(settings):
    """Asked with since, the listing started over gives what changed since: a
    sweep by it marked deleted every record not changed."""
    ledger = _Restarting(items=250)
    hub = ledger_hub(settings, ledger)
    connection = make_connection(hub, "ledger", {"api_key": "k"})
    assert run(sync(hub, connection, page_size=100)).status == "succeeded"  # the watermark stored
    for i in range(200, 230):
        ledger.put(f"it_{i:05d}", {"name": f"changed {i}"})
    ledger.calls.clear()
    ledger.restart_on = 2
    result = run(sync(hub, connection, page_size=10))
    assert result.status == "succeeded" and ledger.calls[0][2] is not None, result.error  # a pass by since
    assert stored(hub, connection.id, "items") == ledger.items and result.deleted == 0


def test_a_last_seen_time_from_a_clock_that_ran_ahead_does_not_spare_a_record_from_sweeps(hub, conn, ledger):
    """last_seen_at never moves back, but one written by a clock a day ahead
    kept a record the provider deleted alive through every full pass."""
    assert run(sync(hub, conn)).status == "succeeded"
    with hub.session() as session:
        session.execute(sa.update(SyncRecord).where(SyncRecord.remote_id.in_(["it_00001", "it_00002"]))
                        .values(last_seen_at=utcnow() + timedelta(days=1)))
        session.commit()
    assert run(sync(hub, conn, full_refresh=True)).status == "succeeded"  # both listed: seen now
    ledger.remove("it_00001")
    result = run(sync(hub, conn, full_refresh=True))
    assert result.status == "succeeded" and result.deleted == 1
    assert stored(hub, conn.id, "items") == ledger.items


def test_a_modification_time_inside_an_object_versions_the_records():
    """updated_field had to be a top-level field: QuickBooks keeps it as
    MetaData.LastUpdatedTime, which a plugin had to copy out."""
    from hub.plugins import schema_problems
    from hub.sync.store import version_of
    from hub.types import EntityField

    meta = EntityField("MetaData", type="object", fields=(EntityField("LastUpdatedTime", type="datetime"),))
    schema = EntitySchema("customers", "Customers", fields=(EntityField("Id"), meta), id_field="Id",
                          updated_field="MetaData.LastUpdatedTime")
    assert schema_problems(schema) == []
    record = {"Id": "1", "MetaData": {"LastUpdatedTime": "2026-01-02T03:04:05-08:00"}}
    assert version_of(schema, record) == datetime(2026, 1, 2, 11, 4, 5, tzinfo=timezone.utc)
    assert version_of(schema, {"Id": "2", "MetaData": None}) is None
    for wrong in ("MetaData.Created", "Id.Time", "Meta.LastUpdatedTime"):
        [problem] = schema_problems(EntitySchema("customers", "Customers", fields=(EntityField("Id"), meta),
                                                 id_field="Id", updated_field=wrong))
        assert wrong in problem


def test_a_lease_release_that_fails_gives_the_slot_back(settings, monkeypatch):
    """The slot was released after the lease: a failed release (the database
    locked a moment) kept it, and with one slot every later run stayed queued."""
    hub = ledger_hub(settings.model_copy(update={"sync_local_concurrency": 1}), Ledger())
    first, _ = create_run(hub, make_connection(hub, "ledger", {"api_key": "k"}, org_name="a"))
    second, _ = create_run(hub, make_connection(hub, "ledger", {"api_key": "k"}, org_name="b"))
    release, calls = Lease.release, []

    def release_failing_once(self):
        calls.append(self)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return release(self)

    monkeypatch.setattr(Lease, "release", release_failing_once)
    executor = LocalExecutor(hub)

    async def execute():
        await executor.submit(first)
        await executor.wait(timeout=30)
        await executor.submit(second)
        await executor.wait(timeout=30)
        await executor.stop()
        await hub.close()

    run(execute())
    assert get_run(hub, second.id).status == "succeeded"
