from __future__ import annotations

from fastapi import APIRouter, Request

from hub.api.deps import HubDep, OrgDep, ProviderDep
from hub.api.schemas import WebhookRegisterRequest, WebhookRegisterResponse, WebhookResponse
from hub.services import webhooks as service
from hub.types import Credentials, WebhookRequest

router = APIRouter(tags=["webhooks"])


@router.post("/webhooks/{provider}", response_model=WebhookResponse, operation_id="receive_webhook",
             openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}},
                                            "required": True}})
async def receive_webhook(hub: HubDep, provider: ProviderDep, request: Request):
    """Webhook intake. No tenant auth: the provider's signature is the auth.
    The raw body goes to the plugin untouched. A replayed delivery answers 200
    with ``duplicate: true`` and is not stored again."""
    delivery = WebhookRequest(headers=dict(request.headers), body=await request.body(),
                              query=dict(request.query_params))
    result = await service.receive(hub, provider, delivery)
    processor = getattr(request.app.state, "webhook_processor", None)
    if processor is not None and result.accepted:
        processor.notify()
    return {"success": True, "received": len(result.accepted), "duplicates": len(result.duplicates),
            "duplicate": bool(result.duplicates) and not result.accepted}


@router.post("/connections/{connection_id}/webhooks", response_model=WebhookRegisterResponse,
             operation_id="register_webhook")
async def register_webhook(hub: HubDep, org: OrgDep, connection_id: str, body: WebhookRegisterRequest):
    """Subscribe the hub's webhook URL for this connection at the provider."""
    with hub.session() as session:
        connection = hub.find_connection(session, org.id, connection_id)
    provider = hub.provider(connection.provider)
    ctx = hub.context(provider, connection)
    url = ctx.webhook_url
    result = await hub.call(provider, "register_webhook", ctx, url=url, events=body.events) or {}
    if result.get("secret"):
        with hub.session() as session:
            connection = hub.find_connection(session, org.id, connection_id)
            secrets = hub.cipher.decrypt_json(connection.credentials_encrypted)
            secrets["webhook_secret"] = result["secret"]
            hub.store_credentials(connection, Credentials(secrets=secrets, expires_at=connection.token_expires_at))
            session.add(connection)
            session.commit()
    return {"success": True, "subscription_id": str(result.get("id")) if result.get("id") else None, "url": url}
