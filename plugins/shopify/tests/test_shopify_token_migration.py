"""Grants that must not lapse: Shopify invalidates public apps' non-expiring
offline tokens on 1 January 2027, and an expiring grant's refresh token lasts
90 days. The hub's grant upkeep exchanges a connection's non-expiring token
for an expiring pair, and refreshes a quiet shop's grant before its refresh
token expires, without the merchant and without any call to the shop."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from hub.models import Connection, utcnow
from hub.services.connections import renew_grants
from hub_shopify import testing as fake

API = "/api/v1/integrations"


def connection_of(harness, connection_id: str) -> dict:
    return harness.get(f"{API}/connections/{connection_id}").json()["connection"]


def upkeep(harness, now: datetime | None = None) -> int:
    """One pass of the grant upkeep, on the app's own event loop (its HTTP clients are there)."""
    hub = harness.hub_app.state.hub
    return harness.client.portal.call(lambda: renew_grants(hub, now or utcnow()))


def switch_to_expiring(harness, monkeypatch) -> None:
    """The operator upgrades the app to expiring tokens (the default) and restarts."""
    monkeypatch.setenv("HUB_SHOPIFY_EXPIRING", "1")
    harness.hub_app.state.hub._provider_settings.clear()


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "0"}])
def test_a_non_expiring_token_is_exchanged_for_an_expiring_grant(shopify, monkeypatch):
    connection_id = shopify.connect()
    [lasting] = shopify.shop.state.tokens
    assert shopify.shop.state.tokens[lasting] is None and connection_of(shopify, connection_id)["token_expires_at"] is None
    assert upkeep(shopify) == 0  # the app still asks for non-expiring tokens: kept as they are
    assert shopify.shop.state.migrated == {} and lasting in shopify.shop.state.tokens

    switch_to_expiring(shopify, monkeypatch)
    # (The plugin's answer is remembered for a day in this process; a restart forgets it.)
    from hub.services import connections
    connections._renewal_wait.clear()
    assert upkeep(shopify) == 1
    assert list(shopify.shop.state.migrated) == [lasting]
    assert lasting not in shopify.shop.state.tokens  # Shopify invalidates the old token
    connection = connection_of(shopify, connection_id)
    assert connection["status"] == "connected"
    expires = datetime.fromisoformat(connection["token_expires_at"])
    grant_expires = datetime.fromisoformat(connection["refresh_expires_at"])
    now = datetime.now(timezone.utc)
    assert timedelta(minutes=59) < expires - now <= timedelta(hours=1)
    assert timedelta(days=89) < grant_expires - now <= timedelta(days=90)
    # The connection works with the new token, and refreshes it as any expiring grant.
    assert shopify.post(f"{API}/connections/{connection_id}/test").status_code == 200
    shopify.shop.state.tokens.clear()
    assert shopify.get(shopify.records(connection_id, "products"), limit=1).status_code == 200
    assert shopify.shop.state.refreshes == 1
    assert upkeep(shopify) == 0  # nothing left to renew
    assert len(shopify.shop.state.migrated) == 1


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "0"}])
def test_a_token_shopify_no_longer_takes_leaves_the_connection_expired(shopify, monkeypatch):
    """Not migrated in time (or uninstalled meanwhile): the merchant must connect again."""
    connection_id = shopify.connect()
    switch_to_expiring(shopify, monkeypatch)
    shopify.shop.state.tokens.clear()
    assert upkeep(shopify) == 0
    connection = connection_of(shopify, connection_id)
    assert connection["status"] == "expired"
    assert "subject token is invalid" in connection["last_error"]
    assert upkeep(shopify) == 0 and shopify.shop.state.migrated == {}


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "1"}])
def test_a_quiet_shops_grant_is_refreshed_before_its_refresh_token_expires(shopify):
    connection_id = shopify.connect()
    first = datetime.fromisoformat(connection_of(shopify, connection_id)["refresh_expires_at"])
    assert timedelta(days=89) < first - datetime.now(timezone.utc) <= timedelta(days=90)
    assert upkeep(shopify) == 0  # 90 days left: nothing to do
    assert upkeep(shopify, now=first - timedelta(days=8)) == 0
    assert shopify.shop.state.refreshes == 0
    # 84 days on, with no call to the shop meanwhile: six days before the refresh token lapses.
    hub = shopify.hub_app.state.hub
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id)
                        .values(refresh_expires_at=utcnow() + timedelta(days=6)))
        session.commit()
    assert upkeep(shopify) == 1
    assert shopify.shop.state.refreshes == 1
    renewed = datetime.fromisoformat(connection_of(shopify, connection_id)["refresh_expires_at"])
    assert renewed - datetime.now(timezone.utc) > timedelta(days=89)  # 90 days again
    assert upkeep(shopify) == 0
    assert shopify.post(f"{API}/connections/{connection_id}/test").status_code == 200


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "0"}])
def test_an_exchange_whose_answer_was_lost_is_answered_again(shopify, monkeypatch):
    """Shopify answers the same exchange with the same pair for seven days: a
    hub that lost the answer (stopped, a cut connection) still migrates."""
    connection_id = shopify.connect()
    [lasting] = shopify.shop.state.tokens
    switch_to_expiring(shopify, monkeypatch)
    hub = shopify.hub_app.state.hub
    provider = hub.provider("shopify")
    with hub.session() as session:
        ctx = hub.context(provider, session.get(Connection, connection_id))
    lost = shopify.client.portal.call(lambda: provider.call("refresh_credentials", ctx=ctx))  # answer never saved
    assert lasting not in shopify.shop.state.tokens
    assert upkeep(shopify) == 1
    with hub.session() as session:
        stored = hub.cipher.decrypt_json(session.get(Connection, connection_id).credentials_encrypted)
    assert stored["access_token"] == lost.secrets["access_token"]
    assert stored["refresh_token"] == lost.secrets["refresh_token"]
    assert shopify.post(f"{API}/connections/{connection_id}/test").status_code == 200


