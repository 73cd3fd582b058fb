"""Webhook intake: what the sender of a delivery the hub does not accept is told, and what the log says."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from hub import hookimpl
from hub.services.webhooks import receive
from hub.types import AuthFailed, HubError, ProviderUnavailable, WebhookRejected, WebhookRequest
from tests.sync_support import Ledger, ledger_hub, make_connection


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


class AppSigned(Hooked):
    """Signs every delivery with the app's secret, as Shopify does."""

    @hookimpl
    def verify_app_webhook(self, ctx, request):
        if request.header("X-Boom"):
            raise RuntimeError("plugin bug")
        if request.header("X-Old"):
            raise WebhookRejected("signed long ago", code="webhook_stale")
        return request.header("X-App-Signature") == "app-secret"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hook_verify_app_webhook(settings, caplog):
    """A delivery for an account no connection has is acknowledged (200, nothing
    stored) only when the app's signature matches; else refused as before."""
    hub = ledger_hub(settings, AppSigned())
    provider = hub.registry.providers["ledger"]

    def deliver(body, headers=None, query=None):
        return asyncio.run(receive(hub, provider, WebhookRequest(
            headers=headers or {}, body=json.dumps(body).encode(), query=query or {})))

    acknowledged = deliver({"account": "acct_gone"}, {"X-App-Signature": "app-secret"})
    assert (acknowledged.connection_id, acknowledged.accepted, acknowledged.duplicates) == (None, [], [])
    # Naming no account at all (Xero's intent-to-receive check: no events): acknowledged too.
    assert deliver({}, {"X-App-Signature": "app-secret"}).accepted == []
    assert answer(hub, {}, {"X-App-Signature": "wrong"})[:2] == (401, "webhook_rejected")
    for headers in ({"X-App-Signature": "wrong"}, {}, {"X-App-Signature": "app-secret", "X-Boom": "1"}):
        assert answer(hub, {"account": "acct_gone"}, headers)[:2] == (401, "webhook_rejected")
    assert "app signature check by ledger crashed" in caplog.text
    # Stale is answered stale, as verify_webhook answers it for an account with a connection.
    assert answer(hub, {"account": "acct_gone"}, {"X-App-Signature": "app-secret", "X-Old": "1"})[:2] == (
        401, "webhook_stale")
    # A delivery naming a connection by id (a per-connection URL) is that connection's to verify.
    assert answer(hub, {"account": "acct_gone"}, {"X-App-Signature": "app-secret"},
                  query={"connection_id": "conn_gone"})[:2] == (401, "webhook_rejected")
    # A connection that has the account verifies it itself: the app signature does not stand in.
    make_connection(hub, "ledger", {"api_key": "k"}, webhook_key="acct_here")
    assert answer(hub, {"account": "acct_here"}, {"X-App-Signature": "app-secret"})[:2] == (401, "webhook_rejected")


def test_a_signature_time_is_read_in_seconds_or_milliseconds_and_junk_is_refused():
    """HubSpot stamps milliseconds (13 digits): refused as malformed, a plugin wrote its own reader."""
    import pytest

    from hub.types import WebhookRejected, signed_unix_time

    assert signed_unix_time(" 1700000000 ") == 1700000000
    assert signed_unix_time("1700000000123", milliseconds=True) == 1700000000
    for junk in ("", None, "²", "17000000001234", "1" * 1000, "-5", "1e9"):
        with pytest.raises(WebhookRejected):
            signed_unix_time(junk)
    with pytest.raises(WebhookRejected):
        signed_unix_time("1" * 16, milliseconds=True)
