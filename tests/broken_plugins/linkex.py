"""Link Example: a Link-style provider (a widget's public token exchanged for
an access token, like Plaid) with revocation, webhook routing and
registration, and an action; and its fake server. Used by tests/test_hooks.py
and tests/test_conformance.py."""

from __future__ import annotations

import json
import types

from fastapi import FastAPI, Request

from hub import hookimpl
from hub.types import (
    Action,
    Credentials,
    EntityField,
    EntitySchema,
    Page,
    ProviderInfo,
    RequestAuth,
    WebhookEvent,
    WebhookRejected,
)


LINKEX = ProviderInfo(name="linkex", label="Link Example", category="banking", auth_type="link",
                      urls={"api": "https://link.example.invalid"}, supports_webhooks=True)


def linkex_plugin() -> types.ModuleType:
    plugin = types.ModuleType("linkex_plugin")

    @hookimpl
    def provider_info():
        return LINKEX

    @hookimpl
    def entity_schemas():
        return [EntitySchema("accounts", "Accounts", (EntityField("id"), EntityField("balance", type="money")))]

    @hookimpl
    def provider_actions():
        return [Action("refresh_balance", "Refresh a balance", params=(EntityField("account_id", required=True),))]

    @hookimpl
    def request_auth(ctx):
        return RequestAuth(headers={"X-Access-Token": ctx.credentials.get("access_token", "")})

    @hookimpl
    async def create_link_token(ctx, user_id, options):
        return await ctx.http.json("POST", ctx.url(path="/link/token/create"), json={"user": user_id, **options})

    @hookimpl
    async def exchange_public_token(ctx, public_token, metadata):
        body = await ctx.http.json("POST", ctx.url(path="/item/public_token/exchange"),
                                   json={"public_token": public_token})
        return Credentials(secrets={"access_token": body["access_token"]}, config={"item_id": body["item_id"]},
                           webhook_key=body["item_id"])

    @hookimpl
    async def disconnect(ctx):
        await ctx.http.json("POST", ctx.url(path="/item/remove"))
        return True

    @hookimpl
    async def list_records(ctx, entity):
        return Page(records=(await ctx.http.json("GET", ctx.url(path=f"/{entity}")))["data"])

    @hookimpl
    async def run_action(ctx, action, params):
        return await ctx.http.json("POST", ctx.url(path=f"/accounts/{params['account_id']}/refresh"))

    @hookimpl
    def webhook_connection_key(request):
        return json.loads(request.body).get("item_id")

    @hookimpl
    def verify_webhook(ctx, request):
        if request.header("X-Signature") != ctx.credentials.get("webhook_secret"):
            raise WebhookRejected("bad signature")
        body = json.loads(request.body)
        return [WebhookEvent(dedup_key=body["id"], type="accounts.changed", entity="accounts")]

    @hookimpl
    async def register_webhook(ctx, url, events):
        return await ctx.http.json("POST", ctx.url(path="/webhooks"), json={"url": url, "events": events})

    for name, value in list(locals().items()):
        if hasattr(value, "hub_impl"):
            setattr(plugin, name, value)
    return plugin


def linkex_fake() -> FastAPI:
    app = FastAPI()
    app.state.removed, app.state.subscriptions, app.state.refreshed = [], [], []

    def item(request: Request) -> str | None:
        token = request.headers.get("x-access-token", "")
        return token.removeprefix("access-") if token.startswith("access-") else None

    @app.post("/link/token/create")
    async def link_token(request: Request):
        body = await request.json()
        return {"link_token": f"link-sandbox-{body['user']}", "expiration": "2030-01-01T00:00:00Z"}

    @app.post("/item/public_token/exchange")
    async def exchange(request: Request):
        public = (await request.json())["public_token"]
        return {"access_token": f"access-item-{public}", "item_id": f"item-{public}"}

    @app.post("/item/remove")
    async def remove(request: Request):
        app.state.removed.append(item(request))
        return {"removed": True}

    @app.get("/accounts")
    async def accounts(request: Request):
        return {"data": [{"id": "acc_1", "balance": "10.00", "item": item(request)}]}

    @app.post("/accounts/{account_id}/refresh")
    async def refresh(account_id: str):
        app.state.refreshed.append(account_id)
        return {"account_id": account_id, "balance": "12.50"}

    @app.post("/webhooks")
    async def subscribe(request: Request):
        app.state.subscriptions.append(await request.json())
        return {"id": "wh_1", "secret": "linkex-signing-secret"}

    return app
