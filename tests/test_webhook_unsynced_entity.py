"""Webhooks of an entity the tenant does not sync (its config deleted, others kept) change nothing."""

from __future__ import annotations

import time

import pytest
from sqlmodel import select

from hub.models import SyncConfig, SyncRecord, WebhookEvent, utcnow
from hub_example.testing import API_KEY, signed_delivery

API = "/api/v1/integrations"
SECRET = "whsec_example123"


@pytest.fixture(autouse=True)
def utc_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _connect(client, auth):
    body = {"provider": "example", "credentials": {"api_key": API_KEY, "webhook_secret": SECRET}}
    response = client.post(f"{API}/connections", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["connection"]


def _wait(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout}s"
        time.sleep(0.05)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_webhook_after_its_config_was_deleted_neither_stores_records_nor_brings_the_config_back(
        client, auth, hub_app, example_fake):
    """The tenant syncs tags and deleted its notes config (DELETE removes the
    config and the notes stored). A note webhook arriving afterwards must not
    store a note with no config owning it, nor create a notes config again
    (and so start syncing notes the tenant stopped syncing)."""
    hub = hub_app.state.hub
    connection = _connect(client, auth)
    configs = f"{API}/connections/{connection['id']}/sync-configs"
    client.post(configs, json={"entity": "tags"}, headers=auth)
    notes = client.post(configs, json={"entity": "notes"}, headers=auth).json()["sync_config"]
    assert client.delete(f"{configs}/{notes['id']}", headers=auth).status_code in (200, 204)

    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    note = {"id": "note_after_delete", "title": "t", "body": "", "updated_at": utcnow().isoformat()}
    body, headers = signed_delivery(SECRET, {"id": "e_after", "type": "note.updated", "data": note}, int(time.time()))
    assert client.post(url, content=body, headers=headers).json()["received"] == 1

    def looked_at():
        with hub.session() as session:
            return session.exec(select(WebhookEvent).where(WebhookEvent.dedup_key == "e_after")).one().status \
                != "pending"

    _wait(looked_at, "the event applied")
    with hub.session() as session:
        stored_notes = session.exec(select(SyncRecord.remote_id).where(
            SyncRecord.connection_id == connection["id"], SyncRecord.entity == "notes")).all()
        entities = sorted(c.entity for c in session.exec(select(SyncConfig)))
    listed = client.get(configs, headers=auth).json()
    assert (stored_notes, entities) == ([], ["tags"]), (stored_notes, entities, listed)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_change_notice_after_its_config_was_deleted_does_not_recreate_the_config_and_pull_it(relay_app):
    """Same with a notice carrying no record (Plaid/Xero/QuickBooks/HubSpot-like):
    the tenant syncs `changes` only, having deleted its `items` config; an
    `items` notice recreates an enabled `items` pull config and pulls every item."""
    from hub.services.orgs import create_organization

    relay, app, client = relay_app
    hub = app.state.hub
    with hub.session() as session:
        _org, key = create_organization(session, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    created = client.post(f"{API}/connections", json={"provider": "ledger", "credentials": {"api_key": "k"}},
                          headers=auth)
    connection_id = created.json()["connection"]["id"]
    configs = f"{API}/connections/{connection_id}/sync-configs"
    assert client.post(configs, json={"entity": "changes"}, headers=auth).status_code == 201
    items = client.post(configs, json={"entity": "items"}, headers=auth).json()["sync_config"]
    assert client.delete(f"{configs}/{items['id']}", headers=auth).status_code in (200, 204)

    answer = client.post(f"{API}/webhooks/ledger?connection_id={connection_id}", json={"id": "evt_1",
                                                                                      "entity": "items"})
    assert answer.json()["received"] == 1

    def looked_at():
        with hub.session() as session:
            return session.exec(select(WebhookEvent)).one().status != "pending"

    _wait(looked_at, "the notice applied")
    listed = sorted(c["entity"] for c in client.get(configs, headers=auth).json()["sync_configs"])
    with hub.session() as session:
        items_stored = session.exec(select(SyncRecord.remote_id).where(SyncRecord.entity == "items")).all()
    assert (listed, items_stored) == (["changes"], []), (listed, items_stored)