def test_the_fake_refuses_an_exchange_of_an_unknown_or_expiring_token(shopify):
    """(The fake is faithful where the plugin depends on it.)"""
    import httpx

    token = fake.issue_token(shopify.shop, ttl=3600)
    form = {"client_id": fake.CLIENT_ID, "client_secret": fake.CLIENT_SECRET, "grant_type": fake.TOKEN_EXCHANGE,
            "subject_token": token, "subject_token_type": fake.OFFLINE_TOKEN,
            "requested_token_type": fake.OFFLINE_TOKEN, "expiring": "1"}
    answer = httpx.post(f"{shopify.shop_url}/admin/oauth/access_token", data=form)
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_subject_token"
    answer = httpx.post(f"{shopify.shop_url}/admin/oauth/access_token", data={**form, "client_secret": "no"})
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_client"
    assert token in shopify.shop.state.tokens and time.time() < shopify.shop.state.tokens[token]


def test_the_catalog_says_when_shopify_retires_non_expiring_tokens(shopify):
    provider = shopify.get(f"{API}/providers/shopify").json()["provider"]
    assert provider["lasting_tokens_until"].startswith("2027-01-01")


def test_a_connection_made_before_the_upgrade_has_no_grant_expiry(shopify):
    """(Migration 0017 adds the column empty: the next refresh fills it in.)"""
    connection_id = shopify.connect()
    hub = shopify.hub_app.state.hub
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id).values(refresh_expires_at=None))
        session.commit()
    assert connection_of(shopify, connection_id)["refresh_expires_at"] is None
    shopify.shop.state.tokens.clear()
    assert shopify.get(shopify.records(connection_id, "products"), limit=1).status_code == 200
    assert connection_of(shopify, connection_id)["refresh_expires_at"] is not None


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "0"}])
def test_a_call_under_way_during_the_exchange_takes_the_new_token(shopify, monkeypatch):
    """A run holding the connection's context from before the exchange: its next call
    gets a 401 (the old token is invalid), and goes again with the stored new token
    instead of marking the working connection in error. (A review found it.)"""
    connection_id = shopify.connect()
    switch_to_expiring(shopify, monkeypatch)
    hub = shopify.hub_app.state.hub
    provider = hub.provider("shopify")
    with hub.session() as session:
        ctx = hub.context(provider, session.get(Connection, connection_id))  # a sync run's, made at its start
    assert upkeep(shopify) == 1
    details = shopify.client.portal.call(lambda: hub.call(provider, "test_connection", ctx))
    assert details["shop"] == fake.SHOP
    assert connection_of(shopify, connection_id)["status"] == "connected"


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "0"}])
def test_an_exchange_whose_answer_was_lost_is_retried_after_a_call_put_the_connection_in_error(shopify, monkeypatch):
    """The old token stopped working at the exchange; a call with it meanwhile marked
    the connection in error. The upkeep still exchanges it again (Shopify answers
    the same pair for seven days), and the connection works. (A review found it.)"""
    connection_id = shopify.connect()
    switch_to_expiring(shopify, monkeypatch)
    hub = shopify.hub_app.state.hub
    provider = hub.provider("shopify")
    with hub.session() as session:
        ctx = hub.context(provider, session.get(Connection, connection_id))
    lost = shopify.client.portal.call(lambda: provider.call("refresh_credentials", ctx=ctx))  # answer lost
    assert shopify.post(f"{API}/connections/{connection_id}/test").status_code == 424
    assert connection_of(shopify, connection_id)["status"] == "error"
    assert upkeep(shopify) == 1
    connection = connection_of(shopify, connection_id)
    assert connection["status"] == "connected" and connection["last_error"] is None
    with hub.session() as session:
        stored = hub.cipher.decrypt_json(session.get(Connection, connection_id).credentials_encrypted)
    assert stored["access_token"] == lost.secrets["access_token"]
    assert shopify.post(f"{API}/connections/{connection_id}/test").status_code == 200
