from __future__ import annotations

import asyncio

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request, Response

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, OrgDep, ProviderDep
from hub.api.schemas import (
    WebhookEventResponse,
    WebhookEventsResponse,
    WebhookEventStatus,
    WebhookRegisterRequest,
    WebhookRegisterResponse,
    WebhookResponse,
)
from hub.models import Connection, utcnow
from hub.runtime import Hub
from hub.services import webhooks as service
from hub.services.connections import find_connection
from hub.types import ProviderUnavailable, WebhookRequest

router = APIRouter(tags=["webhooks"], route_class=HubRoute)


@router.post("/webhooks/{provider}", response_model=WebhookResponse, operation_id="receive_webhook",
             openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}},
                                            "required": True}})
async def receive_webhook(hub: HubDep, provider: ProviderDep, request: Request):
    """Webhook intake. No tenant auth: the provider's signature is the auth.
    The raw body goes to the plugin untouched. A replayed delivery answers 200
    with ``duplicate: true`` and is not stored again. A provider declaring
    ``empty_webhook_answers`` (Xero) is answered 200 with no body."""
    # The URL the provider was given (HUB_PUBLIC_URL's), as it called it: with its raw query.
    called = hub.webhook_url(provider.name) + (f"?{request.url.query}" if request.url.query else "")
    delivery = WebhookRequest(headers=dict(request.headers), body=await request.body(),
                              query=dict(request.query_params), method=request.method, url=called)
    result = await service.receive(hub, provider, delivery)
    processor = getattr(request.app.state, "webhook_processor", None)
    if processor is not None and result.accepted:
        processor.notify()
    if provider.info.empty_webhook_answers:
        return Response(status_code=200)
    return {"success": True, "received": len(result.accepted), "duplicates": len(result.duplicates),
            "duplicate": bool(result.duplicates) and not result.accepted}


@router.post("/connections/{connection_id}/webhooks", response_model=WebhookRegisterResponse,
             operation_id="register_webhook")
async def register_webhook(hub: HubDep, org: OrgDep, connection_id: str, body: WebhookRegisterRequest | None = None):
    """Subscribe the hub's webhook URL for this connection at the provider."""
    body = body or WebhookRegisterRequest()
    connection = await hub.db(find_connection, hub, org.id, connection_id)
    provider = hub.provider(connection.provider)
    ctx = hub.context(provider, connection)
    url = ctx.webhook_url
    result = await hub.call(provider, "register_webhook", ctx, url=url, events=body.events) or {}
    if result.get("secret"):
        # Under the refresh locks: a refresh committing in between would be written over (its
        # rotated refresh token, the only one that still works, lost).
        async with hub.lock(connection_id), hub.shared_lock(f"refresh:{connection_id}"):
            await asyncio.to_thread(_store_webhook_secret, hub, org.id, connection_id, result["secret"])
    return {"success": True, "subscription_id": str(result.get("id")) if result.get("id") else None, "url": url}


def _store_webhook_secret(hub: Hub, organization_id: str, connection_id: str, secret: str) -> None:
    """Add the secret to the stored credentials, compare-and-swap on their
    version: credentials written meanwhile are read again, never overwritten."""
    for _attempt in range(5):
        with hub.session() as session:
            connection = hub.find_connection(session, organization_id, connection_id)
            version = connection.credentials_version
            secrets = {**hub.cipher.decrypt_json(connection.credentials_encrypted), "webhook_secret": secret}
            updated = session.execute(sa.update(Connection).where(
                Connection.id == connection_id, Connection.credentials_version == version).values(
                credentials_encrypted=hub.cipher.encrypt_json(secrets), credentials_version=version + 1,
                updated_at=utcnow()))
            session.commit()
            if updated.rowcount == 1:
                return
    raise ProviderUnavailable("the connection's credentials kept changing while the webhook secret was stored; "
                              "register the webhook again")


@router.get("/connections/{connection_id}/webhooks/events", response_model=WebhookEventsResponse,
            operation_id="list_webhook_events")
async def list_webhook_events(hub: HubDep, org: OrgDep, connection_id: str,
                              status: WebhookEventStatus | None = Query(default=None),
                              cursor: str | None = Query(default=None, max_length=500),
                              limit: int = Query(default=50, ge=1, le=200)):
    """The webhook events received for this connection, newest first: where
    each stands, its attempts and last error (not its payload)."""
    connection = await hub.db(find_connection, hub, org.id, connection_id)
    events, next_cursor = await hub.db(service.list_events, hub, connection.id, status=status, cursor=cursor,
                                       limit=limit)
    return {"success": True, "events": events, "next_cursor": next_cursor, "has_more": next_cursor is not None}


@router.post("/connections/{connection_id}/webhooks/events/{event_id}/retry", response_model=WebhookEventResponse,
             status_code=202, operation_id="retry_webhook_event")
async def retry_webhook_event(request: Request, hub: HubDep, org: OrgDep, connection_id: str, event_id: str):
    """Apply a `failed` event again, with its attempts reset (a `pending` one
    is tried now). A processed or ignored event is 409
    `webhook_event_not_retryable`."""
    connection = await hub.db(find_connection, hub, org.id, connection_id)
    event = await asyncio.to_thread(service.retry_event, hub, connection.id, event_id)
    processor = getattr(request.app.state, "webhook_processor", None)
    if processor is not None:
        processor.notify()
    return {"success": True, "event": event}
