"""Odd answers Shopify gives now and then, over real HTTP through the hub's
API: a next page linked without its page_info fails the pass clearly and
deletes nothing, and a null list is the provider's error (502), not the
hub's 500."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
import sqlalchemy as sa

from hub.models import Connection, utcnow

from hub.testing import wait_for_run
from hub.testing.fakes import Scripted
from hub_shopify import testing as fake

API = "/api/v1/integrations"


def pull(shopify, connection_id, full=False):
    started = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": "products", "full_refresh": full})
    assert started.status_code == 202, started.text
    return wait_for_run(shopify.client, shopify.auth, connection_id, started.json()["run"]["id"])


def test_a_next_page_linked_without_its_page_info_fails_the_pass_and_deletes_nothing(shopify, shop_server):
    switch, shop_url = shop_server
    scripted = switch.app = Scripted(shopify.shop)
    connection_id = shopify.connect()
    first = pull(shopify, connection_id)
    assert first["status"] == "succeeded" and first["created"] == 23, first
    page = sorted(shopify.shop.state.store.tables["products"].all(), key=lambda p: p["id"])[:5]
    products = f"/admin/api/{fake.API_VERSION}/products.json"
    scripted.script(products.rsplit("/", 1)[1], (200, {"products": page},
                                                 {"Link": f'<{shop_url}{products}?limit=250>; rel="next"'}))
    run = pull(shopify, connection_id, full=True)
    assert (run["status"], run["error_code"]) == ("failed", "provider_error"), run
    assert "without its page_info" in run["error"] and run["deleted"] == 0
    configs = shopify.get(f"{API}/connections/{connection_id}/sync-configs").json()["sync_configs"]
    stored = shopify.get(f"{API}/connections/{connection_id}/sync-configs/{configs[0]['id']}/records",
                         include_deleted=True, limit=100).json()["records"]
    assert len(stored) == 23 and not any(r["deleted"] for r in stored)


def test_a_null_list_is_the_providers_error_not_the_hubs(shopify, shop_server):
    switch, _ = shop_server
    scripted = switch.app = Scripted(shopify.shop)
    connection_id = shopify.connect()
    scripted.script("products.json", (200, {"products": None}))
    listed = shopify.get(shopify.records(connection_id, "products"))
    assert listed.status_code == 502 and listed.json()["code"] == "provider_error", listed.text
    assert "records are NoneType, not a list" in listed.json()["error"]


def test_nan_in_a_providers_json_reads_as_null_not_a_500(shopify, shop_server):
    switch, _ = shop_server
    scripted = switch.app = Scripted(shopify.shop)
    connection_id = shopify.connect()
    scripted.script("products.json", (200, b'{"products": [{"id": 1, "title": "Odd", "vendor": NaN}]}'))
    listed = shopify.get(shopify.records(connection_id, "products"))
    assert listed.status_code == 200, listed.text
    assert listed.json()["records"] == [{"id": 1, "title": "Odd", "vendor": None}]


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "API_VERSION": "2024-01"}])
def test_a_version_shopify_no_longer_serves_is_logged(shopify, caplog):
    """Shopify answers a retired version in the oldest one it supports: the
    answers follow a newer schema than asked, which the operator must hear of."""
    connection_id = shopify.connect()
    with caplog.at_level(logging.WARNING, logger="hub.shopify"):
        assert pull(shopify, connection_id)["status"] == "succeeded"
        assert pull(shopify, connection_id)["status"] == "succeeded"
    noted = [r.getMessage() for r in caplog.records if "no longer supports" in r.getMessage()]
    assert len(noted) == 1 and "served API version 2026-01" in noted[0] and "instead of 2024-01" in noted[0]


@pytest.mark.parametrize(("status", "code"), [(402, "shop_frozen"), (423, "shop_locked")])
def test_a_frozen_or_locked_shop_puts_the_connection_in_error_with_the_reason(shopify, shop_server, status, code):
    switch, _shop_url = shop_server
    scripted = switch.app = Scripted(shopify.shop)
    connection_id = shopify.connect()
    scripted.script("products.json", (status, {"errors": "Unavailable Shop"}))
    answer = shopify.get(f"{API}/connections/{connection_id}/entities/products/records")
    assert (answer.status_code, answer.json()["code"]) == (424, code), answer.text
    connection = shopify.get(f"{API}/connections/{connection_id}").json()["connection"]
    assert connection["status"] == "error" and "until" in connection["last_error"], connection


@pytest.mark.parametrize("hub_env", [{"REQUESTS_PER_SECOND": "50", "EXPIRING": "1"}])
def test_a_frozen_shop_met_while_refreshing_is_an_error_with_the_reason_not_a_grant_to_authorize_again(
        shopify, shop_server):
    """Shopify answers 402 to everything for a frozen shop, its token endpoint too. The
    connection was marked expired (authorize again), which paying the bill would not cure."""
    switch, _ = shop_server
    scripted = switch.app = Scripted(shopify.shop)
    connection_id = shopify.connect()
    with shopify.hub_app.state.hub.session() as session:
        session.execute(sa.update(Connection).where(Connection.id == connection_id)
                        .values(token_expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    scripted.script("access_token", (402, {"errors": "Unavailable Shop"}))
    answer = shopify.get(f"{API}/connections/{connection_id}/entities/products/records")
    assert (answer.status_code, answer.json()["code"]) == (424, "shop_frozen"), answer.text
    connection = shopify.get(f"{API}/connections/{connection_id}").json()["connection"]
    assert connection["status"] == "error" and "frozen" in connection["last_error"], connection
    # Paid: the same grant refreshes and works, nobody authorized again.
    assert shopify.get(f"{API}/connections/{connection_id}/entities/products/records").status_code == 200
    assert shopify.shop.state.refreshes == 1
