"""Connecting a shop through the hub's REST API: the OAuth round trip against
the fake shop over real HTTP, the callback checks (hmac, age, shop, state),
expiring tokens with rotating refresh tokens, testing and disconnecting."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from dataclasses import replace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import sqlalchemy as sa

from hub.models import Connection, utcnow
from hub.services.orgs import create_organization
from hub_shopify import INFO
from hub_shopify import testing as fake
from hub_shopify.testing import CLIENT_ID, SHOP, sign_callback

API = "/api/v1/integrations"
APP_URL = "https://app.example.com/shopify/done"


def test_provider_is_listed(shopify):
    provider = shopify.get(f"{API}/providers/shopify").json()["provider"]
    assert provider["category"] == "ecommerce" and provider["auth_type"] == "oauth2"
    assert {"products", "orders", "customers", "locations"} <= set(provider["entities"])
    assert "adjust_inventory" in provider["actions"]
    products = shopify.get(f"{API}/providers/shopify/entities/products").json()["entity"]
    assert products["supports_since"] and {"id", "title", "variants"} <= {f["name"] for f in products["fields"]}
    # What a form needs: an order's line items are given once, at creation.
    orders = {f["name"]: f for f in shopify.get(f"{API}/providers/shopify/entities/orders").json()["entity"]["fields"]}
    assert orders["line_items"]["create_only"] and not orders["line_items"]["readonly"]
    assert not orders["note"]["create_only"]


def test_round_trip_connects_the_shop_and_tests_it(shopify):
    url = shopify.start()
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert f"{parts.scheme}://{parts.netloc}" == shopify.shop_url and parts.path == "/admin/oauth/authorize"
    assert query["client_id"] == CLIENT_ID and query["scope"] == ",".join(INFO.scopes)
    assert query["redirect_uri"].endswith(f"{API}/oauth/shopify/callback") and query["state"]
    callback = shopify.consent(url)
    assert callback["state"] == query["state"] and callback["shop"] == SHOP
    result = shopify.finish(callback)
    assert result["status"] == "connected" and result["provider"] == "shopify"
    connection = shopify.get(f"{API}/connections/{result['connection_id']}").json()["connection"]
    assert connection["status"] == "connected"
    assert connection["config"] == {"shop": SHOP, "scope": ",".join(INFO.scopes)}
    assert connection["token_expires_at"] is not None  # expiring offline tokens unless told otherwise
    assert not any(token in str(connection) for token in shopify.shop.state.tokens)
    tested = shopify.post(f"{API}/connections/{result['connection_id']}/test")
    assert tested.status_code == 200
    assert tested.json()["details"] == {"account": SHOP, "shop": SHOP, "name": "Hub Test Shop", "plan": "basic"}
    assert tested.json()["connection"]["provider_account"] == SHOP
    assert dict(shopify.shop.state.versions) == {fake.API_VERSION: 2}  # (the account read on connecting, and the test)


@pytest.mark.parametrize("tamper", ["hmac", "code", "timestamp"])
def test_tampered_callback_is_refused_without_reflecting_provider_text(shopify, tamper):
    callback = shopify.consent(shopify.start())
    code = callback["code"]
    callback[tamper] = "0" + callback[tamper][1:] if callback[tamper][0] != "0" else "1" + callback[tamper][1:]
    result = shopify.finish(callback)
    assert result == {"status": "error", "code": "invalid_hmac", "provider": "shopify"}  # the hmac covers every parameter
    assert code in shopify.shop.state.codes  # refused before the code was spent at Shopify
    assert shopify.get(f"{API}/connections").json()["connections"] == []


def test_callback_older_than_a_day_is_refused(shopify):
    callback = shopify.consent(shopify.start())
    callback["timestamp"] = str(int(time.time()) - 25 * 3600)
    callback["hmac"] = sign_callback(shopify.shop.state.client_secret, callback)
    assert shopify.finish(callback) == {"status": "error", "code": "callback_expired", "provider": "shopify"}


def test_callback_for_another_shop_is_refused(shopify):
    # The flow starts for other-shop, but the (fake) shop answers as hub-test.
    callback = shopify.consent(shopify.start(shop="other-shop.myshopify.com"))
    assert callback["shop"] == SHOP
    assert shopify.finish(callback) == {"status": "error", "code": "shop_mismatch", "provider": "shopify"}


def test_state_is_single_use(shopify):
    callback = shopify.consent(shopify.start())
    assert shopify.finish(callback)["status"] == "connected"
    replay = shopify.client.get(f"{API}/oauth/shopify/callback", params=callback, follow_redirects=False)
    assert replay.status_code == 400 and replay.json()["code"] == "state_used"  # no lasting redirect


def test_the_shop_and_tokens_of_a_connection_change_only_by_connecting_again(shopify, shop_server):
    """Its tokens must never go to another host: the shop is not editable, nor
    the credentials; connecting another shop does not take the connection over."""
    connection_id = shopify.connect()
    url = f"{API}/connections/{connection_id}"
    # The catalog a connection form is built from says so.
    declared = shopify.get(f"{API}/providers/shopify").json()["provider"]["config_fields"]
    assert [(f["name"], f["readonly"], f["fixed_after_connect"]) for f in declared if f["name"] == "shop"] == [
        ("shop", False, True)]  # (asked for when connecting, never changed after)
    moved = shopify.put(url, {"config": {"shop": "evil.example.com"}})
    assert moved.status_code == 422 and moved.json()["code"] == "config_from_authorization"
    swapped = shopify.put(url, {"credentials": {"access_token": "shpat_mine"}})
    assert swapped.status_code == 422 and swapped.json()["code"] == "credentials_from_authorization"
    assert shopify.get(url).json()["connection"]["config"]["shop"] == SHOP
    assert shopify.put(url, {"config": {"shop": SHOP}, "name": "Main shop"}).status_code == 200  # unchanged is fine

    switch, _ = shop_server
    switch.app = fake.create_app(shop="second-store.myshopify.com")
    result = shopify.finish(shopify.consent(shopify.start(shop="second-store.myshopify.com")))
    assert result == {"status": "error", "code": "connection_exists", "provider": "shopify"}
    # The second shop's grant, which nothing holds, is given back (the app leaves that shop).
    assert switch.app.state.tokens == {} and len(shopify.shop.state.tokens) == 1
    assert [c["id"] for c in shopify.get(f"{API}/connections").json()["connections"]] == [connection_id]
    assert shopify.get(url).json()["connection"]["config"]["shop"] == SHOP


@pytest.mark.parametrize("typed", [" https://Hub-Test.myshopify.com/", "HUB-TEST.MYSHOPIFY.COM", "http://hub-test.myshopify.com"])
def test_shop_as_a_merchant_copies_it_connects_in_its_canonical_form(shopify, typed):
    # What the address bar shows: Shopify signs the callback with the lower-case host.
    result = shopify.finish(shopify.consent(shopify.start(shop=typed)))
    assert result["status"] == "connected", result
    connection = shopify.get(f"{API}/connections/{result['connection_id']}").json()["connection"]
    assert connection["config"]["shop"] == SHOP


def test_invalid_shop_is_refused(shopify):
    for shop in ("evil.com", "hub-test.myshopify.com.evil.com", "hub_test.myshopify.com", "ftp://hub-test.myshopify.com",
                 "hub-test.myshopify.com/admin", ".myshopify.com", "https://hub-test.myshopify.com:8443", "", "   "):
        response = shopify.get(f"{API}/oauth/shopify/authorize", shop=shop, redirect_uri=APP_URL)
        assert response.status_code == 422 and response.json()["code"] == "invalid_shop", shop
    missing = shopify.get(f"{API}/oauth/shopify/authorize", redirect_uri=APP_URL)
    assert missing.status_code == 422 and missing.json()["code"] == "invalid_shop"


def test_missing_client_id_is_a_configuration_error(shopify, monkeypatch):
    monkeypatch.delenv("HUB_SHOPIFY_CLIENT_ID")
    response = shopify.get(f"{API}/oauth/shopify/authorize", shop=SHOP, redirect_uri=APP_URL)
    assert response.status_code == 400 and response.json()["code"] == "configuration_error"
    assert "HUB_SHOPIFY_CLIENT_ID" in response.json()["error"]


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "1"}])
def test_expiring_tokens_refresh_and_rotation_is_saved(shopify):
    connection_id = shopify.connect()
    connection = shopify.get(f"{API}/connections/{connection_id}").json()["connection"]
    assert connection["token_expires_at"] is not None
    products = shopify.records(connection_id, "products")
    for round_ in (1, 2):  # the second refresh works only with the rotated refresh token
        shopify.shop.state.tokens.clear()  # Shopify rejects the access token: 401, refresh, retry
        response = shopify.get(products, limit=1)
        assert response.status_code == 200, response.text
        assert shopify.shop.state.refreshes == round_
    shopify.shop.state.tokens.clear()
    shopify.shop.state.refresh_tokens.clear()
    refused = shopify.get(products, limit=1)
    assert refused.status_code == 424 and refused.json()["code"] == "token_refresh_failed"
    connection = shopify.get(f"{API}/connections/{connection_id}").json()["connection"]
    assert connection["status"] == "expired" and "refresh token is invalid" in connection["last_error"]


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "0"}])
def test_revoked_token_fails_the_connection_test(shopify):
    """(A token that does not expire: nothing to renew it with.)"""
    connection_id = shopify.connect()
    shopify.shop.state.tokens.clear()
    response = shopify.post(f"{API}/connections/{connection_id}/test")
    assert response.status_code == 424 and response.json()["code"] == "provider_auth_failed"
    assert "Invalid API key or access token" in response.json()["error"]


def test_deleting_the_connection_revokes_the_token(shopify):
    connection_id = shopify.connect()
    assert len(shopify.shop.state.tokens) == 1
    assert shopify.delete(f"{API}/connections/{connection_id}").json() == {"success": True, "revocation": "revoked"}
    assert shopify.shop.state.tokens == {}


def connect_twice(shopify):
    """The shop connected by a second organization as well: (first id, its harness, second id)."""
    first = shopify.connect()
    with shopify.hub_app.state.hub.session() as session:
        _org, key = create_organization(session, "second")
    second_org = replace(shopify, auth={"Authorization": f"Bearer {key}"})
    second = second_org.connect()
    assert len(shopify.shop.state.tokens) == 2
    return first, second_org, second


def test_deleting_one_of_two_connections_to_a_shop_leaves_the_app_installed(shopify):
    """Two organizations connected the same shop: uninstalling the app (which
    revokes every token of the shop) would cut the other one off."""
    first, second_org, second = connect_twice(shopify)
    # (Nothing revoked: the app stays for the other organization.)
    assert second_org.delete(f"{API}/connections/{second}").json() == {"success": True, "revocation": "none"}
    assert shopify.post(f"{API}/connections/{first}/test").status_code == 200
    assert shopify.delete(f"{API}/connections/{first}").json() == {"success": True, "revocation": "revoked"}
    assert shopify.shop.state.tokens == {}


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "API_VERSION": "2024-10"}])
def test_api_version_setting(shopify):
    connection_id = shopify.connect()
    assert shopify.post(f"{API}/connections/{connection_id}/test").status_code == 200
    assert dict(shopify.shop.state.versions) == {"2024-10": 2}  # (the account read on connecting, and the test)


def test_two_connections_to_a_shop_deleted_at_once_leave_the_app_uninstalled(shopify):
    """Each deletion saw the other connection still there, and neither revoked."""
    first, second_org, second = connect_twice(shopify)
    answers = []
    threads = [threading.Thread(target=lambda h=h, c=c: answers.append(h.delete(f"{API}/connections/{c}").json()))
               for h, c in ((shopify, first), (second_org, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The last revokes; the other saw the shop still connected (none), or came after the uninstall
    # and found its token gone with it (refused: invalid already).
    first_answer, last_answer = sorted((a["revocation"] for a in answers), key=lambda r: r != "revoked")
    assert first_answer == "revoked" and last_answer in ("none", "refused"), answers
    assert shopify.get(f"{API}/connections").json()["connections"] == []
    assert shopify.shop.state.tokens == {}, "no connection left, the app still installed with live tokens"


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "1"}])
def test_deleting_a_connection_whose_access_token_expired_still_uninstalls(shopify):
    """Revoked after its rows are gone: the token is refreshed before, while it can be saved."""
    connection_id = shopify.connect()
    hub = shopify.hub_app.state.hub
    # The access token has expired (Shopify's expiring tokens last an hour); the refresh token is good.
    for token in list(shopify.shop.state.tokens):
        shopify.shop.state.tokens[token] = time.time() - 1
    with hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id)
                        .values(token_expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert shopify.delete(f"{API}/connections/{connection_id}").json() == {"success": True, "revocation": "revoked"}
    live = [t for t, exp in shopify.shop.state.tokens.items() if not exp or exp > time.time()]
    assert shopify.shop.state.refreshes == 1 and live == [] and shopify.shop.state.tokens == {}, \
        (shopify.shop.state.refreshes, shopify.shop.state.tokens, shopify.shop.state.refresh_tokens)


def test_a_grant_with_fewer_scopes_than_asked_is_given_back_and_refused(shopify):
    """The scope edited out of the authorize URL: Shopify grants what the
    merchant accepted. The hub uninstalls that grant and says what is missing,
    instead of a connection failing call by call later."""
    assert shopify.finish(reduced_consent(shopify)) == {"status": "error", "code": "insufficient_scope", "provider": "shopify"}
    assert shopify.get(f"{API}/connections").json()["connections"] == []
    assert shopify.shop.state.tokens == {}  # the grant was given back
    assert shopify.finish(shopify.consent(shopify.start()))["status"] == "connected"  # all accepted: fine


def reduced_consent(harness) -> dict[str, str]:
    """The flow with a scope edited out of the authorize URL: the callback's query."""
    parts = urlsplit(harness.start())
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["scope"] = "read_products,write_orders"
    return harness.consent(f"{parts.scheme}://{parts.netloc}{parts.path}?{urlencode(query)}")


