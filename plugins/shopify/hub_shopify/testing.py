"""A fake Shopify shop for tests and benchmarks, served over real HTTP.

It behaves like Shopify where the plugin depends on it: the OAuth consent
redirect signed with ``hmac`` and the token endpoint (single-use codes,
optionally expiring tokens with rotating refresh tokens, and the token exchange
that migrates a non-expiring token to an expiring pair: the old token stops
working, and the same exchange again answers the same pair for seven days); the Admin REST API
under ``/admin/api/{version}/`` with ``X-Shopify-Access-Token`` checks,
``{"product": ...}`` wrapping, Link-header cursor pagination with an opaque
``page_info`` (only ``limit`` and ``fields`` may go with it), ``limit`` <= 250,
at most 50 ids in ``inventory_levels.json``'s ``location_ids`` and
``inventory_item_ids`` (422 beyond: Shopify's exact body is not documented),
the leaky bucket reported in ``X-Shopify-Shop-Api-Call-Limit`` with 429 and
``Retry-After`` when full, and Shopify's error bodies. Helpers build and send
signed webhook deliveries with the headers Shopify sends; ``seed_locations``,
``stock`` and ``remove_location`` give a shop many locations stocked or not.

Counters on ``app.state``: ``requests`` (Admin API requests seen), ``versions``,
``throttled`` (429s sent), ``refreshes`` (refresh-token grants), ``migrated``
(non-expiring tokens exchanged: the answer and when), ``posts``
(Admin API POSTs seen, by path), ``lost`` (answers lost, below), and
``bucket`` (``allowed``, ``refused``, ``achieved_rate()``).

Fault knob: ``app.state.lose_next`` (default 0: no effect). While it is above
zero, each Admin API POST that succeeded (2xx: the shop changed) counts it down
and its answer is lost: the client gets a 502 (as from Shopify's edge when the
request timed out behind it) although the write was applied, as with a
connection cut after the request went through. Shopify has no idempotency
key, so a client re-sending such a POST makes the record twice.

Second knob: ``app.state.call_limit_header`` (default True). False leaves the
``X-Shopify-Shop-Api-Call-Limit`` header out of every answer (the bucket still
refuses with 429 and ``Retry-After``): what the hub learns from that header
alone, it then does not learn.

Third knob: ``app.state.orders_window_days`` (default None: every order is
listed). A number lists only the orders created in that many last days, as
Shopify serves apps without the ``read_all_orders`` scope (60 days).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import itertools
import json
import math
import operator
import re
import secrets
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from hub.testing.fakes import LeakyBucket, Table

SHOP = "hub-test.myshopify.com"
CLIENT_ID = "shopify-test-client-id"
CLIENT_SECRET = "shpss_test_client_secret"
API_VERSION = "2026-10"
SHOP_TZ = timezone(timedelta(hours=-5))  # Shopify writes times in the shop's zone
INVALID_TOKEN = "[API] Invalid API key or access token (unrecognized login or wrong password)"
THROTTLED = "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."
CALL_LIMIT = "X-Shopify-Shop-Api-Call-Limit"
PAGE_INFO_COMPANIONS = {"limit", "fields", "page_info"}
#: Most ids ``inventory_levels.json`` takes in ``location_ids`` or ``inventory_item_ids`` (Shopify's reference).
MAX_IDS = 50
EQUALITY_FILTERS = ("vendor", "product_type", "handle", "email", "title", "topic", "address")
TOPICS = {f"{resource}/{verb}" for resource in ("products", "customers", "collections", "fulfillments")
          for verb in ("create", "update", "delete")} | {
    "orders/create", "orders/updated", "orders/delete", "orders/paid", "orders/cancelled", "orders/fulfilled",
    "inventory_levels/update", "locations/create", "locations/update", "app/uninstalled"}
# resource path: key of one record
RESOURCES = {"products": "product", "orders": "order", "customers": "customer",
             "custom_collections": "custom_collection", "locations": "location", "webhooks": "webhook"}
#: What an order update changes (the Order resource: "after an order is created, you can change
#: only a few of its attributes"); the items need an order edit (GraphQL).
ORDER_UPDATABLE = frozenset(("email", "phone", "note", "note_attributes", "tags", "buyer_accepts_marketing",
                             "shipping_address", "metafields"))
WRITABLE = {"products", "orders", "customers", "custom_collections", "webhooks"}


ge, le = operator.ge, operator.le


def now() -> str:
    return datetime.now(SHOP_TZ).isoformat(timespec="seconds")


def errors(status: int, detail: Any, **headers: str) -> JSONResponse:
    return JSONResponse({"errors": detail}, status_code=status, headers=headers)


def not_found() -> JSONResponse:
    return errors(404, "Not Found")


class BadFilter(ValueError):
    """A query parameter Shopify would refuse with 400."""


def sign_callback(secret: str, params: dict[str, str]) -> str:
    """How Shopify signs an OAuth redirect (its own implementation, kept apart from the plugin's)."""
    message = "&".join(sorted(
        f"{key.replace('%', '%25').replace('=', '%3D')}={value.replace('%', '%25')}".replace("&", "%26")
        for key, value in params.items() if key not in ("hmac", "signature")))
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign_body(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


ORDER_ADDRESS_KEYS = ("first_name", "address1", "phone", "city", "zip", "province", "country", "last_name",
                      "address2", "company", "latitude", "longitude", "name", "country_code", "province_code")
CUSTOMER_ADDRESS_KEYS = ("id", "customer_id", "first_name", "last_name", "company", "address1", "address2", "city",
                         "province", "country", "zip", "phone", "name", "province_code", "country_code",
                         "country_name", "default")
COUNTRIES = {"CA": "Canada", "US": "United States", "GB": "United Kingdom", "FR": "France", "DE": "Germany"}


def gid(kind: str, record_id: Any) -> str:
    return f"gid://shopify/{kind}/{record_id}"


def money_set(amount: str, currency: str) -> dict[str, Any]:
    """A ``*_set`` field: the amount in the shop's and the presentment currency (the same here)."""
    return {"shop_money": {"amount": amount, "currency_code": currency},
            "presentment_money": {"amount": amount, "currency_code": currency}}


def _full_name(data: dict[str, Any]) -> str:
    return " ".join(str(data[k]) for k in ("first_name", "last_name") if data.get(k))


def order_address(data: Any) -> dict[str, Any] | None:
    """An order's billing or shipping address as Shopify answers it: every key, the rest null."""
    if not isinstance(data, dict):
        return None
    address = {key: data.get(key) for key in ORDER_ADDRESS_KEYS}
    address["name"] = data.get("name") or _full_name(data)
    if address["country_code"] and not address["country"]:
        address["country"] = COUNTRIES.get(address["country_code"], address["country_code"])
    return address


def customer_address(data: dict[str, Any], customer_id: int, address_id: int, default: bool) -> dict[str, Any]:
    address = {key: data.get(key) for key in CUSTOMER_ADDRESS_KEYS}
    address.update(id=address_id, customer_id=customer_id, default=default,
                   name=data.get("name") or _full_name(data))
    if address["country_code"]:
        address["country_name"] = COUNTRIES.get(address["country_code"], address["country_code"])
        address["country"] = address["country"] or address["country_name"]
    return address


def marketing_consent(data: Any, sms: bool = False) -> dict[str, Any]:
    data = data if isinstance(data, dict) else {}
    consent = {"state": data.get("state", "not_subscribed"), "opt_in_level": data.get("opt_in_level", "single_opt_in"),
               "consent_updated_at": data.get("consent_updated_at")}
    if sms:
        consent["consent_collected_from"] = data.get("consent_collected_from", "OTHER")
    return consent


class Store:
    """The shop's records: Shopify ids (integers), timestamps in the shop's zone."""

    def __init__(self, shop: str):
        self.shop = shop
        self.tables = {name: Table(start=start) for name, start in (
            ("products", 632910392), ("orders", 450789469), ("customers", 207119551),
            ("custom_collections", 841564295), ("locations", 487838322), ("webhooks", 4759306),
            ("fulfillments", 255858046), ("fulfillment_orders", 1046000778))}
        self.levels: dict[tuple[int, int], dict[str, Any]] = {}
        self.variant_ids = itertools.count(39072856)
        self.item_ids = itertools.count(808950810)
        self.line_ids = itertools.count(466157049)
        self.option_ids = itertools.count(594680422)
        self.checkout_ids = itertools.count(901414060)
        self.order_numbers = itertools.count(1001)
        self.address_ids = itertools.count(207119551)
        for name in ("Main warehouse", "High street store"):
            self.add_location({"name": name, "address1": "1 Main St", "city": "Ottawa", "zip": "K2P 1L4",
                               "province": "Ontario", "province_code": "ON", "country_code": "CA", "phone": "",
                               "active": True})

    @property
    def primary_location(self) -> int:
        return next(iter(self.tables["locations"].rows.values()))["id"]

    def insert(self, resource: str, row: dict[str, Any], at: str | None = None) -> dict[str, Any]:
        table = self.tables[resource]
        stamp = at or now()
        row = {"id": int(table.next_id()), **row, "created_at": stamp, "updated_at": stamp}
        return table.insert(row)

    def add_location(self, data: dict[str, Any], at: str | None = None) -> dict[str, Any]:
        country = data.get("country_code")
        location = self.insert("locations", {
            "name": data.get("name"), "address1": data.get("address1"), "address2": data.get("address2"),
            "city": data.get("city"), "zip": data.get("zip"), "province": data.get("province"),
            "country": country, "phone": data.get("phone"), "country_code": country,
            "country_name": COUNTRIES.get(country, country), "province_code": data.get("province_code"),
            "legacy": False, "active": bool(data.get("active", True)),
            "localized_country_name": COUNTRIES.get(country, country),
            "localized_province_name": data.get("province")}, at=at)
        location["admin_graphql_api_id"] = gid("Location", location["id"])
        return location

    def add_customer(self, data: dict[str, Any], at: str | None = None) -> dict[str, Any]:
        customer = self.insert("customers", {
            "email": data.get("email"), "first_name": data.get("first_name"), "last_name": data.get("last_name"),
            "orders_count": 0, "state": "disabled", "total_spent": "0.00", "last_order_id": None,
            "note": data.get("note"), "verified_email": bool(data.get("verified_email", True)),
            "multipass_identifier": data.get("multipass_identifier"), "tax_exempt": bool(data.get("tax_exempt")),
            "tags": data.get("tags", ""), "last_order_name": None, "currency": "CAD", "phone": data.get("phone"),
            "addresses": [], "tax_exemptions": list(data.get("tax_exemptions") or []),
            "email_marketing_consent": marketing_consent(data.get("email_marketing_consent")),
            "sms_marketing_consent": marketing_consent(data.get("sms_marketing_consent"), sms=True),
            "marketing_opt_in_level": None, "default_address": None}, at=at)
        customer["admin_graphql_api_id"] = gid("Customer", customer["id"])
        self.set_addresses(customer, data.get("addresses") or [])
        return customer

    def set_addresses(self, customer: dict[str, Any], addresses: list[Any]) -> None:
        """Replace a customer's addresses (Shopify's shape, ids kept) and its default one."""
        rows = [a for a in addresses if isinstance(a, dict)]
        first_default = next((i for i, a in enumerate(rows) if a.get("default")), 0)
        customer["addresses"] = [customer_address(a, customer["id"], a.get("id") or next(self.address_ids),
                                                  i == first_default) for i, a in enumerate(rows)]
        customer["default_address"] = customer["addresses"][first_default] if rows else None

    def add_collection(self, data: dict[str, Any], at: str | None = None) -> dict[str, Any]:
        title = str(data.get("title") or "")
        image = data.get("image") if isinstance(data.get("image"), dict) else None
        collection = self.insert("custom_collections", {
            "handle": data.get("handle") or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"), "title": title,
            "body_html": data.get("body_html"), "published_at": None if data.get("published") is False else
            (at or now()), "sort_order": data.get("sort_order", "best-selling"),
            "template_suffix": data.get("template_suffix"), "published_scope": data.get("published_scope", "web"),
            "image": None if image is None else {"created_at": at or now(), "alt": image.get("alt"),
                                                 "width": image.get("width"), "height": image.get("height"),
                                                 "src": image.get("src")}}, at=at)
        del collection["created_at"]  # Shopify gives custom collections none
        collection["admin_graphql_api_id"] = gid("Collection", collection["id"])
        if image is None:
            del collection["image"]  # Shopify leaves image out of a collection without one
        return collection

    def add_product(self, data: dict[str, Any], at: str | None = None) -> dict[str, Any]:
        stamp = at or now()
        title = data["title"]
        variants = data.get("variants") or [{"title": "Default Title", "price": "0.00"}]
        product = self.insert("products", {
            "title": title, "body_html": data.get("body_html", ""), "vendor": data.get("vendor", ""),
            "product_type": data.get("product_type", ""), "status": data.get("status", "active"),
            "handle": data.get("handle") or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-"),
            "tags": data.get("tags", ""), "published_at": stamp, "published_scope": "web",
            "template_suffix": None, "options": [], "images": [], "image": None, "variants": []}, at=stamp)
        product["admin_graphql_api_id"] = gid("Product", product["id"])
        product["options"].append({"id": next(self.option_ids), "product_id": product["id"], "name": "Title",
                                   "position": 1, "values": [v.get("title", "Default Title") for v in variants]})
        for position, variant in enumerate(variants, 1):
            item = next(self.item_ids)
            variant_id = next(self.variant_ids)
            quantity = int(variant.get("inventory_quantity", 0))
            price = str(variant.get("price", "0.00"))
            product["variants"].append({
                "id": variant_id, "product_id": product["id"], "title": variant.get("title", title),
                "price": price, "position": position, "inventory_policy": variant.get("inventory_policy", "deny"),
                "compare_at_price": variant.get("compare_at_price"),
                "option1": variant.get("option1", variant.get("title", "Default Title")), "option2": None,
                "option3": None, "created_at": stamp, "updated_at": stamp, "taxable": variant.get("taxable", True),
                "barcode": variant.get("barcode"), "fulfillment_service": "manual",
                "grams": int(variant.get("grams", 0)), "inventory_management": "shopify",
                "requires_shipping": variant.get("requires_shipping", True), "sku": variant.get("sku", ""),
                "weight": float(variant.get("weight", 0)), "weight_unit": variant.get("weight_unit", "kg"),
                "inventory_item_id": item, "inventory_quantity": quantity, "old_inventory_quantity": quantity,
                "presentment_prices": [{"price": {"amount": price, "currency_code": "CAD"},
                                        "compare_at_price": None}],
                "admin_graphql_api_id": gid("ProductVariant", variant_id), "image_id": None,
                "tax_code": variant.get("tax_code")})
            self.levels[(item, self.primary_location)] = {
                "inventory_item_id": item, "location_id": self.primary_location, "available": quantity,
                "updated_at": stamp,
                "admin_graphql_api_id": gid("InventoryLevel", f"{self.primary_location}?inventory_item_id={item}")}
        return product

    def line_item(self, item: dict[str, Any], currency: str) -> dict[str, Any]:
        line_id = next(self.line_ids)
        price, quantity = f"{float(item.get('price', 0)):.2f}", int(item.get("quantity", 1))
        title = item.get("title", "Item")
        return {"id": line_id, "admin_graphql_api_id": gid("LineItem", line_id), "attributed_staffs": [],
                "current_quantity": quantity, "fulfillable_quantity": quantity, "fulfillment_service": "manual",
                "fulfillment_status": None, "gift_card": bool(item.get("gift_card", False)),
                "grams": int(item.get("grams", 0)), "name": item.get("name") or title, "price": price,
                "price_set": money_set(price, currency), "product_exists": item.get("product_id") is not None,
                "product_id": item.get("product_id"),
                "properties": [{"name": p.get("name"), "value": p.get("value")}
                               for p in item.get("properties") or [] if isinstance(p, dict)],
                "quantity": quantity, "requires_shipping": item.get("requires_shipping", True),
                "sku": item.get("sku", ""), "taxable": item.get("taxable", True), "title": title,
                "total_discount": "0.00", "total_discount_set": money_set("0.00", currency),
                "variant_id": item.get("variant_id"), "variant_inventory_management": None,
                "variant_title": item.get("variant_title"), "vendor": item.get("vendor"), "tax_lines": [],
                "duties": [], "discount_allocations": []}

    def order_customer(self, data: Any, email: str | None) -> dict[str, Any] | None:
        """The customer an order embeds: an existing one by ``id`` or ``email``, else made from ``data``."""
        if not isinstance(data, dict):
            return None
        found = self.tables["customers"].get(str(data.get("id"))) if data.get("id") else next(
            (c for c in self.tables["customers"].all() if data.get("email") and c["email"] == data["email"]), None)
        customer = found or self.add_customer({"email": data.get("email") or email, **{
            k: data[k] for k in ("first_name", "last_name", "phone", "note", "tags") if k in data}})
        keys = ("id", "email", "created_at", "updated_at", "first_name", "last_name", "state", "note",
                "verified_email", "multipass_identifier", "tax_exempt", "phone", "email_marketing_consent",
                "sms_marketing_consent", "tags", "currency", "tax_exemptions", "admin_graphql_api_id",
                "default_address")
        return {k: customer.get(k) for k in keys}

    def add_order(self, data: dict[str, Any], at: str | None = None) -> dict[str, Any]:
        stamp = at or now()
        currency = data.get("currency", "CAD")
        lines = [self.line_item(item, currency) for item in data["line_items"]]
        total = sum(float(line["price"]) * line["quantity"] for line in lines)
        amount = f"{total:.2f}"
        number = next(self.order_numbers)
        email = data.get("email", "")
        zero = money_set("0.00", currency)
        order = self.insert("orders", {
            "admin_graphql_api_id": None, "app_id": 1966818, "browser_ip": None,
            "buyer_accepts_marketing": bool(data.get("buyer_accepts_marketing", False)), "cancel_reason": None,
            "cancelled_at": None, "cart_token": None, "checkout_id": next(self.checkout_ids),
            "checkout_token": None, "client_details": None, "closed_at": None,
            "confirmation_number": secrets.token_hex(5).upper()[:9], "confirmed": True, "contact_email": email,
            "currency": currency, "current_subtotal_price": amount,
            "current_subtotal_price_set": money_set(amount, currency), "current_total_additional_fees_set": None,
            "current_total_discounts": "0.00", "current_total_discounts_set": zero,
            "current_total_duties_set": None, "current_total_price": amount,
            "current_total_price_set": money_set(amount, currency), "current_total_tax": "0.00",
            "current_total_tax_set": zero, "customer_locale": "en", "device_id": None, "discount_codes": [],
            "duties_included": False, "email": email, "estimated_taxes": False,
            "financial_status": data.get("financial_status", "pending"), "fulfillment_status": None,
            "landing_site": None, "landing_site_ref": None, "location_id": None,
            "merchant_business_entity_id": "MTU0ODM4MDAwOQ", "merchant_of_record_app_id": None,
            "name": f"#{number}", "note": data.get("note"),
            "note_attributes": [{"name": a.get("name"), "value": a.get("value")}
                                for a in data.get("note_attributes") or [] if isinstance(a, dict)],
            "number": number - 1000, "order_number": number,
            "order_status_url": f"https://{self.shop}/548380009/orders/{secrets.token_hex(16)}/authenticate",
            "original_total_additional_fees_set": None, "original_total_duties_set": None,
            "payment_gateway_names": [], "phone": data.get("phone"), "po_number": None,
            "presentment_currency": currency, "processed_at": stamp, "reference": None, "referring_site": None,
            "source_identifier": None, "source_name": data.get("source_name", "web"), "source_url": None,
            "subtotal_price": amount, "subtotal_price_set": money_set(amount, currency),
            "tags": data.get("tags", ""), "tax_exempt": False, "tax_lines": [],
            "taxes_included": bool(data.get("taxes_included", False)), "test": bool(data.get("test", False)),
            "token": secrets.token_hex(16), "total_cash_rounding_payment_adjustment_set": zero,
            "total_cash_rounding_refund_adjustment_set": zero, "total_discounts": "0.00",
            "total_discounts_set": zero, "total_line_items_price": amount,
            "total_line_items_price_set": money_set(amount, currency), "total_outstanding": amount,
            "total_price": amount, "total_price_set": money_set(amount, currency),
            "total_shipping_price_set": zero, "total_tax": "0.00", "total_tax_set": zero,
            "total_tip_received": "0.00", "total_weight": sum(line["grams"] * line["quantity"] for line in lines),
            "user_id": None, "billing_address": order_address(data.get("billing_address")),
            "customer": self.order_customer(data.get("customer"), email), "discount_applications": [],
            "fulfillments": [], "line_items": lines, "payment_terms": None, "refunds": [],
            "shipping_address": order_address(data.get("shipping_address")), "shipping_lines": [],
            "company": None}, at=at)
        order["admin_graphql_api_id"] = gid("Order", order["id"])
        self.insert("fulfillment_orders", {
            "order_id": order["id"], "status": "open", "assigned_location_id": self.primary_location,
            "line_items": [{"id": next(self.line_ids), "line_item_id": line["id"], "quantity": line["quantity"],
                            "fulfillable_quantity": line["quantity"]} for line in lines]}, at=at)
        return order

    def fulfil(self, fulfillment_orders: list[dict[str, Any]], tracking: dict[str, Any], notify: bool = False,
               at: str | None = None) -> dict[str, Any]:
        """Fulfil open fulfillment orders of one order: the fulfillment."""
        order = self.tables["orders"].get(str(fulfillment_orders[0]["order_id"]))
        line_ids = {li["line_item_id"] for fo in fulfillment_orders for li in fo["line_items"]}
        lines = [{k: v for k, v in line.items() if k not in ("attributed_staffs", "current_quantity")}
                 for line in order["line_items"] if line["id"] in line_ids]
        for line in order["line_items"]:
            if line["id"] in line_ids:
                line.update(fulfillable_quantity=0, fulfillment_status="fulfilled")
        fulfillment = self.insert("fulfillments", {
            "order_id": order["id"], "status": "success", "service": "manual", "shipment_status": None,
            "location_id": fulfillment_orders[0]["assigned_location_id"], "origin_address": None,
            "tracking_company": tracking.get("company"), "tracking_number": tracking.get("number"),
            "tracking_numbers": [tracking["number"]] if tracking.get("number") else [],
            "tracking_url": tracking.get("url"), "tracking_urls": [tracking["url"]] if tracking.get("url") else [],
            "notify_customer": notify, "line_items": [{**line, "fulfillment_status": "fulfilled"} for line in lines],
            "receipt": {}, "name": f"{order['name']}.{sum(1 for _ in order['fulfillments'])}",
            "variant_inventory_management": None,
        }, at=at)
        fulfillment["admin_graphql_api_id"] = gid("Fulfillment", fulfillment["id"])
        for fo in fulfillment_orders:
            fo["status"] = "closed"
        order["fulfillments"].append(fulfillment)
        if all(fo["status"] == "closed" for fo in self.tables["fulfillment_orders"].all()
               if fo["order_id"] == order["id"]):
            order["fulfillment_status"] = "fulfilled"
        order["updated_at"] = fulfillment["updated_at"]
        return fulfillment


def seed_products(app: FastAPI, count: int, start: datetime | None = None) -> list[dict[str, Any]]:
    """Add ``count`` products fast, updated one minute apart from ``start`` (default: 2024-01-01)."""
    store: Store = app.state.store
    start = start or datetime(2024, 1, 1, tzinfo=SHOP_TZ)
    return [store.add_product({"title": f"Product {i}", "vendor": "Acme", "product_type": "Widget",
                               "variants": [{"price": "9.99", "inventory_quantity": 5}]},
                              at=(start + timedelta(minutes=i)).isoformat(timespec="seconds"))
            for i in range(count)]


def seed_locations(app: FastAPI, count: int, stock_every: int = 1, unstocked: int = 0) -> list[dict[str, Any]]:
    """Add ``count`` locations (ids ascending, as Shopify's) and stock the shop's
    inventory items at them: each location except every ``unstocked``-th (0: none
    left out) gets a level for every ``stock_every``-th item. The new locations."""
    store: Store = app.state.store
    items = sorted({item for item, _ in store.levels})[::stock_every]
    added = []
    for i in range(count):
        location = store.add_location({"name": f"Depot {len(store.tables['locations']) + 1}",
                                       "country_code": "CA", "active": True})
        added.append(location)
        if unstocked and i % unstocked == unstocked - 1:
            continue
        for n, item in enumerate(items):
            stock(app, item, location["id"], available=n + i)
    return added


def stock(app: FastAPI, item: int, location: int, available: int = 0) -> dict[str, Any]:
    """Stock an inventory item at a location: its level there."""
    store: Store = app.state.store
    level = store.levels[(item, location)] = {
        "inventory_item_id": item, "location_id": location, "available": available, "updated_at": now(),
        "admin_graphql_api_id": gid("InventoryLevel", f"{location}?inventory_item_id={item}")}
    return level


def remove_location(app: FastAPI, location: int) -> None:
    """Delete a location and its inventory levels (as when the merchant deletes it)."""
    store: Store = app.state.store
    store.tables["locations"].delete(str(location))
    for key in [k for k in store.levels if k[1] == location]:
        del store.levels[key]


def seed(app: FastAPI, entity: str, count: int) -> list[str] | None:
    """Create ``count`` records of the hub entity ``entity``, each updated a
    minute after the previous seeded one (in 2024); their hub ids."""
    store: Store = app.state.store
    stamps = [(datetime(2024, 6, 1, tzinfo=SHOP_TZ) + timedelta(minutes=next(app.state.seed_clock)))
              .isoformat(timespec="seconds") for _ in range(count)]
    line = {"title": "Board", "price": "100.00", "quantity": 1}
    if entity in ("products", "inventory_levels"):
        products = [store.add_product({"title": f"Seeded {at}", "variants": [{"price": "5.00"}]}, at=at)
                    for at in stamps]
        if entity == "products":
            return [str(p["id"]) for p in products]
        return [f"{p['variants'][0]['inventory_item_id']}:{store.primary_location}" for p in products]
    if entity in ("orders", "fulfillments"):
        orders = [store.add_order({"line_items": [line], "email": f"{at}@example.com"}, at=at) for at in stamps]
        if entity == "orders":
            return [str(o["id"]) for o in orders]
        return [str(store.fulfil([fo for fo in store.tables["fulfillment_orders"].all() if fo["order_id"] == o["id"]],
                                 {"number": f"1Z{o['id']}", "company": "UPS"}, at=o["created_at"])["id"])
                for o in orders]
    add, data = {
        "customers": (store.add_customer, lambda i: {
            "email": f"seed{i}@example.com", "first_name": f"Seed {i}",
            "addresses": [{"address1": "1 Main St", "city": "Ottawa", "province_code": "ON", "country_code": "CA",
                           "zip": "K2P 1L4"}]}),
        "collections": (store.add_collection, lambda i: {"title": f"Collection {i}", "sort_order": "manual"}),
        "locations": (store.add_location, lambda i: {"name": f"Depot {i}", "country_code": "CA", "active": True}),
    }[entity]
    return [str(add(data(uuid.uuid4().hex[:8]), at=at)["id"]) for at in stamps]


class RevokeDown:
    """An ASGI wrapper of the fake: the shop's revoke endpoint answers 503
    while ``down``."""

    def __init__(self, app):
        self.app, self.down = app, True

    async def __call__(self, scope, receive, send):
        if self.down and scope["type"] == "http" and scope["path"] == "/admin/api_permissions/current.json":
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"down"})
            return
        await self.app(scope, receive, send)


