"""Records through the hub's REST API against the fake shop over real HTTP:
Link-header pagination to the end, CRUD with Shopify's wrapping and errors,
since and other filters, the leaky bucket, and the provider actions."""

from __future__ import annotations

import time

import pytest

from hub.models import Connection
from hub_shopify.testing import fill_bucket


def list_all(shopify, connection_id, entity, limit, max_pages=100, **params):
    """Follow next_cursor from the first page to the last: (ids, pages)."""
    url = shopify.records(connection_id, entity)
    ids, pages, cursor = [], 0, None
    for _ in range(max_pages):
        response = shopify.get(url, limit=limit, **params, **({"cursor": cursor} if cursor else {}))
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [r["id"] for r in body["records"]]
        pages += 1
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if cursor is None:
            return ids, pages
    pytest.fail(f"still a next_cursor after {max_pages} pages")


def test_products_page_to_the_end_with_no_record_missing_or_repeated(shopify):
    connection_id = shopify.connect()
    expected = sorted(shopify.shop.state.store.tables["products"].rows)
    ids, pages = list_all(shopify, connection_id, "products", 5)
    assert pages == 5 and sorted(map(str, ids)) == expected and len(set(ids)) == 23
    # A full page is not the end, the Link header is: 23 of limit 23 is one page.
    assert list_all(shopify, connection_id, "products", 23) == (ids, 1)


def test_fields_filter_applies_on_every_page(shopify):
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "products")
    first = shopify.get(url, limit=20, fields="id,title").json()
    second = shopify.get(url, limit=20, fields="id,title", cursor=first["next_cursor"]).json()
    assert len(first["records"]) == 20 and len(second["records"]) == 3 and second["next_cursor"] is None
    assert {tuple(sorted(r)) for r in first["records"] + second["records"]} == {("id", "title")}


@pytest.mark.parametrize("fake_options", [{"products": 5000, "capacity": 40, "leak_per_second": 50.0}])
def test_five_thousand_products_in_pages_of_250(shopify):
    connection_id = shopify.connect()
    ids, pages = list_all(shopify, connection_id, "products", 250)
    assert pages == 20 and len(ids) == len(set(ids)) == 5000


def test_crud_with_shopify_wrapping_and_errors(shopify):
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "products")
    created = shopify.post(url, {"data": {"title": "Snowboard", "vendor": "Burton"}})
    assert created.status_code == 201, created.text
    product = created.json()["record"]
    assert product["title"] == "Snowboard" and product["variants"][0]["product_id"] == product["id"]
    assert shopify.get(f"{url}/{product['id']}").json()["record"]["vendor"] == "Burton"
    updated = shopify.put(f"{url}/{product['id']}", {"data": {"title": "Snowboard 2"}})
    assert updated.status_code == 200 and updated.json()["record"]["title"] == "Snowboard 2"
    assert shopify.shop.state.store.tables["products"].get(str(product["id"]))["title"] == "Snowboard 2"
    assert shopify.delete(f"{url}/{product['id']}").json() == {"success": True, "record": None}
    gone = shopify.get(f"{url}/{product['id']}")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert shopify.delete(f"{url}/{product['id']}").status_code == 404
    blank = shopify.post(url, {"data": {"vendor": "nobody"}})
    assert blank.status_code == 422 and blank.json()["error"] == "title can't be blank"
    assert blank.json()["details"] == {"fields": {"title": ["can't be blank"]}}
    assert blank.json()["fields"] == ["title"]
    assert shopify.put(f"{url}/{product['id']}", {"data": {"title": "x"}}).status_code == 404
    assert shopify.get(f"{url}/not-a-number").status_code == 404
    customers = shopify.records(connection_id, "customers")
    ada = shopify.post(customers, {"data": {"email": "ada@example.com", "first_name": "Ada"}})
    assert ada.status_code == 201
    again = shopify.post(customers, {"data": {"email": "ada@example.com"}})
    assert again.status_code == 422 and again.json()["error"] == "email has already been taken"


