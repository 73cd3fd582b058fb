"""A small OAuth 2 provider ("Example OAuth") with PKCE, expiring access tokens
and rotating refresh tokens, plus its fake server: for the core's OAuth,
state and refresh tests."""

from __future__ import annotations

import base64
import hashlib
import secrets
import types
from datetime import datetime, timedelta, timezone
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse

from hub import hookimpl
from hub.types import AuthFailed, Credentials, EntityField, EntitySchema, Page, ProviderInfo, RequestAuth

INFO = ProviderInfo(
    name="oauthex", label="Example OAuth", category="crm", auth_type="oauth2",
    urls={"authorize": "https://auth.example.invalid/authorize", "token": "https://auth.example.invalid/token",
          "api": "https://api.example.invalid"},
    supports_pkce=True, scopes=("read", "write"),
)


def build_plugin(token_lifetime: int = 3600, tells_expiry: bool = True, keys_webhooks: bool = True,
                 info: ProviderInfo = INFO, revoked: list[str] | None = None,
                 grant_lifetime: float | None = None) -> types.ModuleType:
    """``tells_expiry=False``: the token answers give no ``expires_in`` use
    (as Salesforce's): the hub learns a token expired from a 401.
    ``keys_webhooks=False``: no ``webhook_key`` (a provider without
    webhooks): only ``test_connection``'s ``account`` tells accounts apart.
    ``revoked``: a ``disconnect`` hook appends the access tokens it revokes.
    ``grant_lifetime``: seconds each refresh token lasts, as the credentials say."""
    plugin = types.ModuleType("oauthex_plugin")

    @hookimpl
    def provider_info():
        return info

    @hookimpl
    def entity_schemas():
        return [EntitySchema("contacts", "Contacts", (EntityField("id"), EntityField("name")))]

    @hookimpl
    def authorization_url(ctx, redirect_uri, state, code_challenge):
        query = {"client_id": ctx.setting("client_id"), "redirect_uri": redirect_uri, "state": state,
                 "scope": " ".join(INFO.scopes), "response_type": "code",
                 "code_challenge": code_challenge, "code_challenge_method": "S256"}
        return ctx.url("authorize") + "?" + urlencode(query)

    def credentials_from(body):
        return Credentials(
            secrets={"access_token": body["access_token"], "refresh_token": body["refresh_token"]},
            expires_at=datetime.now(timezone.utc) + timedelta(seconds=body["expires_in"]) if tells_expiry else None,
            config={"account": body.get("account", "acct_1"),
                    **({"instance_url": body["instance_url"]} if body.get("instance_url") else {})},
            webhook_key=body.get("account", "acct_1") if keys_webhooks else None,
            refresh_expires_at=datetime.now(timezone.utc) + timedelta(seconds=grant_lifetime)
            if grant_lifetime else None,
        )

    @hookimpl
    async def exchange_code(ctx, code, redirect_uri, code_verifier):
        body = await ctx.http.json("POST", ctx.url("token"), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": code_verifier or "", "client_id": ctx.setting("client_id"),
            "client_secret": ctx.setting("client_secret")})
        return credentials_from(body)

    @hookimpl
    async def refresh_credentials(ctx):
        body = await ctx.http.json("POST", ctx.url("token"), data={
            "grant_type": "refresh_token", "refresh_token": ctx.credentials["refresh_token"],
            "client_id": ctx.setting("client_id"), "client_secret": ctx.setting("client_secret")})
        return credentials_from(body)

    @hookimpl
    def request_auth(ctx):
        token = ctx.credentials.get("access_token")
        return RequestAuth(headers={"Authorization": f"Bearer {token}"} if token else {})

    @hookimpl
    async def test_connection(ctx):
        return await ctx.http.json("GET", ctx.url("api", path="/me"))

    if revoked is not None:
        @hookimpl
        def disconnect(ctx):
            revoked.append(ctx.credentials.get("access_token"))
            return True

    @hookimpl
    async def list_records(ctx, entity):
        body = await ctx.http.json("GET", ctx.url("api", path=f"/{entity}"))
        return Page(records=body["data"])

    for name, value in list(locals().items()):
        if hasattr(value, "hub_impl"):
            setattr(plugin, name, value)
    plugin.TOKEN_LIFETIME = token_lifetime
    return plugin


def create_fake(client_id: str = "cid", client_secret: str = "csecret", token_lifetime: int = 3600) -> FastAPI:
    app = FastAPI()
    app.state.codes = {}
    app.state.access = set()
    app.state.refresh = set()
    app.state.refresh_calls = 0
    app.state.token_lifetime = token_lifetime
    app.state.account = "acct_1"  # the account the user signs in to next
    app.state.accounts = {}  # access token -> its account
    app.state.instance_url = None  # said in token answers when set (Salesforce's API host)

    def issue() -> dict:
        access, refresh = "at_" + secrets.token_hex(8), "rt_" + secrets.token_hex(8)
        app.state.access.add(access)
        app.state.refresh.add(refresh)
        app.state.accounts[access] = app.state.account
        return {"access_token": access, "refresh_token": refresh, "expires_in": app.state.token_lifetime,
                "account": app.state.account,
                **({"instance_url": app.state.instance_url} if app.state.instance_url else {})}

    @app.get("/authorize")
    async def authorize(client_id: str, redirect_uri: str, state: str, code_challenge: str,
                        deny: str | None = None):
        if deny:
            return RedirectResponse(redirect_uri + "?" + urlencode(
                {"error": "access_denied", "error_description": "<script>alert(1)</script>", "state": state}))
        code = secrets.token_hex(8)
        app.state.codes[code] = (redirect_uri, code_challenge)
        return RedirectResponse(redirect_uri + "?" + urlencode({"code": code, "state": state}))

    @app.post("/token")
    async def token(grant_type: str = Form(), code: str = Form(""), redirect_uri: str = Form(""),
                    code_verifier: str = Form(""), refresh_token: str = Form(""),
                    client_id: str = Form(), client_secret: str = Form()):
        if (client_id, client_secret) != (app.state_client):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        if grant_type == "authorization_code":
            expected = app.state.codes.pop(code, None)
            if expected is None or expected[0] != redirect_uri:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(code_verifier.encode()).digest()).rstrip(b"=")
            if challenge.decode() != expected[1]:
                return JSONResponse({"error": "invalid_grant", "error_description": "PKCE"}, status_code=400)
            return issue()
        if grant_type == "refresh_token":
            app.state.refresh_calls += 1
            if refresh_token not in app.state.refresh:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            app.state.refresh.discard(refresh_token)  # rotation: single use
            return issue()
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    app.state.me_answer = None  # (status, headers): how /me answers instead, for a while
    app.state.me_calls = 0

    @app.get("/me")
    async def me(request: Request):
        app.state.me_calls += 1
        if app.state.me_answer:
            status, headers = app.state.me_answer
            return JSONResponse({"error": "unavailable"}, status_code=status, headers=headers)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in app.state.access:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return {"account": app.state.accounts.get(token, "acct_1")}

    @app.get("/contacts")
    async def contacts(request: Request):
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in app.state.access:
            return JSONResponse({"error": "invalid_token"}, status_code=401)
        return {"data": [{"id": "1", "name": "Ada"}]}

    app.state_client = (client_id, client_secret)
    return app


__all__ = ["build_plugin", "create_fake", "AuthFailed"]
