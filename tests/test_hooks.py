"""One test per hook of hub/hookspecs.py (``test_hook_<name>``, enforced by
tests/test_hookspecs_meta.py): each shows the core calling the hook where the
contract says and using what it returns. The example provider covers the
API-key and CRUD hooks, ``oauthex`` (tests/oauth_provider.py) the OAuth ones,
and ``linkex`` (tests/broken_plugins/linkex.py) the Link-style flow,
revocation, webhook routing and registration, and actions."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from broken_plugins.linkex import linkex_fake, linkex_plugin
from fastapi.testclient import TestClient
from hub_example.testing import API_KEY, signed_delivery

from hub.api.main import create_app
from hub import hookimpl
from hub.models import Connection, utcnow
from hub.types import ProviderUnavailable, RateLimited
from tests.conftest import API, make_org
from tests.oauth_provider import build_plugin, create_fake


@pytest.fixture
def database_url(tmp_path):
    """SQLite only: these tests are about hooks, not databases."""
    return f"sqlite:///{tmp_path / 'hub.db'}"


def connect_example(client, auth, secret: str = "whsec_hooks") -> str:
    response = client.post(f"{API}/connections", headers=auth, json={
        "provider": "example", "credentials": {"api_key": API_KEY, "webhook_secret": secret}})
    assert response.status_code == 201, response.text
    return response.json()["connection"]["id"]


def records(connection_id: str, entity: str = "notes") -> str:
    return f"{API}/connections/{connection_id}/entities/{entity}/records"


@pytest.fixture
def link_hub(settings, example_registry, serve_app, monkeypatch):
    fake = linkex_fake()
    monkeypatch.setenv("HUB_LINKEX_ORIGIN", serve_app(fake))
    example_registry.register(linkex_plugin(), "linkex")
    app = create_app(settings, example_registry)
    with TestClient(app) as client:
        headers = make_org(app)
        headers.pop("org_id")
        yield client, headers, fake


def link_connect(client, headers, public_token: str = "pub1") -> dict:
    link_token = client.post(f"{API}/link/linkex/token", json={"user_id": "user-1"}, headers=headers)
    assert link_token.status_code == 200, link_token.text
    response = client.post(f"{API}/link/linkex/exchange", json={
        "public_token": public_token, "link_token": link_token.json()["link_token"]}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["connection"]


@pytest.fixture
def oauth_hub(settings, example_registry, serve_app, monkeypatch):
    fake = create_fake()
    monkeypatch.setenv("HUB_OAUTHEX_ORIGIN", serve_app(fake))
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_ID", "cid")
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_SECRET", "csecret")
    example_registry.register(build_plugin(), "oauthex")
    app = create_app(settings, example_registry)
    with TestClient(app) as client:
        headers = make_org(app)
        headers.pop("org_id")
        yield client, headers, fake, app


def oauth_connect(client, headers) -> dict:
    url = client.get(f"{API}/oauth/oauthex/authorize", headers=headers).json()["authorization_url"]
    location = urlsplit(httpx.get(url).headers["location"])
    response = client.get(f"{location.path}?{location.query}")
    assert response.status_code == 200, response.text
    return response.json()["connection"]


# ---------------------------------------------------------------- schema


def test_hook_provider_info(client):
    provider = client.get(f"{API}/providers/example").json()["provider"]
    assert provider["label"] == "Example Notes" and provider["category"] == "productivity"
    assert provider["auth_type"] == "api_key" and provider["supports_webhooks"] is True
    assert [f["name"] for f in provider["credential_fields"]] == ["api_key", "webhook_secret"]


def test_hook_entity_schemas(client, auth):
    entities = {e["name"]: e for e in client.get(f"{API}/providers/example/entities").json()["entities"]}
    assert entities["notes"]["supports_since"] and not entities["tags"]["supports_create"]
    assert entities["tags"]["readonly"] is True
    refused = client.delete(f"{records(connect_example(client, auth), 'tags')}/tag_1", headers=auth)
    assert refused.status_code == 405 and refused.json()["code"] == "read_only"


def test_hook_account_fields(client, auth):
    configs = f"{API}/connections/{connect_example(client, auth)}/sync-configs"
    refused = client.post(configs, headers=auth, json={"entity": "notes", "mappings": [
        {"source": "title", "target": "title"}, {"source": "custom.colour", "target": "colour"}]})
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_field", refused.text
    assert refused.json()["fields"] == ["mappings.1.source"]
    taken = client.post(configs, headers=auth, json={"entity": "notes", "mappings": [
        {"source": "custom.color", "target": "colour"}]})
    assert taken.status_code == 201, taken.text


def test_hook_provider_actions(link_hub):
    client, headers, _fake = link_hub
    connection = link_connect(client, headers)
    actions = client.get(f"{API}/connections/{connection['id']}/actions", headers=headers).json()["actions"]
    assert [a["name"] for a in actions] == ["refresh_balance"]
    assert actions[0]["params"][0]["name"] == "account_id" and actions[0]["params"][0]["required"]


# ---------------------------------------------------------------- auth


def test_hook_authorization_url(oauth_hub):
    client, headers, _fake, _app = oauth_hub
    url = client.get(f"{API}/oauth/oauthex/authorize", headers=headers).json()["authorization_url"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith("http://127.0.0.1:") and urlsplit(url).path == "/authorize"
    assert query["client_id"] == "cid" and query["redirect_uri"].endswith("/oauth/oauthex/callback")
    assert len(query["state"]) >= 32 and query["code_challenge"]


def test_hook_exchange_code(oauth_hub):
    client, headers, fake, app = oauth_hub
    connection = oauth_connect(client, headers)
    assert connection["status"] == "connected" and connection["config"] == {"account": "acct_1"}
    hub = app.state.hub
    with hub.session() as session:
        row = session.get(Connection, connection["id"])
    assert hub.cipher.decrypt_json(row.credentials_encrypted)["access_token"] in fake.state.access
    assert row.webhook_key == "acct_1"


def test_hook_refresh_credentials(oauth_hub):
    client, headers, fake, app = oauth_hub
    connection = oauth_connect(client, headers)
    hub = app.state.hub
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection["id"])
                        .values(token_expires_at=utcnow() + timedelta(seconds=5)))
        session.commit()
    response = client.get(records(connection["id"], "contacts"), headers=headers)
    assert response.status_code == 200 and fake.state.refresh_calls == 1
    refreshed = client.get(f"{API}/connections/{connection['id']}", headers=headers).json()["connection"]
    assert refreshed["token_expires_at"] > connection["token_expires_at"]


def test_hook_request_auth(client, auth, example_fake):
    connection_id = connect_example(client, auth)
    assert client.get(records(connection_id), headers=auth).status_code == 200
    with client.app.state.hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id).values(
            credentials_encrypted=client.app.state.hub.cipher.encrypt_json({"api_key": "wrong"})))
        session.commit()
    refused = client.get(records(connection_id), headers=auth)
    assert refused.status_code == 424 and refused.json()["error"] == "invalid api key"


def test_hook_test_connection(client, auth):
    connection_id = connect_example(client, auth)
    tested = client.post(f"{API}/connections/{connection_id}/test", headers=auth).json()
    assert tested["details"] == {"account": "acct_example", "name": "Example Account"}
    # A new key is tested before it replaces the one that works.
    refused = client.put(f"{API}/connections/{connection_id}", json={"credentials": {"api_key": "nope"}},
                         headers=auth)
    assert refused.status_code == 424 and refused.json()["code"] == "provider_auth_failed"
    # The refused key is the caller's mistake: the connection, still working, is not marked broken.
    shown = client.get(f"{API}/connections/{connection_id}", headers=auth).json()["connection"]
    assert (shown["status"], shown["last_error"]) == ("connected", None)
    still = client.post(f"{API}/connections/{connection_id}/test", headers=auth)
    assert still.status_code == 200 and still.json()["connection"]["status"] == "connected"


def test_hook_create_link_token(link_hub):
    client, headers, _fake = link_hub
    response = client.post(f"{API}/link/linkex/token", json={"user_id": "user-7", "options": {"products": ["x"]}},
                           headers=headers)
    assert response.json() == {"success": True, "link_token": "link-sandbox-user-7",
                               "expiration": "2030-01-01T00:00:00Z"}


def test_hook_exchange_public_token(link_hub):
    client, headers, _fake = link_hub
    connection = link_connect(client, headers, "pub9")
    assert connection["provider"] == "linkex" and connection["config"] == {"item_id": "item-pub9"}
    listed = client.get(records(connection["id"], "accounts"), headers=headers).json()["records"]
    assert listed[0]["item"] == "item-pub9"


def test_hook_disconnect(link_hub):
    client, headers, fake = link_hub
    connection = link_connect(client, headers, "pub3")
    assert client.delete(f"{API}/connections/{connection['id']}", headers=headers).status_code == 200
    assert fake.state.removed == ["item-pub3"]


# ---------------------------------------------------------------- CRUD


def test_hook_list_records(client, auth):
    connection_id = connect_example(client, auth)
    first = client.get(records(connection_id), params={"limit": 10}, headers=auth).json()
    assert len(first["records"]) == 10 and first["has_more"]
    rest = client.get(records(connection_id), params={"limit": 20, "cursor": first["next_cursor"]},
                      headers=auth).json()
    assert len(rest["records"]) == 13 and rest["next_cursor"] is None


def test_hook_get_record(client, auth):
    connection_id = connect_example(client, auth)
    note = client.get(f"{records(connection_id)}/note_3", headers=auth).json()["record"]
    assert note["id"] == "note_3" and note["title"] == "note 2"


def test_hook_create_record(client, auth, example_fake):
    connection_id = connect_example(client, auth)
    body = {"data": {"title": "once"}, "idempotency_key": "create-1"}
    first = client.post(records(connection_id), json=body, headers=auth).json()["record"]
    again = client.post(records(connection_id), json=body, headers=auth).json()["record"]
    assert first["id"] == again["id"] and len(example_fake[1].state.notes) == 24


def test_hook_update_record(client, auth, example_fake):
    connection_id = connect_example(client, auth)
    updated = client.put(f"{records(connection_id)}/note_1", json={"data": {"body": "changed"}}, headers=auth)
    assert updated.json()["record"]["body"] == "changed"
    assert example_fake[1].state.notes.get("note_1")["body"] == "changed"


def test_hook_delete_record(client, auth, example_fake):
    connection_id = connect_example(client, auth)
    assert client.delete(f"{records(connection_id)}/note_2", headers=auth).json() == {"success": True, "record": None}
    assert example_fake[1].state.notes.get("note_2") is None
    again = client.delete(f"{records(connection_id)}/note_2", headers=auth)
    assert again.status_code == 404 and again.json()["error"] == "no notes note_2"


def test_hook_run_action(link_hub):
    client, headers, fake = link_hub
    connection = link_connect(client, headers)
    url = f"{API}/connections/{connection['id']}/actions/refresh_balance"
    result = client.post(url, json={"params": {"account_id": "acc_1"}}, headers=headers).json()
    assert result == {"success": True, "result": {"account_id": "acc_1", "balance": "12.50"}}
    missing = client.post(url, json={"params": {}}, headers=headers)
    assert missing.status_code == 422 and fake.state.refreshed == ["acc_1"]
    assert missing.json()["code"] == "missing_fields" and missing.json()["fields"] == ["account_id"], missing.text
    assert missing.json()["details"] == {"missing": ["account_id"]}


def test_hook_describe_error(client, auth):
    connection_id = connect_example(client, auth)
    invalid = client.post(records(connection_id), json={"data": {"body": "no title"}}, headers=auth)
    assert invalid.status_code == 422 and invalid.json()["error"] == "title is required"


# ---------------------------------------------------------------- webhooks


def test_hook_webhook_connection_key(link_hub):
    client, headers, _fake = link_hub
    connection = link_connect(client, headers, "pub5")
    client.post(f"{API}/connections/{connection['id']}/webhooks", json={}, headers=headers)
    delivery = json.dumps({"id": "evt_5", "item_id": "item-pub5"})
    routed = client.post(f"{API}/webhooks/linkex", content=delivery,
                         headers={"X-Signature": "linkex-signing-secret"})
    assert routed.json()["received"] == 1
    stray = client.post(f"{API}/webhooks/linkex", content=json.dumps({"id": "evt_6", "item_id": "item-other"}),
                        headers={"X-Signature": "linkex-signing-secret"})
    assert (stray.status_code, stray.json()["code"]) == (401, "webhook_rejected")


def test_hook_verify_webhook(client, auth):
    connection_id = connect_example(client, auth, secret="whsec_verify")
    url = f"{API}/webhooks/example?connection_id={connection_id}"
    event = {"id": "evt_hook", "type": "note.created", "data": {"id": "note_9", "title": "t"}}
    body, headers = signed_delivery("whsec_verify", event, int(time.time()))
    assert client.post(url, content=body, headers=headers).json()["received"] == 1
    wrong_secret = signed_delivery("whsec_other", {**event, "id": "evt_2"}, int(time.time()))
    rejected = client.post(url, content=wrong_secret[0], headers=wrong_secret[1])
    assert rejected.status_code == 401 and rejected.json()["code"] == "webhook_rejected"


def test_hook_register_webhook(link_hub):
    client, headers, fake = link_hub
    connection = link_connect(client, headers, "pub8")
    response = client.post(f"{API}/connections/{connection['id']}/webhooks", json={"events": ["accounts.changed"]},
                           headers=headers).json()
    assert response["subscription_id"] == "wh_1"
    assert fake.state.subscriptions == [{"url": response["url"], "events": ["accounts.changed"]}]
    assert response["url"].endswith(f"/webhooks/linkex?connection_id={connection['id']}")
    signed = client.post(response["url"].split("127.0.0.1:8000", 1)[-1], content=json.dumps({"id": "evt_8"}),
                         headers={"X-Signature": "linkex-signing-secret"})
    assert signed.json()["received"] == 1


def test_hooks_may_be_async_or_sync(example_registry):
    provider = example_registry.get("example")
    assert asyncio.run(provider.call("provider_info")).name == "example"


@pytest.mark.parametrize("passing", [ProviderUnavailable("down for maintenance"),
                                     RateLimited("slow down", retry_after=30)])
def test_a_connection_test_failing_for_a_passing_reason_leaves_the_connection_as_it_was(settings, passing):
    """A test during an outage or a rate limit marked a working connection
    error, where it stayed once the provider was back."""
    from hub.services.connections import test_connection as check
    from tests.sync_support import Ledger, ledger_hub, make_connection, run

    class Passing(Ledger):
        @hookimpl
        async def test_connection(self):
            raise passing

    hub = ledger_hub(settings, Passing())
    connection = make_connection(hub, "ledger", {"api_key": "k"})
    with pytest.raises(type(passing)):
        run(check(hub, connection.organization_id, connection.id))
    with hub.session() as session:
        assert (session.get(Connection, connection.id).status, session.get(Connection, connection.id).last_error) \
            == ("connected", None)
