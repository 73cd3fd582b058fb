"""Events for the tenant's app (outbound webhooks): endpoints through the
API, events written with the change they tell of, signed deliveries over
real HTTP to a receiving app on loopback, backoff, Retry-After, giving up,
retries, and several processes sharing the deliveries (PostgreSQL).
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hub.config import Settings
from hub.events import EVENT_TYPES, emit, verify_signature
from hub.models import Connection, EventDelivery, EventEndpoint, SyncConfig, utcnow
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.services import events as service
from hub.services.events import MAX_ATTEMPTS, EventDeliverer
from hub.services.orgs import create_organization
from hub.testing import postgres, wait_until
from hub.types import HubError, ValidationFailed
from tests.conftest import API, make_org
from tests.sync_support import wait_run, waiting_for_a_lock
from tests.test_sync_api import assert_error, start
from tests.test_sync_push import provider_edit, setup_notes


def receiving_app() -> Starlette:
    """The tenant's app: notes each POST (path, headers, body) and answers
    the next of ``answers`` ((status, headers)), else 200."""
    state = SimpleNamespace(received=[], answers=[])

    async def hook(request: Request) -> Response:
        state.received.append(SimpleNamespace(path=request.url.path, headers=dict(request.headers),
                                              body=await request.body()))
        status, headers = state.answers.pop(0) if state.answers else (200, {})
        return Response("ok" if status < 300 else "not now", status_code=status, headers=headers)

    app = Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])
    app.state.log = state
    return app


def documented(event: dict) -> dict:
    """``event`` as the served document's ``webhooks`` describe its type: every
    field of its data, and no other (checked against the model the document is made from)."""
    from hub.api.schemas import EVENT_DATA

    model = EVENT_DATA[event["type"]]
    model.model_validate(event["data"])
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert required <= set(event["data"]) <= set(model.model_fields), (event["type"], sorted(event["data"]))
    return event


def wait_for(condition, seconds: float = 15.0):
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def test_the_app_hears_of_sync_runs_and_conflicts_signed_and_only_the_types_it_takes(client, auth, hub_app,
                                                                                       example_fake, serve_app):
    receiver = receiving_app()
    url = serve_app(receiver)
    created = client.post(f"{API}/event-endpoints", json={"url": f"{url}/sync", "description": "LogiAccounting",
                                                          "events": ["sync.succeeded", "conflict.opened"]},
                          headers=auth)
    assert created.status_code == 201, created.text
    secret, endpoint = created.json()["secret"], created.json()["endpoint"]
    assert secret.startswith("whsec_") and endpoint["events"] == ["sync.succeeded", "conflict.opened"]
    assert endpoint["deliveries"] == {"pending": 0, "delivered": 0, "failed": 0}
    other = client.post(f"{API}/event-endpoints", json={"url": f"{url}/status", "events": ["sync.failed"]},
                        headers=auth).json()["endpoint"]
    listed = client.get(f"{API}/event-endpoints", headers=auth)
    assert [e["id"] for e in listed.json()["endpoints"]] == [endpoint["id"], other["id"]]
    assert secret not in listed.text and secret not in client.get(
        f"{API}/event-endpoints/{endpoint['id']}", headers=auth).text

    connection, config, records = setup_notes(client, auth, policy="review")
    first = wait_for(lambda: receiver.state.log.received)[0]
    assert first.path == "/sync" and first.headers["hub-event-type"] == "sync.succeeded"
    event = json.loads(first.body)
    assert first.headers["hub-event-id"] == event["id"] and event["type"] == "sync.succeeded"
    assert verify_signature(secret, first.body, first.headers["hub-signature"])
    assert not verify_signature(secret.replace("whsec_", "whsec_x"), first.body, first.headers["hub-signature"])
    assert not verify_signature(secret, first.body + b" ", first.headers["hub-signature"])
    assert not verify_signature(secret, first.body, first.headers["hub-signature"], now=time.time() + 301)
    run = client.get(f"{API}/connections/{connection['id']}/sync/runs/{event['data']['run']['id']}",
                     headers=auth).json()["run"]
    assert event["data"]["connection_id"] == connection["id"] and event["data"]["provider"] == "example"
    assert not {"owner", "heartbeat_at", "organization_id"} & set(event["data"]["run"])  # (who ran it: internal)
    assert {k: event["data"]["run"][k] for k in ("status", "created", "entity", "direction")} == {
        k: run[k] for k in ("status", "created", "entity", "direction")} and run["created"] == 23

    # A conflict left for review: the app hears of it (and of the run that found it).
    client.put(f"{records}/note_2", json={"data": {"subject": "hub side"}, "sync": False}, headers=auth)
    provider_edit(example_fake[1], "note_2", "provider side")
    both = wait_run(client, auth, connection["id"], start(client, auth, connection["id"], entity="notes")["id"])
    assert both["conflicts"] == 1
    wait_for(lambda: len(receiver.state.log.received) == 3)
    bodies = [documented(json.loads(r.body)) for r in receiver.state.log.received]
    by_type = {b["type"]: b for b in bodies}
    assert sorted(by_type) == ["conflict.opened", "sync.succeeded"] and [b["type"] for b in bodies].count(
        "sync.succeeded") == 2
    [conflict] = client.get(f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/conflicts",
                            headers=auth).json()["conflicts"]
    assert by_type["conflict.opened"]["data"]["conflict_id"] == conflict["id"]
    assert by_type["conflict.opened"]["data"]["entity"] == "notes"
    assert by_type["conflict.opened"]["data"]["sync_config_id"] == config["id"]  # (the resolve route names it)
    assert all(r.path == "/sync" for r in receiver.state.log.received)  # the other endpoint takes sync.failed only

    deliveries = client.get(f"{API}/event-endpoints/{endpoint['id']}/deliveries", params={"limit": 2},
                            headers=auth).json()
    assert deliveries["has_more"] is True and len(deliveries["deliveries"]) == 2
    rest = client.get(f"{API}/event-endpoints/{endpoint['id']}/deliveries",
                      params={"cursor": deliveries["next_cursor"]}, headers=auth).json()
    shown = deliveries["deliveries"] + rest["deliveries"]
    assert sorted(d["event_id"] for d in shown) == sorted(b["id"] for b in bodies)
    assert all(d["status"] == "delivered" and d["attempts"] == 1 and d["response_status"] == 200 for d in shown)
    assert client.get(f"{API}/event-endpoints/{endpoint['id']}", headers=auth).json()["endpoint"]["deliveries"][
        "delivered"] == 3

    # A ping reaches an endpoint whatever types it takes; after a rotation, events are signed with the new secret.
    rotation = client.post(f"{API}/event-endpoints/{other['id']}/rotate-secret", headers=auth).json()
    rotated = rotation["secret"]
    assert rotation["endpoint"]["previous_secret_until"] and other["previous_secret_until"] is None
    ping = client.post(f"{API}/event-endpoints/{other['id']}/ping", headers=auth)
    assert ping.status_code == 202 and ping.json()["delivery"]["type"] == "ping"
    pinged = wait_for(lambda: [r for r in receiver.state.log.received if r.path == "/status"])[0]
    assert verify_signature(rotated, pinged.body, pinged.headers["hub-signature"])
    assert documented(json.loads(pinged.body))["data"] == {"endpoint_id": other["id"]}
    served = client.get("/openapi.json").json()["webhooks"]
    assert sorted(served) == sorted(EVENT_TYPES) and "Hub-Signature" in json.dumps(served["ping"])


def test_endpoints_are_checked_and_kept_to_their_organization(client, auth, hub_app):
    types = client.get(f"{API}/event-types", headers=auth).json()["event_types"]
    assert [t["type"] for t in types] == list(EVENT_TYPES)
    assert [t["type"] for t in types if not t["subscribable"]] == ["ping"]
    endpoints = f"{API}/event-endpoints"
    for url in ("ftp://app.example.com/hook", "app.example.com/hook", "https://user:pass@app.example.com/hook",
                "https://app.example.com:port/hook", "https:///hook", "https://app.example.com:65536/h"):
        assert_error(client.post(endpoints, json={"url": url}, headers=auth), 422, "invalid_url")
    assert "port must be a number from 1 to 65535" in client.post(
        endpoints, json={"url": "https://app.example.com:65536/h"}, headers=auth).json()["error"]
    assert_error(client.post(endpoints, json={"url": "https://app.example.com/h", "events": ["ping"]}, headers=auth),
                 422, "unknown_event_type")
    refused = client.post(endpoints, json={"url": "https://app.example.com/h", "events": ["sync.done"]}, headers=auth)
    assert_error(refused, 422, "unknown_event_type")
    assert refused.json()["fields"] == ["events"] and "sync.succeeded" in refused.json()["error"]
    assert_error(client.post(endpoints, json={"url": "https://app.example.com/h", "secret": "mine"}, headers=auth),
                 422, "validation_error")
    made = client.post(endpoints, json={"url": "https://app.example.com/h"}, headers=auth).json()
    endpoint = made["endpoint"]
    assert endpoint["events"] == [] and endpoint["enabled"] is True
    assert_error(client.put(f"{endpoints}/{endpoint['id']}", json={"url": None}, headers=auth), 422,
                 "validation_error")
    changed = client.put(f"{endpoints}/{endpoint['id']}", json={"events": ["sync.failed", "sync.failed"],
                                                                 "enabled": False}, headers=auth).json()["endpoint"]
    assert changed["events"] == ["sync.failed"] and changed["enabled"] is False
    assert changed["url"] == "https://app.example.com/h"
    same = client.put(f"{endpoints}/{endpoint['id']}", json={"enabled": False}, headers=auth).json()["endpoint"]
    assert same["updated_at"] == changed["updated_at"]  # nothing changed
    assert_error(client.get(f"{endpoints}/{endpoint['id']}/deliveries", params={"type": "sync.succeded"},
                            headers=auth), 422, "validation_error")

    stranger = make_org(hub_app, "stranger")
    stranger.pop("org_id")
    for method, path in (("get", ""), ("put", ""), ("delete", ""), ("post", "/ping"), ("post", "/rotate-secret"),
                         ("get", "/deliveries")):
        answer = getattr(client, method)(f"{endpoints}/{endpoint['id']}{path}", headers=stranger,
                                         **({"json": {}} if method == "put" else {}))
        assert_error(answer, 404, "event_endpoint_not_found")
    assert client.get(endpoints, headers=stranger).json()["endpoints"] == []
    assert_error(client.post(f"{endpoints}/{endpoint['id']}/deliveries/nope/retry", headers=auth), 404,
                 "event_delivery_not_found")
    assert client.delete(f"{endpoints}/{endpoint['id']}", headers=auth).json() == {"success": True}
    assert_error(client.get(f"{endpoints}/{endpoint['id']}", headers=auth), 404, "event_endpoint_not_found")


def test_one_endpoint_per_url_so_an_app_gets_each_event_once(client, auth, hub_app):
    """A create retried after its answer was lost made a second endpoint at
    the same URL, and the app got every event twice."""
    endpoints = f"{API}/event-endpoints"
    first = client.post(endpoints, json={"url": "https://app.example.com/h", "events": ["sync.failed"]},
                        headers=auth).json()["endpoint"]
    again = client.post(endpoints, json={"url": "https://app.example.com/h"}, headers=auth)
    assert_error(again, 409, "event_endpoint_exists")
    assert again.json()["details"] == {"event_endpoint_id": first["id"]} and again.json()["fields"] == ["url"]
    other = client.post(endpoints, json={"url": "https://app.example.com/other"}, headers=auth).json()["endpoint"]
    moved = client.put(f"{endpoints}/{other['id']}", json={"url": "https://app.example.com/h"}, headers=auth)
    assert_error(moved, 409, "event_endpoint_exists")
    assert [e["url"] for e in client.get(endpoints, headers=auth).json()["endpoints"]] == [
        "https://app.example.com/h", "https://app.example.com/other"]  # nothing changed
    # Its own url again, and another organization's same url, are fine.
    assert client.put(f"{endpoints}/{first['id']}", json={"url": "https://app.example.com/h"},
                      headers=auth).status_code == 200
    stranger = make_org(hub_app, "stranger")
    stranger.pop("org_id")
    assert client.post(endpoints, json={"url": "https://app.example.com/h"}, headers=stranger).status_code == 201


@pytest.fixture
def bare_hub(settings):
    return hub_with_a_connection(settings)


def hub_with_a_connection(settings) -> tuple[Hub, str, str]:
    """A migrated hub without plugins, an organization and a connection: (hub, its id, the connection's)."""
    hub = Hub(settings, PluginRegistry())
    hub.migrate()
    with hub.session() as session:
        org, _key = create_organization(session, "acme")
        connection = Connection(organization_id=org.id, provider="ledger", category="test", name="Ledger")
        session.add(connection)
        session.commit()
        session.refresh(connection)
    return hub, org.id, connection.id


def deliveries(hub: Hub) -> list[EventDelivery]:
    with hub.session() as session:
        return list(session.exec(select(EventDelivery).order_by(EventDelivery.created_at, EventDelivery.id)))


def due_now(hub: Hub) -> None:
    with hub.session() as session:
        session.execute(sa.update(EventDelivery).where(EventDelivery.status == "pending")
                        .values(next_attempt_at=utcnow() - timedelta(seconds=1)))
        session.commit()


def test_a_failing_endpoint_gets_the_event_again_with_backoff_and_retry_after_then_is_given_up(
        bare_hub, serve_app, caplog):
    hub, org_id, connection_id = bare_hub
    receiver = receiving_app()
    url = serve_app(receiver)
    endpoint, secret = service.create_endpoint(hub, org_id, url=f"{url}/hook", events=["connection.status_changed"],
                                               description=None, enabled=True)
    answers = receiver.state.log.answers

    async def scenario() -> None:
        deliverer = EventDeliverer(hub)
        try:
            hub.mark(connection_id, "error", "the provider refused the key")
            hub.mark(connection_id, "error", "the provider refused the key again")  # no change: no event
            [delivery] = deliveries(hub)
            assert documented(delivery.payload)["data"] == {
                "connection_id": connection_id, "provider": "ledger", "status": "error",
                "previous_status": "connected", "last_error": "the provider refused the key"}

            answers.append((500, {}))
            assert await deliverer.deliver_once() == 1
            [delivery] = deliveries(hub)
            assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, 500)
            assert delivery.error == "the endpoint answered HTTP 500: not now"
            assert 25 < (delivery.next_attempt_at - utcnow()).total_seconds() <= 30
            assert await deliverer.deliver_once() == 0  # not due yet

            due_now(hub)
            answers.append((429, {"Retry-After": "1000"}))
            assert await deliverer.deliver_once() == 1
            [delivery] = deliveries(hub)
            assert delivery.attempts == 2 and 990 < (delivery.next_attempt_at - utcnow()).total_seconds() <= 1000

            # Asked for again: sent now, and delivered.
            service.retry_delivery(hub, endpoint, delivery.id)
            assert await deliverer.deliver_once() == 1
            [delivery] = deliveries(hub)
            assert (delivery.status, delivery.attempts, delivery.response_status) == ("delivered", 3, 200)
            assert delivery.delivered_at is not None and delivery.next_attempt_at is None
            assert [r.headers["hub-event-id"] for r in receiver.state.log.received] == [delivery.event_id] * 3
            assert all(verify_signature(secret, r.body, r.headers["hub-signature"])
                       for r in receiver.state.log.received)

            # The last attempt failing gives the event up, logged (without the secret).
            hub.mark(connection_id, "connected", None)
            with hub.session() as session:
                session.execute(sa.update(EventDelivery).where(EventDelivery.status == "pending")
                                .values(attempts=MAX_ATTEMPTS - 1))
                session.commit()
            answers.append((503, {}))
            assert await deliverer.deliver_once() == 1
            given_up = [d for d in deliveries(hub) if d.status == "failed"]
            assert len(given_up) == 1 and given_up[0].attempts == MAX_ATTEMPTS
            assert "could not be delivered after 10 attempts" in caplog.text and secret not in caplog.text

            # An endpoint that does not answer in time, and one that cannot be reached, are failures too.
            service.update_endpoint(hub, org_id, endpoint.id, {"url": "http://127.0.0.1:9/hook"})
            service.retry_delivery(hub, endpoint, given_up[0].id)
            assert await deliverer.deliver_once() == 1
            [failed] = [d for d in deliveries(hub) if d.id == given_up[0].id]
            assert failed.status == "failed" and failed.response_status is None
            assert failed.error.startswith("could not reach the endpoint: ConnectError")
        finally:
            await deliverer.stop()

    asyncio.run(scenario())


