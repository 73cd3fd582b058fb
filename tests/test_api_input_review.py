"""Findings of a review of the REST API against bad input and races (each
failed on the code as reviewed).

The standard: every error is the JSON envelope with a stable ``code``; no
500 for bad input; a refused request changes nothing; the answer does not
depend on the database."""

from __future__ import annotations

import base64
import json
import time
import unicodedata
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from hub.api.main import create_app
from hub.models import Organization, SyncRecord
from hub.services import connections as connection_service
from hub.sync import configs as config_service
from hub.sync import stored
from hub_example.testing import API_KEY
from tests.conftest import API, make_org
from tests.test_oauth import oauth_fake, oauth_hub, provider_redirect  # noqa: F401  (fixtures)


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == code and body["error"], body
    return body


def _connect(client, auth) -> tuple[str, str]:
    """An example connection and a ``both`` sync config of its notes: (connection URL, config URL)."""
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth)
    assert connection.status_code == 201, connection.text
    base = f"{API}/connections/{connection.json()['connection']['id']}"
    config = client.post(f"{base}/sync-configs", json={"entity": "notes", "direction": "both"}, headers=auth)
    assert config.status_code == 201, config.text
    return base, f"{base}/sync-configs/{config.json()['sync_config']['id']}"


def _stored_records(hub) -> list[SyncRecord]:
    with hub.session() as session:
        return list(session.exec(select(SyncRecord)))


# ---------------------------------------------------------------- 1. OAuth return URL with a fragment


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # (a URL's shape, not its storage)
def test_an_oauth_return_url_with_a_fragment_is_refused_or_still_gets_the_outcome_in_its_query(oauth_hub):
    """``GET /oauth/{p}/authorize?redirect_uri=https://app.example.com/integrations#done`` is taken (200),
    and the callback then redirects to ``...#done?status=connected&connection_id=...``: the outcome lands
    in the fragment, which the app's server never receives (and which pages read as their own anchor).
    ``oauth.return_url`` appends ``?``/``&`` + the query to the end of the URL, after any fragment, and
    ``_check_return_url`` lets a fragment through (the event endpoint URL check refuses one)."""
    client, headers, _app = oauth_hub
    for return_to in ("https://app.example.com/integrations#done", "https://app.example.com/integrations?tab=1#x"):
        started = client.get(f"{API}/oauth/oauthex/authorize", params={"redirect_uri": return_to}, headers=headers)
        if started.status_code != 200:
            assert_error(started, 422, "invalid_redirect_uri")  # refused: fine
            continue
        back = client.get(provider_redirect(started.json()["authorization_url"]), follow_redirects=False)
        assert back.status_code == 302, back.text
        location = urlsplit(back.headers["location"])
        query = parse_qs(location.query)
        assert query.get("status") == ["connected"] and query.get("connection_id"), back.headers["location"]
        assert "status=" not in location.fragment, back.headers["location"]


# ---------------------------------------------------------------- 2. crafted cursors holding NUL


