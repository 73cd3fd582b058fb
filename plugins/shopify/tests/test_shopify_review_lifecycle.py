"""Review of the connection lifecycle with Shopify: each test showed a
finding and failed on the code as reviewed."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import select

from hub.models import PendingRevocation, WebhookEvent, utcnow
from hub.runtime import Hub
from hub.services.connections import retry_revocations
from hub_shopify import testing as fake
from hub_shopify.testing import signed_delivery

API = "/api/v1/integrations"


def test_an_uninstall_triggered_before_the_shop_was_connected_again_leaves_the_new_grant_connected(shopify):
    """The merchant uninstalled the app an hour ago and installed it again
    (the hub's OAuth flow) since; Shopify's ``app/uninstalled`` delivery of
    an hour ago arrives now (a retry: Shopify retries for 4 hours, and the
    hub accepts 5). It is about the grant the reinstall replaced: the
    connection, holding a working new grant, must stay ``connected``. The
    hub marks it ``error`` ("connect the shop again"), telling the app and
    its user to authorize again what they have just authorized."""
    connection_id = shopify.connect()
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    body, headers = signed_delivery("app/uninstalled", {"id": 548380009, "domain": fake.SHOP},
                                    event_id="evt-uninstalled-before", triggered_at=an_hour_ago)
    received = shopify.client.post(f"{API}/webhooks/shopify", content=body, headers=headers)
    # Acknowledged, and nothing kept: the connection's token works (the plugin asks the shop).
    assert received.status_code == 200 and received.json()["received"] == 0, received.text
    with shopify.hub_app.state.hub.session() as session:
        assert session.exec(select(WebhookEvent)).all() == []
    assert shopify.get(f"{API}/connections/{connection_id}/entities/products/records").status_code == 200
    connection = shopify.get(f"{API}/connections/{connection_id}").json()["connection"]
    assert (connection["status"], connection["last_error"]) == ("connected", None)


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "0"}])
def test_a_pending_revocation_of_a_lasting_token_revoked_meanwhile_is_settled(shopify, shop_server):
    """A connection holding a non-expiring offline token (no refresh token)
    is deleted while the shop's revoke endpoint is down: the revocation is
    kept. The merchant uninstalls the app meanwhile (the token stops
    working). The retry's DELETE is answered 401: the grant is "not valid any
    more", and the revocation is settled.

    Instead, the 401 goes to the HTTP layer's ``refresh`` closure, which for
    credentials without a refresh token calls ``Hub._reload_renewed``; that
    asserts a connection id, and a revocation's context has none: the
    AssertionError becomes "provider shopify failed in disconnect", logged
    with a traceback and taken for a passing failure, tried again for a week
    (REVOCATION_ATTEMPTS)."""
    switch, _ = shop_server
    connection_id = shopify.connect()
    hub = shopify.hub_app.state.hub
    down = switch.app = fake.RevokeDown(switch.app)
    deleted = shopify.delete(f"{API}/connections/{connection_id}").json()
    assert deleted == {"success": True, "revocation": "pending"}, deleted
    down.down = False
    shopify.shop.state.tokens.clear()  # the merchant uninstalled the app meanwhile

    async def retry():
        later = Hub(hub.settings, hub.registry)
        try:
            return await retry_revocations(later, now=utcnow() + timedelta(days=1))
        finally:
            await later.close()

    settled = asyncio.run(retry())
    with hub.session() as session:
        left = session.exec(select(PendingRevocation)).all()
    assert (settled, [p.last_error for p in left]) == (1, [])
