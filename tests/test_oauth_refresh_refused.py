"""A token endpoint refusing a refresh with 403 (not only 400/401): the
connection is expired, as for any refused refresh grant."""
from __future__ import annotations

import pytest

from tests.conftest import API
from tests.oauth_provider import create_fake
from tests.test_oauth import expire_soon, finish, oauth_hub, provider_redirect, start  # noqa: F401


@pytest.fixture
def oauth_fake(serve_app):
    """The OAuth fake, whose token endpoint answers 403 once ``state.forbid_token`` is set."""
    inner = create_fake()
    inner.state.forbid_token = False

    async def app(scope, receive, send):
        if inner.state.forbid_token and scope["type"] == "http" and scope["path"] == "/token":
            body = b'{"error": "unauthorized_client", "error_description": "app disabled"}'
            await send({"type": "http.response.start", "status": 403,
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