def _cursor(value: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_cursor_crafted_with_a_nul_character_is_invalid_cursor_on_every_database(client, auth):
    """The unsealed cursors (base64 JSON) of the stored records, conflicts, sync logs, webhook events and
    event deliveries are checked for lone surrogates (``stored.decode_cursor``) but not for NUL: a
    position id ``"a\\u0000"`` answers 200 and an empty page on SQLite, and 422 ``invalid_value`` (the
    DataError handler) on PostgreSQL. Every crafted cursor is otherwise 422 ``invalid_cursor``, alike
    on every database (tests/test_api_errors.py)."""
    base, config_url = _connect(client, auth)
    connection_id = base.rsplit("/", 1)[-1]
    config_id = config_url.rsplit("/", 1)[-1]
    endpoint = client.post(f"{API}/event-endpoints", json={"url": "https://app.example.com/events"}, headers=auth)
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id = endpoint.json()["endpoint"]["id"]
    moment = "2026-01-01T00:00:00+00:00"
    for url, position in (
            (f"{config_url}/records", {"after": "a\x00b", "of": f"records:{config_id}"}),
            (f"{config_url}/conflicts", {"before": [moment, "a\x00"], "of": f"conflicts:{config_id}"}),
            (f"{base}/sync/logs", {"q": moment, "id": "a\x00", "of": f"runs:{connection_id}"}),
            (f"{base}/webhooks/events", {"r": moment, "id": "a\x00", "of": f"webhook-events:{connection_id}"}),
            (f"{API}/event-endpoints/{endpoint_id}/deliveries",
             {"c": moment, "id": "a\x00", "of": f"deliveries:{endpoint_id}"})):
        assert_error(client.get(url, params={"cursor": _cursor(position)}, headers=auth), 422, "invalid_cursor")


# ---------------------------------------------------------------- 3. a stored record written as its config goes


def test_a_stored_record_created_while_its_sync_config_is_deleted_is_not_kept(client, auth, hub_app, monkeypatch):
    """``POST .../sync-configs/{sid}/records`` reads the config, then writes under the entity's lock;
    a ``DELETE .../sync-configs/{sid}`` committing in between (it takes the same lock) leaves the write
    going on with the config it read: ``stored.write_record`` does not look at the config again under
    the lock. The record is stored for an entity no config owns, and then ``_queue_push`` asks a push
    run, which makes a default *pull* config and refuses: the answer is 422 ``direction_not_configured``
    ("the notes sync config only pulls") while the record stays, a pending create that the next config
    of the entity pushes. Expected: 404 ``sync_config_not_found``, nothing stored."""
    hub = hub_app.state.hub
    _base, config_url = _connect(client, auth)
    write = stored.write_record

    def config_deleted_meanwhile(hub_, connection, config, record_id, data, *, mapped):
        config_service.delete_config(hub_, connection.id, config.id)  # the other request's DELETE
        return write(hub_, connection, config, record_id, data, mapped=mapped)

    monkeypatch.setattr(stored, "write_record", config_deleted_meanwhile)
    created = client.post(f"{config_url}/records", json={"data": {"title": "orphan"}, "mapped": False},
                          headers=auth)
    assert_error(created, 404, "sync_config_not_found")
    assert _stored_records(hub) == []


# ---------------------------------------------------------------- 4. writes racing the connection's deletion


def _deleted(hub, connection_id: str) -> None:
    """What the other request's ``DELETE /connections/{id}`` does to the rows."""
    from hub.models import Connection

    with hub.session() as session:
        organization_id = session.get(Connection, connection_id).organization_id
    connection_service._delete_rows(hub, organization_id, connection_id, {"notes", "tags"})


def test_a_stored_record_created_while_its_connection_is_deleted_is_not_found_not_500(hub_app, monkeypatch):
    """``POST .../sync-configs/{sid}/records`` finds the connection (a dependency), then writes; a
    ``DELETE /connections/{id}`` committing in between makes the insert fail on the foreign key of
    ``sync_records.connection_id`` (SQLite and PostgreSQL): ``IntegrityError`` out of
    ``stored.write_record``, answered 500 ``internal_error``. Expected: 404 ``connection_not_found``
    (or ``sync_config_not_found``), as ``POST /sync`` answers in the same race."""
    hub = hub_app.state.hub
    with TestClient(hub_app, raise_server_exceptions=False) as client:
        auth = make_org(hub_app)
        auth.pop("org_id")
        base, config_url = _connect(client, auth)
        write = stored.write_record

        def connection_deleted_meanwhile(hub_, connection, config, record_id, data, *, mapped):
            _deleted(hub_, connection.id)
            return write(hub_, connection, config, record_id, data, mapped=mapped)

        monkeypatch.setattr(stored, "write_record", connection_deleted_meanwhile)
        created = client.post(f"{config_url}/records", json={"data": {"title": "x"}, "mapped": False}, headers=auth)
        assert created.status_code == 404 and created.json()["code"] in (
            "connection_not_found", "sync_config_not_found"), created.text
    assert _stored_records(hub) == []


def test_a_sync_config_created_while_its_connection_is_deleted_is_not_said_to_exist(hub_app, monkeypatch):
    """``POST .../sync-configs`` racing ``DELETE /connections/{id}``: the insert fails on the foreign key,
    and ``configs.create_config`` takes every ``IntegrityError`` for its unique (connection, entity):
    409 ``sync_config_exists``, "connection already has a sync config for tags", of a connection that
    is gone. Expected: 404 ``connection_not_found``."""
    hub = hub_app.state.hub
    with TestClient(hub_app, raise_server_exceptions=False) as client:
        auth = make_org(hub_app)
        auth.pop("org_id")
        base, _config_url = _connect(client, auth)
        check = config_service.check

        def connection_deleted_meanwhile(provider, *args):
            checked = check(provider, *args)
            _deleted(hub, base.rsplit("/", 1)[-1])
            return checked

        monkeypatch.setattr(config_service, "check", connection_deleted_meanwhile)
        assert_error(client.post(f"{base}/sync-configs", json={"entity": "tags"}, headers=auth), 404,
                     "connection_not_found")


# ---------------------------------------------------------------- 5. an organization adopted from a JWT


def test_an_organization_adopted_from_a_jwt_gets_a_printable_name_on_every_database(settings, example_registry):
    """A valid JWT naming a new organization adopts it with ``name = str(claims["org_name"])[:200]``
    (``orgs._organization_from_jwt``), unchecked: control characters are stored (``hub org create``
    refuses them: "1 to 200 printable characters"), and a NUL makes every request with the token 422
    ``invalid_value`` on PostgreSQL (the insert fails) while SQLite stores it and answers 200.
    Expected: the same answer on both databases, and no control character in a stored name."""
    settings.jwt_secret = "a-signing-secret-of-32-characters!"
    app = create_app(settings, example_registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        for index, name in enumerate(("acme\x00inc", "acme\x07 \u202einc")):
            token = jwt.encode({"org": f"org-{index}", "org_name": name, "exp": int(time.time()) + 60},
                               settings.jwt_secret, algorithm="HS256")
            response = client.get(f"{API}/connections", headers={"Authorization": f"Bearer {token}"})
            if response.status_code != 200:
                assert_error(response, 401, "invalid_token")  # refusing the token: fine too, on both databases
        with app.state.hub.session() as session:
            names = [org.name for org in session.exec(select(Organization))]
    assert not [name for name in names if any(unicodedata.category(c) in ("Cc", "Cf") for c in name)], names
