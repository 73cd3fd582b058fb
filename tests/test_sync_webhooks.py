"""Webhooks drive the record store: events stored once per connection,
applied after the response in any order, retried with backoff when applying
fails, and turned into incremental syncs when they carry no record (applied
once such a sync succeeds, retried while it fails).
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from sqlmodel import func, select

import hub.sync.store as store_module
from hub import hookimpl
from hub.models import SyncConfig, SyncRun, WebhookEvent, WebhookEventState, utcnow
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.services.webhooks import WebhookProcessor, backoff, receive
from hub.sync.engine import SyncEngine
from hub.types import ProviderUnavailable, WebhookRequest
from hub.types import WebhookEvent as HubEvent
from hub.testing import wait_for_run
from hub_example.testing import API_KEY, signed_delivery
from tests.conftest import API, make_org
from tests.sync_support import Ledger, make_connection, run, stored, wait_until
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


class Relay(Ledger):
    """The ledger with Plaid-like webhooks: a delivery ``{"id": ..., "entity":
    ...}`` says something changed and carries no record, so applying it takes
    an incremental sync. ``down`` makes every list call fail as unavailable."""

    def __init__(self, items: int = 0):
        super().__init__(items)
        self.down = False
        self.on_call = self._gate

    def _gate(self, _call: int) -> None:
        if self.down:
            raise ProviderUnavailable("ledger is down")

    @hookimpl
    def verify_webhook(self, ctx, request):
        self.last_request = request
        body = json.loads(request.body)
        return [HubEvent(dedup_key=body["id"], type="item.changed", entity=body.get("entity", "items"),
                         record_id=body.get("record_id"))]


def events_of(hub: Hub) -> dict[str, WebhookEvent]:
    with hub.session() as session:
        return {e.dedup_key: e for e in session.exec(select(WebhookEvent))}


def runs_of(hub: Hub) -> list[SyncRun]:
    with hub.session() as session:
        return list(session.exec(select(SyncRun).order_by(SyncRun.queued_at)))


def make_due(hub: Hub) -> None:
    with hub.session() as session:
        session.execute(sa.update(WebhookEventState).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        session.commit()


def test_an_event_needing_a_sync_is_pending_until_a_later_sync_succeeds_and_retried_after_failures(settings):
    relay = Relay(items=3)
    registry = PluginRegistry()
    registry.register(relay, "ledger")
    hub = Hub(settings, registry)
    hub.migrate()
    connection = make_connection(hub, "ledger", {"api_key": "k"})
    with hub.session() as session:
        for i in range(3):
            session.add(WebhookEvent(provider="ledger", dedup_key=f"chg_{i}", connection_id=connection.id,
                                     organization_id=connection.organization_id, type="item.changed",
                                     entity="items", action="changed"))
        session.add(WebhookEvent(provider="ledger", dedup_key="ping", connection_id=connection.id, type="ping"))
        session.commit()
    submitted: list[SyncRun] = []

    async def submit(sync_run: SyncRun) -> None:
        submitted.append(sync_run)

    async def execute(run_id: str) -> SyncRun:
        try:
            return await SyncEngine(hub).execute(run_id)
        finally:
            await hub.close()

    processor = WebhookProcessor(hub, submit=submit)
    result = run(processor.process_once())
    assert result.handled == 4 and result.failed == 0
    [queued] = runs_of(hub)
    assert {r.id for r in submitted} == {queued.id}
    assert (queued.entity, queued.trigger, queued.direction, queued.status) == ("items", "webhook", "pull", "queued")
    with hub.session() as session:
        config = session.exec(select(SyncConfig)).one()
    assert (config.entity, config.direction) == ("items", "pull")
    events = events_of(hub)
    assert events.pop("ping").status == "ignored"
    assert {(e.status, e.attempts) for e in events.values()} == {("pending", 0)}

    # Looked at again while the run waits: no second run.
    make_due(hub)
    assert run(processor.process_once()).failed == 0
    assert [r.id for r in runs_of(hub)] == [queued.id]
    assert {e.status for e in events_of(hub).values()} == {"pending", "ignored"}

    relay.down = True
    assert run(execute(queued.id)).error_code == "provider_unavailable"
    make_due(hub)
    failed = run(processor.process_once())
    assert (failed.handled, failed.failed) == (3, 3)
    assert len(runs_of(hub)) == 1  # the failure backs off before a new run
    events = events_of(hub)
    events.pop("ping")
    for event in events.values():
        assert (event.status, event.attempts) == ("pending", 1)
        assert "ledger is down" in event.error and queued.id in event.error
    make_due(hub)
    assert run(processor.process_once()).failed == 0
    runs = runs_of(hub)
    assert len(runs) == 2 and runs[1].status == "queued" and runs[1].entity == "items"

    relay.down = False
    relay.put("it_new", {"name": "changed while down"})
    assert run(execute(runs[1].id)).status == "succeeded"
    make_due(hub)
    assert run(processor.process_once()).failed == 0
    events = events_of(hub)
    assert events.pop("ping").status == "ignored"
    assert {(e.status, e.attempts, e.error) for e in events.values()} == {("processed", 2, None)}
    assert stored(hub, connection.id, "items") == relay.items
    assert len(runs_of(hub)) == 2


def test_a_sync_that_started_before_the_event_was_received_does_not_count(settings):
    relay = Relay(items=1)
    registry = PluginRegistry()
    registry.register(relay, "ledger")
    hub = Hub(settings, registry)
    hub.migrate()
    connection = make_connection(hub, "ledger", {"api_key": "k"})
    earlier = utcnow() - timedelta(minutes=1)
    with hub.session() as session:
        session.add(SyncRun(organization_id=connection.organization_id, connection_id=connection.id, entity="items",
                            status="succeeded", queued_at=earlier, started_at=earlier, finished_at=earlier))
        session.add(WebhookEvent(provider="ledger", dedup_key="chg", connection_id=connection.id, type="item.changed",
                                 entity="items", action="changed"))
        session.commit()
    run(WebhookProcessor(hub).process_once())
    assert events_of(hub)["chg"].status == "pending"
    assert [r.status for r in runs_of(hub)] == ["succeeded", "queued"]


def test_a_webhook_sync_that_fails_while_the_provider_is_down_is_retried_once_it_is_back(relay_app):
    relay, app, client = relay_app
    auth = make_org(app)
    auth.pop("org_id")
    created = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                          headers=auth)
    assert created.status_code == 201, created.text
    connection_id = created.json()["connection"]["id"]
    relay.down = True
    answer = client.post(f"{API}/webhooks/ledger?connection_id={connection_id}", json={"id": "evt_sync_1"})
    assert answer.json() == {"success": True, "received": 1, "duplicates": 0, "duplicate": False}

    def event() -> WebhookEvent:
        return events_of(app.state.hub)["evt_sync_1"]

    wait_until(lambda: event().attempts >= 1, timeout=30, message="the failed sync counted against the event")
    assert event().status == "pending" and "ledger is down" in event().error
    logs = client.get(f"{API}/connections/{connection_id}/sync/logs", headers=auth).json()["runs"]
    assert logs and all(r["error_code"] == "provider_unavailable" for r in logs if r["status"] == "failed")

    relay.down = False
    relay.put("it_late", {"name": "changed during the outage"})
    wait_until(lambda: event().status == "processed", timeout=30, message="the event applied after recovery")
    assert stored(app.state.hub, connection_id, "items") == relay.items
    logs = client.get(f"{API}/connections/{connection_id}/sync/logs", headers=auth).json()["runs"]
    assert logs[0]["status"] == "succeeded"
    assert {r["trigger"] for r in logs} == {"webhook"}
    assert len(logs) <= event().attempts  # one run per try, not one per look


def test_the_same_provider_event_at_two_connections_is_applied_to_both(client, hub_app):
    hub: Hub = hub_app.state.hub
    deliveries = []
    for org_name, secret in (("acme", SECRET), ("globex", "whsec_globex456")):
        auth = make_org(hub_app, org_name)
        auth.pop("org_id")
        connection = connect(client, auth, credentials={"api_key": API_KEY, "webhook_secret": secret})
        note = {"id": "note_shared", "title": f"for {org_name}", "body": "", "updated_at": utcnow().isoformat()}
        body, headers = signed_delivery(secret, {"id": "evt_same", "type": "note.updated", "data": note},
                                        int(time.time()))
        deliveries.append((connection["id"], note, body, headers))
    for connection_id, _note, body, headers in deliveries:
        answer = client.post(f"{API}/webhooks/example?connection_id={connection_id}", content=body, headers=headers)
        assert answer.json() == {"success": True, "received": 1, "duplicates": 0, "duplicate": False}
    connection_id, _note, body, headers = deliveries[0]
    replay = client.post(f"{API}/webhooks/example?connection_id={connection_id}", content=body, headers=headers)
    assert replay.json() == {"success": True, "received": 0, "duplicates": 1, "duplicate": True}
    for connection_id, note, _body, _headers in deliveries:
        wait_until(lambda: stored(hub, connection_id, "notes") == {"note_shared": note},
                   message=f"the event applied to {connection_id}")


def test_webhook_record_updates_and_deletes_reach_the_mapped_view(client, auth, example_fake):
    connection = connect(client, auth)
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs", json={
        "entity": "notes", "mappings": [{"source": "title", "target": "subject"}]}, headers=auth).json()["sync_config"]
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    records = f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/records"
    # The app hears of each (at an address that does not answer: what was sent is kept).
    endpoint = client.post(f"{API}/event-endpoints", json={"url": "http://127.0.0.1:9/hub-events",
                                                           "events": ["records.changed"]}, headers=auth).json()
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
    told = client.get(f"{API}/event-endpoints/{endpoint['endpoint']['id']}/deliveries", headers=auth).json()
    assert [{k: d["payload"]["data"][k] for k in ("source", "entity", "sync_config_id", "created", "updated",
                                                  "deleted")} for d in reversed(told["deliveries"])] == [
        {"source": "webhook", "entity": "notes", "sync_config_id": config["id"], "created": ["note_1"], "updated": [],
         "deleted": []},
        {"source": "webhook", "entity": "notes", "sync_config_id": config["id"], "created": [], "updated": [],
         "deleted": ["note_1"]}]


def test_event_ids_a_provider_sends_as_numbers_are_stored_as_text(client, auth, example_fake):
    # The example plugin passes the delivery's id through: a number used to be a 500 at intake.
    connection = connect(client, auth)
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    note = {"id": "note_1", "title": "numbered", "body": "", "updated_at": utcnow().isoformat()}
    body, headers = signed_delivery(SECRET, {"id": 5, "type": "note.updated", "data": note}, int(time.time()))
    first = client.post(url, content=body, headers=headers)
    assert first.status_code == 200, first.text
    again = client.post(url, content=body, headers=headers)
    assert again.status_code == 200 and again.json()["duplicates"] == 1
    events = client.get(f"{API}/connections/{connection['id']}/webhooks/events", headers=auth).json()["events"]
    assert [e["dedup_key"] for e in events] == ["5"]


def test_a_disabled_configs_events_change_nothing(client, auth, hub_app, example_fake):
    """The tenant stopped syncing the entity: its events are ignored, and no
    sync is queued for them, until the config is enabled again."""
    hub: Hub = hub_app.state.hub
    connection = connect(client, auth)
    configs = f"{API}/connections/{connection['id']}/sync-configs"
    config = client.post(configs, json={"entity": "notes", "enabled": False}, headers=auth).json()["sync_config"]
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    note = {"id": "note_1", "title": "while disabled", "body": "", "updated_at": utcnow().isoformat()}
    body, headers = signed_delivery(SECRET, {"id": "e1", "type": "note.updated", "data": note}, int(time.time()))
    client.post(url, content=body, headers=headers)
    wait_until(lambda: events_of(hub)["e1"].status != "pending", message="the event looked at")
    assert events_of(hub)["e1"].status == "ignored" and stored(hub, connection["id"], "notes") == {}
    assert runs_of(hub) == []
    assert client.put(f"{configs}/{config['id']}", json={"enabled": True}, headers=auth).status_code == 200
    body, headers = signed_delivery(SECRET, {"id": "e2", "type": "note.updated", "data": note}, int(time.time()))
    client.post(url, content=body, headers=headers)
    wait_until(lambda: stored(hub, connection["id"], "notes") == {"note_1": note}, message="the event applied")


def test_a_creation_snapshot_delivered_late_does_not_replace_a_later_version_of_the_same_second(
        client, auth, hub_app, example_fake):
    """Stripe versions events by whole seconds and delivers in any order: a
    ``created`` arriving after an update of its second must not win the tie."""
    hub: Hub = hub_app.state.hub
    connection = connect(client, auth)
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    moment = utcnow().replace(microsecond=0).isoformat()
    first = {"id": "note_1", "title": "as created", "body": "", "updated_at": moment}
    later = {**first, "title": "updated the same second"}
    for event_id, kind, note in (("e_upd", "note.updated", later), ("e_new", "note.created", first)):
        body, headers = signed_delivery(SECRET, {"id": event_id, "type": kind, "data": note}, int(time.time()))
        client.post(url, content=body, headers=headers)
        wait_until(lambda: events_of(hub)[event_id].status == "processed", message=f"{kind} applied")
    assert stored(hub, connection["id"], "notes") == {"note_1": later}
    # A creation snapshot of a record not stored yet is stored as usual.
    body, headers = signed_delivery(SECRET, {"id": "e_2", "type": "note.created",
                                             "data": {**first, "id": "note_2"}}, int(time.time()))
    client.post(url, content=body, headers=headers)
    wait_until(lambda: "note_2" in stored(hub, connection["id"], "notes"), message="the second creation applied")


def test_a_deletion_while_a_config_was_disabled_is_applied_by_the_pass_after_re_enabling(client, auth, hub_app, example_fake):
    """Its events were ignored while it was off: the first pass after is a full one."""
    hub: Hub = hub_app.state.hub
    fake = example_fake[1]
    connection = connect(client, auth)
    configs = f"{API}/connections/{connection['id']}/sync-configs"
    config = client.post(configs, json={"entity": "notes"}, headers=auth).json()["sync_config"]
    sync = f"{API}/connections/{connection['id']}/sync"
    run = client.post(sync, json={"entity": "notes"}, headers=auth).json()["run"]
    assert wait_for_run(client, auth, connection["id"], run["id"])["status"] == "succeeded"
    [victim, *_] = sorted(stored(hub, connection["id"], "notes"))
    assert client.put(f"{configs}/{config['id']}", json={"enabled": False}, headers=auth).status_code == 200
    fake.state.notes.delete(victim)
    body, headers = signed_delivery(SECRET, {"id": "e_del", "type": "note.deleted", "data": {"id": victim}},
                                    int(time.time()))
    client.post(f"{API}/webhooks/example?connection_id={connection['id']}", content=body, headers=headers)
    wait_until(lambda: events_of(hub)["e_del"].status != "pending", message="the event looked at")
    assert events_of(hub)["e_del"].status == "ignored"
    assert client.put(f"{configs}/{config['id']}", json={"enabled": True}, headers=auth).status_code == 200
    run = client.post(sync, json={"entity": "notes"}, headers=auth).json()["run"]
    assert wait_for_run(client, auth, connection["id"], run["id"])["status"] == "succeeded"
    assert victim not in stored(hub, connection["id"], "notes"), "deleted at the provider, still stored as live"


def _looked_at(hub, dedup_key: str | None = None) -> bool:
    """Whether the event (the only one, or the one of ``dedup_key``) was applied or given up on once."""
    with hub.session() as session:
        query = select(WebhookEvent)
        event = session.exec(query.where(WebhookEvent.dedup_key == dedup_key) if dedup_key else query).one()
        return event.status != "pending" or event.attempts > 0


def _event_status(hub, dedup_key: str) -> str | None:
    with hub.session() as session:
        event = session.exec(select(WebhookEvent).where(WebhookEvent.dedup_key == dedup_key)).first()
        return None if event is None else event.status


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_webhook_after_its_config_was_deleted_is_ignored_until_a_config_is_made_again(
        client, auth, hub_app, example_fake):
    """The tenant syncs tags and deleted its notes config (DELETE removes the
    config and the notes stored). A note webhook arriving afterwards stored a
    note no config owned. Once the tenant makes a notes config again, the
    entity's events count again."""
    hub = hub_app.state.hub
    connection = connect(client, auth)
    configs = f"{API}/connections/{connection['id']}/sync-configs"
    client.post(configs, json={"entity": "tags"}, headers=auth)
    notes = client.post(configs, json={"entity": "notes"}, headers=auth).json()["sync_config"]
    assert client.delete(f"{configs}/{notes['id']}", headers=auth).status_code in (200, 204)
    url = f"{API}/webhooks/example?connection_id={connection['id']}"

    def deliver(event_id: str, note_id: str) -> None:
        note = {"id": note_id, "title": "t", "body": "", "updated_at": utcnow().isoformat()}
        body, headers = signed_delivery(SECRET, {"id": event_id, "type": "note.updated", "data": note},
                                        int(time.time()))
        assert client.post(url, content=body, headers=headers).json()["received"] == 1
        wait_until(lambda: _event_status(hub, event_id) not in (None, "pending"), message=f"{event_id} applied")

    deliver("e_after", "note_after_delete")
    assert _event_status(hub, "e_after") == "ignored"
    assert stored(hub, connection["id"], "notes", include_deleted=True) == {}
    with hub.session() as session:
        assert [c.entity for c in session.exec(select(SyncConfig))] == ["tags"]

    assert client.post(configs, json={"entity": "notes"}, headers=auth).status_code == 201
    deliver("e_again", "note_made_again")
    assert _event_status(hub, "e_again") == "processed"
    assert list(stored(hub, connection["id"], "notes")) == ["note_made_again"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_change_notices_make_pulls_of_any_entity_but_one_whose_config_was_deleted(relay_app):
    """On a connection never configured, a notice's pull makes its entity's
    config (as POST /sync would), for every entity a notice names. An entity
    whose config the tenant deleted is not pulled, nor its config made again:
    it made an enabled config again and pulled every record."""
    relay, app, client = relay_app
    hub = app.state.hub
    auth = make_org(app)
    created = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                          headers=auth)
    connection_id = created.json()["connection"]["id"]
    configs = f"{API}/connections/{connection_id}/sync-configs"
    hook = f"{API}/webhooks/ledger?connection_id={connection_id}"
    for event_id, entity in (("evt_items", "items"), ("evt_changes", "changes")):
        assert client.post(hook, json={"id": event_id, "entity": entity}).json()["received"] == 1
        wait_until(lambda: _event_status(hub, event_id) not in (None, "pending"), message=f"{event_id} applied")
        assert _event_status(hub, event_id) == "processed"
    listed = {c["entity"]: c["id"] for c in client.get(configs, headers=auth).json()["sync_configs"]}
    assert sorted(listed) == ["changes", "items"]

    assert client.delete(f"{configs}/{listed['items']}", headers=auth).status_code in (200, 204)
    assert client.post(hook, json={"id": "evt_items_2", "entity": "items"}).json()["received"] == 1
    wait_until(lambda: _event_status(hub, "evt_items_2") not in (None, "pending"), message="the notice applied")
    listed = sorted(c["entity"] for c in client.get(configs, headers=auth).json()["sync_configs"])
    assert (_event_status(hub, "evt_items_2"), listed) == ("ignored", ["changes"])
    assert stored(hub, connection_id, "items", include_deleted=True) == {}