def test_read_only_entities_refuse_writes(shopify):
    connection_id = shopify.connect()
    response = shopify.post(shopify.records(connection_id, "locations"), {"data": {"name": "x"}})
    assert response.status_code == 405 and response.json()["code"] == "read_only"


def test_since_lists_only_records_updated_since(shopify):
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "products")
    target = next(iter(shopify.shop.state.store.tables["products"].rows))
    assert shopify.put(f"{url}/{target}", {"data": {"tags": "fresh"}}).status_code == 200
    body = shopify.get(url, since="2025-01-01T00:00:00Z").json()
    assert [str(r["id"]) for r in body["records"]] == [target]
    # seeded a minute apart from 2024-01-01T00:00-05:00: the last 3 of 23 (one was just updated)
    body = shopify.get(url, since="2024-01-01T05:20:00+00:00", limit=2).json()
    rest = shopify.get(url, cursor=body["next_cursor"], limit=2).json()
    assert len(body["records"]) + len(rest["records"]) == 4 and rest["next_cursor"] is None


def test_orders_of_every_status_are_listed(shopify):
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "orders")
    for title in ("open", "closed"):
        created = shopify.post(url, {"data": {"line_items": [{"title": title, "price": "5.00", "quantity": 2}]}})
        assert created.status_code == 201 and created.json()["record"]["total_price"] == "10.00"
    closed = created.json()["record"]["id"]
    shopify.shop.state.store.tables["orders"].get(str(closed))["closed_at"] = "2025-01-02T00:00:00-05:00"
    assert len(shopify.get(url).json()["records"]) == 2
    assert [r["id"] for r in shopify.get(url, status="closed").json()["records"]] == [closed]
    empty = shopify.post(url, {"data": {"email": "x@example.com"}})
    assert empty.status_code == 422 and "line_items" in empty.json()["error"]


@pytest.mark.parametrize("fake_options", [{"products": 23, "capacity": 40, "leak_per_second": 5.0}])
def test_a_full_bucket_429_is_absorbed_by_the_hub(shopify):
    connection_id = shopify.connect()
    fill_bucket(shopify.shop)
    allowed = shopify.shop.state.bucket.allowed  # (the account read on connecting)
    response = shopify.get(shopify.records(connection_id, "products"), limit=5)
    assert response.status_code == 200 and len(response.json()["records"]) == 5
    assert shopify.shop.state.throttled >= 1 and shopify.shop.state.bucket.allowed == allowed + 1


@pytest.mark.parametrize(("fake_options", "hub_env"), [
    ({"products": 600, "capacity": 40, "leak_per_second": 20.0}, {"REQUESTS_PER_SECOND": "20"}),
])
def test_strict_bucket_is_never_overrun(shopify):
    connection_id = shopify.connect()
    connecting = shopify.shop.state.requests  # (the account read on connecting)
    started = time.monotonic()
    ids, pages = list_all(shopify, connection_id, "products", 10)
    elapsed = time.monotonic() - started
    bucket = shopify.shop.state.bucket
    assert pages == 60 and len(set(ids)) == 600
    assert shopify.shop.state.throttled == 0 and bucket.refused == 0
    assert bucket.allowed == shopify.shop.state.requests == 60 + connecting
    assert bucket.achieved_rate() <= 20 * 1.15
    assert elapsed < 10


def connection_limiter(shopify, connection_id):
    """The rate limiter (core ``TokenBucket``) pacing the hub's calls for the connection:
    the one its pool keeps per connection, as every request's context gets it."""
    hub = shopify.hub_app.state.hub
    with hub.session() as session:
        return hub.context(hub.provider("shopify"), session.get(Connection, connection_id)).http.limiter


