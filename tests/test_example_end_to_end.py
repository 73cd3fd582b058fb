"""The contract end to end with the built-in example provider, over real HTTP
to its fake server, through the hub's REST API, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest

from hub_example.testing import API_KEY, signed_delivery

from tests.conftest import API, make_org


def connect(client, auth, **extra):
    body = {"provider": "example", "credentials": {"api_key": API_KEY, "webhook_secret": "whsec_example123"}}
    body.update(extra)
    response = client.post(f"{API}/connections", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["connection"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_providers_list_the_installed_plugin(client):
    body = client.get(f"{API}/providers").json()
    assert body["success"] is True
    [provider] = body["providers"]
    assert provider["name"] == "example"
    assert provider["auth_type"] == "api_key"
    assert provider["entities"] == ["notes", "tags"]
    assert client.get(f"{API}/providers?category=banking").json()["providers"] == []
    entity = client.get(f"{API}/providers/example/entities/notes").json()["entity"]
    assert entity["supports_create"] and {f["name"] for f in entity["fields"]} >= {"id", "title"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_connect_list_pages_to_the_end_and_crud(client, auth, example_fake):
    connection = connect(client, auth)
    assert connection["status"] == "connected"
    assert connection["credentials_hint"].endswith("4242") and API_KEY not in str(connection)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 5} | ({"cursor": cursor} if cursor else {})
        body = client.get(f"{API}/connections/{connection['id']}/entities/notes/records", params=params,
                          headers=auth).json()
        seen += [r["id"] for r in body["records"]]
        pages += 1
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if not cursor:
            break
    assert pages == 5
    assert len(seen) == len(set(seen)) == 23

    base = f"{API}/connections/{connection['id']}/entities/notes/records"
    created = client.post(base, json={"data": {"title": "hello"}}, headers=auth)
    assert created.status_code == 201
    note = created.json()["record"]
    assert client.get(f"{base}/{note['id']}", headers=auth).json()["record"]["title"] == "hello"
    updated = client.put(f"{base}/{note['id']}", json={"data": {"title": "bye"}}, headers=auth).json()
    assert updated["record"]["title"] == "bye"
    assert client.delete(f"{base}/{note['id']}", headers=auth).json() == {"success": True, "record": None}
    missing = client.get(f"{base}/{note['id']}", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    invalid = client.post(base, json={"data": {"body": "no title"}}, headers=auth)
    assert invalid.status_code == 422 and "title is required" in invalid.json()["error"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_read_only_entity_refuses_writes(client, auth):
    connection = connect(client, auth)
    response = client.post(f"{API}/connections/{connection['id']}/entities/tags/records",
                           json={"data": {"name": "x"}}, headers=auth)
    assert response.status_code == 405
    assert response.json()["code"] == "read_only"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_bad_api_key_is_refused_and_nothing_saved(client, auth):
    response = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": "nope"}},
                           headers=auth)
    assert response.status_code == 424
    assert response.json()["code"] == "provider_auth_failed"
    assert client.get(f"{API}/connections", headers=auth).json()["connections"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_second_connection_of_same_provider_conflicts(client, auth):
    connect(client, auth)
    response = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                           headers=auth)
    assert response.status_code == 409 and response.json()["code"] == "connection_exists"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_provider_5xx_is_retried_then_succeeds(client, auth, example_fake):
    connection = connect(client, auth)
    example_fake[1].state.fail_next = 2
    response = client.get(f"{API}/connections/{connection['id']}/entities/notes/records", headers=auth)
    assert response.status_code == 200
    assert example_fake[1].state.fail_next == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_provider_down_after_retries_is_503(client, auth, example_fake, hub_app):
    connection = connect(client, auth)
    hub_app.state.hub.pool.retry.attempts = 2
    example_fake[1].state.fail_next = 100
    response = client.get(f"{API}/connections/{connection['id']}/entities/notes/records", headers=auth)
    assert response.status_code == 503
    assert response.json()["code"] == "provider_unavailable"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_update_and_test_and_delete_connection(client, auth):
    connection = connect(client, auth)
    url = f"{API}/connections/{connection['id']}"
    updated = client.put(url, json={"name": "Notes", "sync_enabled": True, "sync_frequency_minutes": 15,
                                    "config": {"region": "eu"}}, headers=auth).json()["connection"]
    assert updated["name"] == "Notes" and updated["sync_frequency_minutes"] == 15
    assert updated["next_sync_at"] is not None and updated["config"] == {"region": "eu"}
    tested = client.post(f"{url}/test", headers=auth).json()
    assert tested["details"] == {"account": "acct_example", "name": "Example Account"}
    # (An API key is the tenant's to revoke: the example has no disconnect.)
    assert client.delete(url, headers=auth).json() == {"success": True, "revocation": "none"}
    assert client.get(url, headers=auth).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_webhook_verified_stored_once_forged_and_stale_rejected(client, auth):
    connection = connect(client, auth)
    url = f"{API}/webhooks/example?connection_id={connection['id']}"
    event = {"id": "evt_1", "type": "note.updated", "data": {"id": "note_1", "title": "x"}}
    body, headers = signed_delivery("whsec_example123", event, int(time.time()))
    assert client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"][
        "last_webhook_at"] is None
    first = client.post(url, content=body, headers=headers).json()
    assert first == {"success": True, "received": 1, "duplicates": 0, "duplicate": False}
    received = client.get(f"{API}/connections/{connection['id']}", headers=auth).json()["connection"]
    assert abs(datetime.fromisoformat(received["last_webhook_at"]) - datetime.now(timezone.utc)) < timedelta(minutes=1)
    replay = client.post(url, content=body, headers=headers).json()
    assert replay["duplicate"] is True and replay["received"] == 0
    forged = client.post(url, content=body.replace(b"note_1", b"note_2"), headers=headers)
    assert forged.status_code == 401 and forged.json()["code"] == "webhook_rejected"
    stale_body, stale_headers = signed_delivery("whsec_example123", {**event, "id": "evt_2"}, int(time.time()) - 3600)
    stale = client.post(url, content=stale_body, headers=stale_headers)
    assert stale.status_code == 401 and stale.json()["code"] == "webhook_stale"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_cursor_serves_only_its_entity_and_since_only_where_it_filters(client, auth):
    connection = connect(client, auth)
    records = f"{API}/connections/{connection['id']}/entities"
    first = client.get(f"{records}/notes/records", params={"limit": 5}, headers=auth).json()
    assert first["has_more"]
    wrong = client.get(f"{records}/tags/records", params={"cursor": first["next_cursor"]}, headers=auth)
    assert wrong.status_code == 422 and wrong.json()["code"] == "invalid_cursor"
    assert "belongs to 'notes'" in wrong.json()["error"]
    forged = client.get(f"{records}/notes/records", params={"cursor": "5"}, headers=auth)
    assert forged.status_code == 422 and forged.json()["code"] == "invalid_cursor"
    # The provider's position is sealed: neither readable nor forgeable (a plugin may put its
    # cursor in a query), nor taken by another connection.
    from hub.sync.stored import encode_cursor

    for made in (encode_cursor({"e": "notes", "c": "note_1"}), first["next_cursor"][:-4] + "AAAA"):
        assert client.get(f"{records}/notes/records", params={"cursor": made}, headers=auth).json()["code"] == \
            "invalid_cursor"
    other_auth = {"Authorization": make_org(client.app, "other")["Authorization"]}
    other = connect(client, other_auth)
    elsewhere = client.get(f"{API}/connections/{other['id']}/entities/notes/records",
                           params={"cursor": first["next_cursor"]}, headers=other_auth)
    assert elsewhere.json()["code"] == "invalid_cursor" and "this connection" in elsewhere.json()["error"]
    unfiltered = client.get(f"{records}/tags/records", params={"since": "2999-01-01T00:00:00Z"}, headers=auth)
    assert unfiltered.status_code == 422 and unfiltered.json()["code"] == "since_not_supported"
    future = client.get(f"{records}/notes/records", params={"since": "2999-01-01T00:00:00Z"}, headers=auth)
    assert future.status_code == 200 and future.json()["records"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_filters_for_a_plugin_that_takes_none_are_refused(client, auth):
    """The example's list_records names no ``filters``: pluggy would drop them, and a
    client asking for one note by title would get every note as if filtered."""
    connection = connect(client, auth)
    records = f"{API}/connections/{connection['id']}/entities/notes/records"
    refused = client.get(records, params={"title": "nobody", "limit": 5}, headers=auth)
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "filters_not_supported" and "title" in refused.json()["error"]
    assert client.get(records, params={"limit": 5}, headers=auth).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_connection_whose_plugin_is_not_loaded_can_be_renamed_and_paused(client, auth, hub_app):
    """Its name and schedule are the hub's: an operator who uninstalled a
    plugin can still stop its scheduled runs; what the plugin must check (config,
    credentials) waits for it."""
    from hub.models import Connection

    connection = connect(client, auth)
    url = f"{API}/connections/{connection['id']}"
    assert client.put(url, json={"sync_enabled": True}, headers=auth).status_code == 200
    with hub_app.state.hub.session() as session:
        row = session.get(Connection, connection["id"])
        row.provider = "uninstalled"
        session.add(row)
        session.commit()
    paused = client.put(url, json={"sync_enabled": False, "name": "Old notes"}, headers=auth)
    assert paused.status_code == 200, paused.text
    assert paused.json()["connection"]["sync_enabled"] is False and paused.json()["connection"]["name"] == "Old notes"
    assert paused.json()["connection"]["next_sync_at"] is None
    for change in ({"config": {"region": "eu"}}, {"credentials": {"api_key": "other"}}):
        refused = client.put(url, json=change, headers=auth)
        assert refused.status_code == 404 and refused.json()["code"] == "unknown_provider", refused.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (not about storage: the suite's time)
def test_a_provider_page_larger_than_the_limit_is_handed_out_in_slices(settings, example_fake, monkeypatch):
    """A plugin whose provider cannot size pages answered a client asking limit=3 with 7
    records (or Salesforce's 200); each API page now holds at most the limit, every record
    once, the page's call repeated for each slice (the page not kept, as past
    HUB_SLICE_CACHE_SECONDS or in another process), continuing after the last record handed
    out even when the page changed meanwhile."""
    from fastapi.testclient import TestClient

    from broken_plugins import fixed_pages
    from hub.api.main import create_app
    from hub.plugins import PluginRegistry

    settings = settings.model_copy(update={"slice_cache_seconds": 0})

    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    registry = PluginRegistry()
    registry.register(fixed_pages, "example")
    fixed_pages.CALLS.clear()
    notes = example_fake[1].state.notes
    with TestClient(create_app(settings, registry)) as client:
        auth = {"Authorization": make_org(client.app)["Authorization"]}
        connection = connect(client, auth)
        url = f"{API}/connections/{connection['id']}/entities/notes/records"
        since = {"since": "2000-01-01T00:00:00Z"}

        def listing(between=None):
            pages, cursor = [], None
            while True:
                page = client.get(url, params={"limit": 3, **since, **({"cursor": cursor} if cursor else {})},
                                  headers=auth).json()
                pages.append(page)
                if between:
                    between(len(pages), page)
                cursor = page["next_cursor"]
                if not cursor:
                    return pages

        pages = listing()
        ids = [r["id"] for p in pages for r in p["records"]]
        assert all(len(p["records"]) <= 3 for p in pages) and len(ids) == len(set(ids)) == 23
        # The page's removals come with each of its slices; a slice repeats its page's call as made.
        assert all(p["deleted_ids"] for p in pages)
        calls = fixed_pages.CALLS
        assert len(calls) == len(pages) and calls[0]["since"] is not None  # one provider call per slice
        assert all(later == earlier for earlier, later in zip(calls, calls[1:]) if later["cursor"] == earlier["cursor"])
        assert not any(p["restarted"] for p in pages)

        # A record handed out is removed at the provider between two slices: the next slice goes
        # on after the last one handed out (an offset would skip a record).
        before = {r for r in notes.rows}
        removed = []
        pages = listing(lambda n, page: n == 1 and removed.append(notes.rows.pop(page["records"][0]["id"])))
        ids = [r["id"] for p in pages for r in p["records"]]
        assert len(ids) == len(set(ids)) and set(ids) == before and removed  # (the removed one before it went)
        # The last one handed out is gone: the listing starts over from its first record, said so.
        def drop_last(n, page):
            if n == 1:
                notes.rows.pop(page["records"][-1]["id"])
        pages = listing(drop_last)
        assert pages[1]["restarted"] and not pages[0]["restarted"] and not any(p["restarted"] for p in pages[2:])
        assert {r["id"] for p in pages[1:] for r in p["records"]} == set(notes.rows)  # everything, from the start
        # Other filters or since for a cursor within a page: refused, not another listing's slice.
        first = client.get(url, params={"limit": 3, **since}, headers=auth).json()
        other = client.get(url, params={"limit": 3, "cursor": first["next_cursor"]}, headers=auth)
        assert other.status_code == 422 and other.json()["code"] == "invalid_cursor"