def test_events_are_written_with_their_change_and_held_while_their_endpoint_is_disabled(bare_hub, serve_app):
    hub, org_id, connection_id = bare_hub
    receiver = receiving_app()
    endpoint, _secret = service.create_endpoint(hub, org_id, url=f"{serve_app(receiver)}/hook", events=[],
                                                description=None, enabled=True)
    with hub.session() as session:
        assert len(emit(session, org_id, "sync.failed", {"connection_id": connection_id, "run": {}})) == 1
        session.rollback()  # the change is not committed: neither is its event
    assert deliveries(hub) == []
    with hub.session() as session:
        # Another organization's endpoints hear nothing of this one's events.
        other, _key = create_organization(session, "other")
        assert emit(session, other.id, "sync.failed", {"run": {}}) == []
    hub.mark(connection_id, "expired", "the grant was revoked")
    service.update_endpoint(hub, org_id, endpoint.id, {"enabled": False})
    hub.mark(connection_id, "connected", None)  # a disabled endpoint is sent no new events

    async def scenario() -> None:
        deliverer = EventDeliverer(hub)
        try:
            assert await deliverer.deliver_once() == 0  # what it had is held while it is disabled
            service.update_endpoint(hub, org_id, endpoint.id, {"enabled": True})
            assert await deliverer.deliver_once() == 1
        finally:
            await deliverer.stop()

    asyncio.run(scenario())
    [received] = receiver.state.log.received
    assert json.loads(received.body)["data"]["status"] == "expired"
    service.delete_endpoint(hub, org_id, endpoint.id)
    assert deliveries(hub) == []


