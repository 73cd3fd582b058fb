"""Shopify lists the orders of the last 60 days to apps without its
read_all_orders scope: an order that ages out of that window is no longer
listed, and a full pass must not take it for deleted. One deleted in the
shop within the window still is."""

from __future__ import annotations

from datetime import datetime, timedelta

from hub.testing import wait_for_run
from hub_shopify import testing as fake

API = "/api/v1/integrations"


def test_an_order_aged_out_of_the_listing_is_not_deleted(shopify):
    store = shopify.shop.state.store
    now = datetime.now(fake.SHOP_TZ)
    ages = {"aged": timedelta(days=70), "recent": timedelta(days=1), "removed": timedelta(days=2)}
    orders = {name: store.add_order({"line_items": [{"title": name, "price": "1.00", "quantity": 1}]},
                                    at=(now - age).isoformat(timespec="seconds"))
              for name, age in ages.items()}
    aged = orders["aged"]  # fulfilled a month ago: its fulfillment ages out with it, not by its own date
    fulfilled = store.fulfil([fo for fo in store.tables["fulfillment_orders"].all() if fo["order_id"] == aged["id"]],
                             {"number": "1Z1", "company": "UPS"}, at=(now - timedelta(days=30)).isoformat())
    connection_id = shopify.connect()
    config = shopify.post(f"{API}/connections/{connection_id}/sync-configs",
                          {"entity": "orders", "direction": "pull"}).json()["sync_config"]
    shipped = shopify.post(f"{API}/connections/{connection_id}/sync-configs",
                           {"entity": "fulfillments", "direction": "pull"}).json()["sync_config"]

    def full_pull(entity="orders"):
        run = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": entity, "full_refresh": True})
        finished = wait_for_run(shopify.client, shopify.auth, connection_id, run.json()["run"]["id"])
        assert finished["status"] == "succeeded", finished
        return finished

    assert full_pull()["created"] == 3  # (listed while it was young)
    assert full_pull("fulfillments")["created"] == 1
    shopify.shop.state.orders_window_days = 60  # the 70-day-old order ages out of the listing
    store.tables["orders"].delete(str(orders["removed"]["id"]))  # and one is deleted in the shop
    assert full_pull()["deleted"] == 1
    records = shopify.get(f"{API}/connections/{connection_id}/sync-configs/{config['id']}/records",
                          include_deleted=True).json()["records"]
    deleted = {r["remote_id"]: r["deleted"] for r in records}
    assert deleted == {str(orders["aged"]["id"]): False, str(orders["recent"]["id"]): False,
                       str(orders["removed"]["id"]): True}
    assert full_pull("fulfillments")["deleted"] == 0
    [kept] = shopify.get(f"{API}/connections/{connection_id}/sync-configs/{shipped['id']}/records",
                         include_deleted=True).json()["records"]
    assert kept["remote_id"] == str(fulfilled["id"]) and kept["deleted"] is False
    assert kept["data"]["order_created_at"] == aged["created_at"]
    schema = shopify.get(f"{API}/providers/shopify/entities/orders").json()["entity"]
    assert schema["listed_for_days"] == 60