@pytest.mark.parametrize(("fake_options", "hub_env"), [
    # A standard shop (bucket 10, draining 5/s) while the operator set the hub for a faster plan.
    ({"products": 100, "capacity": 10, "leak_per_second": 5.0}, {"REQUESTS_PER_SECOND": "50", "BURST": "100"}),
])
def test_a_burst_set_too_high_is_learned_down_from_the_call_limit_header(shopify):
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "products")
    first = shopify.get(url, limit=5)
    assert first.status_code == 200, first.text
    # The first answer said "1/10": the hub's bucket shrinks from the 100 it was set to
    # the shop's 10, of which 9 are left.
    limiter = connection_limiter(shopify, connection_id)
    assert limiter.capacity == 10 and limiter.tokens <= 9, (limiter.capacity, limiter.tokens)
    ids, pages = list_all(shopify, connection_id, "products", 5)
    assert pages == 20 and len(set(ids)) == 100
    # The pace (50/s against a shop draining 5/s) is not in the header: the 429s slow it,
    # each halving it, so a few of them, not one on most requests.
    assert 1 <= shopify.shop.state.throttled <= 6, shopify.shop.state.throttled
    assert limiter.capacity == 10 and limiter.rate < limiter.declared_rate


@pytest.mark.parametrize(("fake_options", "hub_env"), [
    # A shop with a small bucket (5) draining faster (10/s) than the hub's pace (8/s), while
    # the hub's burst was set to 100: only the fill the header reports keeps it from a 429.
    ({"products": 75, "capacity": 5, "leak_per_second": 10.0}, {"REQUESTS_PER_SECOND": "8", "BURST": "100"}),
])
@pytest.mark.parametrize("header", [True, False], ids=["with-header", "header-stripped"])
def test_the_call_limit_header_keeps_a_burst_set_too_high_from_any_429(shopify, header):
    shopify.shop.state.call_limit_header = header
    connection_id = shopify.connect()
    ids, pages = list_all(shopify, connection_id, "products", 5)
    assert pages == 15 and len(set(ids)) == 75
    limiter = connection_limiter(shopify, connection_id)
    if header:
        # Each answer's "used/5" caps what the hub sends at once to the room the shop has.
        assert shopify.shop.state.throttled == 0 and limiter.capacity == 5
    else:
        # The control: without the header, the hub spends its burst of 100 and meets a 429.
        assert shopify.shop.state.throttled >= 1 and limiter.capacity == 100


def test_inventory_levels_fulfillments_and_locations(shopify):
    connection_id = shopify.connect()
    levels = shopify.get(shopify.records(connection_id, "inventory_levels"), limit=50).json()["records"]
    assert len(levels) == 23 and levels[0]["id"] == f"{levels[0]['inventory_item_id']}:{levels[0]['location_id']}"
    one = shopify.get(f"{shopify.records(connection_id, 'inventory_levels')}/{levels[0]['id']}")
    assert one.status_code == 200 and one.json()["record"] == levels[0]
    locations = shopify.get(shopify.records(connection_id, "locations")).json()["records"]
    assert [loc["name"] for loc in locations] == ["Main warehouse", "High street store"]
    fulfillments = shopify.get(shopify.records(connection_id, "fulfillments"), order_id="123")
    assert fulfillments.status_code == 404  # no such order


def test_an_order_update_changing_what_shopify_sets_at_creation_only_is_refused(shopify):
    """Shopify changes an order's note, tags, contact and shipping address,
    never its items, currency or billing details: the hub refuses a change to
    those before writing anything, instead of reporting a change Shopify
    drops; written back unchanged (a whole order read, then written) they are
    left out."""
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "orders")
    created = shopify.post(url, {"data": {"line_items": [{"title": "Board", "price": "10.00", "quantity": 1}],
                                          "email": "o@example.com", "currency": "EUR"}})
    assert created.status_code == 201, created.text
    order = created.json()["record"]
    requests = shopify.shop.state.requests
    refused = shopify.put(f"{url}/{order['id']}", {"data": {"note": "gift", "line_items": [], "currency": "USD"}})
    assert refused.status_code == 422 and refused.json()["code"] == "read_only_field", refused.text
    assert refused.json()["details"] == {"fields": ["currency", "line_items"]}
    assert refused.json()["fields"] == ["currency", "line_items"]
    assert shopify.shop.state.requests == requests + 1  # the read comparing them; nothing written
    stored = shopify.shop.state.store.tables["orders"].get(str(order["id"]))
    assert stored["note"] in (None, "") and stored["currency"] == "EUR" and len(stored["line_items"]) == 1
    changed = shopify.put(f"{url}/{order['id']}", {"data": {"note": "gift", "tags": "vip"}})
    assert changed.status_code == 200 and (changed.json()["record"]["note"], stored["tags"]) == ("gift", "vip")
    whole = shopify.get(f"{url}/{order['id']}").json()["record"]  # read, changed, written back whole
    rewritten = shopify.put(f"{url}/{order['id']}", {"data": {**whole, "note": "gift wrap"}})
    assert rewritten.status_code == 200 and rewritten.json()["record"]["note"] == "gift wrap", rewritten.text


