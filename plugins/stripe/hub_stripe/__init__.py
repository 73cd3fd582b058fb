"""Stripe: payments, billing and payouts through the v1 REST API.

Secret-key auth (``Authorization: Bearer sk_…``) with the API version pinned
by ``Stripe-Version``; form-encoded writes with bracket notation; cursor
pagination with ``starting_after``; an ``Idempotency-Key`` on every create;
``Stripe-Signature`` webhooks. The fake server is :mod:`hub_stripe.testing`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import quote

from hub import hookimpl
from hub.types import (
    Action,
    EntityField,
    EntitySchema,
    NotFound,
    Page,
    PermissionDenied,
    ProviderError,
    ProviderInfo,
    ProviderUnavailable,
    RateLimit,
    RequestAuth,
    ValidationFailed,
    WebhookEvent,
    WebhookRejected,
    signed_unix_time,
)

STRIPE_VERSION = "2020-08-27"

INFO = ProviderInfo(
    name="stripe",
    label="Stripe",
    category="payments",
    auth_type="api_key",
    description="Customers, payments, invoices, subscriptions, products, payouts and balance.",
    logo="https://stripe.com/favicon.ico",
    urls={"api": "https://api.stripe.com/v1"},
    # Test mode allows 25 requests per second (live mode 100: set the provider
    # settings requests_per_second and burst). Stripe's 429s carry no
    # Retry-After, so the core backs off exponentially.
    rate_limit=RateLimit(requests_per_second=25, burst=25),
    supports_webhooks=True,
    config_fields=(
        EntityField("account", "Connected account", description="acct_… to act on through Stripe Connect"),
    ),
    credential_fields=(
        EntityField("api_key", "Secret key", required=True, description="sk_test_…, sk_live_… or rk_…"),
        EntityField("webhook_secret", "Webhook signing secret", description="whsec_… of the webhook endpoint"),
    ),
    webhook_key_config="account",
    idempotent_creates=True,
    idempotency_key_seconds=24 * 3600,  # (Stripe prunes keys after at least 24 hours)
    # Amounts are in the currency's smallest unit; these two count otherwise than ISO 4217
    # (https://docs.stripe.com/currencies: MGA is zero-decimal, ISK is sent as two-decimal).
    minor_units={"MGA": 0, "ISK": 2},
)

SINCE = ("Stripe filters lists on creation time only: `since` returns the records created at or after it "
         "(created[gte]), not those updated since.")
# entity: (label, create, update, delete, note)
ENTITIES = {
    "customers": ("Customers", True, True, True, ""),
    "payment_intents": ("Payment intents", True, True, False, "Confirm with the confirm_payment_intent action."),
    "invoices": ("Invoices", True, True, True, "Only drafts can be deleted; create_invoice adds line items."),
    "subscriptions": ("Subscriptions", True, True, True, "Deleting a subscription cancels it."),
    "products": ("Products", True, True, True, ""),
    "prices": ("Prices", True, True, False, ""),
    "charges": ("Charges", True, True, False, ""),
    "payouts": ("Payouts", True, True, False, ""),
    "balance_transactions": ("Balance transactions", False, False, False, ""),
}
FIELDS = json.loads(resources.files(__name__).joinpath("fields.json").read_text())

ACTIONS = [
    Action("create_payment_intent", "Create a payment intent", "Create (and with confirm, charge) a PaymentIntent.", (
        EntityField("amount", "Amount", "integer", required=True, description="In the currency's minor unit"),
        EntityField("currency", "Currency", required=True, description="Three-letter ISO code, lowercase"),
        EntityField("customer", "Customer"), EntityField("payment_method", "Payment method"),
        EntityField("confirm", "Confirm now", "boolean"), EntityField("description", "Description"),
        EntityField("metadata", "Metadata", "object"))),
    Action("confirm_payment_intent", "Confirm a payment intent", "Attempt the payment of a PaymentIntent.", (
        EntityField("id", "Payment intent id", required=True), EntityField("payment_method", "Payment method"))),
    Action("create_invoice", "Create an invoice", "Create invoice items for a customer, then the draft invoice.", (
        EntityField("customer", "Customer", required=True),
        EntityField("items", "Items", "array", description="[{price, quantity} or {amount, currency, description}]"),
        EntityField("description", "Description"), EntityField("collection_method", "Collection method"),
        EntityField("days_until_due", "Days until due", "integer"),
        EntityField("auto_advance", "Auto advance", "boolean"), EntityField("metadata", "Metadata", "object"))),
    Action("finalize_invoice", "Finalize an invoice", "Turn a draft invoice into an open one.", (
        EntityField("id", "Invoice id", required=True), EntityField("auto_advance", "Auto advance", "boolean"))),
    Action("balance", "Balance", "The account's available and pending balance.", readonly=True),
    Action("balance_transactions", "Recent balance transactions", "The latest balance transactions.", (
        EntityField("limit", "Limit", "integer", description="1 to 100, default 10"),
        EntityField("type", "Type", description="charge, refund, payout, ...")), readonly=True),
]


# ---------------------------------------------------------------- schema


@hookimpl
def provider_info():
    return INFO


def _entity_field(spec: dict[str, Any]) -> EntityField:
    """A field of fields.json, with its sub-fields (the spec's object shapes)."""
    return EntityField(**{**spec, "fields": tuple(_entity_field(f) for f in spec.get("fields", ()))})


@hookimpl
def entity_schemas():
    return [
        EntitySchema(name, label, tuple(_entity_field(f) for f in FIELDS[name]), description=f"{note} {SINCE}".strip(),
                     updated_field="updated" if name == "products" else None, supports_create=create,
                     supports_update=update, supports_delete=delete, supports_since=True, since_on_creation=True)
        for name, (label, create, update, delete, note) in ENTITIES.items()
    ]


@hookimpl
def provider_actions():
    return ACTIONS


# ---------------------------------------------------------------- auth


@hookimpl
def request_auth(ctx):
    headers = {"Authorization": f"Bearer {ctx.credentials.get('api_key', '')}", "Stripe-Version": STRIPE_VERSION}
    if ctx.config.get("account"):
        headers["Stripe-Account"] = ctx.config["account"]
    return RequestAuth(headers=headers)


@hookimpl
def describe_error(response):
    try:
        error = response.json()["error"]
        message = error.get("message") or error.get("code") or error["type"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if error.get("param"):
        message = f"{message} (param: {error['param']})"
    details = {k: error[k] for k in ("type", "code", "decline_code", "param") if error.get(k)}
    if response.headers.get("Stripe-Should-Retry") == "true":
        # Stripe says the same request may succeed later (a 409: another request with this
        # idempotency key still in progress): passing, not the data's fault.
        return ProviderUnavailable(f"{message}; try again", retry_now=True)
    if response.status_code == 402:
        return ValidationFailed(message, code=error.get("code") or "card_error", details=details)
    if error.get("type") == "idempotency_error":
        # The key was used with other parameters (or is still in use): not the data's fault.
        return ValidationFailed(message, code="idempotency_key_reused", details=details)
    if response.status_code == 400 and error.get("param"):
        return ValidationFailed(message, details=details, fields=[field_path(str(error["param"]))])
    return message


def field_path(param: str) -> str:
    """A Stripe parameter name as a path into its objects: ``address[city]``
    is ``address.city``, ``items[0][price]`` is ``items.0.price``."""
    return param.replace("][", ".").replace("[", ".").rstrip("]")


@hookimpl
async def test_connection(ctx):
    # A restricted key (rk_) is given each resource separately: one without Balance read
    # still serves what it was given, its mode told by its prefix.
    try:
        balance = await ctx.http.json("GET", ctx.url(path="/balance"))
    except PermissionDenied:
        livemode, currencies = "_live_" in str(ctx.credentials.get("api_key") or ""), None
    else:
        livemode = balance.get("livemode")
        currencies = sorted({str(amount.get("currency")) for amount in balance.get("available", [])})
    details = {"livemode": livemode, "currencies": currencies}
    try:
        # The connected account with Stripe-Account, else the key's own.
        account = await ctx.http.json("GET", ctx.url(path="/account"))
    except PermissionDenied:
        return details  # a restricted key without the account's read permission cannot tell
    # Test and live mode are two data sets of one account id.
    mode = "live" if livemode else "test"
    return {**details, "account": f"{account['id']} ({mode} mode)", "name": _account_name(account)}


def _account_name(account: dict[str, Any]) -> str | None:
    profile = account.get("business_profile") or {}
    dashboard = (account.get("settings") or {}).get("dashboard") or {}
    return profile.get("name") or dashboard.get("display_name") or account.get("email")


# ---------------------------------------------------------------- CRUD


#: Without status=all Stripe leaves canceled subscriptions out of its lists
#: (while still answering for them one by one): a full pass took them for deleted.
DEFAULT_FILTERS = {"subscriptions": {"status": "all"}}
#: Entities whose deletion at Stripe leaves the object listed (a subscription is canceled).
KEPT_WHEN_DELETED = {"subscriptions"}


@hookimpl
async def list_records(ctx, entity, cursor, page_size, filters, since):
    params = {**DEFAULT_FILTERS.get(entity, {}), **filters, "limit": max(1, min(page_size, 100))}
    if cursor:
        params["starting_after"] = cursor
    if since:
        params["created"] = {"gte": int(since.timestamp())}
    records, has_more = await _list(ctx, f"/{entity}", params)
    if has_more and not records:
        # Nothing to go on from: ending here would take the rest for deleted.
        raise ProviderError(f"Stripe said more {entity} follow an empty page")
    return Page(records=records, next_cursor=records[-1]["id"] if has_more else None)


@hookimpl
async def get_record(ctx, entity, record_id):
    record = await ctx.http.json("GET", _record_url(ctx, entity, record_id))
    if record.get("deleted"):
        # Stripe still answers for a deleted customer, with {"deleted": true}.
        raise NotFound(f"{entity} {record_id} was deleted", code="not_found")
    return record


@hookimpl
async def create_record(ctx, entity, data, idempotency_key):
    return await _post(ctx, f"/{entity}", _writable(entity, data), idempotency_key)


@hookimpl
async def update_record(ctx, entity, record_id, data):
    path = _record_path(entity, record_id)
    removed: list[dict[str, Any]] = []
    if entity == "subscriptions" and isinstance(data.get("items"), dict):
        # The list object as read (what sync holds) is the whole set: items it no longer has go.
        listed = {item.get("id") for item in data["items"].get("data") or [] if isinstance(item, dict)}
        current = await ctx.http.json("GET", ctx.url(path=path))
        removed = [{"id": item["id"], "deleted": True, **({"clear_usage": True} if _metered(item) else {})}
                   for item in (current.get("items") or {}).get("data") or []
                   if isinstance(item, dict) and item.get("id") not in listed]
    changes = _writable(entity, data)
    if removed:
        changes["items"] = changes["items"] + removed
    # A key of its own, so that the core's retries of this call after a lost answer apply it
    # once: an update adding a subscription item (one without an id) would add it twice.
    return await _post(ctx, path, changes, uuid.uuid4().hex)


#: What a subscription item change takes of an item as Stripe reads it.
SUBSCRIPTION_ITEM_FIELDS = ("id", "price", "quantity", "metadata", "tax_rates", "billing_thresholds", "deleted")


def _writable(entity: str, data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as Stripe's create and update take it.

    A subscription's ``items`` reads as a list object (``{"object": "list",
    "data": [...]}``) and is written as an array of item changes: an item with
    an ``id`` is changed (``"deleted": true`` removes it), one without is
    added. Given the list object (as read, and as sync sends it), an update
    also removes the items it no longer holds; given an array of changes,
    items left out stay.
    """
    if entity != "subscriptions" or "items" not in data:
        return data
    items = data["items"]
    if isinstance(items, dict):
        items = items.get("data")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValidationFailed("a subscription's items must be a list of subscription items",
                               code="invalid_items", fields=["items"])
    return {**data, "items": [_item_change(item) for item in items]}


def _metered(item: dict[str, Any]) -> bool:
    """A metered item's usage must be cleared for Stripe to delete it."""
    price = item.get("price")
    recurring = price.get("recurring") if isinstance(price, dict) else None
    return isinstance(recurring, dict) and recurring.get("usage_type") == "metered"


def _item_change(item: dict[str, Any]) -> dict[str, Any]:
    change = {key: item[key] for key in SUBSCRIPTION_ITEM_FIELDS if item.get(key) is not None}
    price = change.get("price") or item.get("plan")  # (items of 2020-08-27 also carry the price as ``plan``)
    if isinstance(price, dict):  # read expanded: the price object
        price = price.get("id")
    if price:
        change["price"] = price
    if isinstance(change.get("tax_rates"), list):
        change["tax_rates"] = [rate.get("id") if isinstance(rate, dict) else rate for rate in change["tax_rates"]]
    return change


@hookimpl
async def delete_record(ctx, entity, record_id):
    answer = await ctx.http.json("DELETE", _record_url(ctx, entity, record_id))
    # A subscription is canceled, not removed: Stripe answers it as it now is, for the hub to keep.
    return answer if entity in KEPT_WHEN_DELETED and isinstance(answer, dict) else True


@hookimpl
async def run_action(ctx, action, params):
    params = dict(params)
    key = params.pop("idempotency_key", None) or uuid.uuid4().hex
    if action == "create_payment_intent":
        return await _post(ctx, "/payment_intents", params, key)
    if action == "confirm_payment_intent":
        intent = quote(str(params.pop("id")), safe="")
        return await _post(ctx, f"/payment_intents/{intent}/confirm", params, key)
    if action == "create_invoice":
        items = params.pop("items", None) or []
        if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
            raise ValidationFailed("items must be a list of objects", code="invalid_items")
        for index, item in enumerate(items):
            await _post(ctx, "/invoiceitems", {**item, "customer": params["customer"]}, f"{key}-item-{index}")
        return await _post(ctx, "/invoices", params, f"{key}-invoice")
    if action == "finalize_invoice":
        invoice = quote(str(params.pop("id")), safe="")
        return await _post(ctx, f"/invoices/{invoice}/finalize", params, key)
    if action == "balance":
        return await ctx.http.json("GET", ctx.url(path="/balance"))
    if action == "balance_transactions":
        query = {"limit": params.get("limit") or 10, **({"type": params["type"]} if params.get("type") else {})}
        data, has_more = await _list(ctx, "/balance_transactions", query)
        return {"data": data, "has_more": has_more}
    raise ValidationFailed(f"unknown Stripe action {action!r}", code="unknown_action")


async def _list(ctx, path: str, params: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    body = await ctx.http.json("GET", ctx.url(path=path), params=encode(params))
    listed = body if isinstance(body, dict) else {}
    data, has_more = listed.get("data"), listed.get("has_more")
    if not isinstance(data, list) or not isinstance(has_more, bool):
        raise ProviderError(f"Stripe answered {path} without a list (data and has_more)")
    return data, has_more


async def _post(ctx, path: str, data: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
    return await ctx.http.json("POST", ctx.url(path=path), data=form(data),
                               headers={"Idempotency-Key": idempotency_key})


def _record_path(entity: str, record_id: str) -> str:
    return f"/{entity}/{quote(str(record_id), safe='')}"


def _record_url(ctx, entity: str, record_id: str) -> str:
    return ctx.url(path=_record_path(entity, record_id))


def encode(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding: ``{"metadata": {"k": "v"}}`` -> ``metadata[k]=v``,
    lists of objects as ``items[0][price]=…``, lists of values as ``expand[]=…``,
    booleans as ``true``/``false``, datetimes as Unix time, and ``None`` or an
    empty dict or list as ``""`` (Stripe's way to unset a field)."""
    pairs: list[tuple[str, str]] = []
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, dict) and value:
            pairs += encode(value, name)
        elif isinstance(value, (list, tuple)) and value:
            for index, item in enumerate(value):
                pairs += encode({index: item}, name) if isinstance(item, dict) else encode({"": item}, name)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif isinstance(value, datetime):
            pairs.append((name, str(int(value.timestamp()))))
        else:
            pairs.append((name, "" if value is None or value in ({}, []) else str(value)))
    return pairs


def form(data: dict[str, Any]) -> dict[str, list[str]]:
    """:func:`encode` as the mapping httpx form-encodes (repeated keys as lists)."""
    fields: dict[str, list[str]] = {}
    for key, value in encode(data):
        fields.setdefault(key, []).append(value)
    return fields


# ---------------------------------------------------------------- webhooks


@hookimpl
def webhook_connection_key(request):
    try:
        account = json.loads(request.body).get("account")
    except (ValueError, AttributeError, RecursionError):
        return None
    return account if isinstance(account, str) else None


@hookimpl
def verify_webhook(ctx, request):
    secret = ctx.credentials.get("webhook_secret")
    if not secret:
        raise WebhookRejected("the connection has no webhook signing secret: register the webhook or set one")
    timestamp, signatures = _parse_signature(request.header("Stripe-Signature") or "")
    expected = sign(secret, timestamp, request.body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookRejected("Stripe-Signature does not match the payload")
    if abs(time.time() - timestamp) > ctx.provider.webhook_tolerance_seconds:
        raise WebhookRejected("the delivery's timestamp is outside the tolerance", code="webhook_stale")
    try:
        event = json.loads(request.body)
        if (event.get("account") or None) != (ctx.config.get("account") or None):  # ("" sent as no account)
            # A Connect endpoint signs every connected account's events with its one secret: one
            # of another account than the connection's (or a platform's own, none) is not its.
            raise WebhookRejected(f"the event is of Stripe account {event.get('account') or 'the platform'}, "
                                  f"not this connection's", code="webhook_account_mismatch")
        obj = event["data"]["object"]
        entity = f"{obj['object']}s" if f"{obj.get('object')}s" in ENTITIES else None
        verb = event["type"].rsplit(".", 1)[1]
        occurred = datetime.fromtimestamp(int(event["created"]), tz=timezone.utc)
        dedup_key = str(event["id"])
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError, OSError, RecursionError):
        # (A created time beyond what a datetime holds is an OverflowError or OSError.)
        raise WebhookRejected("malformed Stripe event") from None
    action = (verb if verb in ("created", "deleted") else "updated") if entity else "changed"
    if entity in KEPT_WHEN_DELETED and action == "deleted":
        # A canceled subscription stays listed (status=all): stored as canceled, not as gone.
        action = "updated"
    record = obj if action != "deleted" else None
    if event.get("api_version") != STRIPE_VERSION:
        # The object is rendered in the endpoint's API version (an endpoint made in the
        # Dashboard takes the account's): another shape. The hub pulls it in the pinned one.
        record = None
    kind = f"{obj['object']}.{verb}" if entity else event["type"]
    return [WebhookEvent(dedup_key=dedup_key, type=kind, entity=entity, action=action,
                         record_id=obj.get("id"), record=record, occurred_at=occurred, raw=event)]


def _parse_signature(header: str) -> tuple[int, list[str]]:
    items = [part.split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [value for key, value in items if key.strip() == "t"]
    signatures = [value.strip() for key, value in items if key.strip() == "v1"]
    if len(timestamps) != 1 or not signatures:
        raise WebhookRejected("missing or malformed Stripe-Signature header")
    return signed_unix_time(timestamps[0]), signatures


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``v1`` signature of a delivery: hex HMAC-SHA256 of ``"{t}.{body}"``."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


@hookimpl
async def register_webhook(ctx, url, events):
    """Stripe shows an endpoint's signing secret only when creating it: an
    endpoint already at ``url`` (an earlier registration) is replaced, not
    left signing with a secret the hub no longer holds."""
    # Hub event types are Stripe's, except that subscriptions drop "customer.".
    wanted = [f"customer.{e}" if e.startswith("subscription.") else e for e in events] or ["*"]
    body = {"url": url, "enabled_events": wanted, "api_version": STRIPE_VERSION}
    endpoint = await _post(ctx, "/webhook_endpoints", body, uuid.uuid4().hex)
    # The new one first: should its creation fail, the old one still signs as the hub expects.
    await _delete_endpoints(ctx, url, keep=endpoint.get("id"))
    return {"id": endpoint.get("id"), "secret": endpoint.get("secret")}


@hookimpl
async def disconnect(ctx):
    """The API key stays the account's (shared or not); the endpoint
    delivering to this connection goes."""
    return await _delete_endpoints(ctx, ctx.webhook_url) > 0


async def _delete_endpoints(ctx, url: str, keep: str | None = None) -> int:
    """Delete the account's webhook endpoints delivering to ``url`` (but
    ``keep``); how many."""
    found, after = [], None
    while True:
        page, more = await _list(ctx, "/webhook_endpoints", {"limit": 100, **({"starting_after": after} if after else {})})
        found += [e["id"] for e in page if e.get("url") == url and e.get("id") != keep]
        if not more or not page:
            break
        after = page[-1]["id"]
    for endpoint_id in found:
        await ctx.http.json("DELETE", _record_url(ctx, "webhook_endpoints", endpoint_id))
    return len(found)
