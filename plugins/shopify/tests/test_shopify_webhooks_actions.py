"""Webhooks and actions through the hub's REST API: signed deliveries routed
by shop domain, forged/stale/future-dated/replayed ones and ones for another
shop, subscriptions registered at the fake shop and its deliveries to them;
inventory and fulfilment actions."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

from sqlmodel import select

from hub.models import WebhookEvent
from hub.testing import wait_for_run
from hub.services.orgs import create_organization
from hub_shopify import testing as fake
from hub_shopify.testing import deliveries, signed_delivery

API = "/api/v1/integrations"

ORDER = {"id": 450789469, "name": "#1001", "email": "ada@example.com", "total_price": "10.00"}


def hours_ago(hours: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=hours)


def stored_events(shopify) -> list[WebhookEvent]:
    with shopify.hub_app.state.hub.session() as session:
        return list(session.exec(select(WebhookEvent).order_by(WebhookEvent.received_at)))


def test_signed_delivery_is_routed_by_shop_domain_and_stored_once(shopify):
    connection_id = shopify.connect()
    url = f"{API}/webhooks/shopify"
    body, headers = signed_delivery("orders/create", ORDER, event_id="evt-1")
    first = shopify.client.post(url, content=body, headers=headers)
    assert first.json() == {"success": True, "received": 1, "duplicates": 0, "duplicate": False}
    replay = shopify.client.post(url, content=body, headers=headers).json()
    assert replay["duplicate"] is True and replay["received"] == 0
    [event] = stored_events(shopify)
    assert (event.connection_id, event.type, event.entity, event.action, event.record_id) == (
        connection_id, "order.created", "orders", "created", "450789469")
    assert event.payload == ORDER

    body, headers = signed_delivery("customers/delete", {"id": 207119551}, event_id="evt-2")
    assert shopify.client.post(url, content=body, headers=headers).json()["received"] == 1
    deleted = stored_events(shopify)[-1]
    assert (deleted.type, deleted.entity, deleted.action, deleted.payload) == (
        "customer.deleted", "customers", "deleted", None)


def test_forged_stale_and_unknown_deliveries_are_rejected(shopify, caplog):
    shopify.connect()
    url = f"{API}/webhooks/shopify"
    body, headers = signed_delivery("products/update", {"id": 1, "title": "x"})
    forged = shopify.client.post(url, content=body.replace(b'"x"', b'"y"'), headers=headers)
    assert forged.status_code == 401 and forged.json()["code"] == "webhook_rejected"
    wrong_key = signed_delivery("products/update", {"id": 1}, secret="another-app-secret")
    assert shopify.client.post(url, content=wrong_key[0], headers=wrong_key[1]).status_code == 401
    unsigned = {k: v for k, v in headers.items() if k != "X-Shopify-Hmac-Sha256"}
    assert shopify.client.post(url, content=body, headers=unsigned).status_code == 401
    # Shopify retries for 4 hours: a 3-hour-old retry is fine, a 6-hour-old one is stale.
    retried = signed_delivery("products/update", {"id": 1}, triggered_at=hours_ago(3))
    assert shopify.client.post(url, content=retried[0], headers=retried[1]).status_code == 200
    stale = signed_delivery("products/update", {"id": 1}, triggered_at=hours_ago(6))
    response = shopify.client.post(url, content=stale[0], headers=stale[1])
    assert response.status_code == 401 and response.json()["code"] == "webhook_stale"
    other = signed_delivery("products/update", {"id": 1}, shop="someone-else.myshopify.com")
    assert shopify.client.post(url, content=other[0], headers=other[1]).status_code == 401
    # Whether a shop has a connection here is not told to whoever calls: a shop without one
    # is answered as a bad signature for a shop with one is.
    guessed = {**headers, "X-Shopify-Hmac-Sha256": "x"}
    answers = [shopify.client.post(url, content=body, headers={**guessed, "X-Shopify-Shop-Domain": shop})
               for shop in (headers["X-Shopify-Shop-Domain"], "other-brand.myshopify.com")]
    assert [(a.status_code, a.json()) for a in answers] == [(401, {
        "success": False, "error": "the delivery could not be verified", "code": "webhook_rejected"})] * 2
    # Signed, but nested past what a JSON parser reads: refused, not an error of the hub's.
    deep = b"[" * 100_000 + b"]" * 100_000
    deep_headers = {**headers, "X-Shopify-Hmac-Sha256": fake.sign_body(fake.CLIENT_SECRET, deep)}
    refused = shopify.client.post(url, content=deep, headers=deep_headers)
    assert refused.status_code == 401 and "malformed" in caplog.text, refused.text
    assert "crashed" not in caplog.text  # refused by the plugin, not a crash the hub caught
    assert len(stored_events(shopify)) == 1


def test_a_delivery_dated_ahead_is_rejected_like_a_stale_one(shopify):
    """X-Shopify-Triggered-At is unsigned and becomes a deletion's version: a delete
    stamped a year ahead would otherwise outrank every real update for a year."""
    shopify.connect()
    url = f"{API}/webhooks/shopify"
    for topic in ("products/update", "products/delete"):
        for hours_ahead in (24 * 365, 1):
            ahead = signed_delivery(topic, {"id": 1}, triggered_at=hours_ago(-hours_ahead))
            response = shopify.client.post(url, content=ahead[0], headers=ahead[1])
            assert response.status_code == 401 and response.json()["code"] == "webhook_stale"
    skewed = signed_delivery("products/update", {"id": 1}, triggered_at=hours_ago(-0.05))  # a clock 3 min fast
    assert shopify.client.post(url, content=skewed[0], headers=skewed[1]).status_code == 200
    assert len(stored_events(shopify)) == 1


def test_a_delivery_for_another_shop_is_refused_by_connection_id(shopify, shop_server):
    """Shopify signs every shop's deliveries with the app's one client secret, so a
    delivery signed for one shop must not be accepted for another shop's connection."""
    own = shopify.connect()
    switch, _ = shop_server
    victim_shop = "victim.myshopify.com"
    switch.app = fake.create_app(shop=victim_shop)
    with shopify.hub_app.state.hub.session() as session:
        _org, key = create_organization(session, "victim")
    victim = replace(shopify, auth={"Authorization": f"Bearer {key}"}, shop=switch.app)
    victim_id = victim.finish(victim.consent(victim.start(shop=victim_shop)))["connection_id"]
    assert victim_id != own

    url = f"{API}/webhooks/shopify"
    body, headers = signed_delivery("orders/create", ORDER)  # for the hub-test shop, correctly signed
    injected = shopify.client.post(f"{url}?connection_id={victim_id}", content=body, headers=headers)
    assert injected.status_code == 401 and injected.json()["code"] == "webhook_rejected"
    body, headers = signed_delivery("orders/delete", {"id": 1}, shop="")
    nameless = shopify.client.post(f"{url}?connection_id={victim_id}", content=body, headers=headers)
    assert nameless.status_code == 401 and nameless.json()["code"] == "webhook_rejected"
    assert stored_events(shopify) == []

    # The shop's own deliveries still arrive, by connection id or by shop domain (any case).
    body, headers = signed_delivery("orders/create", ORDER, shop=victim_shop.upper())
    assert shopify.client.post(f"{url}?connection_id={victim_id}", content=body, headers=headers).status_code == 200
    body, headers = signed_delivery("orders/updated", ORDER, shop=victim_shop.upper())
    assert shopify.client.post(url, content=body, headers=headers).status_code == 200
    body, headers = signed_delivery("orders/updated", ORDER)
    assert shopify.client.post(f"{url}?connection_id={own}", content=body, headers=headers).status_code == 200
    assert [e.connection_id for e in stored_events(shopify)] == [victim_id, victim_id, own]


