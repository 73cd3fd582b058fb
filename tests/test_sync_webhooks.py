"""Webhooks drive the record store: events stored once, applied after the
response in any order, retried with backoff when applying fails, and
turned into incremental syncs when they carry no record.
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import func, select

import hub.sync.store as store_module
from hub.models import SyncConfig, SyncRun, WebhookEvent, WebhookEventState, utcnow
from hub.runtime import Hub
from hub.services.webhooks import WebhookProcessor, backoff, receive
from hub.types import WebhookRequest
from hub_example.testing import API_KEY, signed_delivery
from tests.conftest import API
from tests.sync_support import make_connection, run, stored, wait_until
from tests.test_example_end_to_end import connect

SECRET = "whsec_example123"


@pytest.fixture(autouse=True)
def utc_local_time(monkeypatch):
    """The example provider reads delivery times as local time."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def build_deliveries(total: int, seed: int = 7) -> tuple[list[tuple[bytes, dict]], dict[str, dict], int]:
    """Signed deliveries of note events (created, updated, some deleted), a
    fifth of them repeated, shuffled. Returns the deliveries, the notes as
    they end up and how many distinct events there are."""
    rng = random.Random(seed)
    now = int(time.time())
    base = datetime.now(timezone.utc) - timedelta(seconds=250)
    unique = total - total // 5
    events: list[dict] = []
    final: dict[str, dict] = {}
    while len(events) < unique:
        note_id = f"note_w{len(final)}_{len(events)}"
        for version in range(rng.randint(1, 4)):
            if len(events) == unique:
                break
            record = {"id": note_id, "title": f"{note_id} v{version}", "body": "",
                      "updated_at": (base + timedelta(seconds=version)).isoformat()}
            events.append({"id": f"evt_{len(events)}", "type": "note.created" if version == 0 else "note.updated",
                           "data": record})
            final[note_id] = record
        if len(events) < unique and rng.random() < 0.3:
            events.append({"id": f"evt_{len(events)}", "type": "note.deleted", "data": {"id": note_id}})
            final.pop(note_id)
    deliveries = [signed_delivery(SECRET, e, now) for e in events]
    deliveries += [rng.choice(deliveries) for _ in range(total - unique)]
    rng.shuffle(deliveries)
    return deliveries, final, unique


def test_a_thousand_deliveries_with_duplicates_in_random_order_converge(client, auth, hub_app):
    connection = connect(client, auth)
    deliveries, final, unique = build_deliveries(total=1000)
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    received = duplicates = 0
    for body, headers in deliveries:
        answer = client.post(url, content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        received += answer.json()["received"]
        duplicates += answer.json()["duplicates"]
    assert (received, duplicates) == (unique, 1000 - unique)
    hub: Hub = hub_app.state.hub

    def pending() -> int:
        with hub.session() as session:
            return session.exec(select(func.count()).select_from(WebhookEvent)
                                .where(WebhookEvent.status == "pending")).one()

    wait_until(lambda: pending() == 0, timeout=60, interval=0.2, message="all events applied")
    with hub.session() as session:
        events = session.exec(select(WebhookEvent).where(WebhookEvent.connection_id == connection["id"])).all()
    assert len(events) == unique and len({e.dedup_key for e in events}) == unique
    assert {e.status for e in events} == {"processed"}
    assert stored(hub, connection["id"], "notes") == final


def test_an_event_that_fails_stays_pending_and_is_retried_with_backoff(settings, example_registry, monkeypatch):
    hub = Hub(settings, example_registry)
    hub.migrate()
    connection = make_connection(hub, "example", {"api_key": API_KEY, "webhook_secret": SECRET})
    note = {"id": "note_x", "title": "x", "body": "", "updated_at": utcnow().isoformat()}
    body, headers = signed_delivery(SECRET, {"id": "evt_x", "type": "note.created", "data": note}, int(time.time()))
    request = WebhookRequest(headers=headers, body=body, query={"connection_id": connection.id})
    assert run(receive(hub, hub.provider("example"), request)).accepted == ["evt_x"]

    real = store_module.apply_records
    monkeypatch.setattr(store_module, "apply_records", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("db hiccup")))
    processor = WebhookProcessor(hub)
    first = run(processor.process_once())
    assert (first.handled, first.failed) == (1, 1)
    with hub.session() as session:
        event = session.exec(select(WebhookEvent)).one()
        state = session.get(WebhookEventState, event.id)
    assert event.status == "pending" and event.attempts == 1 and "db hiccup" in event.error
    due = state.next_attempt_at.replace(tzinfo=timezone.utc) - state.last_attempt_at.replace(tzinfo=timezone.utc)
    assert due == backoff(1) == timedelta(seconds=2)
    assert backoff(3) == timedelta(seconds=8) and backoff(30) == timedelta(minutes=10)
    assert run(processor.process_once()).handled == 0
    assert stored(hub, connection.id, "notes") == {}

    monkeypatch.setattr(store_module, "apply_records", real)
    with hub.session() as session:
        state = session.get(WebhookEventState, event.id)
        state.next_attempt_at = utcnow() - timedelta(seconds=1)
        session.add(state)
        session.commit()
    second = run(processor.process_once())
    assert (second.handled, second.failed) == (1, 0)
    with hub.session() as session:
        event = session.exec(select(WebhookEvent)).one()
    assert event.status == "processed" and event.attempts == 2 and event.error is None
    assert stored(hub, connection.id, "notes") == {"note_x": note}


