"""HubSpot: a hub provider plugin (oauth2 auth).

The hub calls these hooks (see the Hook reference in the hub's PLUGINS.md);
``ctx.http`` is the connection's pooled client, which already authenticates
(``request_auth``), rate-limits, retries and turns error responses into hub
errors. The plugin describes endpoints and shapes, nothing more.

As rendered it talks to its fake server, ``hub_hubspot.testing``. Adapt each
``TODO(author)`` to the real provider, and the fake with it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime, timezone
from urllib.parse import quote, urlencode

from hub import hookimpl
from hub import oauth2
from hub.types import (
    EntityField,
    EntitySchema,
    Page,
    ProviderError,
    ProviderInfo,
    RateLimit,
    RequestAuth,
    WebhookEvent,
    WebhookRejected,
    signed_unix_time,
)

# TODO(author): the provider's real base URL and OAuth endpoints, and its published rate limit.
INFO = ProviderInfo(
    name="hubspot",
    label="HubSpot",
    category="crm",
    auth_type="oauth2",
    description="HubSpot CRM: contacts, companies, deals and tickets (CRM v3 API).",
    urls={
        "api": "https://api.hubspot.invalid/v1",
        "authorize": "https://api.hubspot.invalid/oauth/authorize",
        "token": "https://api.hubspot.invalid/oauth/token",
    },
    rate_limit=RateLimit(requests_per_second=20, burst=20),
    # TODO(author): only if the provider honours the Idempotency-Key header create_record sends
    # (Stripe does; HubSpot, Shopify do not). Otherwise remove this line AND the header: with it,
    # a POST is sent again after a 5xx or a timeout, and the provider would make the record twice.
    idempotent_creates=True,
    scopes=("contacts.read", "contacts.write"),
    supports_pkce=True,
    supports_webhooks=True,
)


@hookimpl
def provider_info():
    return INFO


# TODO(author): the provider's entities and their fields, with the write flags
# the provider really allows (the hub refuses the others before calling you).
@hookimpl
def entity_schemas():
    return [
        EntitySchema(
            "contacts", "Contacts",
            (
                EntityField("id", "ID", readonly=True),
                EntityField("name", "Name", required=True),
                EntityField("email", "Email"),
                EntityField("updated_at", "Updated", type="datetime", readonly=True),
            ),
            updated_field="updated_at",
            supports_create=True, supports_update=True, supports_delete=True, supports_since=True,
        ),
        EntitySchema("users", "Users", (EntityField("id", "ID", readonly=True), EntityField("name", "Name"))),
    ]


# TODO(author): the provider's authorize URL parameters (scopes, PKCE).
@hookimpl
def authorization_url(ctx, redirect_uri, state, code_challenge):
    query = {"client_id": ctx.setting("client_id"), "redirect_uri": redirect_uri, "state": state,
             "response_type": "code", "scope": " ".join(INFO.scopes)}
    if code_challenge:
        query |= {"code_challenge": code_challenge, "code_challenge_method": "S256"}
    return ctx.url("authorize") + "?" + urlencode(query)


# TODO(author): the provider's token endpoint: hub.oauth2 sends the standard
# OAuth 2 grant (client id and secret in the form, or client_auth="basic") and
# reads the standard answer; write your own where the provider differs.
@hookimpl
async def exchange_code(ctx, code, redirect_uri, code_verifier):
    return await oauth2.token_request(ctx, "authorization_code", code=code, redirect_uri=redirect_uri,
                                      code_verifier=code_verifier)


@hookimpl
async def refresh_credentials(ctx):
    return await oauth2.token_request(ctx, "refresh_token", refresh_token=ctx.credentials["refresh_token"])


# TODO(author): how the provider wants the token sent.
@hookimpl
def request_auth(ctx):
    token = ctx.credentials.get("access_token")
    return RequestAuth(headers={"Authorization": f"Bearer {token}"} if token else {})


# TODO(author): where the provider's error body keeps its message.
@hookimpl
def describe_error(response):
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None


# TODO(author): one cheap call that proves the credentials work.
@hookimpl
async def test_connection(ctx):
    account = await ctx.http.json("GET", ctx.url(path="/me"))
    # "account" is the account's id, which the hub keeps to refuse another account's credentials.
    return {"account": account["id"], "name": account["name"]}


# An early last page would make sync take the rest for deleted: a provider
# saying more follow without a way to them is a ProviderError.
# TODO(author): the provider's list endpoint, its page-size and cursor
# parameters and its modified-since filter; next_cursor None on the last page.
@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    params = {"limit": min(page_size, 100)}
    if cursor:
        params["starting_after"] = cursor
    if since:
        params["updated_since"] = since.isoformat()
    body = await ctx.http.json("GET", ctx.url(path=f"/{entity}"), params=params)
    records, has_more = body.get("data"), body.get("has_more")
    if not isinstance(records, list) or not isinstance(has_more, bool) or (has_more and not records):
        raise ProviderError(f"the provider answered /{entity} with no page to go on from")
    return Page(records=records, next_cursor=records[-1]["id"] if has_more else None)


# TODO(author): the provider's paths for one record; unwrap the record if the
# provider wraps it ({"contact": {...}}).
@hookimpl
async def get_record(ctx, entity, record_id):
    return await ctx.http.json("GET", ctx.url(path=f"/{entity}/{quote(record_id, safe='')}"))


# TODO(author): the Idempotency-Key header only for a provider that honours it (see
# idempotent_creates above); ctx.http re-sends a POST carrying one after a 5xx or a timeout.
@hookimpl
async def create_record(ctx, entity, data, idempotency_key):
    return await ctx.http.json("POST", ctx.url(path=f"/{entity}"), json=data,
                               headers={"Idempotency-Key": idempotency_key})


@hookimpl
async def update_record(ctx, entity, record_id, data):
    return await ctx.http.json("PATCH", ctx.url(path=f"/{entity}/{quote(record_id, safe='')}"), json=data)


@hookimpl
async def delete_record(ctx, entity, record_id):
    await ctx.http.request("DELETE", ctx.url(path=f"/{entity}/{quote(record_id, safe='')}"))
    return True


# TODO(author): the provider's signature scheme (header, what is signed,
# encoding) and event shape. Compare in constant time over the raw body.
@hookimpl
def verify_webhook(ctx, request):
    secret = ctx.setting("client_secret")
    header = request.header("X-Hubspot-Signature") or ""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    timestamp = signed_unix_time(parts.get("t"))
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts.get("v1", "")):
        raise WebhookRejected("signature does not match")
    if abs(time.time() - timestamp) > ctx.provider.webhook_tolerance_seconds:
        raise WebhookRejected("delivery is too old", code="webhook_stale")
    try:
        event = json.loads(request.body)
        entity, action = event["type"].split(".")
        record = event["data"]
        return [WebhookEvent(dedup_key=event["id"], type=event["type"], entity=entity, action=action,
                             record_id=str(record["id"]), record=record if action != "deleted" else None,
                             occurred_at=datetime.fromtimestamp(int(timestamp), timezone.utc), raw=event)]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise WebhookRejected("malformed delivery body") from None
