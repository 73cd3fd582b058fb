"""A fake HubSpot server for tests: the endpoints the plugin uses, with
the provider's auth, pagination, errors and webhook signatures.

TODO(author): make each endpoint answer like the real API (paths, field
names, pagination parameters, error bodies, status codes, signature scheme),
so the conformance suite tests the plugin against something faithful.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from datetime import datetime, timezone
import secrets
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi import Form
from fastapi.responses import JSONResponse, RedirectResponse

from hub.testing.fakes import Table, TokenBucketLimit

CLIENT_ID = "hubspot_client_id"
CLIENT_SECRET = "hubspot_client_secret"
SIGNATURE_HEADER = "X-Hubspot-Signature"
WRITABLE = {"contacts": ("name", "email")}


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status, headers=headers)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def create_app(contacts: int = 3, rate: float = 50) -> FastAPI:
    app = FastAPI()
    app.state.tables = {"contacts": Table(prefix="con_"), "users": Table(prefix="usr_")}
    app.state.limit = TokenBucketLimit(int(rate), rate)
    app.state.idempotency = {}
    app.state.codes, app.state.access, app.state.refresh = {}, set(), set()
    seed(app, "contacts", contacts)
    seed(app, "users", 2)

    @app.middleware("http")
    async def gate(request: Request, call_next):
        if request.url.path.startswith("/oauth/"):
            return await call_next(request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in app.state.access:
            return error(401, "invalid access token")
        decision = app.state.limit.hit()
        if not decision.allowed:
            return error(429, "rate limited", **{"Retry-After": f"{decision.retry_after:.3f}"})
        return await call_next(request)

    def issue() -> dict:
        access, refresh = "at_" + secrets.token_hex(8), "rt_" + secrets.token_hex(8)
        app.state.access.add(access)
        app.state.refresh.add(refresh)
        return {"access_token": access, "refresh_token": refresh, "expires_in": 3600}

    @app.get("/oauth/authorize")
    async def authorize(client_id: str, redirect_uri: str, state: str):
        # The fake approves at once: the user's consent screen is not the plugin's concern.
        if client_id != CLIENT_ID:
            return error(400, "unknown client_id")
        code = secrets.token_hex(8)
        app.state.codes[code] = redirect_uri
        return RedirectResponse(redirect_uri + "?" + urlencode({"code": code, "state": state}))

    @app.post("/oauth/token")
    async def token(grant_type: str = Form(), client_id: str = Form(), client_secret: str = Form(),
                    code: str = Form(""), redirect_uri: str = Form(""), refresh_token: str = Form("")):
        if (client_id, client_secret) != (CLIENT_ID, CLIENT_SECRET):
            return error(401, "invalid client")
        if grant_type == "authorization_code" and app.state.codes.pop(code, None) == redirect_uri:
            return issue()
        if grant_type == "refresh_token" and refresh_token in app.state.refresh:
            app.state.refresh.discard(refresh_token)
            return issue()
        return error(400, "invalid grant")

    @app.get("/v1/me")
    async def me():
        return {"id": "acct_test", "name": "HubSpot test account"}

    @app.get("/v1/{entity}")
    async def list_(entity: str, limit: int = 10, starting_after: str | None = None,
                    updated_since: str | None = None):
        table = app.state.tables.get(entity)
        if table is None:
            return error(404, f"no such resource {entity}")
        if not 1 <= limit <= 100:
            return error(400, "limit must be between 1 and 100")
        rows = table.all()
        if updated_since:
            rows = [r for r in rows if r.get("updated_at", "") >= updated_since]
        start = 0
        if starting_after:
            ids = [r["id"] for r in rows]
            if starting_after not in ids:
                return error(400, "invalid cursor")
            start = ids.index(starting_after) + 1
        page = rows[start:start + limit]
        return {"data": page, "has_more": start + limit < len(rows)}

    @app.get("/v1/{entity}/{record_id}")
    async def get(entity: str, record_id: str):
        table = app.state.tables.get(entity)
        row = table.get(record_id) if table else None
        return row if row else error(404, f"no {entity} {record_id}")

    @app.post("/v1/{entity}")
    async def create(entity: str, request: Request):
        if entity not in WRITABLE:
            return error(405, f"{entity} cannot be created")
        key = request.headers.get("idempotency-key")
        if key and key in app.state.idempotency:
            return app.state.idempotency[key]
        data = await request.json()
        if not data.get("name"):
            return error(422, "name is required")
        row = app.state.tables[entity].insert(
            {**{k: data[k] for k in WRITABLE[entity] if k in data}, "updated_at": _now()})
        if key:
            app.state.idempotency[key] = row
        return row

    @app.patch("/v1/{entity}/{record_id}")
    async def update(entity: str, record_id: str, request: Request):
        row = app.state.tables[entity].get(record_id) if entity in WRITABLE else None
        if row is None:
            return error(404, f"no {entity} {record_id}")
        data = await request.json()
        row.update({k: v for k, v in data.items() if k in WRITABLE[entity]})
        row["updated_at"] = _now()
        return row

    @app.delete("/v1/{entity}/{record_id}")
    async def delete(entity: str, record_id: str):
        if entity not in WRITABLE or app.state.tables[entity].delete(record_id) is None:
            return error(404, f"no {entity} {record_id}")
        return {"id": record_id, "deleted": True}

    return app


def seed(app: FastAPI, entity: str, count: int) -> list[str]:
    """Create ``count`` records of ``entity`` on the fake; their ids."""
    table = app.state.tables[entity]
    return [table.insert({"name": f"{entity} {len(table) + 1}", "updated_at": _now()})["id"] for _ in range(count)]


def expire_tokens(app: FastAPI) -> None:
    """Every access token the fake issued stops working (its refresh tokens still do)."""
    app.state.access.clear()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def signed_delivery(secret: str, event: dict, timestamp: int | None = None) -> tuple[dict[str, str], bytes]:
    """A webhook delivery as HubSpot would send it: (headers, body)."""
    body = json.dumps(event).encode()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {SIGNATURE_HEADER: sign(secret, timestamp, body), "Content-Type": "application/json"}, body


def conformance_webhook(harness, kind: str) -> tuple[dict[str, str], bytes]:
    """Deliveries for the conformance suite: a new event each call; ``stale``
    was signed an hour ago."""
    event = {"id": f"evt_{uuid.uuid4().hex}", "type": "contacts.updated", "data": {"id": "con_1", "name": "x"}}
    secret = CLIENT_SECRET
    return signed_delivery(secret, event, int(time.time()) - (3600 if kind == "stale" else 0))