def test_processes_delivering_together_send_each_event_once(settings, serve_app):
    hubs = [Hub(settings, PluginRegistry()) for _ in range(2)]  # (two processes' engines on one database)
    hubs[0].migrate()
    receiver = receiving_app()
    with hubs[0].session() as session:
        org, _key = create_organization(session, "acme")
    service.create_endpoint(hubs[0], org.id, url=f"{serve_app(receiver)}/hook", events=[], description=None,
                            enabled=True)
    with hubs[0].session() as session:
        for number in range(120):
            emit(session, org.id, "sync.succeeded", {"run": {"id": f"run{number}"}})
        session.commit()

    async def scenario() -> None:
        deliverers = [EventDeliverer(hub) for hub in hubs]
        try:
            while sum(await asyncio.gather(*(d.deliver_once() for d in deliverers))):
                pass
        finally:
            for deliverer in deliverers:
                await deliverer.stop()

    asyncio.run(scenario())
    ids = [r.headers["hub-event-id"] for r in receiver.state.log.received]
    assert len(ids) == len(set(ids)) == 120
    assert {d.status for d in deliveries(hubs[0])} == {"delivered"}
    for hub in hubs:
        hub.engine.dispose()


def test_the_readmes_check_of_a_signature_agrees_with_the_hubs_signing():
    import re
    from pathlib import Path

    from hub.events import new_secret, sign

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    namespace: dict = {}
    exec(re.search(r"```python\n(import hashlib, hmac, time\n.*?)```", readme, re.S).group(1), namespace)
    verified, secret, body = namespace["verified"], new_secret(), b'{"id":"evt_1","data":{"note":"caf\xc3\xa9"}}'
    assert verified(secret, body, sign(secret, body))
    assert not verified(secret, body + b" ", sign(secret, body))
    assert not verified(new_secret(), body, sign(secret, body))
    assert not verified(secret, body, sign(secret, body, int(time.time()) - 301))