def test_a_record_with_a_lone_surrogate_is_stored_mended_not_failed_at_every_try(client, auth, hub_app,
                                                                                 example_fake):
    """JSON allows "\\ud800" (JavaScript's JSON.stringify writes it for a string
    cut in the middle of an emoji), UTF-8 cannot hold it: every try to apply
    the event failed alike (UnicodeEncodeError in the record store), 15 times,
    then `failed`. The text is kept with U+FFFD in its place."""
    hub = hub_app.state.hub
    connection = connect(client, auth)
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    note = {"id": "note_odd", "title": "lone \ud800 surrogate", "body": "", "updated_at": utcnow().isoformat()}
    body, headers = signed_delivery(SECRET, {"id": "e_odd", "type": "note.updated", "data": note}, int(time.time()))
    assert b"\\ud800" in body
    assert client.post(url, content=body, headers=headers).json()["received"] == 1
    wait_until(lambda: _looked_at(hub), message="the event applied")
    with hub.session() as session:
        event = session.exec(select(WebhookEvent)).one()
    assert (event.status, event.attempts, event.error) == ("processed", 1, None)
    assert stored(hub, connection["id"], "notes")["note_odd"]["title"] == "lone \ufffd surrogate"


def test_a_newer_warning_does_not_overtake_an_older_error(settings, example_registry):
    """A warning (consent about to expire) says nothing of whether the
    connection works: an older error stored before it, applied in the same
    batch, still puts the connection in error (it was `ignored` as overtaken)."""
    from hub.models import Connection
    from hub.types import CONNECTION_BROKEN, CONNECTION_WARNING

    hub = Hub(settings, example_registry)
    hub.migrate()
    connection = make_connection(hub, "example", {"api_key": "k"})
    now = utcnow()
    for key, action, ago, message in (("error", CONNECTION_BROKEN, 2, "login required"),
                                      ("expiring", CONNECTION_WARNING, 1, "consent expires soon")):
        with hub.session() as session:
            row = WebhookEvent(provider="example", dedup_key=key, connection_id=connection.id,
                               organization_id=connection.organization_id, type=f"item.{key}", action=action,
                               payload={"message": message})
            session.add(row)
            session.add(WebhookEventState(event_id=row.id, occurred_at=now - timedelta(minutes=ago)))
            session.commit()
    run(WebhookProcessor(hub).process_once())
    with hub.session() as session:
        got = session.get(Connection, connection.id)
        statuses = {e.dedup_key: e.status for e in session.exec(select(WebhookEvent))}
    assert (got.status, got.last_error, got.warning) == ("error", "login required", "consent expires soon")
    assert statuses == {"error": "processed", "expiring": "processed"}
