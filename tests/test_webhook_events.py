"""The operator's view of webhook events: listed per connection (paginated,
organization-scoped, without payloads) and retried once failed, through the
API and the ``hub webhooks`` command. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import hub.cli
import hub.services.webhooks as webhooks_module
from hub.cli import main
from hub.models import WebhookEvent
from tests.conftest import API, make_org
from tests.sync_support import wait_until
from tests.test_sync_webhooks import events_of


def org_auth(app, name: str) -> dict[str, str]:
    auth = make_org(app, name)
    auth.pop("org_id")
    return auth


def test_failed_events_are_listed_and_retried_by_the_organization(relay_app, monkeypatch):
    monkeypatch.setattr(webhooks_module, "MAX_ATTEMPTS", 1)
    relay, app, client = relay_app
    auth, other = org_auth(app, "acme"), org_auth(app, "globex")
    connection_id = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                                headers=auth).json()["connection"]["id"]
    events_url = f"{API}/connections/{connection_id}/webhooks/events"
    relay.down = True
    client.post(f"{API}/webhooks/ledger?connection_id={connection_id}", json={"id": "evt_a"})

    def listed(**params) -> list[dict]:
        answer = client.get(events_url, params=params, headers=auth)
        assert answer.status_code == 200, answer.text
        return answer.json()["events"]

    wait_until(lambda: listed(status="failed"), timeout=30, message="the event given up")
    [event] = listed()
    assert (event["dedup_key"], event["type"], event["entity"], event["status"], event["attempts"]) == (
        "evt_a", "item.changed", "items", "failed", 1)
    assert "ledger is down" in event["error"] and event["received_at"] and event["last_attempt_at"]
    assert not {"payload", "raw", "organization_id"} & set(event)
    assert listed(status="pending") == [] and listed(status="processed") == []

    retry_url = f"{events_url}/{event['id']}/retry"
    for answer in (client.get(events_url, headers=other), client.post(retry_url, headers=other)):
        assert (answer.status_code, answer.json()["code"]) == (404, "connection_not_found")
    unknown = client.post(f"{events_url}/nope/retry", headers=auth)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "webhook_event_not_found")

    relay.down = False
    retried = client.post(retry_url, headers=auth)
    assert retried.status_code == 202, retried.text
    assert (retried.json()["event"]["status"], retried.json()["event"]["attempts"]) == ("pending", 0)
    wait_until(lambda: listed(status="processed"), timeout=30, message="the retried event applied")
    again = client.post(retry_url, headers=auth)
    assert (again.status_code, again.json()["code"], again.json()["success"]) == (
        409, "webhook_event_not_retryable", False)


def test_events_are_listed_newest_first_a_page_at_a_time(relay_app):
    _relay, app, client = relay_app
    auth = org_auth(app, "acme")
    connection_id = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                                headers=auth).json()["connection"]["id"]
    for i in range(5):
        client.post(f"{API}/webhooks/ledger?connection_id={connection_id}", json={"id": f"evt_{i}"})
    url = f"{API}/connections/{connection_id}/webhooks/events"
    seen, cursor = [], None
    while True:
        page = client.get(url, params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=auth).json()
        assert len(page["events"]) <= 2 and page["has_more"] == (page["next_cursor"] is not None)
        seen += [e["dedup_key"] for e in page["events"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"evt_{i}" for i in reversed(range(5))]
    bad = client.get(url, params={"cursor": "bm90LWpzb24"}, headers=auth)
    assert (bad.status_code, bad.json()["code"]) == (422, "invalid_cursor")
    from hub.sync.stored import encode_cursor

    # Times no UTC time can hold (year 9999 at -12:00) were a 500.
    for moment in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+12:00"):
        crafted = client.get(url, params={"cursor": encode_cursor({"r": moment, "id": "x"})}, headers=auth)
        assert (crafted.status_code, crafted.json()["code"]) == (422, "invalid_cursor")


def test_hub_webhooks_lists_and_retries_failed_events(relay_app, monkeypatch):
    _relay, app, client = relay_app
    hub_ = app.state.hub
    auth = org_auth(app, "acme")
    connection_id = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                                headers=auth).json()["connection"]["id"]
    app.state.webhook_processor.poll_seconds = 3600
    with hub_.session() as session:
        for key, status in (("evt_failed", "failed"), ("evt_done", "processed")):
            session.add(WebhookEvent(provider="ledger", dedup_key=key, connection_id=connection_id, type="item.changed",
                                     entity="items", status=status, attempts=15, error="sync run r failed: down"))
        session.commit()
    monkeypatch.setattr(hub.cli, "_hub", lambda: hub_)
    runner = CliRunner()

    listed = runner.invoke(main, ["webhooks", "list", "--status", "failed"])
    assert listed.exit_code == 0, listed.output
    failed_id = events_of(hub_)["evt_failed"].id
    assert failed_id in listed.output and "sync run r failed: down" in listed.output
    assert events_of(hub_)["evt_done"].id not in listed.output
    mine = runner.invoke(main, ["webhooks", "list", "--connection", connection_id])
    assert mine.exit_code == 0 and failed_id in mine.output
    unknown = runner.invoke(main, ["webhooks", "list", "--connection", "nope"])
    assert (unknown.exit_code, unknown.output.strip()) == (1, "Error: no connection nope")

    misspelt = runner.invoke(main, ["webhooks", "retry", "--all-failed", "--connection", "nope"])
    assert (misspelt.exit_code, misspelt.output.strip()) == (1, "Error: no connection nope")
    retried = runner.invoke(main, ["webhooks", "retry", "--all-failed", "--connection", connection_id])
    assert retried.exit_code == 0, retried.output
    assert f"{failed_id}: queued" in retried.output
    event = events_of(hub_)["evt_failed"]
    assert (event.status, event.attempts) == ("pending", 0)

    refused = runner.invoke(main, ["webhooks", "retry", events_of(hub_)["evt_done"].id, "missing"])
    assert refused.exit_code == 1
    assert "webhook_event_not_retryable" in refused.output and "webhook_event_not_found" in refused.output


def test_an_event_naming_a_record_id_or_entity_too_long_to_store_is_kept_on_every_database(relay_app):
    """Signed, so accepted; but no record is stored under a 300-character id
    (PostgreSQL refused the whole delivery): the event is kept without it."""
    relay, app, client = relay_app
    auth = org_auth(app, "acme")
    connection_id = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                                headers=auth).json()["connection"]["id"]
    delivered = client.post(f"{API}/webhooks/ledger?connection_id={connection_id}",
                            json={"id": "evt_long", "record_id": "r" * 300, "entity": "e" * 100})
    assert delivered.status_code == 200, delivered.text
    event = events_of(app.state.hub)["evt_long"]
    assert (event.record_id, event.entity) == (None, None)


def test_long_dedup_keys_differing_past_the_column_stay_two_events_and_odd_record_ids_name_no_record(relay_app):
    """Cut to the column, two signed events whose ids differ after character
    255 were one (the second answered a duplicate, its change lost). An id
    that is an object or a list names no record: the event brings a pull."""
    relay, app, client = relay_app
    auth = org_auth(app, "acme")
    connection_id = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                                headers=auth).json()["connection"]["id"]
    url = f"{API}/webhooks/ledger?connection_id={connection_id}"
    first, second = "evt_" + "x" * 300 + "1", "evt_" + "x" * 300 + "2"
    for event_id in (first, second, first):
        assert client.post(url, json={"id": event_id}).status_code == 200
    stored = events_of(app.state.hub)
    assert len(stored) == 2 and all(key.startswith("sha256:") and len(key) <= 255 for key in stored)
    # Stored cut by an earlier version, then delivered again: a duplicate still.
    earlier = "evt_" + "y" * 300
    with app.state.hub.session() as session:
        session.add(WebhookEvent(provider="ledger", dedup_key=earlier[:255], connection_id=connection_id,
                                 type="item.changed", status="processed"))
        session.commit()
    again = client.post(url, json={"id": earlier})
    assert again.json()["duplicate"] is True and len(events_of(app.state.hub)) == 3
    for odd in ({"x": 1}, [1, 2], True):
        assert client.post(url, json={"id": f"evt_odd_{odd!r}", "record_id": odd}).status_code == 200
        assert events_of(app.state.hub)[f"evt_odd_{odd!r}"].record_id is None
    assert client.post(url, json={"id": "evt_number", "record_id": 42}).status_code == 200
    assert events_of(app.state.hub)["evt_number"].record_id == "42"


def test_a_record_nested_deeper_than_the_store_takes_brings_a_pull_instead_of_failing_every_retry():
    from hub.services.webhooks import _well_formed
    from hub.sync.store import canonical
    from hub.types import ProviderError
    from hub.types import WebhookEvent as Event

    def nested(depth):
        value: object = "leaf"
        for _ in range(depth):
            value = {"inner": value}
        return {"id": "r1", "inner": value}

    class Provider:
        name = "ledger"

    storable, too_deep = nested(253), nested(254)
    canonical(storable)  # the deepest the store holds
    with pytest.raises(ProviderError, match="nested"):
        canonical(too_deep)
    [kept, dropped] = _well_formed(Provider(), [
        Event(dedup_key="e1", type="item.updated", entity="items", record_id="r1", record=storable),
        Event(dedup_key="e2", type="item.updated", entity="items", record_id="r1", record=too_deep)])
    assert kept.record is storable and (dropped.record, dropped.record_id) == (None, "r1")


def test_a_delivery_carries_its_method_and_the_public_url_called_for_signatures_over_them(relay_app):
    """HubSpot's v3 signature covers the method and the URI the provider
    called: the plugin gets both, the URL as the public sees it."""
    relay, app, client = relay_app
    auth = org_auth(app, "acme")
    connection_id = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                                headers=auth).json()["connection"]["id"]
    assert client.post(f"{API}/webhooks/ledger?connection_id={connection_id}&x=a%20b",
                       json={"id": "evt_url"}).status_code == 200
    public = app.state.hub.settings.public_url.rstrip("/")
    assert relay.last_request.method == "POST"
    assert relay.last_request.url == f"{public}{API}/webhooks/ledger?connection_id={connection_id}&x=a%20b"


def batched_ledger(settings, own_account):
    """A ledger whose deliveries batch several accounts (``account`` of each entry),
    each connection keeping the events of ``own_account(ctx)``."""
    import json as json_module
    from datetime import datetime, timezone

    from hub import hookimpl
    from hub.types import WebhookEvent as Event
    from tests.sync_support import Ledger, ledger_hub

    class Batched(Ledger):
        @hookimpl
        def webhook_connection_key(self, request):
            return [entry["account"] for entry in json_module.loads(request.body)]

        @hookimpl
        def verify_webhook(self, ctx, request):
            return [Event(dedup_key=entry["id"], type="item.updated", entity="items", action="updated",
                          record_id=entry["item"], occurred_at=datetime.now(timezone.utc))
                    for entry in json_module.loads(request.body) if entry["account"] == own_account(ctx)]

    return ledger_hub(settings, Batched())


def deliver_batch(hub, accounts: list[str]) -> tuple[list[str], set[tuple[str, str]]]:
    """One delivery of an event (``e<i>``) per account; the events accepted, and
    what was stored as (connection id, event)."""
    import json as json_module

    from hub.services.webhooks import receive
    from hub.types import WebhookRequest
    from tests.sync_support import run

    body = json_module.dumps([{"account": account, "id": f"e{i}", "item": f"it_{i}"}
                              for i, account in enumerate(accounts)]).encode()

    async def deliver():
        try:
            return await receive(hub, hub.provider("ledger"), WebhookRequest(headers={}, body=body))
        finally:
            await hub.close()

    result = run(deliver())
    with hub.session() as session:
        return sorted(result.accepted), {(e.connection_id, e.dedup_key) for e in session.query(WebhookEvent)}


def test_a_delivery_batching_several_accounts_reaches_each_connection_among_them(settings):
    """webhook_connection_key gave one key per delivery: a batch of several
    companies (QuickBooks) or portals (HubSpot) naming an account the hub
    does not hold first was refused whole, the others' events lost."""
    from tests.sync_support import make_connection

    hub = batched_ledger(settings, lambda ctx: ctx.config["account"])
    connections = {account: make_connection(hub, "ledger", {"api_key": "k"}, org_name=account,
                                            config={"account": account}, webhook_key=account)
                   for account in ("acct_a", "acct_b")}
    accepted, stored = deliver_batch(hub, ["acct_unknown", "acct_a", "acct_b"])
    assert accepted == ["e1", "e2"]
    assert stored == {(connections["acct_a"].id, "e1"), (connections["acct_b"].id, "e2")}


def test_a_delivery_reaches_a_connection_by_the_account_its_test_named(settings):
    """A connection made from a typed API key has no webhook_key: a delivery naming
    its account (HubSpot's portalId) was refused, unless the user typed the account
    into a config field too (the HubSpot exercise). Its test named the account."""
    from tests.sync_support import make_connection

    hub = batched_ledger(settings, lambda ctx: ctx.account)
    tested = make_connection(hub, "ledger", {"api_key": "k"}, org_name="a", provider_account="4242")
    keyed = make_connection(hub, "ledger", {"api_key": "k"}, org_name="b", webhook_key="77",
                            provider_account="other")
    make_connection(hub, "ledger", {"api_key": "k"}, org_name="c", webhook_key="5", provider_account="9")
    accepted, stored = deliver_batch(hub, ["4242", "77", "9"])
    assert accepted == ["e0", "e1"]  # (a connection keyed otherwise is not found by its account)
    assert stored == {(tested.id, "e0"), (keyed.id, "e1")}