@pytest.fixture
def ledger():
    from tests.sync_support import Ledger

    return Ledger(items=250)


def test_the_app_hears_which_records_a_sync_created_changed_and_deleted(hub, conn, ledger):
    from hub.sync.engine import SyncEngine, create_run
    from tests.sync_support import run

    listener, _ = service.create_endpoint(hub, conn.organization_id, url="https://app.example.com/changes",
                                          events=["records.changed"], description=None, enabled=True)
    service.create_endpoint(hub, conn.organization_id, url="https://app.example.com/runs", events=["sync.succeeded"],
                            description=None, enabled=True)

    def pull(full_refresh: bool = False):
        new_run, _ = create_run(hub, conn, entity="items", full_refresh=full_refresh)
        ended = run(SyncEngine(hub).execute(new_run.id))
        assert ended.status == "succeeded", ended.error
        told = [documented(d.payload) for d in deliveries(hub) if d.type == "records.changed"]
        assert all(d.endpoint_id == listener.id for d in deliveries(hub) if d.type == "records.changed")
        with hub.session() as session:  # (seen: the next pull's are the new ones)
            session.execute(sa.update(EventDelivery).values(status="delivered"))
            session.commit()
        return ended, [t for t in told if t["data"]["run_id"] == ended.id]

    first, told = pull()
    assert sorted(i for t in told for i in t["data"]["created"]) == sorted(ledger.items) and len(told) > 1
    assert all(t["data"]["updated"] == t["data"]["deleted"] == [] and len(t["data"]["created"]) <= 100 for t in told)
    assert {(t["data"]["connection_id"], t["data"]["provider"], t["data"]["entity"], t["data"]["source"])
            for t in told} == {(conn.id, "ledger", "items", "sync")}
    with hub.session() as session:
        [config_id] = session.execute(sa.select(SyncConfig.id).where(SyncConfig.connection_id == conn.id,
                                                                     SyncConfig.entity == "items")).scalars()
    assert {t["data"]["sync_config_id"] for t in told} == {config_id}

    ledger.put("it_00007", {"name": "renamed"})
    ledger.put("it_00100", {"amount": 1})
    ledger.remove("it_00200")
    _second, told = pull(full_refresh=True)  # (a full pass: what it no longer lists is deleted)
    assert sorted(i for t in told for i in t["data"]["updated"]) == ["it_00007", "it_00100"]
    assert [i for t in told for i in t["data"]["deleted"]] == ["it_00200"]
    assert not any(t["data"]["created"] for t in told)

    _third, told = pull()  # nothing changed: nothing to tell
    assert told == []