def test_a_delivery_by_shop_domain_reaches_every_organization_connected_to_the_shop(shopify):
    """Two organizations may connect one shop; an app-level delivery routed by
    the shop's domain (no connection id: an uninstall, say) concerns both."""
    first = shopify.connect()
    with shopify.hub_app.state.hub.session() as session:
        _org, key = create_organization(session, "second")
    second_org = replace(shopify, auth={"Authorization": f"Bearer {key}"})
    second = second_org.connect()
    assert second != first
    body, headers = signed_delivery("orders/updated", ORDER)
    response = shopify.client.post(f"{API}/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 200 and response.json()["received"] == 2
    assert sorted(e.connection_id for e in stored_events(shopify)) == sorted([first, second])


def test_app_uninstalled_marks_the_connection_error_at_once(shopify):
    """Shopify's ``app/uninstalled`` (the shop removed the app, its token is
    revoked) puts the connection in ``error`` without waiting for a sync to fail."""
    connection_id = shopify.connect()
    fake.uninstall_app(shopify.shop)  # (Shopify revokes the app's tokens for the shop)
    body, headers = signed_delivery("app/uninstalled", {"id": 548380009, "domain": fake.SHOP}, event_id="evt-u")
    received = shopify.client.post(f"{API}/webhooks/shopify", content=body, headers=headers)
    assert received.json()["received"] == 1, received.text
    deadline = time.monotonic() + 20
    # (Expired, when the check of its token refused the refresh too: authorize again, either way.)
    while (connection := shopify.get(f"{API}/connections/{connection_id}").json()["connection"])[
            "last_error"] != "the app was uninstalled from the shop: connect the shop again (OAuth)":
        assert time.monotonic() < deadline, "the uninstall was not applied"
        time.sleep(0.05)
    assert connection["status"] in ("error", "expired")
    [event] = stored_events(shopify)
    assert (event.type, event.entity, event.action, event.status) == (
        "app.uninstalled", None, "connection_error", "processed")


def test_an_uninstall_delivered_while_the_token_works_breaks_nothing(shopify):
    """A retry of an uninstall the shop has undone since (connected again), or
    a captured delivery sent again with a new event id and time (Shopify signs
    the body only): the connection's token works, so it stays connected."""
    connection_id = shopify.connect()
    body, headers = signed_delivery("app/uninstalled", {"id": 548380009, "domain": fake.SHOP}, event_id="evt-u2")
    received = shopify.client.post(f"{API}/webhooks/shopify", content=body, headers=headers)
    assert received.status_code == 200 and received.json()["received"] == 0, received.text
    assert stored_events(shopify) == []
    connection = shopify.get(f"{API}/connections/{connection_id}").json()["connection"]
    assert (connection["status"], connection["last_error"]) == ("connected", None)


def test_register_webhook_subscribes_topics_once_and_deliveries_arrive(shopify):
    connection_id = shopify.connect()
    register = f"{API}/connections/{connection_id}/webhooks"
    response = shopify.post(register, {"events": ["order.created", "order.updated", "product.updated"]})
    assert response.status_code == 200, response.text
    hooks = shopify.shop.state.store.tables["webhooks"].all()
    assert sorted(h["topic"] for h in hooks) == ["orders/create", "orders/updated", "products/update"]
    assert all(h["address"] == response.json()["url"] and h["format"] == "json" for h in hooks)
    assert response.json()["subscription_id"] == ",".join(str(h["id"]) for h in hooks)
    assert shopify.post(register, {"events": ["order.created"]}).status_code == 200  # already subscribed
    assert len(shopify.shop.state.store.tables["webhooks"]) == 3
    assert shopify.post(register, {"events": []}).status_code == 200  # the default set
    assert len(shopify.shop.state.store.tables["webhooks"]) == 10

    [(address, body, headers)] = deliveries(shopify.shop, "orders/create", ORDER)
    target = urlsplit(address)
    received = shopify.client.post(f"{target.path}?{target.query}", content=body, headers=headers)
    assert received.json()["received"] == 1, received.text
    assert stored_events(shopify)[-1].connection_id == connection_id


def test_inventory_and_location_actions(shopify):
    connection_id = shopify.connect()
    actions = shopify.get(f"{API}/connections/{connection_id}/actions").json()["actions"]
    assert {a["name"] for a in actions} == {"inventory_levels", "adjust_inventory", "create_fulfillment",
                                            "list_locations"}
    locations = shopify.action(connection_id, "list_locations").json()["result"]["locations"]
    assert len(locations) == 2
    product = next(iter(shopify.shop.state.store.tables["products"].rows.values()))
    item = product["variants"][0]["inventory_item_id"]
    levels = shopify.action(connection_id, "inventory_levels", inventory_item_ids=str(item)).json()["result"]
    assert [(lv["location_id"], lv["available"]) for lv in levels["inventory_levels"]] == [(locations[0]["id"], 5)]
    adjusted = shopify.action(connection_id, "adjust_inventory", inventory_item_id=item,
                              location_id=locations[0]["id"], available_adjustment=-2)
    assert adjusted.status_code == 200 and adjusted.json()["result"]["inventory_level"]["available"] == 3
    unstocked = shopify.action(connection_id, "adjust_inventory", inventory_item_id=item,
                               location_id=locations[1]["id"], available_adjustment=1)
    assert unstocked.status_code == 422 and "not stocked" in unstocked.json()["error"]
    missing = shopify.action(connection_id, "adjust_inventory", inventory_item_id=item)
    assert missing.status_code == 422 and missing.json()["code"] == "missing_fields"
    bad = shopify.action(connection_id, "adjust_inventory", inventory_item_id="abc", location_id=1,
                         available_adjustment=1)
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_id"


def test_fulfil_an_order_with_tracking(shopify):
    connection_id = shopify.connect()
    orders = shopify.records(connection_id, "orders")
    order = shopify.post(orders, {"data": {"line_items": [{"title": "Board", "price": "100", "quantity": 1}]}})
    order_id = order.json()["record"]["id"]
    result = shopify.action(connection_id, "create_fulfillment", order_id=order_id, tracking_number="1Z999",
                            tracking_company="UPS", tracking_url="https://ups.example/1Z999")
    assert result.status_code == 200, result.text
    fulfillment = result.json()["result"]["fulfillment"]
    assert (fulfillment["order_id"], fulfillment["tracking_number"], fulfillment["tracking_company"]) == (
        order_id, "1Z999", "UPS")
    assert shopify.get(f"{orders}/{order_id}").json()["record"]["fulfillment_status"] == "fulfilled"
    again = shopify.action(connection_id, "create_fulfillment", order_id=order_id)
    assert again.status_code == 422 and again.json()["code"] == "nothing_to_fulfill"
    fulfillments = shopify.records(connection_id, "fulfillments")
    by_order = shopify.get(fulfillments, order_id=str(order_id)).json()["records"]
    across_orders = shopify.get(fulfillments).json()["records"]
    assert [f["id"] for f in by_order] == [f["id"] for f in across_orders] == [fulfillment["id"]]
    assert shopify.get(f"{fulfillments}/{fulfillment['id']}").json()["code"] == "fulfillment_needs_order"


def test_privacy_requests_erase_what_the_hub_keeps_of_the_person_or_shop(shopify):
    """Shopify's mandatory compliance topics: customers/redact erases the
    customer and the orders it names (stored records and the bodies of their
    webhook events), shop/redact every record of the shop; none keeps the
    person's details. Sync configs do not matter: the law asks it of every copy."""
    store = shopify.shop.state.store
    customer = store.add_customer({"email": "ada@example.com", "first_name": "Ada"})
    other = store.add_customer({"email": "grace@example.com", "first_name": "Grace"})
    order = store.add_order({"line_items": [{"title": "Board", "price": "1.00", "quantity": 1}],
                             "email": "ada@example.com"})
    connection_id = shopify.connect()
    # The app is told what to erase of its own copies (at an address that does not answer: what was sent is kept).
    endpoint = shopify.post(f"{API}/event-endpoints", {"url": "http://127.0.0.1:9/hub-events",
                                                       "events": ["records.erased"]}).json()["endpoint"]
    for entity in ("customers", "orders"):
        run = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": entity}).json()["run"]
        assert wait_for_run(shopify.client, shopify.auth, connection_id, run["id"])["status"] == "succeeded"
    url = f"{API}/webhooks/shopify"
    updated = signed_delivery("customers/update", {**customer, "note": "seen"}, event_id="evt-c")
    assert shopify.client.post(url, content=updated[0], headers=updated[1]).json()["received"] == 1
    _settled(shopify)

    body, headers = signed_delivery("customers/redact", {
        "shop_id": 1, "shop_domain": fake.SHOP, "customer": {"id": customer["id"], "email": "ada@example.com",
                                                             "phone": "+15550001"},
        "orders_to_redact": [order["id"]]}, event_id="evt-r")
    assert shopify.client.post(url, content=body, headers=headers).json()["received"] == 2
    _settled(shopify)
    remaining = {(r.entity, r.remote_id) for r in _stored(shopify) if not r.deleted}
    assert ("customers", str(customer["id"])) not in remaining and ("orders", str(order["id"])) not in remaining
    # A retry of an older delivery arriving late must not bring the person back.
    late = signed_delivery("customers/update", {**customer, "updated_at": hours_ago(1).isoformat()},
                           event_id="evt-late", triggered_at=hours_ago(1))
    assert shopify.client.post(url, content=late[0], headers=late[1]).json()["received"] == 1
    _settled(shopify)
    [kept] = [r for r in _stored(shopify) if r.remote_id == str(customer["id"])]
    assert kept.deleted and kept.data == {}
    assert ("customers", str(other["id"])) in remaining  # (the shop's other records stay)
    events = stored_events(shopify)
    assert "ada@example.com" not in repr([(e.raw, e.payload) for e in events])
    assert {(e.type, e.status) for e in events if e.action == "redacted"} == {
        ("customer.redact", "processed"), ("order.redact", "processed")}

    asked = signed_delivery("customers/data_request", {
        "shop_id": 1, "shop_domain": fake.SHOP, "customer": {"id": 5, "email": "grace@example.com"},
        "orders_requested": [7], "data_request": {"id": 9}}, event_id="evt-d")
    assert shopify.client.post(url, content=asked[0], headers=asked[1]).json()["received"] == 1
    [request] = [e for e in stored_events(shopify) if e.type == "customer.data_request"]
    assert request.raw == {"customer_id": "5", "orders_requested": ["7"], "data_request_id": 9}
    odd = signed_delivery("customers/redact", {"customer": {"id": True}, "orders_to_redact": "12"}, event_id="evt-o")
    assert shopify.client.post(url, content=odd[0], headers=odd[1]).json()["received"] == 0  # nothing it names

    shop = signed_delivery("shop/redact", {"shop_id": 1, "shop_domain": fake.SHOP}, event_id="evt-s")
    assert shopify.client.post(url, content=shop[0], headers=shop[1]).json()["received"] == 1
    _settled(shopify)
    assert _stored(shopify) == []  # (the erased ones' marks too: nothing of the shop is kept)
    told = shopify.client.get(f"{API}/event-endpoints/{endpoint['id']}/deliveries",
                              headers=shopify.auth).json()["deliveries"]
    assert sorted((d["payload"]["data"]["entity"] or "", d["payload"]["data"]["remote_id"] or "") for d in told) == [
        ("", ""), ("customers", str(customer["id"])), ("orders", str(order["id"]))]
    assert {d["payload"]["data"]["connection_id"] for d in told} == {connection_id}


def _stored(shopify):
    from hub.models import SyncRecord

    with shopify.hub_app.state.hub.session() as session:
        return list(session.exec(select(SyncRecord)))


def _settled(shopify, timeout=20.0):
    deadline = time.monotonic() + timeout
    while any(e.status == "pending" for e in stored_events(shopify)):
        assert time.monotonic() < deadline, "events not applied"
        time.sleep(0.05)


def test_privacy_deliveries_after_the_connection_was_deleted_are_acknowledged(shopify):
    """Shopify sends shop/redact 48 hours after an uninstall, and retries a refused
    delivery, then counts the app's compliance endpoint as failing: a delivery signed
    with the app's secret for a shop the hub no longer holds is answered 200."""
    connection_id = shopify.connect()
    url = f"{API}/webhooks/shopify"
    assert shopify.delete(f"{API}/connections/{connection_id}").status_code == 200
    for topic, payload in [("shop/redact", {"shop_id": 1, "shop_domain": fake.SHOP}),
                           ("customers/redact", {"customer": {"id": 5}, "orders_to_redact": [7]}),
                           ("customers/data_request", {"customer": {"id": 5}, "orders_requested": [7]})]:
        body, headers = signed_delivery(topic, payload, event_id=f"evt-{topic}")
        answer = shopify.client.post(url, content=body, headers=headers)
        assert answer.status_code == 200 and answer.json()["received"] == 0, (topic, answer.text)
        forged = shopify.client.post(url, content=body, headers={**headers, "X-Shopify-Hmac-Sha256": "x"})
        assert forged.status_code == 401 and forged.json()["code"] == "webhook_rejected"
        other_app = signed_delivery(topic, payload, secret="another-app-secret")
        assert shopify.client.post(url, content=other_app[0], headers=other_app[1]).status_code == 401
        # Old: stale, as for a shop with a connection (which shops are connected is not told).
        stale = signed_delivery(topic, payload, triggered_at=hours_ago(6))
        answer = shopify.client.post(url, content=stale[0], headers=stale[1])
        assert (answer.status_code, answer.json()["code"]) == (401, "webhook_stale")
    # Another topic is refused, so Shopify retries it (it may come while the shop is being connected).
    uninstalled = signed_delivery("app/uninstalled", {"id": 1})
    assert shopify.client.post(url, content=uninstalled[0], headers=uninstalled[1]).status_code == 401
    assert stored_events(shopify) == []
