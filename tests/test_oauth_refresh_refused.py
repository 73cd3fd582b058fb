"""A token endpoint refusing a refresh with 403 (not only 400/401), or with a
code the plugin passes on: the connection is expired, as for any refused
refresh grant."""
from __future__ import annotations

import pytest

from hub import hookimpl
from hub.types import ErrorDescription
from tests.conftest import API
from tests.oauth_provider import build_plugin, create_fake
from tests.test_oauth import _oauth_app, expire_soon, finish, oauth_hub, provider_redirect, start  # noqa: F401


@pytest.fixture
def oauth_fake(serve_app):
    """The OAuth fake, whose token endpoint answers 403 (or ``state.token_status``) once
    ``state.forbid_token`` is set."""
    inner = create_fake()
    inner.state.forbid_token = False
    inner.state.token_status = 403
    inner.state.token_requests = 0  # (refused or not)

    async def app(scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/token":
            inner.state.token_requests += 1
        if inner.state.forbid_token and scope["type"] == "http" and scope["path"] == "/token":
            body = b'{"error": "unauthorized_client", "error_description": "app disabled"}'
            await send({"type": "http.response.start", "status": inner.state.token_status,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": body})
            return
        return await inner(scope, receive, send)
    return serve_app(app), inner


def test_a_refresh_refused_with_403_marks_the_connection_expired(oauth_hub, oauth_fake):  # noqa: F811
    client, headers, app = oauth_hub
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    expire_soon(app.state.hub, connection_id)
    oauth_fake[1].state.forbid_token = True
    response = client.get(f"{API}/connections/{connection_id}/entities/contacts/records", headers=headers)
    assert response.json()["code"] == "token_refresh_failed", response.text
    connection = client.get(f"{API}/connections/{connection_id}", headers=headers).json()["connection"]
    assert connection["status"] == "expired", connection


@pytest.fixture
def hub_passing_codes_on(settings, example_registry, oauth_fake, monkeypatch):
    """The OAuth provider, its describe_error passing the provider's error code on."""
    plugin = build_plugin()

    @hookimpl
    def describe_error(response):
        body = response.json()
        return ErrorDescription(body.get("error_description", "refused"), code=body.get("error"))

    plugin.describe_error = describe_error
    yield from _oauth_app(settings, example_registry, oauth_fake, monkeypatch, plugin)


@pytest.mark.parametrize("status", [400, 401])
def test_a_refused_refresh_whose_error_carries_the_providers_code_is_expired(hub_passing_codes_on, oauth_fake,
                                                                            status):
    """Only an AuthFailed saying account_refused keeps the grant (a review found any own code did)."""
    client, headers, app = hub_passing_codes_on
    connection_id = finish(client, provider_redirect(start(client, headers)))["connection_id"]
    expire_soon(app.state.hub, connection_id)
    oauth_fake[1].state.forbid_token, oauth_fake[1].state.token_status = True, status
    response = client.get(f"{API}/connections/{connection_id}/entities/contacts/records", headers=headers)
    assert response.json()["code"] == "token_refresh_failed", response.text
    connection = client.get(f"{API}/connections/{connection_id}", headers=headers).json()["connection"]
    assert connection["status"] == "expired", connection