def test_a_record_a_push_finds_deleted_at_the_provider_is_told_deleted(hub, conn, ledger):
    """The push of a change to a record the provider deleted meanwhile (its
    404) marks it deleted, as a pull would: the app hears it as one."""
    from hub.sync import configs as config_service
    from hub.sync import stored as stored_records
    from hub.sync.engine import SyncEngine, create_run
    from tests.sync_support import run

    config = config_service.create_config(hub, conn, entity="items", direction="both")
    pulled, _ = create_run(hub, conn, entity="items", direction="pull")
    assert run(SyncEngine(hub).execute(pulled.id)).status == "succeeded"
    service.create_endpoint(hub, conn.organization_id, url="https://app.example.com/changes",
                            events=["records.changed"], description=None, enabled=True)
    stored_records.write_record(hub, conn, config, "it_00042", {"name": "changed in the app"}, mapped=False)
    ledger.remove("it_00042")

    pushed, _ = create_run(hub, conn, entity="items", direction="push")
    ended = run(SyncEngine(hub).execute(pushed.id))
    assert ended.status == "succeeded" and ended.conflicts == 1, ended.error
    [told] = [documented(d.payload) for d in deliveries(hub) if d.type == "records.changed"]
    assert told["data"]["deleted"] == ["it_00042"] and told["data"]["run_id"] == ended.id
    assert told["data"]["sync_config_id"] == config.id and told["data"]["provider"] == "ledger"