def test_events_without_a_record_queue_one_incremental_sync_of_the_entity(settings, example_registry):
    hub = Hub(settings, example_registry)
    hub.migrate()
    connection = make_connection(hub, "example", {"api_key": API_KEY, "webhook_secret": SECRET})
    with hub.session() as session:
        for i in range(3):
            event = WebhookEvent(provider="example", dedup_key=f"chg_{i}", connection_id=connection.id,
                                 organization_id=connection.organization_id, type="note.changed", entity="notes",
                                 action="changed", record_id=f"note_{i}")
            session.add(event)
        session.add(WebhookEvent(provider="example", dedup_key="ping", connection_id=connection.id, type="ping"))
        session.commit()
    submitted: list[SyncRun] = []

    async def submit(sync_run: SyncRun) -> None:
        submitted.append(sync_run)

    result = run(WebhookProcessor(hub, submit=submit).process_once())
    assert result.handled == 4 and result.failed == 0
    assert len({r.id for r in submitted}) == 1
    with hub.session() as session:
        [queued] = session.exec(select(SyncRun)).all()
        config = session.exec(select(SyncConfig)).one()
        statuses = sorted(e.status for e in session.exec(select(WebhookEvent)))
    assert (queued.entity, queued.trigger, queued.direction, queued.status) == ("notes", "webhook", "pull", "queued")
    assert (config.entity, config.direction) == ("notes", "pull")
    assert statuses == ["ignored", "processed", "processed", "processed"]


def test_webhook_record_updates_and_deletes_reach_the_mapped_view(client, auth, example_fake):
    connection = connect(client, auth)
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs", json={
        "entity": "notes", "mappings": [{"source": "title", "target": "subject"}]}, headers=auth).json()["sync_config"]
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    records = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/records"
    note = {"id": "note_1", "title": "pushed by webhook", "body": "", "updated_at": utcnow().isoformat()}
    body, headers = signed_delivery(SECRET, {"id": "e1", "type": "note.updated", "data": note}, int(time.time()))
    client.post(url, content=body, headers=headers)
    wait_until(lambda: client.get(f"{records}/note_1", params={"mapped": True}, headers=auth).status_code == 200,
               message="webhook applied")
    assert client.get(f"{records}/note_1", params={"mapped": True}, headers=auth).json()["record"]["data"] == {
        "subject": "pushed by webhook"}
    body, headers = signed_delivery(SECRET, {"id": "e2", "type": "note.deleted", "data": {"id": "note_1"}},
                                    int(time.time()) + 1)
    client.post(url, content=body, headers=headers)
    wait_until(lambda: client.get(f"{records}/note_1", headers=auth).json()["record"]["deleted"],
               message="deletion applied")
