"""Pure functions of the plugin: Shopify's OAuth signature, its error bodies,
and the mapping between hub event types and webhook topics."""

from __future__ import annotations

import httpx
import pytest

from hub.plugins import PluginRegistry
from hub.types import ValidationFailed
from hub_shopify import describe_error, oauth_hmac, topic
from hub_shopify.testing import sign_callback


def test_oauth_hmac_matches_shopify_documented_example():
    params = {"code": "0907a61c0c8d55e99db179b68161bc00", "shop": "some-shop.myshopify.com",
              "timestamp": "1337178173"}
    expected = "4712bf92ffc2917d15a2f5a273e39f0116667419aa4b6ac0b3baaf26fa3c4d20"
    assert oauth_hmac("hush", {**params, "hmac": expected}) == expected
    assert oauth_hmac("hush", {**params, "timestamp": "1337178174"}) != expected


def test_oauth_hmac_escapes_delimiters_so_values_cannot_forge_pairs():
    honest = {"shop": "a.myshopify.com", "state": "x&timestamp=1", "code": "100%"}
    forged = {"shop": "a.myshopify.com", "state": "x", "timestamp": "1", "code": "100%"}
    assert oauth_hmac("s", honest) != oauth_hmac("s", forged)
    assert oauth_hmac("s", honest) == sign_callback("s", honest)


@pytest.mark.parametrize(("status", "body", "message"), [
    (422, {"errors": {"title": ["can't be blank"]}}, "title can't be blank"),
    (422, {"errors": {"title": ["can't be blank"], "base": ["Product is locked"]}},
     "title can't be blank; Product is locked"),
    (400, {"errors": {"product": "Required parameter missing or invalid"}},
     "product Required parameter missing or invalid"),
    (404, {"errors": "Not Found"}, "Not Found"),
    (422, {"errors": ["Fulfillment order does not exist."]}, "Fulfillment order does not exist."),
    (400, {"error": "invalid_request", "error_description": "code already used"}, "code already used"),
    (502, b"<html>Bad gateway</html>", None),
])
def test_describe_error_reads_shopify_error_bodies(status, body, message):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    described = describe_error(httpx.Response(status, **kwargs))
    if isinstance(described, ValidationFailed):  # field errors: which fields, for the client to show
        assert described.details == {"fields": {k: v if isinstance(v, list) else [v]
                                                for k, v in body["errors"].items()}}
        assert described.fields == tuple(k for k in body["errors"] if k != "base")  # ("base": the whole record)
        described = described.message
    assert described == message


@pytest.mark.parametrize(("event_type", "shopify_topic"), [
    ("order.created", "orders/create"), ("order.updated", "orders/updated"), ("order.deleted", "orders/delete"),
    ("product.updated", "products/update"), ("customer.deleted", "customers/delete"),
    ("collection.created", "collections/create"), ("inventory_level.updated", "inventory_levels/update"),
    ("order.paid", "orders/paid"), ("app.uninstalled", "app/uninstalled"), ("orders/cancelled", "orders/cancelled"),
])
def test_event_types_map_to_topics(event_type, shopify_topic):
    assert topic(event_type) == shopify_topic


def test_plugin_registers_with_its_declarations():
    import hub_shopify

    registry = PluginRegistry()
    record = registry.register(hub_shopify, "shopify")
    assert record.error is None
    provider = registry.get("shopify")
    assert provider.info.category == "ecommerce" and provider.info.auth_type == "oauth2"
    assert provider.info.rate_limit.burst == 40 and provider.info.rate_limit.requests_per_second == 2
    assert set(provider.schemas) == {"products", "orders", "customers", "inventory_levels", "fulfillments",
                                     "collections", "locations"}
    assert set(provider.actions) == {"inventory_levels", "adjust_inventory", "create_fulfillment", "list_locations"}
    assert provider.info.webhook_tolerance_seconds > 4 * 3600  # Shopify retries for 4 hours
