from __future__ import annotations

import asyncio

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, OrgDep, ProviderDep
from hub.api.errors import error_body
from hub.api.schemas import (
    AuthorizeResponse,
    ConnectionResponse,
    LinkExchangeRequest,
    LinkTokenRequest,
    LinkTokenResponse,
    OAuthCallbackResponse,
    OAuthConfirmRequest,
    OAuthRefusalResponse,
)
from hub.services import connections as connection_service
from hub.services import oauth
from hub.services.connections import revoke_unsaved, upsert_from_credentials
from hub.types import HubError, ProviderError, ValidationFailed

router = APIRouter(tags=["auth"], route_class=HubRoute)

AUTHORIZE_RESERVED = {"redirect_uri", "confirm"}


@router.get("/oauth/{provider}/authorize", response_model=AuthorizeResponse, operation_id="oauth_authorize")
async def authorize(
    hub: HubDep, org: OrgDep, provider: ProviderDep, request: Request,
    redirect_uri: str | None = Query(default=None, max_length=2000,
                                     description="where to send the user when the flow ends"),
    confirm: bool = Query(default=False, description=(
        "bind the flow to the user who starts it: the callback connects nothing until "
        "`POST /oauth/{provider}/confirm` with the `binding` this answer gives")),
):
    """Start OAuth: returns the provider URL to send the user to. Extra query
    parameters (``shop`` for Shopify) go to the provider."""
    params = {k: v for k, v in request.query_params.items() if k not in AUTHORIZE_RESERVED}
    url, binding = await oauth.start(hub, org.id, provider, redirect_uri, params, bind=confirm)
    return {"success": True, "authorization_url": url, "binding": binding}


@router.get("/oauth/{provider}/callback", response_model=OAuthCallbackResponse, operation_id="oauth_callback",
            responses={302: {"description": "redirect to the app's redirect_uri with status and code"}})
async def callback(hub: HubDep, provider: ProviderDep, request: Request):
    """The provider redirects here. With a ``redirect_uri`` given at authorize
    time the user is redirected there with ``status=connected&connection_id=``
    or ``status=error&code=<stable code>``, each with ``provider=``; otherwise
    the answer is JSON."""
    query = dict(request.query_params)
    try:
        record, connection = await oauth.finish(hub, provider, query)
    except oauth.OAuthFailed as exc:
        if isinstance(exc.details, str):
            # (The code, not the text: the app says it in its own words, and no provider text is reflected.)
            # (A refusal the plugin said more of, Xero's organisations: the app reads it by its flow.)
            return RedirectResponse(oauth.return_url(exc.details, status="error", code=exc.code,
                                                     provider=provider.name, flow=exc.flow), status_code=302)
        # (What the plugin said of it: the choices a grant offers, Xero's organisations.)
        return JSONResponse(error_body(exc.message, exc.code, exc.provider_details), status_code=exc.status)
    if isinstance(connection, str):  # a bound flow (always with a return URL): the tenant's app confirms it
        return RedirectResponse(oauth.return_url(record.return_to, status="authorized", flow=connection,
                                                 provider=provider.name), status_code=302)
    if record and record.return_to:
        return RedirectResponse(
            oauth.return_url(record.return_to, status="connected", connection_id=connection.id,
                             provider=provider.name),
            status_code=302,
        )
    return {"success": True, "connection": await hub.db(connection_service.public_one, hub, connection)}


@router.post("/oauth/{provider}/confirm", response_model=ConnectionResponse, status_code=201,
             operation_id="oauth_confirm")
async def confirm(hub: HubDep, org: OrgDep, provider: ProviderDep, body: OAuthConfirmRequest):
    """Connect what a flow started with `confirm=true` was granted, with the
    `binding` its start gave: from the session of the user whose browser
    came back with `status=authorized&flow=`. 404 `oauth_flow_not_found`
    (unknown, confirmed already, or `HUB_OAUTH_STATE_TTL_SECONDS` past since
    the callback); 403 `binding_mismatch` (another user finished it: nothing
    is connected, and the grant is given back unless a connection uses its
    account); then as the callback (`connection_exists`...)."""
    connection = await oauth.confirm(hub, org.id, provider, body.flow, body.binding)
    return {"success": True, "connection": await hub.db(connection_service.public_one, hub, connection)}


