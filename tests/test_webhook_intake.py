"""Webhook intake: what the sender of a delivery the hub does not accept is told, and what the log says."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from hub import hookimpl
from hub.services.webhooks import receive
from hub.types import AuthFailed, HubError, ProviderUnavailable, WebhookRejected, WebhookRequest
from tests.sync_support import Ledger, make_connection


class Hooked(Ledger):
    """Deliveries name their account in the body; verification fails as asked."""

    @hookimpl
    def webhook_connection_key(self, request):
        body = json.loads(request.body)
        if "boom" in body:
            raise WebhookRejected("malformed delivery body (the reason)")
        return body.get("account")

    @hookimpl
    def verify_webhook(self, ctx, request):
        if request.header("X-Down"):
            raise ProviderUnavailable("verification key service down; try again later")
        raise AuthFailed("connection has no webhook secret")


@pytest.fixture
def ledger():
    return Hooked()


def answer(hub, body, headers=None, query=None):
    provider = hub.registry.providers["ledger"]
    try:
        asyncio.run(receive(hub, provider, WebhookRequest(headers=headers or {}, body=json.dumps(body).encode(),
                                                           query=query or {})))
    except HubError as exc:
        return exc.status, exc.code, exc.message


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_connection_refusing_for_any_reason_is_answered_as_no_connection(hub, caplog):
    """Whoever calls cannot tell an account with a connection here from one without."""
    make_connection(hub, "ledger", {"api_key": "k"}, webhook_key="acct_known")
    for headers in ({}, {"X-Down": "1"}):
        known = answer(hub, {"account": "acct_known"}, headers)
        unknown = answer(hub, {"account": "acct_guess"}, headers)
        assert known == unknown == (401, "webhook_rejected", "the delivery could not be verified")
    assert "connection has no webhook secret" in caplog.text and "verification key service down" in caplog.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_rejection_before_any_connection_is_logged_as_a_warning(hub, caplog):
    caplog.set_level(logging.WARNING)
    assert answer(hub, {"boom": 1}) == (401, "webhook_rejected", "the delivery could not be verified")
    assert answer(hub, {"account": "acct_guess"})[1] == "webhook_rejected"
    assert "malformed delivery body (the reason)" in caplog.text and "no connection matches" in caplog.text
