"""A tiny provider, "Example Notes": API key auth, notes (read/write) and tags
(read-only), cursor pagination, HMAC-signed webhooks. Its fake server is
:mod:`hub_example.testing`. Used by the core's tests to exercise the contract
end to end."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import datetime
from urllib.parse import quote

from hub import hookimpl
from hub.types import (
    AuthFailed,
    Credentials,
    EntityField,
    EntitySchema,
    Page,
    ProviderInfo,
    RateLimit,
    RequestAuth,
    WebhookEvent,
    WebhookRejected,
    signed_unix_time,
)

INFO = ProviderInfo(
    name="example",
    label="Example Notes",
    category="productivity",
    auth_type="api_key",
    description="A notes service used to test the hub.",
    urls={"api": "https://api.example.invalid/v1"},
    rate_limit=RateLimit(requests_per_second=50, burst=50),
    supports_webhooks=True,
    credential_fields=(
        EntityField("api_key", "API key", required=True),
        EntityField("webhook_secret", "Webhook signing secret"),
    ),
    idempotent_creates=True,  # its API honours Idempotency-Key
)

NOTE_FIELDS = (
    EntityField("id", "ID", readonly=True),
    EntityField("title", "Title", required=True),
    EntityField("body", "Body"),
    EntityField("updated_at", "Updated", type="datetime", readonly=True),
)


@hookimpl
def provider_info():
    return INFO


@hookimpl
def entity_schemas():
    return [
        EntitySchema("notes", "Notes", NOTE_FIELDS, updated_field="updated_at", supports_create=True,
                     supports_update=True, supports_delete=True, supports_since=True,
                     custom_fields=r"custom\.[a-z_]+"),
        EntitySchema("tags", "Tags", (EntityField("id", readonly=True), EntityField("name"))),
    ]


@hookimpl
def account_fields(ctx, entity):
    # (An account's own fields of notes, as a provider's API would list them.)
    return ["custom.color"] if entity == "notes" else []


@hookimpl
def request_auth(ctx):
    return RequestAuth(headers={"Authorization": f"Bearer {ctx.credentials.get('api_key', '')}"})


@hookimpl
def describe_error(response):
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return None


@hookimpl
async def test_connection(ctx):
    account = await ctx.http.json("GET", ctx.url(path="/account"))
    return {"account": account["id"], "name": account["name"]}


@hookimpl
async def list_records(ctx, entity, cursor, page_size, since):
    params = {"limit": min(page_size, 100)}  # the provider's maximum
    if cursor:
        params["after"] = cursor
    if since:
        params["updated_since"] = since.isoformat()
    body = await ctx.http.json("GET", ctx.url(path=f"/{entity}"), params=params)
    return Page(records=body["data"], next_cursor=body.get("next"))


@hookimpl
async def get_record(ctx, entity, record_id):
    # An id is one path segment: quoted, a "#" or "?" in it cannot reach another record.
    return await ctx.http.json("GET", ctx.url(path=f"/{entity}/{quote(record_id, safe='')}"))


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


@hookimpl
def verify_webhook(ctx, request):
    secret = ctx.credentials.get("webhook_secret")
    if not secret:
        raise AuthFailed("connection has no webhook secret")
    header = request.header("X-Example-Signature") or ""
    timestamp = signed_unix_time(header.partition(",")[0])
    expected = sign(secret, timestamp, request.body)
    if not hmac.compare_digest(expected, header):
        raise WebhookRejected("signature does not match")
    if abs(time.time() - timestamp) > ctx.provider.webhook_tolerance_seconds:
        raise WebhookRejected("delivery is too old", code="webhook_stale")
    try:
        event = json.loads(request.body)
        entity, action = event["type"].split(".")
        note = event["data"]
    except (ValueError, KeyError, AttributeError):
        raise WebhookRejected("malformed delivery body") from None
    return [WebhookEvent(dedup_key=event["id"], type=event["type"], entity=entity + "s", action=action,
                         record_id=str(note["id"]), record=note if action != "deleted" else None,
                         occurred_at=datetime.fromtimestamp(int(timestamp)))]


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"{timestamp},{digest}"


__all__ = ["sign", "Credentials"]
