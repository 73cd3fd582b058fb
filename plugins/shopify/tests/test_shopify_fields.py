"""The Shopify entities declare every field of the 2025-01 REST resources, and the
sub-fields of the objects whose keys Shopify documents: a tenant can map any real
field, and a typo inside a declared object is refused when the mapping is saved
(instead of mapping every record to null)."""

from __future__ import annotations

import pytest

import hub_shopify
from hub.sync.mapping import validate_mappings
from hub.testing import wait_for_run
from hub.types import ValidationFailed
from hub_shopify import testing as fake

API = "/api/v1/integrations"
SCHEMAS = {s.name: s for s in hub_shopify.SCHEMAS}


def test_a_real_order_field_the_plugin_once_left_out_is_mapped_from_a_pulled_order(shopify):
    store: fake.Store = shopify.shop.state.store
    order = store.add_order({"email": "ada@example.com", "source_name": "pos", "line_items": [
        {"title": "Board", "price": "40.00", "quantity": 2, "sku": "BRD-1"}],
        "billing_address": {"first_name": "Ada", "city": "Ottawa", "country_code": "CA"}})
    connection_id = shopify.connect()
    response = shopify.post(f"{API}/connections/{connection_id}/sync-configs", {
        "entity": "orders", "direction": "pull", "mappings": [
            {"source": "name", "target": "number"},
            {"source": "current_total_price", "target": "total"},
            {"source": "source_name", "target": "channel"},
            {"source": "total_line_items_price_set.shop_money.currency_code", "target": "currency"},
            {"source": "line_items.0.sku", "target": "first_sku"},
            {"source": "billing_address.city", "target": "city"},
        ]})
    assert response.status_code == 201, response.text
    config_id = response.json()["sync_config"]["id"]
    pulled = shopify.post(f"{API}/connections/{connection_id}/sync", {"entity": "orders", "direction": "pull"})
    assert wait_for_run(shopify.client, shopify.auth, connection_id, pulled.json()["run"]["id"])["created"] == 1
    record = shopify.get(f"{API}/connections/{connection_id}/sync-configs/{config_id}/records/{order['id']}",
                         mapped=True)
    assert record.status_code == 200, record.text
    assert record.json()["record"]["data"] == {"number": order["name"], "total": "80.00", "channel": "pos",
                                               "currency": "CAD", "first_sku": "BRD-1", "city": "Ottawa"}


def test_a_typo_inside_a_customers_address_is_refused_when_the_mapping_is_saved(shopify):
    connection_id = shopify.connect()
    configs = f"{API}/connections/{connection_id}/sync-configs"
    mistyped = shopify.post(configs, {"entity": "customers", "mappings": [
        {"source": "addresses.0.cty", "target": "city"}]})
    assert mistyped.status_code == 422 and mistyped.json()["code"] == "unknown_field", mistyped.text
    assert "has no field 'cty'" in mistyped.json()["error"]
    saved = shopify.post(configs, {"entity": "customers", "mappings": [
        {"source": "addresses.0.city", "target": "city"}, {"source": "default_address.country_code", "target": "cc"},
        {"source": "email_marketing_consent.state", "target": "consent"}]})
    assert saved.status_code == 201, saved.text


@pytest.mark.parametrize(("entity", "source"), [
    ("orders", "shipping_address.zip_code"), ("orders", "line_items.0.skus"), ("orders", "customer.emial"),
    ("orders", "discount_codes.0.value"), ("orders", "note_attributes.0.key"), ("orders", "total_price_set.amount"),
    ("orders", "fulfillments.0.line_items.0.fulfillment_line_item"), ("products", "variants.0.prices"),
    ("products", "images.0.url"), ("products", "image.source"), ("collections", "image.url"),
    ("fulfillments", "line_items.0.price_set.shop_money.value"), ("customers", "default_address.is_default"),
])
def test_typos_inside_declared_objects_are_unknown_fields(entity, source):
    with pytest.raises(ValidationFailed) as caught:
        validate_mappings(SCHEMAS[entity], [{"source": source, "target": "x"}])
    assert caught.value.code == "unknown_field", caught.value.message


def test_every_declared_top_level_field_is_in_the_fakes_records_as_shopify_sends_them():
    """The fake answers Shopify's full shape (null where nothing is known). Left out, as Shopify
    leaves them out: a collection's ``image`` when it has none, its ``products_count`` (only one
    collection fetched alone has it) and ``published`` (write-only)."""
    app = fake.create_app()
    store: fake.Store = app.state.store
    for entity in ("products", "orders", "fulfillments", "customers", "collections", "locations"):
        fake.seed(app, entity, 1)
    records = {
        "products": store.tables["products"].all(), "orders": store.tables["orders"].all(),
        "customers": store.tables["customers"].all(), "collections": store.tables["custom_collections"].all(),
        "locations": store.tables["locations"].all(), "fulfillments": store.tables["fulfillments"].all(),
        "inventory_levels": [hub_shopify._with_level_id(level) for level in store.levels.values()],
    }
    # (A fulfillment's order_created_at is the plugin's, from its order.)
    absent = {"collections": {"image", "products_count", "published"}, "fulfillments": {"order_created_at"}}
    for name, schema in SCHEMAS.items():
        declared = {f.name for f in schema.fields}
        for record in records[name]:
            assert set(record) == declared - absent.get(name, set()), name