def test_urls_that_cannot_be_sent_to_and_private_ones_when_refused_are_invalid(bare_hub, monkeypatch):
    hub, org_id, _connection_id = bare_hub
    for url in ("https://\u2603.example/hook", "https://a\u200b.example/", "https://app.example.com/\x7f",
                "https://app.example.com/a b", "https://xn--abc.example/"):
        with pytest.raises(ValidationFailed) as refused:
            service.create_endpoint(hub, org_id, url=url, events=[], description=None, enabled=True)
        assert refused.value.code == "invalid_url"
    service.create_endpoint(hub, org_id, url="http://[::1]:8080/hook", events=[], description=None, enabled=True)

    monkeypatch.setattr(hub.settings, "event_private_urls", False)
    for url in ("http://127.0.0.1:8000/hook", "http://localhost/hook", "http://10.1.2.3/hook",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/hook", "http://[fe80::1]/hook"):
        with pytest.raises(ValidationFailed) as refused:
            service.create_endpoint(hub, org_id, url=url, events=[], description=None, enabled=True)
        assert refused.value.code == "invalid_url" and "HUB_EVENT_PRIVATE_URLS" in refused.value.message
    service.create_endpoint(hub, org_id, url="https://93.184.216.34/hook", events=[], description=None,
                            enabled=True)


def test_an_attempt_is_bounded_in_time_and_in_what_it_reads_and_a_private_endpoint_is_not_sent_to(
        bare_hub, serve_app, monkeypatch):
    import hub.services.events as events_module

    hub, org_id, connection_id = bare_hub
    big = b"x" * 5_000_000
    released = threading.Event()

    async def endpoint(request: Request) -> Response:
        if request.url.path == "/slow":  # a minute, or until the test is over
            for _ in range(600):
                if released.is_set():
                    break
                await asyncio.sleep(0.1)
        return Response(big, status_code=500)

    url = serve_app(Starlette(routes=[Route("/{path:path}", endpoint, methods=["POST"])]))
    slow, _ = service.create_endpoint(hub, org_id, url=f"{url}/slow", events=[], description=None, enabled=True)
    large, _ = service.create_endpoint(hub, org_id, url=f"{url}/large", events=[], description=None, enabled=True)
    monkeypatch.setattr(events_module, "TIMEOUT_SECONDS", 0.5)

    async def scenario() -> None:
        deliverer = EventDeliverer(hub)
        try:
            hub.mark(connection_id, "error", "refused")
            started = time.monotonic()
            assert await deliverer.deliver_once() == 2
            assert time.monotonic() - started < 20  # (not the slow endpoint's minute)
            by_endpoint = {d.endpoint_id: d for d in deliveries(hub)}
            assert by_endpoint[slow.id].error == "no answer within 0.5 s"
            assert by_endpoint[large.id].response_status == 500
            assert by_endpoint[large.id].error == "the endpoint answered HTTP 500: " + "x" * 300

            # Sending to a loopback address once the hub refuses them: refused at sending too.
            monkeypatch.setattr(hub.settings, "event_private_urls", False)
            due_now(hub)
            assert await deliverer.deliver_once() == 2
            assert all("is not a public one" in d.error and d.attempts == 2
                       for d in deliveries(hub))
        finally:
            released.set()
            await deliverer.stop()

    asyncio.run(scenario())


def endpoint_with_an_event(hub: Any, org_id: str, connection_id: str, serve_app: Any) -> tuple[Any, Any]:
    """An endpoint taking every event, its app served on loopback, and one
    event due for it (the connection's status changed): the app, the endpoint."""
    receiver = receiving_app()
    endpoint, _secret = service.create_endpoint(hub, org_id, url=f"{serve_app(receiver)}/hook", events=[],
                                                description=None, enabled=True)
    hub.mark(connection_id, "error", "refused")
    return receiver, endpoint


def test_a_retry_asked_for_during_an_attempt_stands_and_a_send_that_breaks_is_recorded(bare_hub, serve_app,
                                                                                    monkeypatch):
    hub, org_id, connection_id = bare_hub
    _receiver, endpoint = endpoint_with_an_event(hub, org_id, connection_id, serve_app)
    deliverer = EventDeliverer(hub)
    [claimed] = deliverer._claim()
    service.retry_delivery(hub, endpoint, claimed.id)  # while the attempt is under way
    deliverer._record(claimed, service._Outcome(False, 500, "the endpoint answered HTTP 500"))
    [delivery] = deliveries(hub)
    assert (delivery.status, delivery.attempts, delivery.error) == ("pending", 0, None)
    assert delivery.next_attempt_at <= utcnow()

    async def broken(_delivery):
        raise RuntimeError("a bug")

    monkeypatch.setattr(deliverer, "_send", broken)

    async def scenario() -> None:
        try:
            assert await deliverer.deliver_once() == 1
        finally:
            await deliverer.stop()

    asyncio.run(scenario())
    [delivery] = deliveries(hub)
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.error == "the hub could not send it: RuntimeError"

    # Disabled, it is neither pinged nor retried (nothing would be sent until it is enabled again).
    service.update_endpoint(hub, org_id, endpoint.id, {"enabled": False})
    disabled = service.find_endpoint(hub, org_id, endpoint.id)
    for attempt in (lambda: service.ping(hub, org_id, endpoint.id),
                    lambda: service.retry_delivery(hub, disabled, delivery.id)):
        with pytest.raises(HubError) as refused:
            attempt()
        assert refused.value.code == "event_endpoint_disabled" and refused.value.status == 409
    assert [d.next_attempt_at for d in deliveries(hub)] == [None]  # held: not due


def test_after_a_rotation_events_are_signed_with_both_secrets_for_a_day(bare_hub, serve_app):
    hub, org_id, connection_id = bare_hub
    receiver = receiving_app()
    endpoint, old = service.create_endpoint(hub, org_id, url=f"{serve_app(receiver)}/hook", events=[],
                                            description=None, enabled=True)
    _endpoint, new = service.rotate_secret(hub, org_id, endpoint.id)
    hub.mark(connection_id, "error", "refused")

    async def scenario() -> None:
        deliverer = EventDeliverer(hub)
        try:
            assert await deliverer.deliver_once() == 1
            with hub.session() as session:  # a day later, the old one signs no more
                session.execute(sa.update(EventEndpoint).values(previous_secret_until=utcnow()))
                session.commit()
            hub.mark(connection_id, "connected", None)
            assert await deliverer.deliver_once() == 1
        finally:
            await deliverer.stop()

    asyncio.run(scenario())
    first, second = receiver.state.log.received
    assert first.headers["hub-signature"].count("v1=") == 2
    assert verify_signature(old, first.body, first.headers["hub-signature"])
    assert verify_signature(new, first.body, first.headers["hub-signature"])
    assert second.headers["hub-signature"].count("v1=") == 1
    assert verify_signature(new, second.body, second.headers["hub-signature"])
    assert not verify_signature(old, second.body, second.headers["hub-signature"])


def test_a_header_that_is_not_a_signature_is_refused_without_an_error():
    from hub.events import sign

    body = b"{}"
    for header in (None, "", "garbage", "t=", "t=abc,v1=00", f"t={int(time.time())}", f"t={int(time.time())},v1=\xe9",
                   "t=1e999,v1=00", sign("whsec_a", body).replace("v1=", "v1=0")):
        assert verify_signature("whsec_a", body, header) is False


def test_an_organization_has_a_bounded_number_of_endpoints(bare_hub):
    hub, org_id, _connection_id = bare_hub
    for number in range(service.MAX_ENDPOINTS):
        service.create_endpoint(hub, org_id, url=f"https://app.example.com/{number}", events=[], description=None,
                                enabled=True)
    with pytest.raises(HubError) as refused:
        service.create_endpoint(hub, org_id, url="https://app.example.com/more", events=[], description=None,
                                enabled=True)
    assert (refused.value.code, refused.value.status) == ("too_many_event_endpoints", 409)


@pytest.mark.postgres
def test_an_endpoint_deleted_while_an_event_is_written_does_not_undo_the_change(pg_server, tmp_path):
    import threading

    url = postgres.create_database(pg_server, "hub_events_delete_race")
    hub, org_id, connection_id = hub_with_a_connection(
        Settings(data_dir=tmp_path / "data", database_url=url, secret_key="test-secret-key"))
    endpoint, _ = service.create_endpoint(hub, org_id, url="https://app.example.com/h", events=[], description=None,
                                          enabled=True)
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id).values(status="expired"))
        # The deliveries are inserted at the commit; the endpoint is held from here.
        assert len(emit(session, org_id, "sync.failed", {"run": {}})) == 1
        deleting = threading.Thread(target=service.delete_endpoint, args=(hub, org_id, endpoint.id))
        deleting.start()
        wait_until(lambda: waiting_for_a_lock(hub) or not deleting.is_alive(), "the deletion under way")
        assert deleting.is_alive()  # waits for the change's transaction
        session.commit()
    deleting.join(30)
    assert not deleting.is_alive()
    with hub.session() as session:
        assert session.get(Connection, connection_id).status == "expired"
    assert deliveries(hub) == [] and service.list_endpoints(hub, org_id) == []
    hub.engine.dispose()