def test_a_reduced_grant_refused_for_one_organization_leaves_the_others_connection_working(shopify):
    """Shopify keeps one installation per shop: giving back the reduced grant
    of a second organization would uninstall the app under the first."""
    first = shopify.connect()
    with shopify.hub_app.state.hub.session() as session:
        _org, key = create_organization(session, "second")
    second_org = replace(shopify, auth={"Authorization": f"Bearer {key}"})
    assert second_org.finish(reduced_consent(second_org)) == {"status": "error", "code": "insufficient_scope", "provider": "shopify"}
    assert shopify.post(f"{API}/connections/{first}/test").status_code == 200


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "1"}])
def test_a_revocation_tried_again_after_its_token_expired_refreshes_it_first(shopify, shop_server):
    """The app could not be uninstalled when the connection was deleted; by
    the retries its access token has expired: the grant is refreshed (in
    memory), its rotated tokens kept while the shop still refuses, and given
    back with them once it answers; never dropped as if it were invalid."""
    import asyncio

    from sqlmodel import select

    from hub.models import PendingRevocation
    from hub.runtime import Hub
    from hub.services.connections import retry_revocations

    switch, _ = shop_server
    connection_id = shopify.connect()
    hub = shopify.hub_app.state.hub
    down = switch.app = fake.RevokeDown(switch.app)
    assert shopify.delete(f"{API}/connections/{connection_id}").json() == {"success": True, "revocation": "pending"}
    with hub.session() as session:
        session.execute(sa.update(PendingRevocation).values(token_expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    for token in list(shopify.shop.state.tokens):
        shopify.shop.state.tokens[token] = time.time() - 1  # expired at the shop
    refreshes = shopify.shop.state.refreshes

    def retry(days: int, plugin_bug: bool = False) -> int:
        async def go():
            later = Hub(hub.settings, hub.registry)
            provider = later.provider("shopify")
            if plugin_bug:
                real_call = provider.call

                async def failing(hook, **kwargs):
                    if hook == "refresh_credentials":
                        raise KeyError("a plugin bug")
                    return await real_call(hook, **kwargs)

                provider.call = failing
            try:
                return await retry_revocations(later, now=utcnow() + timedelta(days=days))
            finally:
                provider.__dict__.pop("call", None)  # (the registry's providers are shared)
                await later.close()
        return asyncio.run(go())

    assert retry(1, plugin_bug=True) == 0  # a plugin failing is a passing failure, counted
    with hub.session() as session:
        [pending] = session.exec(select(PendingRevocation)).all()
    assert pending.attempts == 2 and "KeyError" in pending.last_error
    assert retry(2) == 0  # refreshed, but the shop still refuses: the new tokens are kept
    assert shopify.shop.state.refreshes == refreshes + 1
    down.down = False
    assert retry(3) == 1
    assert shopify.shop.state.refreshes == refreshes + 1
    assert not [t for t, expiry in shopify.shop.state.tokens.items() if expiry is None or expiry > time.time()]
    with hub.session() as session:
        assert session.exec(select(PendingRevocation)).all() == []


def test_two_organizations_connected_to_one_shop_share_its_rate_limit(shopify):
    """Shopify's bucket is per app and shop: two connections each pacing
    itself at the shop's rate would send it twice that, into 429s."""
    first, _second_org, second = connect_twice(shopify)
    hub = shopify.hub_app.state.hub
    provider = hub.provider("shopify")
    with hub.session() as session:
        contexts = [hub.context(provider, session.get(Connection, cid)) for cid in (first, second)]
    assert contexts[0].http.limiter is contexts[1].http.limiter is not None
    other = Connection(organization_id="x", provider="shopify", category="ecommerce", name="other",
                       config={"shop": "other-shop.myshopify.com"}, webhook_key="other-shop.myshopify.com",
                       credentials_encrypted=hub.cipher.encrypt_json({"access_token": "t"}))
    assert hub.context(provider, other).http.limiter is not contexts[0].http.limiter