def uninstall_app(app: FastAPI) -> None:
    """The app leaves the shop (its owner removed it, or the app asked):
    every token issued to it for the shop stops working, refresh tokens too."""
    app.state.tokens.clear()
    app.state.refresh_tokens.clear()


def expire_tokens(app: FastAPI) -> None:
    """Every access token the fake issued expires now (its refresh tokens still work)."""
    for token in app.state.tokens:
        app.state.tokens[token] = time.time() - 1


#: The token exchange that turns a non-expiring offline token into an expiring pair (Shopify's
#: migration to expiring tokens, required of public apps from 1 January 2027).
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
OFFLINE_TOKEN = "urn:shopify:params:oauth:token-type:offline-access-token"


#: Variants of one product the REST Admin API shows (a product may have up to 2,048 since 2024:
#: the others only GraphQL shows). A product update naming its variants keeps those it names.
REST_VARIANTS = 100


def rest_view(row: dict[str, Any]) -> dict[str, Any]:
    """A record as the REST Admin API answers it: a product's first 100 variants only."""
    if len(row.get("variants") or []) > REST_VARIANTS and "title" in row:
        return {**row, "variants": row["variants"][:REST_VARIANTS]}
    return row


def issue_token(app: FastAPI, ttl: int | None = None) -> str:
    """An access token the fake accepts, without the OAuth dance."""
    token = "shpat_" + secrets.token_hex(16)
    app.state.tokens[token] = time.time() + ttl if ttl else None
    return token