@router.get("/oauth/{provider}/flows/{flow}", response_model=OAuthRefusalResponse, operation_id="oauth_refusal")
async def refused_flow(hub: HubDep, org: OrgDep, provider: ProviderDep, flow: str = Path(max_length=64)):
    """What the provider's plugin said of an authorization refused in redirect
    mode, whose redirect carried `status=error&code=...&flow=`: the choices a
    grant offered (Xero's `tenant_required`: the organisations, to start again
    naming one as `tenant_id`). 404 `oauth_flow_not_found` for another
    organization's flow, or one more than `HUB_OAUTH_STATE_TTL_SECONDS` old."""
    kept = await asyncio.to_thread(oauth.refusal, hub, org.id, provider, flow)
    return {"success": True, "refusal": kept}


@router.post("/link/{provider}/token", response_model=LinkTokenResponse, operation_id="link_token")
async def link_token(hub: HubDep, org: OrgDep, provider: ProviderDep, body: LinkTokenRequest | None = None):
    """Create a Link token for the provider's client-side widget (Plaid Link)."""
    body = body or LinkTokenRequest()
    if provider.info.auth_type != "link":
        raise ValidationFailed(f"{provider.name} does not use a Link flow", code="wrong_auth_type")
    if body.connection_id is not None:
        # Repairing it: the hook gets the connection's own context (its item's access token).
        connection = await hub.db(connection_service.find_connection, hub, org.id, body.connection_id)
        if connection.provider != provider.name:
            raise ValidationFailed(f"connection {connection.id} is a {connection.provider} connection, not "
                                   f"{provider.name}", code="wrong_provider")
        ctx = hub.context(provider, connection)
    else:
        ctx = hub.app_context(provider, _flow_config(body.options, "options"))
    result = await hub.call(provider, "create_link_token", ctx, user_id=body.user_id or org.id,
                            options=body.options)
    if not isinstance(result, dict) or not isinstance(result.get("link_token"), str) or not result["link_token"]:
        raise ProviderError(f"provider {provider.name} returned no link_token from create_link_token")
    await asyncio.to_thread(oauth.remember_link_token, hub, org.id, provider, result["link_token"],
                            result.get("expiration"), body.connection_id)
    return {"success": True, **result}


@router.post("/link/{provider}/exchange", response_model=ConnectionResponse, status_code=201,
             operation_id="link_exchange")
async def link_exchange(hub: HubDep, org: OrgDep, provider: ProviderDep, body: LinkExchangeRequest,
                        response: Response):
    """Exchange the widget's public token; creates (or re-links) a connection.
    After a repair (a link token made with `connection_id`) nothing is
    exchanged: the connection is tested and answered (200), connected again."""
    if provider.info.auth_type != "link":
        raise ValidationFailed(f"{provider.name} does not use a Link flow", code="wrong_auth_type")
    repaired = await asyncio.to_thread(oauth.check_link_token, hub, org.id, provider, body.link_token)
    if repaired is not None:
        connection, _details = await connection_service.test_connection(hub, org.id, repaired, renewed=True)
        response.status_code = 200
        return {"success": True, "connection": await hub.db(connection_service.public_one, hub, connection)}
    ctx = hub.app_context(provider, _flow_config(body.metadata, "metadata"))
    credentials = await hub.call(provider, "exchange_public_token", ctx, public_token=body.public_token,
                                 metadata=body.metadata, link_token=body.link_token)
    reached = await connection_service.account_reached(hub, org.id, provider, credentials)
    try:
        connection = await asyncio.to_thread(upsert_from_credentials, hub, org.id, provider, credentials,
                                             name=body.name, allow_many=True, reached=reached)
    except HubError:
        await revoke_unsaved(hub, provider, credentials, reached)  # the public token is spent: give the item back
        raise
    return {"success": True, "connection": await hub.db(connection_service.public_one, hub, connection)}


def _flow_config(body: dict, where: str) -> dict:
    """The ``config`` object a Link flow's ``options`` or ``metadata`` may carry."""
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise ValidationFailed(f"{where}.config must be an object", code="invalid_value")
    return config
