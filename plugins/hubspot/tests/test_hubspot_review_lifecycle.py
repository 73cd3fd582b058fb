"""Review of the connection lifecycle with HubSpot: each test showed a
finding and failed on the code as reviewed."""

from __future__ import annotations

import logging

from hub_hubspot import testing as fake

API = "/api/v1/integrations"


def test_a_refused_private_app_token_sent_by_put_is_answered_as_refused(hubspot, caplog):
    """A private-app connection given a token HubSpot refuses (401) by
    ``PUT /connections/{id}``: as at ``POST /connections``, the answer is
    424 ``provider_auth_failed`` and the connection keeps its own token.

    The PUT's test runs with ``ctx.connection_id = None``; on the 401 the
    HTTP layer's ``refresh`` closure (HubSpot implements
    ``refresh_credentials``, and a private-app token has no refresh token)
    calls ``Hub._reload_renewed``, which asserts a connection id: the
    AssertionError is logged as a plugin crash ("provider hubspot failed in
    test_connection", with a traceback) and answered 502 ``provider_error``."""
    created = hubspot.post(f"{API}/connections", {"provider": "hubspot",
                                                  "credentials": {"access_token": fake.PRIVATE_APP_TOKEN}})
    assert created.status_code == 201, created.text
    connection = created.json()["connection"]
    with caplog.at_level(logging.ERROR, logger="hub"):
        changed = hubspot.put(f"{API}/connections/{connection['id']}",
                              {"credentials": {"access_token": "pat-na1-wrong"}})
    assert changed.status_code == 424 and changed.json()["code"] == "provider_auth_failed", changed.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    shown = hubspot.get(f"{API}/connections/{connection['id']}").json()["connection"]
    assert shown["status"] == "connected"