def fill_bucket(app: FastAPI) -> None:
    """Make the shop's bucket full, as if another app client had used it up."""
    bucket: LeakyBucket = app.state.bucket
    with bucket._lock:
        bucket.level, bucket.updated = float(bucket.capacity), time.monotonic()


def create_app(shop: str = SHOP, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET,
               products: int = 0, capacity: int = 40, leak_per_second: float = 2.0,
               expiring: bool = False, token_ttl: int = 3600) -> FastAPI:
    """The fake shop ``shop``. ``capacity``/``leak_per_second`` set its leaky bucket
    (Shopify standard: 40 and 2/s; Plus: 400 and 20/s); ``expiring`` issues expiring
    tokens even when the app did not ask with ``expiring=1``."""
    app = FastAPI()
    app.state.shop = shop
    app.state.client_id, app.state.client_secret = client_id, client_secret
    app.state.store = store = Store(shop)
    app.state.bucket = LeakyBucket(capacity, leak_per_second)
    app.state.tokens = {}  # access token: expiry (epoch seconds) or None
    app.state.codes = {}  # authorization code: (issued at, scope)
    app.state.refresh_tokens = {}  # refresh token: (the access token issued with it, scope)
    app.state.lasting_scopes = {}  # non-expiring access token: its scope
    app.state.migrated = {}  # non-expiring token exchanged: (the answer, when)
    app.state.expiring, app.state.token_ttl = expiring, token_ttl
    app.state.requests = app.state.throttled = app.state.refreshes = 0
    app.state.lose_next = app.state.lost = 0  # the fault knob (module docstring) and its count
    app.state.call_limit_header = True  # the second knob (module docstring)
    app.state.orders_window_days = None  # the third knob (module docstring)
    app.state.posts = collections.Counter()  # Admin API POSTs by path
    app.state.versions = collections.Counter()  # API versions requested
    #: The versions it answers in (a request for another gets the oldest of them).
    app.state.supported_versions = {"2026-01", "2026-04", "2026-07", API_VERSION}
    app.state.seed_clock = itertools.count()
    seed_products(app, products)

    @app.middleware("http")
    async def gate(request: Request, call_next):
        if not request.url.path.startswith("/admin/api"):
            return await call_next(request)
        app.state.requests += 1
        asked = request.url.path.split("/")[3]
        app.state.versions[asked] += 1
        # A version Shopify no longer supports is answered in the oldest one it does, and says so.
        served = asked if asked in app.state.supported_versions else min(app.state.supported_versions)
        response = await _gate(request, call_next)
        response.headers["X-Shopify-API-Version"] = served
        return response

    async def _gate(request: Request, call_next):
        token = request.headers.get("x-shopify-access-token", "")
        expiry = app.state.tokens.get(token, 0)
        if token not in app.state.tokens or (expiry and expiry < time.time()):
            return errors(401, INVALID_TOKEN)
        decision = app.state.bucket.hit()
        usage = {CALL_LIMIT: f"{math.ceil(decision.used)}/{app.state.bucket.capacity}"
                 } if app.state.call_limit_header else {}
        if not decision.allowed:
            app.state.throttled += 1
            return errors(429, THROTTLED, **{"Retry-After": f"{decision.retry_after:.3f}", **usage})
        if request.method == "POST":
            app.state.posts[request.url.path] += 1
        response = await call_next(request)
        if request.method == "POST" and app.state.lose_next > 0 and 200 <= response.status_code < 300:
            app.state.lose_next -= 1
            app.state.lost += 1
            async for _chunk in response.body_iterator:  # the answer, read and dropped
                pass
            return errors(502, "Bad Gateway: the shop did not answer in time")  # the write stays applied
        response.headers.update(usage)
        return response

    # ------------------------------------------------------------ OAuth

    @app.get("/admin/oauth/authorize")
    async def authorize(client_id: str = "", scope: str = "", redirect_uri: str = "", state: str = ""):
        if client_id != app.state.client_id or not redirect_uri.startswith(("http://", "https://")):
            return Response("Oauth error invalid_request: The redirect_uri is missing or the client_id is unknown",
                            status_code=400)
        code = secrets.token_hex(16)
        app.state.codes[code] = (time.time(), scope)
        params = {"code": code, "host": base64.b64encode(f"{shop}/admin".encode()).decode(), "shop": shop,
                  "state": state, "timestamp": str(int(time.time()))}
        params["hmac"] = sign_callback(app.state.client_secret, params)
        return RedirectResponse(f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{urlencode(params)}",
                                status_code=302)

    def oauth_error(error: str, description: str) -> JSONResponse:
        return JSONResponse({"error": error, "error_description": description}, status_code=400)

    def issue(expiring: bool, scope: str) -> dict[str, Any]:
        body: dict[str, Any] = {"access_token": issue_token(app, app.state.token_ttl if expiring else None),
                                "scope": scope}
        if expiring:
            refresh = "shprt_" + secrets.token_hex(16)
            app.state.refresh_tokens[refresh] = (body["access_token"], scope)
            body.update(expires_in=app.state.token_ttl, refresh_token=refresh, refresh_token_expires_in=7776000)
        else:
            app.state.lasting_scopes[body["access_token"]] = scope
        return body

    def migrate(form: dict[str, Any]) -> JSONResponse | dict[str, Any]:
        """Shopify's exchange of a non-expiring offline token for an expiring pair."""
        subject = form.get("subject_token", "")
        if form.get("subject_token_type") != OFFLINE_TOKEN or form.get("requested_token_type") != OFFLINE_TOKEN:
            return oauth_error("invalid_request", "subject_token_type and requested_token_type must be "
                                                  "offline-access-token")
        done = app.state.migrated.get(subject)
        if done is not None and done[1] > time.time() - 7 * 86400 and done[0]["refresh_token"] in \
                app.state.refresh_tokens:
            # The same exchange again (its answer lost): the same pair, for seven days, the access
            # token's expiry extended, the refresh token's not.
            body = dict(done[0])
            if body["access_token"] in app.state.tokens:
                app.state.tokens[body["access_token"]] = time.time() + app.state.token_ttl
            return {**body, "expires_in": app.state.token_ttl,
                    "refresh_token_expires_in": max(1, int(done[1] + body["refresh_token_expires_in"] - time.time()))}
        if subject not in app.state.lasting_scopes or subject not in app.state.tokens:
            return oauth_error("invalid_subject_token", "The subject token is invalid, expired or revoked")
        scope = app.state.lasting_scopes.pop(subject)
        app.state.tokens.pop(subject)  # the non-expiring token stops working
        body = issue(True, scope)
        app.state.migrated[subject] = (body, time.time())
        return body

    @app.post("/admin/oauth/access_token")
    async def access_token(request: Request):
        raw = await request.body()
        try:
            form = json.loads(raw) if "json" in request.headers.get("content-type", "") else dict(
                parse_qsl(raw.decode()))
        except ValueError:
            return oauth_error("invalid_request", "The request body is malformed")
        if form.get("client_id") != app.state.client_id or form.get("client_secret") != app.state.client_secret:
            return oauth_error("invalid_client", "Client authentication failed")
        if form.get("grant_type") == TOKEN_EXCHANGE:
            return migrate(form)
        if form.get("grant_type") == "refresh_token":
            grant = app.state.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if grant is None:
                return oauth_error("invalid_grant", "The refresh token is invalid, expired or revoked")
            app.state.tokens.pop(grant[0], None)
            app.state.refreshes += 1
            return issue(True, grant[1])
        issued = app.state.codes.pop(form.get("code", ""), None)  # single use
        if issued is None or issued[0] < time.time() - 600:
            return oauth_error("invalid_request", "The authorization code was not found or was already used")
        return issue(app.state.expiring or str(form.get("expiring")) == "1", issued[1])

    @app.delete("/admin/api_permissions/current.json")
    async def uninstall(request: Request):
        # The app leaves the shop: every token issued to it for the shop stops working.
        if request.headers.get("x-shopify-access-token", "") not in app.state.tokens:
            return JSONResponse({"errors": "[API] Invalid API key or access token (unrecognized login or wrong "
                                           "password)"}, status_code=401)
        uninstall_app(app)
        return {}

    # ------------------------------------------------------------ Admin API

    @app.get("/admin/api/{version}/shop.json")
    async def shop_json(version: str):
        return {"shop": {"id": 548380009, "name": "Hub Test Shop", "email": "owner@example.com",
                         "domain": shop, "myshopify_domain": shop, "plan_name": "basic", "currency": "CAD",
                         "iana_timezone": "America/Toronto", "created_at": "2024-01-01T00:00:00-05:00"}}

    @app.get("/admin/api/{version}/inventory_levels.json")
    async def inventory_levels(request: Request, version: str):
        query = dict(request.query_params)
        if "page_info" not in query and not (query.get("inventory_item_ids") or query.get("location_ids")):
            return errors(422, {"base": ["inventory_item_ids or location_ids must be specified"]})
        for name in ("location_ids", "inventory_item_ids"):  # Shopify's reference: "(maximum: 50)"
            if "page_info" not in query and len([i for i in query.get(name, "").split(",") if i.strip()]) > MAX_IDS:
                return errors(422, {name: [f"must contain at most {MAX_IDS} ids"]})
        return paginate(request, "inventory_levels")

    @app.post("/admin/api/{version}/inventory_levels/adjust.json")
    async def adjust(request: Request, version: str):
        body = await json_body(request)
        if isinstance(body, Response):
            return body
        try:
            item, location = int(body["inventory_item_id"]), int(body["location_id"])
            delta = int(body["available_adjustment"])
        except (KeyError, TypeError, ValueError):
            return errors(422, {"base": ["inventory_item_id, location_id and available_adjustment are required"]})
        level = store.levels.get((item, location))
        if level is None:
            if not any(i == item for i, _ in store.levels):
                return not_found()
            return errors(422, ["Inventory item is not stocked at the location"])
        level.update(available=level["available"] + delta, updated_at=now())
        return {"inventory_level": level}

    @app.get("/admin/api/{version}/orders/{order_id}/fulfillment_orders.json")
    async def fulfillment_orders(version: str, order_id: int):
        if store.tables["orders"].get(str(order_id)) is None:
            return not_found()
        return {"fulfillment_orders": [fo for fo in store.tables["fulfillment_orders"].all()
                                       if fo["order_id"] == order_id]}

    @app.get("/admin/api/{version}/orders/{order_id}/fulfillments.json")
    async def order_fulfillments(request: Request, version: str, order_id: int):
        if store.tables["orders"].get(str(order_id)) is None:
            return not_found()
        return paginate(request, "fulfillments", {"order_id": str(order_id)})

    @app.post("/admin/api/{version}/fulfillments.json")
    async def create_fulfillment(request: Request, version: str):
        body = await json_body(request, "fulfillment")
        if isinstance(body, Response):
            return body
        wanted = [w for w in body.get("line_items_by_fulfillment_order") or [] if isinstance(w, dict)]
        found = [store.tables["fulfillment_orders"].get(str(w.get("fulfillment_order_id"))) for w in wanted]
        if not wanted or None in found:
            return errors(422, ["Fulfillment order does not exist."])
        if len({fo["order_id"] for fo in found}) > 1:
            return errors(422, ["All fulfillment orders must belong to the same order."])
        if any(fo["status"] not in ("open", "in_progress") for fo in found):
            return errors(422, ["Fulfillment order has an unfulfillable status= closed."])
        fulfillment = store.fulfil(found, body.get("tracking_info") or {}, bool(body.get("notify_customer")))
        return JSONResponse({"fulfillment": fulfillment}, status_code=201)

    @app.get("/admin/api/{version}/{resource}/count.json")
    async def count(request: Request, version: str, resource: str):
        if resource not in RESOURCES:
            return not_found()
        try:
            return {"count": len(filtered(resource, dict(request.query_params)))}
        except BadFilter as exc:
            return errors(400, exc.args[0])

    @app.get("/admin/api/{version}/{resource}.json")
    async def list_(request: Request, version: str, resource: str):
        if resource not in RESOURCES:
            return not_found()
        return paginate(request, resource)

    @app.post("/admin/api/{version}/{resource}.json")
    async def create(request: Request, version: str, resource: str):
        if resource not in WRITABLE:
            return not_found()
        data = await json_body(request, RESOURCES[resource])
        if isinstance(data, Response):
            return data
        problem = invalid(resource, data, None)
        if problem:
            return errors(422, problem)
        if resource == "products":
            row = store.add_product(data)
        elif resource == "orders":
            row = store.add_order(data)
        elif resource == "customers":
            row = store.add_customer(data)
        elif resource == "custom_collections":
            row = store.add_collection(data)
        else:
            row = store.insert(resource, {k: v for k, v in data.items() if k not in ("id", "created_at")})
        return JSONResponse({RESOURCES[resource]: row}, status_code=201)

    @app.get("/admin/api/{version}/{resource}/{record_id}.json")
    async def get(version: str, resource: str, record_id: str):
        row = store.tables[resource].get(record_id) if resource in RESOURCES else None
        return {RESOURCES[resource]: rest_view(row)} if row else not_found()

    @app.get("/admin/api/{version}/products/{product_id}/variants/count.json")
    async def variant_count(version: str, product_id: str):
        row = store.tables["products"].get(product_id)
        return {"count": len(row.get("variants") or [])} if row else not_found()

    @app.put("/admin/api/{version}/{resource}/{record_id}.json")
    async def update(request: Request, version: str, resource: str, record_id: str):
        row = store.tables[resource].get(record_id) if resource in WRITABLE else None
        if row is None:
            return not_found()
        data = await json_body(request, RESOURCES[resource])
        if isinstance(data, Response):
            return data
        problem = invalid(resource, data, row)
        if problem:
            return errors(422, problem)
        kept = ORDER_UPDATABLE if resource == "orders" else None  # Shopify drops the rest of an order's
        row.update({k: v for k, v in data.items() if k not in ("id", "created_at", "updated_at")
                    and (kept is None or k in kept)})
        if resource == "customers" and "addresses" in data:  # Shopify answers them in its own shape
            store.set_addresses(row, data["addresses"] if isinstance(data["addresses"], list) else [])
        if resource == "orders" and "shipping_address" in data:
            row["shipping_address"] = order_address(data["shipping_address"])
        row["updated_at"] = now()
        return {RESOURCES[resource]: rest_view(row)}

    @app.delete("/admin/api/{version}/{resource}/{record_id}.json")
    async def delete(version: str, resource: str, record_id: str):
        row = store.tables[resource].delete(record_id) if resource in WRITABLE else None
        if row is None:
            return not_found()
        if resource == "products":
            items = {variant.get("inventory_item_id") for variant in row.get("variants") or []}
            for key in [k for k in store.levels if k[0] in items]:
                del store.levels[key]
        return {}

    # ------------------------------------------------------------ helpers

    async def json_body(request: Request, wrapper: str | None = None) -> Any:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return errors(400, "783: unexpected token")
        if wrapper is None:
            return body if isinstance(body, dict) else errors(400, "Bad Request")
        if not isinstance(body, dict) or not isinstance(body.get(wrapper), dict):
            return errors(400, {wrapper: "Required parameter missing or invalid"})
        return body[wrapper]

    def invalid(resource: str, data: dict[str, Any], row: dict[str, Any] | None) -> dict[str, list[str]] | None:
        merged = {**(row or {}), **data}
        if resource in ("products", "custom_collections") and not str(merged.get("title") or "").strip():
            return {"title": ["can't be blank"]}
        if resource == "products" and not all(isinstance(v, dict) for v in merged.get("variants") or []):
            return {"variants": ["is invalid"]}
        if resource == "orders" and row is None:
            items = data.get("line_items")
            if not items or not isinstance(items, list):
                return {"line_items": ["must have at least one line item"]}
            try:
                [(float(i.get("price", 0)), int(i.get("quantity", 1))) for i in items]
            except (AttributeError, TypeError, ValueError):
                return {"line_items": ["is invalid"]}
        if resource == "customers":
            if not any(merged.get(k) for k in ("email", "phone", "first_name", "last_name")):
                return {"base": ["Customer must have a name, phone number or email address"]}
            email = merged.get("email")
            if email and any(c["email"] == email and c is not row for c in store.tables["customers"].all()):
                return {"email": ["has already been taken"]}
        if resource == "webhooks":
            if merged.get("topic") not in TOPICS:
                return {"topic": ["Invalid topic specified. Topics allowed: " + ", ".join(sorted(TOPICS))]}
            if not str(merged.get("address", "")).startswith(("http://", "https://")):
                return {"address": ["is invalid"]}
            if any(w["topic"] == merged["topic"] and w["address"] == merged["address"] and w is not row
                   for w in store.tables["webhooks"].all()):
                return {"address": ["for this topic has already been taken"]}
        return None

    def filtered(resource: str, query: dict[str, str]) -> list[dict[str, Any]]:
        rows = list(store.levels.values()) if resource == "inventory_levels" else store.tables[resource].all()
        if resource == "orders" and app.state.orders_window_days:
            oldest = datetime.now(SHOP_TZ) - timedelta(days=app.state.orders_window_days)
            rows = [r for r in rows if datetime.fromisoformat(r["created_at"]) >= oldest]
        if resource == "orders":
            status = query.get("status", "open")
            if status == "open":
                rows = [r for r in rows if not r["closed_at"] and not r["cancelled_at"]]
            elif status in ("closed", "cancelled"):
                rows = [r for r in rows if r[f"{status}_at"]]
        elif query.get("status"):
            rows = [r for r in rows if r.get("status") in query["status"].split(",")]
        for name, field in (("ids", "id"), ("inventory_item_ids", "inventory_item_id"),
                            ("location_ids", "location_id")):
            if query.get(name):
                wanted = {i.strip() for i in query[name].split(",")}
                rows = [r for r in rows if str(r[field]) in wanted]
        if query.get("since_id", "").isdigit():
            rows = [r for r in rows if r["id"] > int(query["since_id"])]
        for name in EQUALITY_FILTERS:
            if name in query:
                rows = [r for r in rows if str(r.get(name)) == query[name]]
        for name, field, keep in (("updated_at_min", "updated_at", ge), ("updated_at_max", "updated_at", le),
                                  ("created_at_min", "created_at", ge), ("created_at_max", "created_at", le)):
            if query.get(name):
                try:
                    bound = datetime.fromisoformat(query[name])
                except ValueError:
                    raise BadFilter({name: ["is not a valid date"]}) from None
                bound = bound if bound.tzinfo else bound.replace(tzinfo=SHOP_TZ)
                rows = [r for r in rows if keep(datetime.fromisoformat(r[field]), bound)]
        return rows

    def sort_key(row: dict[str, Any]) -> list:
        return [row["id"]] if "id" in row else [row["inventory_item_id"], row["location_id"]]

    def paginate(request: Request, resource: str, fixed: dict[str, str] | None = None) -> Response:
        """One page in id order with Shopify's Link header; the opaque page_info carries the filters."""
        query = dict(request.query_params)
        try:
            limit = int(query.get("limit", 50))
        except ValueError:
            return errors(400, {"limit": "expected Integer to be a Integer"})
        if not 1 <= limit <= 250:
            return errors(400, {"limit": ["must be between 1 and 250"]})
        token = query.get("page_info")
        if token:
            extra = sorted(set(query) - PAGE_INFO_COMPANIONS)
            if extra:
                return errors(400, {"page_info": [f"can only be used with limit and fields, not {', '.join(extra)}"]})
            try:
                cursor = json.loads(base64.urlsafe_b64decode(token.encode() + b"==="))
                filters, last, direction = cursor["filters"], cursor["last"], cursor["direction"]
            except (ValueError, KeyError, TypeError):
                return errors(400, {"page_info": ["Invalid value."]})
        else:
            filters = {**{k: v for k, v in query.items() if k not in PAGE_INFO_COMPANIONS}, **(fixed or {})}
            last, direction = None, "next"
        try:
            rows = filtered(resource, filters)
        except BadFilter as exc:
            return errors(400, exc.args[0])
        rows = sorted(rows, key=sort_key)
        if direction == "next":
            after = [r for r in rows if last is None or sort_key(r) > last]
            page = after[:limit]
            has_next, has_prev = len(after) > limit, last is not None
        else:
            before = [r for r in rows if sort_key(r) < last]
            page = before[-limit:]
            has_next, has_prev = True, len(before) > limit
        fields = [f for f in query.get("fields", "").split(",") if f]
        body = [{k: r[k] for k in fields if k in r} if fields else r for r in map(rest_view, page)]
        links = []
        for rel, wanted, anchor in (("previous", has_prev, page[:1]), ("next", has_next, page[-1:])):
            if wanted and anchor:
                cursor = {"filters": filters, "last": sort_key(anchor[0]), "direction": rel}
                info = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode().rstrip("=")
                params = {"limit": limit, **({"fields": query["fields"]} if fields else {}), "page_info": info}
                links.append(f'<{str(request.url).split("?")[0]}?{urlencode(params)}>; rel="{rel}"')
        headers = {"Link": ", ".join(links)} if links else {}
        return JSONResponse({resource: body}, headers=headers)

    return app


