"""Webhook events settled by fetching their record, and the embedded executor's slots and leases."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from hub import hookimpl
from hub.models import SyncLease, WebhookEvent, WebhookEventState, utcnow
from hub.services.webhooks import WebhookProcessor
from hub.sync.engine import SyncEngine, create_run
from hub.sync.worker import LocalExecutor
from hub.types import EntityField, EntitySchema
from tests.sync_support import Ledger, get_run, ledger_hub, make_connection, run, stored, wait_until
from tests.test_sync_engine import _server_holding_the_lease
from tests.test_sync_interleavings import Interleaving, Tenant, pending_event, webhook


class Unversioned(Interleaving):
    """Records carry no modification time (Stripe's, but products): versioned by their events' time."""

    @hookimpl
    def entity_schemas(self):
        fields = (EntityField("id", readonly=True), EntityField("name"), EntityField("amount", type="integer"),
                  EntityField("active", type="boolean"), EntityField("updated_at", type="datetime", readonly=True),
                  EntityField("details", type="object"))
        return [EntitySchema("items", "Items", fields, supports_create=True, supports_update=True,
                             supports_delete=True)]


@pytest.fixture
def ledger():
    return Unversioned(items=4)


def statuses(hub, ids):
    with hub.session() as session:
        return [(session.get(WebhookEvent, i).status, session.get(WebhookEvent, i).attempts) for i in ids]


def process(hub):
    async def go():
        try:
            return await WebhookProcessor(hub).process_once()
        finally:
            await hub.close()
    return asyncio.run(go())


def test_one_fetch_for_events_of_two_seconds_is_stored_as_of_the_later(hub, conn, ledger):
    """B (second S) and E (second S+1) both cannot be ordered (E against D,
    applied in the same batch): the one fetch for both is stored as of S+1, not
    as of B's S, older than D's S+1 (not applied, E's change stored nowhere)."""
    Tenant(hub, conn, "provider_wins")
    s = utcnow().replace(microsecond=0)
    webhook(hub, conn, "updated", record={**ledger.items["it_00001"], "name": "a"}, occurred_at=s)
    assert stored(hub, conn.id, "items")["it_00001"]["name"] == "a"
    ids = [pending_event(hub, conn, "b", s, ledger),
           pending_event(hub, conn, "d", s + timedelta(seconds=1), ledger),
           pending_event(hub, conn, "e", s + timedelta(seconds=1), ledger)]
    ledger.put("it_00001", {"name": "e"})  # the provider's current version: E's change
    process(hub)
    assert all(status == "processed" for status, _ in statuses(hub, ids))
    assert stored(hub, conn.id, "items")["it_00001"]["name"] == "e", "E processed, its change stored nowhere"


def test_a_failed_settle_of_a_later_event_is_an_attempt(hub, conn, ledger, monkeypatch):
    """The record fetched for two events: the first is processed with it; the
    second, whose marking fails, waits for its next attempt, counted."""
    Tenant(hub, conn, "provider_wins")
    s = utcnow().replace(microsecond=0)
    webhook(hub, conn, "updated", record={**ledger.items["it_00001"], "name": "a"}, occurred_at=s)
    ids = [pending_event(hub, conn, name, s, ledger) for name in ("b", "c")]

    def locked(self, event):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(WebhookProcessor, "_settled_with_another", locked)
    process(hub)
    assert statuses(hub, ids) == [("processed", 0), ("pending", 1)]


def test_the_lease_wait_counts_from_the_first_slot(settings):
    """The wait for a slot is not the lease's. A run waits 2.5 s for a slot
    (lease_wait 2 s); the other process's lease ends 0.3 s after (1.7 s of
    the lease's wait left: room for a loaded machine)."""
    hub = ledger_hub(settings.model_copy(update={"sync_local_concurrency": 1}), Ledger())
    busy = make_connection(hub, "ledger", {"api_key": "k"}, org_name="busy")
    _server_holding_the_lease(hub, busy.id)
    waiting, _ = create_run(hub, busy)
    executor = LocalExecutor(hub, engine=SyncEngine(hub, lease_wait=2.0))

    async def execute():
        await executor._slots.acquire()  # a run of another connection holds the only slot
        await executor.submit(waiting)
        await asyncio.sleep(2.5)
        executor._slots.release()
        await asyncio.sleep(0.3)
        with hub.session() as session:
            session.delete(session.get(SyncLease, busy.id))
            session.commit()
        await executor.wait(timeout=30)
        await executor.stop()
        await hub.close()

    run(execute())
    assert get_run(hub, waiting.id).status == "succeeded"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_second_processor_leaves_events_alone_while_their_record_is_fetched(hub, conn, ledger):
    """A fetch that outlasts the events' first backoff (2 s): the other
    processor does not take them up again and fetch once more."""
    gets = []
    Tenant(hub, conn, "provider_wins")
    s = utcnow().replace(microsecond=0)
    src = ledger
    webhook(hub, conn, "updated", record={**src.items["it_00001"], "name": "a"}, occurred_at=s)
    ids = [pending_event(hub, conn, n, s, src) for n in ("b", "c")]

    def slow(record_id):
        gets.append(record_id)
        time.sleep(4.5)
    src.during_get = slow

    import threading
    first = threading.Thread(target=lambda: asyncio.run(WebhookProcessor(hub).process_once()))
    first.start()
    wait_until(lambda: gets, message="the first processor's fetch")
    time.sleep(2.5)  # past the backoff counted from the events' claim, before this fetch; 2 s of it left
    src.during_get = lambda rid: gets.append(rid)
    asyncio.run(WebhookProcessor(hub).process_once())
    first.join(30)
    assert len(gets) == 1
    assert [status for status, _ in statuses(hub, ids)] == ["processed", "processed"]


def test_events_of_a_plugin_not_loaded_wait_for_it_without_using_up_their_attempts(hub, conn, ledger, monkeypatch):
    """Uninstalled for a while (an upgrade): its events wait, no attempt counted, and apply once it is back."""
    Tenant(hub, conn, "provider_wins")
    s = utcnow().replace(microsecond=0)
    event_id = pending_event(hub, conn, "renamed", s, ledger)
    with monkeypatch.context() as while_gone:
        while_gone.delitem(hub.registry.providers, "ledger")
        for _ in range(3):
            process(hub)
            with hub.session() as session:
                event, state = session.get(WebhookEvent, event_id), session.get(WebhookEventState, event_id)
                assert (event.status, event.attempts) == ("pending", 0)
                assert "ledger plugin is not loaded" in event.error
                assert state.next_attempt_at > utcnow() + timedelta(minutes=9)
                state.next_attempt_at = utcnow()  # (due again at once, as after its wait)
                session.add(state)
                session.commit()
    process(hub)
    assert statuses(hub, [event_id]) == [("processed", 1)]  # (the one that applied it)
    assert stored(hub, conn.id, "items")["it_00001"]["name"] == "renamed"


def test_an_event_whose_fetch_meets_a_rate_limit_waits_it_out_without_using_up_its_attempts(hub, conn, ledger):
    """A daily quota used up: its attempts (15, backoff capped at 10 minutes) ran out in about
    an hour and a quarter, the event failed for good before the quota came back."""
    from hub.types import RateLimited

    Tenant(hub, conn, "provider_wins")
    s = utcnow().replace(microsecond=0)
    webhook(hub, conn, "updated", record={**ledger.items["it_00001"], "name": "a"}, occurred_at=s)
    [event_id] = [pending_event(hub, conn, "b", s, ledger)]

    def quota_used_up(record_id):
        raise RateLimited("daily quota used up", retry_after=5 * 3600)

    ledger.during_get = quota_used_up
    process(hub)
    assert statuses(hub, [event_id]) == [("pending", 0)]
    with hub.session() as session:
        due = session.get(WebhookEventState, event_id).next_attempt_at
    assert timedelta(hours=4.9) < due - utcnow() <= timedelta(hours=5)


def test_a_short_or_unstated_rate_limit_on_a_fetch_is_an_attempt_with_its_backoff(hub, conn, ledger):
    """A review found the waits without tries let an event be fetched every poll for good."""
    from hub.types import RateLimited

    Tenant(hub, conn, "provider_wins")
    s = utcnow().replace(microsecond=0)
    webhook(hub, conn, "updated", record={**ledger.items["it_00001"], "name": "a"}, occurred_at=s)
    event_id = pending_event(hub, conn, "b", s, ledger)

    def throttled(record_id):
        raise RateLimited("slow down", retry_after=1.0)

    ledger.during_get = throttled
    process(hub)
    assert statuses(hub, [event_id]) == [("pending", 1)]
