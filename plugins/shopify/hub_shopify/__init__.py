"""Shopify through the Admin REST API: OAuth per shop (expiring offline tokens
unless told otherwise), products, orders, customers, inventory levels, fulfillments,
custom collections and locations, Link-header cursor pagination, the per-shop
leaky bucket, and HMAC-signed webhooks. Its fake shop is :mod:`hub_shopify.testing`."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
import re
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from hub import hookimpl
from hub.http import read_json
from hub.oauth2 import token_credentials
from hub.types import (
    CONNECTION_BROKEN,
    REDACTED,
    Action,
    AuthFailed,
    Credentials,
    EntityField,
    EntitySchema,
    HubError,
    InsufficientScope,
    NotFound,
    Page,
    ProviderError,
    ProviderInfo,
    RateLimit,
    ReadOnly,
    RequestAuth,
    ValidationFailed,
    WebhookEvent,
    WebhookRejected,
)
from hub_shopify.fields import (
    COLLECTION_FIELDS,
    CUSTOMER_FIELDS,
    FULFILLMENT_FIELDS,
    INVENTORY_LEVEL_FIELDS,
    LOCATION_FIELDS,
    ORDER_FIELDS,
    PRODUCT_FIELDS,
    F,
)

log = logging.getLogger("hub.shopify")

#: Shopify supports a stable version for a year at least, then silently serves the oldest one it
#: still supports instead (its X-Shopify-API-Version says which): keep this one current.
DEFAULT_API_VERSION = "2026-10"
SHOP_DOMAIN = re.compile(r"[a-z0-9][a-z0-9-]*\.myshopify\.com")
CALLBACK_MAX_AGE = 24 * 3600  # what Shopify's own libraries accept for an OAuth callback
MAX_LIMIT = 250

INFO = ProviderInfo(
    name="shopify",
    label="Shopify",
    logo="https://www.shopify.com/favicon.ico",
    category="ecommerce",
    auth_type="oauth2",
    description="Shopify stores: catalogue, orders, customers, inventory and fulfilment (Admin REST API).",
    urls={
        "api": "https://{shop}/admin/api/{api_version}",
        "authorize": "https://{shop}/admin/oauth/authorize",
        "token": "https://{shop}/admin/oauth/access_token",
        "revoke": "https://{shop}/admin/api_permissions/current.json",
    },
    rate_limit=RateLimit(requests_per_second=2, burst=40, usage_header="X-Shopify-Shop-Api-Call-Limit"),
    scopes=("read_products", "write_products", "read_orders", "write_orders", "read_customers",
            "write_customers", "read_inventory", "write_inventory", "read_fulfillments",
            "write_fulfillments", "read_merchant_managed_fulfillment_orders",
            "write_merchant_managed_fulfillment_orders", "read_locations"),
    supports_webhooks=True,
    config_fields=(EntityField("shop", "Shop domain", required=True, description="<name>.myshopify.com"),),
    # Shopify signs no timestamp and retries a failed delivery 8 times over 4 hours:
    # a retry is legitimate that long, so only deliveries triggered longer ago (or
    # stamped ahead by more than clock skew: the header is unsigned) are stale.
    webhook_tolerance_seconds=5 * 3600,
    url_defaults={"api_version": DEFAULT_API_VERSION},
    # Shopify invalidates public apps' non-expiring offline tokens then: the hub's grant upkeep
    # has each connection holding one exchange it for an expiring grant first (refresh_credentials).
    lasting_tokens_until=datetime(2027, 1, 1, tzinfo=timezone.utc),
)



# Every field of the 2025-01 REST resources, with the sub-fields of the objects whose keys
# Shopify documents (hub_shopify.fields says which stay open, and why).
#: Shopify lists the orders of the last 60 days to apps without read_all_orders: older ones age
#: out of full passes rather than being taken for deleted.
ORDERS_LISTED_FOR_DAYS = 60
# The query parameters of each REST list (2025-01) a client may filter by: Shopify ignores
# others, and would answer an unfiltered list as if filtered.
_DATES = ("created_at_min", "created_at_max", "updated_at_min", "updated_at_max")
_PUBLISHED = ("published_at_min", "published_at_max", "published_status")
FILTERS = {
    "products": ("ids", "since_id", "title", "vendor", "handle", "product_type", "status", "collection_id",
                 *_DATES, *_PUBLISHED, "fields", "presentment_currencies"),
    "orders": ("ids", "since_id", "name", "status", "financial_status", "fulfillment_status", *_DATES,
               "processed_at_min", "processed_at_max", "attribution_app_id", "fields"),
    "customers": ("ids", "since_id", *_DATES, "fields"),
    "inventory_levels": ("inventory_item_ids", "location_ids", "updated_at_min"),
    "fulfillments": ("order_id", "since_id", *_DATES, "fields"),
    "collections": ("ids", "since_id", "title", "product_id", "handle", "updated_at_min", "updated_at_max",
                    *_PUBLISHED, "fields"),
    "locations": (),
}
SCHEMAS = [
    EntitySchema("products", "Products", PRODUCT_FIELDS, updated_field="updated_at", supports_create=True,
                 supports_update=True, supports_delete=True, supports_since=True, filters=FILTERS["products"]),
    EntitySchema("orders", "Orders", ORDER_FIELDS,
                 description="All orders: open, closed and cancelled (status=any unless a status filter is given). "
                             "After its creation Shopify changes only an order's email, phone, note, note "
                             "attributes, tags, marketing consent and shipping address (the items need an order "
                             "edit). Shopify serves the last 60 days of orders to apps without its read_all_orders "
                             "scope, which Shopify grants on request.",
                 updated_field="updated_at", supports_create=True, supports_update=True, supports_delete=True,
                 supports_since=True, listed_for_days=ORDERS_LISTED_FOR_DAYS, created_field="created_at",
                 filters=FILTERS["orders"]),
    EntitySchema("customers", "Customers", CUSTOMER_FIELDS, updated_field="updated_at", supports_create=True,
                 supports_update=True, supports_delete=True, supports_since=True, filters=FILTERS["customers"]),
    EntitySchema("inventory_levels", "Inventory levels", INVENTORY_LEVEL_FIELDS,
                 description="Every location's levels, listed 50 locations at a time in ascending id order "
                             "(Shopify takes at most 50 location_ids); or filter by inventory_item_ids or "
                             "location_ids (at most 50 each). Change them with the adjust_inventory action.",
                 updated_field="updated_at", supports_since=True, filters=FILTERS["inventory_levels"]),
    EntitySchema("fulfillments", "Fulfillments", FULFILLMENT_FIELDS,
                 description="Filter by order_id; without it they are read from the orders they belong to. "
                             "Create them with the create_fulfillment action.",
                 # (Read from the orders Shopify lists: a fulfillment ages out with its order.)
                 updated_field="updated_at", supports_since=True, listed_for_days=ORDERS_LISTED_FOR_DAYS,
                 created_field="order_created_at", filters=FILTERS["fulfillments"]),
    EntitySchema("collections", "Custom collections", COLLECTION_FIELDS, updated_field="updated_at",
                 supports_create=True, supports_update=True, supports_delete=True, supports_since=True,
                 filters=FILTERS["collections"]),
    EntitySchema("locations", "Locations", LOCATION_FIELDS, filters=FILTERS["locations"]),
]
SINCE = {s.name for s in SCHEMAS if s.supports_since}

# entity: (Shopify resource, key of one record)
RESOURCES = {
    "products": ("products", "product"),
    "orders": ("orders", "order"),
    "customers": ("customers", "customer"),
    "inventory_levels": ("inventory_levels", "inventory_level"),
    "fulfillments": ("fulfillments", "fulfillment"),
    "collections": ("custom_collections", "custom_collection"),
    "locations": ("locations", "location"),
}
WRITABLE = {s.name for s in SCHEMAS if not s.readonly}
# Without status=any Shopify lists open orders only.
DEFAULT_FILTERS = {"orders": {"status": "any"}}

VERBS = {"create": "created", "update": "updated", "updated": "updated", "delete": "deleted"}
DEFAULT_TOPICS = ("orders/create", "orders/updated", "orders/delete", "products/create", "products/update",
                  "products/delete", "customers/create", "customers/update", "customers/delete", "app/uninstalled")

ACTIONS = [
    Action("inventory_levels", "Inventory levels", "Available quantities by inventory item and location.", (
        F("inventory_item_ids", description="comma-separated ids"),
        F("location_ids", description="comma-separated ids"),
    ), readonly=True),
    Action("adjust_inventory", "Adjust inventory",
           "Add to (or with a negative number remove from) an item's available quantity at a location.", (
               F("inventory_item_id", "integer", required=True), F("location_id", "integer", required=True),
               F("available_adjustment", "integer", required=True),
           )),
    Action("create_fulfillment", "Fulfil an order",
           "Fulfil an order's open fulfillment orders, with tracking details.", (
               F("order_id", "integer", required=True), F("tracking_number"), F("tracking_company"),
               F("tracking_url"), F("notify_customer", "boolean"),
           )),
    Action("list_locations", "List locations", "The shop's locations.", readonly=True),
]


# ---------------------------------------------------------------- schema


@hookimpl
def provider_info():
    return INFO


@hookimpl
def entity_schemas():
    return SCHEMAS


@hookimpl
def provider_actions():
    return ACTIONS


# ---------------------------------------------------------------- auth


def oauth_hmac(secret: str, params: dict[str, str]) -> str:
    """Shopify's signature of an OAuth redirect: hex HMAC-SHA256 over the sorted
    ``k=v`` pairs (``hmac`` left out, delimiters escaped) joined by ``&``."""
    pairs = sorted(
        (k.replace("%", "%25").replace("=", "%3D") + "=" + str(v).replace("%", "%25")).replace("&", "%26")
        for k, v in params.items() if k != "hmac"
    )
    return hmac.new(secret.encode(), "&".join(pairs).encode(), hashlib.sha256).hexdigest()


def _shop(value: Any) -> str:
    """The shop's canonical host: what a merchant copies from the address bar
    (``https://My-Shop.myshopify.com/``) is taken as ``my-shop.myshopify.com``,
    the form Shopify signs callbacks and deliveries with."""
    shop = value.strip().lower() if isinstance(value, str) else ""
    for scheme in ("https://", "http://"):
        shop = shop.removeprefix(scheme)
    shop = shop.removesuffix("/")
    if not SHOP_DOMAIN.fullmatch(shop):
        raise ValidationFailed("shop must be a <name>.myshopify.com domain", code="invalid_shop")
    return shop


@hookimpl
def authorization_url(ctx, redirect_uri, state, params):
    shop = params["shop"] = _shop(params.get("shop"))  # the connection keeps the canonical form
    query = {"client_id": ctx.setting("client_id"), "scope": ",".join(ctx.provider.scopes),
             "redirect_uri": redirect_uri, "state": state}
    return f"{ctx.url('authorize', shop=shop)}?{urlencode(query)}"


@hookimpl
async def exchange_code(ctx, code, params):
    signature = params.get("hmac") or ""
    if not hmac.compare_digest(oauth_hmac(ctx.setting("client_secret"), params).encode(), signature.encode()):
        raise AuthFailed("the callback's hmac does not match", code="invalid_hmac")
    timestamp = params.get("timestamp") or ""
    if not (timestamp.isascii() and timestamp.isdigit()) or int(timestamp) < time.time() - CALLBACK_MAX_AGE:
        raise AuthFailed("the callback is missing its timestamp or is older than 24 hours", code="callback_expired")
    if _shop(params.get("shop")) != ctx.config.get("shop"):
        raise AuthFailed("the callback names another shop than the one the flow started with", code="shop_mismatch")
    # Expiring offline tokens by default: Shopify requires them of public apps from 1 January 2027
    # (HUB_SHOPIFY_EXPIRING=0 for an app that still gets the other kind).
    expiring = ctx.settings.get("expiring", "1") != "0"
    credentials = await _token(ctx, {"code": code, **({"expiring": "1"} if expiring else {})})
    missing = _missing_scopes(INFO.scopes, credentials.config.get("scope") or "")
    if missing:
        # Granted less than asked (the merchant's URL edited, say): the connection would fail
        # later, call by call. The core gives the grant back, unless another connection uses the shop.
        raise InsufficientScope(f"the shop granted the app without {', '.join(missing)}: install it again and "
                                f"accept every permission it asks for", credentials=credentials,
                                details={"missing": missing})
    return credentials


def _missing_scopes(asked: Any, granted: str) -> list[str]:
    """The scopes asked for and not granted (Shopify's write_x grants read_x too)."""
    have = {s.strip() for s in granted.split(",") if s.strip()}
    return [s for s in asked if s not in have and not (s.startswith("read_") and f"write_{s[5:]}" in have)]


#: Shopify's token exchange, which turns a non-expiring offline token into an expiring one.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
OFFLINE_TOKEN = "urn:shopify:params:oauth:token-type:offline-access-token"


@hookimpl
async def refresh_credentials(ctx):
    refresh_token = ctx.credentials.get("refresh_token")
    if refresh_token:
        return await _token(ctx, {"grant_type": "refresh_token", "refresh_token": refresh_token})
    if ctx.settings.get("expiring", "1") == "0":
        return Credentials(secrets={})  # this app keeps non-expiring tokens (a custom app): nothing to do
    # A non-expiring token (a connection made before the app asked for expiring ones), exchanged
    # for an expiring pair without the merchant. Shopify answers the same exchange sent again (an
    # answer lost on the way) with the same pair for seven days.
    return await _token(ctx, {"grant_type": TOKEN_EXCHANGE, "subject_token": ctx.credentials.get("access_token") or "",
                              "subject_token_type": OFFLINE_TOKEN, "requested_token_type": OFFLINE_TOKEN,
                              "expiring": "1"})


async def _token(ctx, form: dict[str, str]) -> Credentials:
    form = {"client_id": ctx.setting("client_id"), "client_secret": ctx.setting("client_secret"), **form}
    # A refused grant (4xx) becomes AuthFailed in the core's OAuth and refresh paths. The answer's
    # refresh_token_expires_in (90 days, counted again at each refresh) has the hub refresh a quiet
    # shop's grant before it lapses.
    body = await ctx.http.json("POST", ctx.url("token"), data=form)
    shop = ctx.config["shop"]
    return dataclasses.replace(token_credentials(body), config={"shop": shop, "scope": body.get("scope", "")},
                               webhook_key=shop)


@hookimpl
def request_auth(ctx):
    token = ctx.credentials.get("access_token")
    return RequestAuth(headers={"X-Shopify-Access-Token": token} if token else {})


@hookimpl
async def test_connection(ctx):
    shop = read_json(await ctx.http.get(ctx.url("api", path="/shop.json")), "shop")
    domain = shop.get("myshopify_domain")
    return {"account": domain, "shop": domain, "name": shop.get("name"), "plan": shop.get("plan_name")}


@hookimpl
async def disconnect(ctx):
    if ctx.extra.get("account_shared"):
        return False  # uninstalling would cut off the other connections to the shop
    await ctx.http.delete(ctx.url("revoke"))
    return True


# ---------------------------------------------------------------- CRUD


def _number(value: Any, name: str) -> str:
    text = str(value)
    if not (text.isascii() and text.isdigit()):
        raise ValidationFailed(f"{name} must be a Shopify id (a number)", code="invalid_id")
    return text


def _resource(entity: str) -> tuple[str, str]:
    try:
        return RESOURCES[entity]
    except KeyError:
        raise NotFound(f"Shopify has no entity {entity!r}", code="unknown_entity") from None


def _record_path(entity: str, record_id: str, write: bool = False) -> tuple[str, str]:
    if write and entity not in WRITABLE:
        raise ReadOnly(f"Shopify does not allow writing {entity}")
    if not (record_id.isascii() and record_id.isdigit()):
        raise NotFound(f"no {entity} record {record_id!r}: Shopify ids are numbers")
    resource, key = _resource(entity)
    return f"/{resource}/{record_id}.json", key


def _with_level_id(level: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"{level.get('inventory_item_id')}:{level.get('location_id')}", **level}


def _at_or_after(record: dict[str, Any], since: datetime) -> bool:
    try:
        return datetime.fromisoformat(record["updated_at"]) >= since
    except (KeyError, TypeError, ValueError):
        return True


async def _page(ctx, resource: str, page_size: int, cursor: str | None, filters: dict[str, Any]):
    """One page of ``resource`` and the ``page_info`` of the next (from the Link header)."""
    if cursor:  # with page_info Shopify accepts only limit and fields: the cursor carries the rest
        filters = {"page_info": cursor, **{k: v for k, v in filters.items() if k == "fields"}}
    response = await ctx.http.get(ctx.url("api", path=f"/{resource}.json"),
                                  params={**filters, "limit": min(page_size, MAX_LIMIT)})
    _note_version(ctx, response)
    next_url = response.links.get("next", {}).get("url")
    next_cursor = parse_qs(urlsplit(next_url).query).get("page_info", [None])[0] if next_url else None
    if next_url and not next_cursor:
        # A next page without the way to it: ending here would take the rest for deleted.
        raise ProviderError(f"Shopify linked a next page of {resource} without its page_info")
    return read_json(response, resource.rsplit("/", 1)[-1]), next_cursor


_versions_noted: set[tuple[str, str]] = set()


def _note_version(ctx, response) -> None:
    """Warn (once a process) when Shopify served another API version than the
    one asked for (it was retired: the answers follow a newer schema than the
    plugin's), or says the call is deprecated."""
    asked = next(iter(re.findall(r"/admin/api/([^/]+)/", urlsplit(str(response.request.url)).path)), None)
    served = response.headers.get("X-Shopify-API-Version")
    deprecated = response.headers.get("X-Shopify-API-Deprecated-Reason")
    for note in ((asked, served) if served and asked and served != asked else None,
                 ("deprecated", deprecated) if deprecated else None):
        if note and note not in _versions_noted:
            _versions_noted.add(note)
            if note[0] == "deprecated":
                log.warning("Shopify says a call of %s is deprecated: %s", ctx.config.get("shop"), deprecated)
            else:
                log.warning("Shopify served API version %s for %s instead of %s, which it no longer supports: set "
                            "HUB_SHOPIFY_API_VERSION to a supported version (or upgrade hub-shopify)",
                            served, ctx.config.get("shop"), asked)


#: Most ids Shopify takes in inventory_levels.json's location_ids (and inventory_item_ids).
LOCATION_GROUP = 50
#: A cursor of the every-location listing of inventory levels: ``loc:<id>:<page_info>``, the
#: last (highest) location id of the group being listed and Shopify's page_info of its next
#: page, empty for "the group of locations after that id". Shopify's page_info is URL-safe
#: base64, without ``:``; a bare one is a cursor of the version that listed every location
#: at once, still followed to the end of its pass.
GROUP_CURSOR = "loc:"
GROUP_CURSOR_FORMAT = re.compile(r"loc:([0-9]{1,20}):([^:]*)")
MAX_LOCATION_PAGES = 100  # of 250: more locations than any shop has


async def _locations_after(ctx, after: int) -> list[int]:
    """The ids of the shop's locations above ``after``, ascending."""
    ids: set[int] = set()
    cursor = None
    for _ in range(MAX_LOCATION_PAGES):
        locations, cursor = await _page(ctx, "locations", MAX_LIMIT, cursor, {"fields": "id"})
        ids.update(int(loc["id"]) for loc in locations if str(loc.get("id", "")).isdigit())
        if not cursor:
            break
    else:
        raise ProviderError(f"Shopify listed more than {MAX_LOCATION_PAGES * MAX_LIMIT} locations")
    return sorted(i for i in ids if i > after)


async def _levels_by_location_group(ctx, page_size: int, cursor: str | None, filters: dict[str, Any]) -> Page:
    """Every location's inventory levels: Shopify takes at most 50 location_ids, so the
    locations are listed in groups of 50 by ascending id, each paged with its page_info.

    The cursor holds positions, not indexes: the last location id of the group and
    Shopify's page_info in it; the next group is the 50 locations above that id as the
    shop has them then. A location added during a pass (ids only grow) falls in a later
    group of the pass, or in the next pass; one removed shifts nothing."""
    if cursor:
        match = GROUP_CURSOR_FORMAT.fullmatch(cursor)
        if not match:
            raise ValidationFailed("not an inventory levels cursor this plugin handed out", code="invalid_cursor")
        after, page_info = int(match.group(1)), match.group(2)
        if page_info:  # within a group: Shopify's page_info carries its location_ids
            records, next_info = await _page(ctx, "inventory_levels", page_size, page_info, filters)
            return Page(records=[_with_level_id(level) for level in records],
                        next_cursor=f"{GROUP_CURSOR}{after}:{next_info or ''}")
    else:
        after = 0
    remaining = await _locations_after(ctx, after)
    while remaining:  # groups whose locations stock nothing give no page of their own
        group, remaining = remaining[:LOCATION_GROUP], remaining[LOCATION_GROUP:]
        records, next_info = await _page(ctx, "inventory_levels", page_size, None,
                                         {**filters, "location_ids": ",".join(map(str, group))})
        if records or next_info:
            last = group[-1]
            next_cursor = (f"{GROUP_CURSOR}{last}:{next_info}" if next_info
                           else f"{GROUP_CURSOR}{last}:" if remaining else None)
            return Page(records=[_with_level_id(level) for level in records], next_cursor=next_cursor)
    return Page(records=[], next_cursor=None)


@hookimpl
async def list_records(ctx, entity, cursor, page_size, filters, since):
    resource, _ = _resource(entity)
    if entity == "fulfillments" and "order_id" in filters:
        _number(filters["order_id"], "order_id")  # (empty, it would list every order's as if filtered)
    if entity == "fulfillments" and not filters.get("order_id") and (others := sorted(set(filters) - {"order_id"})):
        # (Read from the orders then, they would filter the orders, not their fulfillments.)
        raise ValidationFailed(f"fulfillments take {', '.join(others)} only with order_id: without it they are "
                               f"read from the orders they belong to", code="unknown_filter", fields=others)
    filters = {**DEFAULT_FILTERS.get(entity, {}), **filters}
    if since and entity in SINCE:
        since = since if since.tzinfo else since.replace(tzinfo=timezone.utc)
        filters["updated_at_min"] = since.isoformat()
    if entity == "fulfillments" and not filters.get("order_id"):
        # Shopify lists fulfillments per order only: the shop's come embedded in its orders.
        orders, next_cursor = await _page(ctx, "orders", page_size, cursor,
                                          {**filters, "status": "any", "fields": "id,created_at,fulfillments"})
        # Each with its order's creation time: it is listed as long as its order is (60 days).
        return Page(records=[{**f, "order_created_at": o.get("created_at")} for o in orders
                             for f in o.get("fulfillments") or [] if not since or _at_or_after(f, since)],
                    next_cursor=next_cursor)
    if entity == "fulfillments":
        resource = f"orders/{_number(filters.pop('order_id'), 'order_id')}/fulfillments"
    chosen = filters.get("inventory_item_ids") or filters.get("location_ids")
    if entity == "inventory_levels" and not chosen and (not cursor or cursor.startswith(GROUP_CURSOR)):
        return await _levels_by_location_group(ctx, page_size, cursor, filters)
    if entity == "inventory_levels" and cursor and cursor.startswith(GROUP_CURSOR):
        raise ValidationFailed("this cursor lists every location's inventory levels: ask again without "
                               "location_ids or inventory_item_ids", code="invalid_cursor")
    records, next_cursor = await _page(ctx, resource, page_size, cursor, filters)
    if entity == "inventory_levels":
        records = [_with_level_id(level) for level in records]
    return Page(records=records, next_cursor=next_cursor)


@hookimpl
async def get_record(ctx, entity, record_id):
    if entity == "inventory_levels":
        item, _, location = record_id.partition(":")
        if not (f"{item}{location}".isascii() and item.isdigit() and location.isdigit()):
            raise NotFound(f"no inventory level {record_id!r}: ids are <inventory_item_id>:<location_id>")
        levels = read_json(await ctx.http.get(ctx.url("api", path="/inventory_levels.json"), params={
            "inventory_item_ids": item, "location_ids": location}), "inventory_levels")
        if not levels:
            raise NotFound(f"no inventory level {record_id!r}")
        return _with_level_id(levels[0])
    if entity == "fulfillments":
        raise NotFound("Shopify fetches fulfillments through their order: list fulfillments with the "
                       "order_id filter", code="fulfillment_needs_order")
    path, key = _record_path(entity, record_id)
    return read_json(await ctx.http.get(ctx.url("api", path=path)), key)


@hookimpl
async def create_record(ctx, entity, data):
    if entity not in WRITABLE:
        raise ReadOnly(f"Shopify does not allow creating {entity} this way")
    resource, key = _resource(entity)
    return read_json(await ctx.http.post(ctx.url("api", path=f"/{resource}.json"), json={key: data}), key)


#: Variants of one product the REST Admin API shows; a product may have up to 2,048 (the rest
#: only GraphQL shows), and an update naming variants keeps only those it names.
REST_VARIANTS = 100


@hookimpl
async def update_record(ctx, entity, record_id, data):
    path, key = _record_path(entity, record_id, write=True)
    if entity == "products" and "variants" in data:
        count = read_json(await ctx.http.get(ctx.url("api", path=f"/products/{record_id}/variants/count.json")),
                          "count")
        if isinstance(count, int) and count > REST_VARIANTS:
            # Sent, the variants the hub cannot see would be deleted at Shopify.
            raise ValidationFailed(
                f"this product has {count} variants, and Shopify's REST API, which the hub uses, shows "
                f"{REST_VARIANTS}: changing its variants here would delete the others at Shopify. Change its "
                f"variants in Shopify, or leave variants out of the change", code="too_many_variants",
                fields=["variants"])
    return read_json(await ctx.http.put(ctx.url("api", path=path), json={key: {**data, "id": int(record_id)}}), key)


@hookimpl
async def delete_record(ctx, entity, record_id):
    path, _ = _record_path(entity, record_id, write=True)
    await ctx.http.delete(ctx.url("api", path=path))
    return True


#: Answers about the shop itself, which last until its owner acts: the connection is in error
#: with Shopify's reason rather than each call failing as the provider's own error (502).
SHOP_UNAVAILABLE = {
    402: ("shop_frozen", "Shopify: the shop is frozen (its bill is unpaid): nothing can be read or written "
                         "until its owner pays it"),
    423: ("shop_locked", "Shopify: the shop is locked (by Shopify, or closed by its owner): nothing can be read or "
                         "written until it is unlocked"),
}


@hookimpl
def describe_error(response):
    if response.status_code in SHOP_UNAVAILABLE:
        code, message = SHOP_UNAVAILABLE[response.status_code]
        return AuthFailed(message, code=code, account_refused=True)
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    errors = body.get("errors") or body.get("error_description") or body.get("error")
    if isinstance(errors, dict):  # 422: {"errors": {"title": ["can't be blank"]}}
        message = "; ".join(str(msg) if field == "base" else f"{field} {msg}" for field, msgs in errors.items()
                            for msg in (msgs if isinstance(msgs, list) else [msgs]))
        if response.status_code in (400, 422):
            fields = {str(field): [str(m) for m in (msgs if isinstance(msgs, list) else [msgs])]
                      for field, msgs in errors.items()}
            return ValidationFailed(message, details={"fields": fields},
                                    fields=[field for field in fields if field != "base"])
        return message
    if isinstance(errors, list):
        return "; ".join(map(str, errors))
    return str(errors) if errors else None


# ---------------------------------------------------------------- actions


async def _inventory_levels(ctx, params):
    query = {k: params[k] for k in ("inventory_item_ids", "location_ids") if params.get(k)}
    response = await ctx.http.get(ctx.url("api", path="/inventory_levels.json"), params={**query, "limit": MAX_LIMIT})
    return {"inventory_levels": read_json(response, "inventory_levels")}


async def _adjust_inventory(ctx, params):
    body = {k: int(_number(params[k], k)) for k in ("inventory_item_id", "location_id")}
    try:
        body["available_adjustment"] = int(params["available_adjustment"])
    except (TypeError, ValueError):
        raise ValidationFailed("available_adjustment must be an integer", code="invalid_params") from None
    response = await ctx.http.post(ctx.url("api", path="/inventory_levels/adjust.json"), json=body)
    return {"inventory_level": read_json(response, "inventory_level")}


async def _create_fulfillment(ctx, params):
    order_id = _number(params["order_id"], "order_id")
    orders = read_json(await ctx.http.get(ctx.url("api", path=f"/orders/{order_id}/fulfillment_orders.json")),
                     "fulfillment_orders")
    todo = [{"fulfillment_order_id": fo["id"]} for fo in orders if fo.get("status") in ("open", "in_progress")]
    if not todo:
        raise ValidationFailed(f"order {order_id} has nothing left to fulfil", code="nothing_to_fulfill")
    tracking = {k: params[f"tracking_{k}"] for k in ("number", "company", "url") if params.get(f"tracking_{k}")}
    body = {"fulfillment": {"line_items_by_fulfillment_order": todo, "tracking_info": tracking,
                            "notify_customer": bool(params.get("notify_customer"))}}
    return {"fulfillment": read_json(await ctx.http.post(ctx.url("api", path="/fulfillments.json"), json=body), "fulfillment")}


async def _list_locations(ctx, params):
    return {"locations": read_json(await ctx.http.get(ctx.url("api", path="/locations.json")), "locations")}


ACTION_HANDLERS = {"inventory_levels": _inventory_levels, "adjust_inventory": _adjust_inventory,
                   "create_fulfillment": _create_fulfillment, "list_locations": _list_locations}


@hookimpl
async def run_action(ctx, action, params):
    return await ACTION_HANDLERS[action](ctx, params)


# ---------------------------------------------------------------- webhooks


def _delivery_shop(request) -> str:
    return (request.header("X-Shopify-Shop-Domain") or "").strip().lower()


@hookimpl
def webhook_connection_key(request):
    """Deliveries name their shop in ``X-Shopify-Shop-Domain``; a connection is keyed by its shop."""
    return _delivery_shop(request) or None


#: How far ahead of the hub's clock a delivery's time may be.
CLOCK_SKEW_SECONDS = 300


#: The mandatory privacy topics: Shopify sends them for shops the app no longer has.
COMPLIANCE_TOPICS = frozenset(("customers/redact", "shop/redact", "customers/data_request"))


def _signed_by_the_app(ctx, request) -> bool:
    digest = hmac.new(ctx.setting("client_secret").encode(), request.body, hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(digest), (request.header("X-Shopify-Hmac-Sha256") or "").encode())


def _triggered_at(ctx, request) -> datetime:
    """The delivery's time, within the tolerance (5 hours of retries) in the past and
    :data:`CLOCK_SKEW_SECONDS` in the future; ``webhook_stale`` outside it."""
    try:
        triggered = datetime.fromisoformat(request.header("X-Shopify-Triggered-At") or "")
    except ValueError:
        raise WebhookRejected("malformed delivery: triggered-at time") from None
    triggered = triggered if triggered.tzinfo else triggered.replace(tzinfo=timezone.utc)
    # Unsigned, and a deletion's version: a delivery dated ahead would outrank real
    # updates, so ahead only clock skew is allowed (retries make old ones legitimate).
    age = (datetime.now(timezone.utc) - triggered).total_seconds()
    if age > ctx.provider.webhook_tolerance_seconds or -age > CLOCK_SKEW_SECONDS:
        raise WebhookRejected("the delivery's triggered-at time is outside the tolerance", code="webhook_stale")
    return triggered


@hookimpl
def verify_app_webhook(ctx, request):
    """A privacy delivery for a shop the hub no longer holds (``shop/redact`` 48 hours after
    an uninstall, its connection deleted) is acknowledged when the app signed it. Other
    topics are refused, so Shopify retries one that comes while its shop is being connected;
    a stale one is ``webhook_stale``, as for a shop that has a connection."""
    if not _signed_by_the_app(ctx, request):
        return False
    _triggered_at(ctx, request)
    return request.header("X-Shopify-Topic") in COMPLIANCE_TOPICS


@hookimpl
async def verify_webhook(ctx, request):
    """A delivery is accepted when its ``X-Shopify-Hmac-Sha256`` (keyed with the app's
    client secret) matches the raw body, its ``X-Shopify-Shop-Domain`` is the
    connection's shop, and its ``X-Shopify-Triggered-At`` is at most the tolerance
    (5 hours of retries) in the past and :data:`CLOCK_SKEW_SECONDS` in the future. The secret is the same for every shop that installed the app,
    so the signature alone does not say which shop a delivery belongs to."""
    if not _signed_by_the_app(ctx, request):
        raise WebhookRejected("signature does not match")
    shop = _delivery_shop(request)
    if not shop or shop != str(ctx.config.get("shop") or "").lower():
        raise WebhookRejected("the delivery is for another shop than the connection's")
    triggered = _triggered_at(ctx, request)
    try:
        payload = json.loads(request.body)
    except (ValueError, RecursionError):
        raise WebhookRejected("malformed delivery: body") from None
    resource, _, verb = (request.header("X-Shopify-Topic") or "").partition("/")
    if not (resource and verb and isinstance(payload, dict)):
        raise WebhookRejected("malformed delivery: topic or body")
    dedup_key = (request.header("X-Shopify-Event-Id") or request.header("X-Shopify-Webhook-Id")
                 or hashlib.sha256(request.body).hexdigest())
    if resource in ("customers", "shop") and verb in ("redact", "data_request"):
        return _compliance_events(dedup_key, resource, verb, payload, triggered)
    if (resource, verb) == ("app", "uninstalled"):
        # The shop removed the app: its access token no longer works. Unless it does: the shop was
        # connected again since (a delivery Shopify retried late; one captured and sent again, whose
        # event id and time, unsigned, were changed).
        if await _still_installed(ctx):
            return []
        return [WebhookEvent(dedup_key=dedup_key, type="app.uninstalled", action=CONNECTION_BROKEN,
                             occurred_at=triggered, raw=payload,
                             message="the app was uninstalled from the shop: connect the shop again (OAuth)")]
    action = VERBS.get(verb, "changed")
    if resource == "inventory_levels":
        payload = _with_level_id(payload)
    # collections/* come for smart collections too, and nothing in the body tells them from custom
    # ones (the entity): the record is not taken from it; the hub pulls custom collections instead.
    carries_record = action != "deleted" and resource != "collections"
    return [WebhookEvent(
        dedup_key=dedup_key, type=f"{resource.removesuffix('s')}.{VERBS.get(verb, verb)}",
        entity=resource if resource in RESOURCES else None, action=action,
        record_id=None if payload.get("id") is None else str(payload["id"]),
        record=payload if carries_record else None, occurred_at=triggered, raw=payload,
    )]


async def _still_installed(ctx) -> bool:
    """Whether the connection's token still works (one call, on an uninstall
    only). Not known (Shopify unavailable): the signed delivery is taken at
    its word."""
    try:
        await ctx.http.get(ctx.url("api", path="/shop.json"))
    except HubError:
        return False
    return True


def _compliance_events(dedup_key: str, resource: str, verb: str, payload: dict[str, Any],
                       occurred: datetime) -> list[WebhookEvent]:
    """Shopify's mandatory privacy topics. ``customers/redact`` erases the
    customer and the orders it names; ``shop/redact`` (48 hours after the app
    was uninstalled) every record of the shop; ``customers/data_request`` is
    kept for the tenant's app to answer (the ids only), as the hub holds no
    more than the shop does. None keeps the person's details in its body."""
    customer = payload.get("customer") if isinstance(payload.get("customer"), dict) else {}
    listed = payload.get("orders_to_redact") or payload.get("orders_requested")
    orders = [i for i in map(_shopify_id, listed if isinstance(listed, list) else []) if i]
    if verb == "data_request":
        asked = {"customer_id": _shopify_id(customer.get("id")), "orders_requested": orders,
                 "data_request_id": (payload.get("data_request") or {}).get("id")
                 if isinstance(payload.get("data_request"), dict) else None}
        return [WebhookEvent(dedup_key=dedup_key, type="customer.data_request", occurred_at=occurred, raw=asked)]
    if resource == "shop":
        return [WebhookEvent(dedup_key=dedup_key, type="shop.redact", action=REDACTED, occurred_at=occurred)]
    erased = [("customers", _shopify_id(customer.get("id")))] + [("orders", order) for order in orders]
    return [WebhookEvent(dedup_key=f"{dedup_key}:{entity}:{record_id}", type=f"{entity.removesuffix('s')}.redact",
                         entity=entity, action=REDACTED, record_id=record_id, occurred_at=occurred)
            for entity, record_id in erased if record_id]


def _shopify_id(value: Any) -> str | None:
    """A Shopify id (a number, or its digits) as the hub keeps it; None for anything else."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return str(value)
    return value if isinstance(value, str) and value.isascii() and value.isdigit() else None


def topic(event_type: str) -> str:
    """The Shopify topic of a hub event type (``order.created`` -> ``orders/create``)."""
    if "/" in event_type:
        return event_type
    name, _, action = event_type.partition(".")
    resource = f"{name}s" if f"{name}s" in RESOURCES else name
    verb = {"created": "create", "updated": "update", "deleted": "delete"}.get(action, action)
    return "orders/updated" if (resource, verb) == ("orders", "update") else f"{resource}/{verb}"


@hookimpl
async def register_webhook(ctx, url, events):
    topics = list(dict.fromkeys(topic(e) for e in events)) or list(DEFAULT_TOPICS)
    existing = read_json(await ctx.http.get(ctx.url("api", path="/webhooks.json"), params={"address": url, "limit": MAX_LIMIT}),
                       "webhooks")
    ids = {w.get("topic"): w.get("id") for w in existing if isinstance(w, dict) and w.get("address") == url}
    for name in topics:
        if name not in ids:
            body = {"webhook": {"topic": name, "address": url, "format": "json"}}
            ids[name] = read_json(await ctx.http.post(ctx.url("api", path="/webhooks.json"), json=body), "webhook").get("id")
    return {"id": ",".join(str(ids[name]) for name in topics), "topics": {name: ids[name] for name in topics}}