# ---------------------------------------------------------------- webhooks


def signed_delivery(topic: str, payload: dict[str, Any], *, secret: str = CLIENT_SECRET, shop: str = SHOP,
                    event_id: str | None = None, triggered_at: datetime | None = None,
                    api_version: str = API_VERSION) -> tuple[bytes, dict[str, str]]:
    """A webhook delivery as Shopify sends it: the raw body and its headers."""
    body = json.dumps(payload).encode()
    when = (triggered_at or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": sign_body(secret, body),
        "X-Shopify-Shop-Domain": shop,
        "X-Shopify-API-Version": api_version,
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Triggered-At": when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z",  # nanoseconds, as Shopify
    }


def send_webhook(url: str, topic: str, payload: dict[str, Any], **options: Any) -> httpx.Response:
    body, headers = signed_delivery(topic, payload, **options)
    return httpx.post(url, content=body, headers=headers)


def deliveries(app: FastAPI, topic: str, payload: dict[str, Any], **options: Any
               ) -> list[tuple[str, bytes, dict[str, str]]]:
    """The deliveries the shop makes for ``topic``: one ``(address, body, headers)``
    per subscription registered through ``webhooks.json``."""
    options = {"secret": app.state.client_secret, "shop": app.state.shop, "event_id": str(uuid.uuid4()), **options}
    return [(hook["address"], *signed_delivery(topic, payload, **options))
            for hook in app.state.store.tables["webhooks"].all() if hook["topic"] == topic]


def conformance_webhook(harness: Any, kind: str) -> tuple[dict[str, str], bytes]:
    """A delivery for hub's conformance suite, signed for the harness's fake shop;
    ``stale`` ones were triggered six hours ago (Shopify retries for four)."""
    shop = harness.fake_app.state
    triggered = datetime.now(timezone.utc) - timedelta(hours=6 if kind == "stale" else 0)
    body, headers = signed_delivery("orders/updated", {"id": 450789469, "name": "#1001"},
                                    secret=shop.client_secret, shop=shop.shop, triggered_at=triggered)
    return headers, body
