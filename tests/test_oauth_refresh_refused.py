"""A token endpoint refusing a refresh with 403 (not only 400/401): the
connection is expired, as for any refused refresh grant."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from hub.api.main import create_app
from tests.conftest import API, make_org
from tests.oauth_provider import build_plugin, create_fake
from tests.test_oauth import expire_soon, finish, provider_redirect, start


@pytest.fixture
def forbidding(serve_app):
    inner = create_fake()
    flags = {"forbid_token": False}

    async def app(scope, receive, send):
        if flags["forbid_token"] and scope["type"] == "http" and scope["path"] == "/token":
            body = b'{"error": "unauthorized_client", "error_description": "app disabled"}'
            await send({"type": "http.response.start", "status": 403,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        return await inner(scope, receive, send)
    return serve_app(app), inner, flags


@pytest.fixture
def hub403(settings, example_registry, forbidding, monkeypatch):
    monkeypatch.setenv("HUB_OAUTHEX_ORIGIN", forbidding[0])
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_ID", "cid")
    monkeypatch.setenv("HUB_OAUTHEX_CLIENT_SECRET", "csecret")
    example_registry.register(build_plugin(), "oauthex")
    app = create_app(settings, example_registry)
    with TestClient(app) as client:
        headers = make_org(app)
        headers.pop("org_id")
        yield client, headers, app


def test_a_refresh_refused_with_403_marks_the_connection_expired(hub403, forbidding):
    client, headers, app = hub403
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    expire_soon(app.state.hub, connection_id)
    forbidding[2]["forbid_token"] = True
    response = client.get(f"{API}/connections/{connection_id}/entities/contacts/records", headers=headers)
    assert response.json()["code"] == "token_refresh_failed", response.text
    connection = client.get(f"{API}/connections/{connection_id}", headers=headers).json()["connection"]
    assert connection["status"] == "expired", connection