def test_addresses_that_are_not_public_are_known_whatever_their_form():
    from hub.services.events import _private_address

    for address in ("127.0.0.1", "10.0.0.1", "100.64.0.1", "100.100.100.200", "169.254.169.254", "0.0.0.0",
                    "::1", "::ffff:127.0.0.1", "2002:7f00:1::", "2002:a9fe:a9fe::", "fe80::1", "fc00::1",
                    "2001:0:4136:e378:8000:63bf:f5ff:fffe"):  # (Teredo: the last holds 10.0.0.1)
        assert _private_address("host.example", [address]) == address, address
    assert _private_address("localhost", []) == "localhost"
    assert _private_address("app.example", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]) is None
    assert _private_address("app.example", ["93.184.216.34", "10.0.0.1"]) == "10.0.0.1"


def test_a_host_is_sent_to_at_the_address_checked_not_looked_up_again(bare_hub, serve_app, monkeypatch):
    """With HUB_EVENT_PRIVATE_URLS=false the connection goes to the address
    the check approved (with the host's name in Host): a name answering a
    public address to the check and a private one to a second look-up (DNS
    rebinding) does not reach the private one."""
    import socket as socket_module

    import hub.services.events as events_module

    hub, org_id, connection_id = bare_hub
    receiver = receiving_app()
    port = int(serve_app(receiver).rsplit(":", 1)[1])
    real = socket_module.getaddrinfo
    lookups: list[str] = []
    answers = {"app.example": ["127.0.0.1"], "rebind.example": ["93.184.216.34", "127.0.0.1", "127.0.0.1"]}

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, *args, **kwargs)
        lookups.append(name)
        address = answers[name][min(lookups.count(name), len(answers[name])) - 1]
        return [(socket_module.AF_INET, socket_module.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket_module, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(hub.settings, "event_private_urls", False)
    monkeypatch.setattr(events_module, "TIMEOUT_SECONDS", 1.0)
    # app.example is "public" here (this machine's loopback stands for a public address).
    real_private = events_module._private_address
    monkeypatch.setattr(events_module, "_private_address",
                        lambda host, addresses: None if host == "app.example" else real_private(host, addresses))
    service.create_endpoint(hub, org_id, url=f"http://app.example:{port}/hook", events=[], description=None,
                            enabled=True)
    lookups.clear()

    async def send() -> None:
        deliverer = EventDeliverer(hub)
        try:
            assert await deliverer.deliver_once() == 1
        finally:
            await deliverer.stop()

    hub.mark(connection_id, "error", "refused")
    asyncio.run(send())
    [received] = receiver.state.log.received
    assert received.headers["host"] == f"app.example:{port}" and lookups == ["app.example"]  # one look-up

    with hub.session() as session:
        session.execute(sa.delete(EventDelivery))
        session.execute(sa.delete(EventEndpoint))
        session.commit()
    service.create_endpoint(hub, org_id, url=f"http://rebind.example:{port}/internal", events=[],
                            description=None, enabled=True)  # (public when registered)
    hub.mark(connection_id, "connected", None)
    asyncio.run(send())
    assert len(receiver.state.log.received) == 1  # nothing reached the private address
    [delivery] = deliveries(hub)
    assert delivery.status == "pending" and delivery.response_status is None


def test_a_sweep_marking_many_deleted_is_told_in_bounded_events_and_a_record_back_is_created(hub, conn, ledger,
                                                                                          monkeypatch):
    import hub.sync.store as store_module
    from hub.sync.engine import SyncEngine, create_run
    from hub.sync.scheduler import Scheduler, SyncService
    from tests.sync_support import run

    monkeypatch.setattr(store_module, "IDS_PER_EVENT", 70)
    service.create_endpoint(hub, conn.organization_id, url="https://app.example.com/changes",
                            events=["records.changed"], description=None, enabled=True)

    def pull(full_refresh: bool = False) -> list[dict]:
        with hub.session() as session:
            session.execute(sa.delete(EventDelivery))
            session.commit()
        new_run, _ = create_run(hub, conn, entity="items", full_refresh=full_refresh)
        assert run(SyncEngine(hub).execute(new_run.id)).status == "succeeded"
        return [d.payload["data"] for d in deliveries(hub)]

    told = pull()
    assert all(sum(len(t[k]) for k in ("created", "updated", "deleted")) <= 70 for t in told)
    assert len({i for t in told for i in t["created"]}) == 250
    removed = sorted(ledger.items)[:200]
    for item_id in removed:
        ledger.remove(item_id)
    told = pull(full_refresh=True)
    assert sorted(i for t in told for i in t["deleted"]) == removed and len(told) == 3  # 70 + 70 + 60
    ledger.put(removed[0], {"name": "back"})
    told = pull(full_refresh=True)
    assert [(t["created"], t["updated"], t["deleted"]) for t in told] == [([removed[0]], [], [])]

    # Kept 30 days after their last attempt; one still being tried is kept whatever its age.
    later = utcnow() + timedelta(days=31)
    with hub.session() as session:
        session.execute(sa.update(EventDelivery).values(status="delivered", last_attempt_at=utcnow()))
        session.add(EventDelivery(endpoint_id=deliveries(hub)[0].endpoint_id, organization_id=conn.organization_id,
                                  event_id="evt_old", type="ping", payload={}, created_at=utcnow() - timedelta(days=60),
                                  next_attempt_at=later))
        session.commit()
    Scheduler(SyncService(hub), 30).purge(later)
    assert [d.event_id for d in deliveries(hub)] == ["evt_old"]


def test_the_app_hears_of_connections_made_and_deleted(client, auth, hub_app):
    from tests.test_example_end_to_end import connect

    endpoint = client.post(f"{API}/event-endpoints", json={"url": "http://127.0.0.1:9/hub-events"},
                           headers=auth).json()["endpoint"]
    connection = connect(client, auth)
    assert client.delete(f"{API}/connections/{connection['id']}", headers=auth).json()["success"] is True
    told = client.get(f"{API}/event-endpoints/{endpoint['id']}/deliveries", headers=auth).json()["deliveries"]
    assert [(d["type"], d["payload"]["data"]["connection_id"], d["payload"]["data"]["provider"])
            for d in reversed(told)] == [("connection.created", connection["id"], "example"),
                                         ("connection.deleted", connection["id"], "example")]
    assert told[-1]["payload"]["data"]["name"] == connection["name"]
    for delivery in told:
        documented(delivery["payload"])