def test_a_filter_shopify_would_ignore_is_refused_and_its_own_apply(shopify):
    """Shopify ignores query parameters it does not know: ?colour=red answered every
    product as if filtered."""
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "products")
    refused = shopify.get(url, colour="red")
    assert refused.status_code == 422 and refused.json()["code"] == "unknown_filter"
    assert "colour" in refused.json()["error"] and "vendor" in refused.json()["error"]
    vendor = shopify.shop.state.store.tables["products"].all()[0]["vendor"]
    listed = shopify.get(url, vendor=vendor, limit=250).json()["records"]
    assert listed and {p["vendor"] for p in listed} == {vendor}
    # A filter given twice is refused: the last value alone filtered, a listing narrower than asked.
    twice = shopify.get(url, vendor=[vendor, "another vendor"])
    assert twice.status_code == 422 and twice.json()["code"] == "invalid_value", twice.text
    assert "'vendor' is given more than once" in twice.json()["error"] and twice.json()["fields"] == ["vendor"]


def test_fulfillment_filters_other_than_order_id_need_it(shopify):
    """Without order_id, fulfillments are read from the orders: since_id or a date would
    filter the orders, not their fulfillments, answering as if filtered. (A review found it.)"""
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "fulfillments")
    for name, value in (("since_id", "1"), ("created_at_min", "2024-01-01T00:00:00Z"), ("fields", "id")):
        refused = shopify.get(url, **{name: value})
        assert refused.status_code == 422 and refused.json()["code"] == "unknown_filter", refused.text
        assert "only with order_id" in refused.json()["error"]
    assert shopify.get(url).status_code == 200
    empty = shopify.get(url, order_id="")
    assert empty.status_code == 422 and empty.json()["code"] == "invalid_id", empty.text


def test_variants_of_a_product_with_more_than_the_rest_api_shows_are_not_written(shopify):
    """Shopify's REST API shows 100 variants of a product that may have 2,048; an update
    naming variants keeps only those it names: the others would be deleted at Shopify."""
    connection_id = shopify.connect()
    url = shopify.records(connection_id, "products")
    store = shopify.shop.state.store
    big = store.add_product({"title": "Many sizes", "variants": [{"title": f"S{i}", "price": "1.00"}
                                                                 for i in range(150)]})
    shown = shopify.get(f"{url}/{big['id']}").json()["record"]
    assert len(shown["variants"]) == 100  # (as Shopify's REST API answers)
    variants = [{**shown["variants"][0], "price": "2.00"}, *shown["variants"][1:]]
    refused = shopify.put(f"{url}/{big['id']}", {"data": {"variants": variants}})
    assert refused.status_code == 422, refused.text
    assert refused.json()["code"] == "too_many_variants" and "150 variants" in refused.json()["error"]
    assert len(store.tables["products"].get(str(big["id"]))["variants"]) == 150  # nothing deleted
    assert shopify.put(f"{url}/{big['id']}", {"data": {"title": "Many sizes 2"}}).status_code == 200
    small = store.add_product({"title": "Two sizes", "variants": [{"title": "S", "price": "1.00"},
                                                                  {"title": "M", "price": "1.00"}]})
    two = shopify.get(f"{url}/{small['id']}").json()["record"]["variants"]
    changed = shopify.put(f"{url}/{small['id']}", {"data": {"variants": [{**two[0], "price": "3.00"}, two[1]]}})
    assert changed.status_code == 200 and changed.json()["record"]["variants"][0]["price"] == "3.00"
