"""Fake Example Notes server: bearer-key auth, cursor pagination, a
50 req/s token bucket answering 429 with Retry-After, error bodies and
signed webhook deliveries.

Fault injection, through ``app.state`` (each counts down per request):
``fail_next`` answers 5xx (``fail_status``, 503 by default, with ``fail_message``); ``throttle_next``
answers 429 with ``Retry-After: throttle_retry_after``; ``slow_next`` sleeps
``slow_seconds`` before answering (client timeouts); ``delay`` sleeps before
every request; ``hold``, a ``threading.Event``, holds every request until the
test sets it (``held`` counts the requests it held), for a test to act while a
call is under way. ``app.state.statuses`` counts the statuses answered."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from datetime import datetime, timezone

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hub.testing.fakes import Table, TokenBucketLimit
from hub_example import sign

API_KEY = "ex_test_key_4242"


def error(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status, headers=headers)


def create_app(notes: int = 0, rate: float = 50, fail_next: int = 0, *, delay: float = 0.0) -> FastAPI:
    app = FastAPI()
    app.state.notes = Table(prefix="note_")
    app.state.tags = Table(prefix="tag_")
    app.state.limit = TokenBucketLimit(int(rate), rate)
    app.state.fail_next = fail_next
    app.state.fail_status = 503
    app.state.fail_message = "temporarily unavailable"
    app.state.throttle_next = 0
    app.state.throttle_retry_after = 0.05
    app.state.slow_next = 0
    app.state.slow_seconds = 1.0
    app.state.delay = delay
    app.state.hold = None
    app.state.held = 0
    app.state.statuses = Counter()
    app.state.idempotency = {}
    for i in range(notes):
        _insert(app, {"title": f"note {i}", "body": ""})
    for name in ("work", "home"):
        app.state.tags.insert({"name": name})

    @app.middleware("http")
    async def gate(request: Request, call_next):
        hold = app.state.hold
        if hold is not None and not hold.is_set():
            app.state.held += 1
            await asyncio.to_thread(hold.wait, 60)  # (bounded: a test failing before it sets it ends)
        if app.state.delay:
            await asyncio.sleep(app.state.delay)
        if app.state.slow_next > 0:
            app.state.slow_next -= 1
            await asyncio.sleep(app.state.slow_seconds)
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return error(401, "invalid api key")
        if app.state.fail_next > 0:
            app.state.fail_next -= 1
            return error(app.state.fail_status, app.state.fail_message)
        if app.state.throttle_next > 0:
            app.state.throttle_next -= 1
            return error(429, "rate limited", **{"Retry-After": f"{app.state.throttle_retry_after:.3f}"})
        decision = app.state.limit.hit()
        if not decision.allowed:
            return error(429, "rate limited", **{"Retry-After": f"{decision.retry_after:.3f}"})
        return await call_next(request)

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        app.state.statuses[response.status_code] += 1
        return response

    @app.get("/v1/account")
    async def account():
        return {"id": "acct_example", "name": "Example Account"}

    @app.get("/v1/{entity}")
    async def list_(entity: str, limit: int = 10, after: str | None = None, updated_since: str | None = None):
        table = _table(app, entity)
        if table is None:
            return error(404, f"no such resource {entity}")
        if not 1 <= limit <= 100:
            return error(400, "limit must be between 1 and 100")
        if updated_since:
            since = _parse(updated_since)
            ids = [str(r["id"]) for r in table.all() if r.get("updated_at") and _parse(r["updated_at"]) >= since]
        else:
            ids = list(table.rows)
        start = 0
        if after:
            try:
                start = ids.index(after) + 1
            except ValueError:
                return error(400, "invalid cursor")
        page = [table.rows[i] for i in ids[start:start + limit]]
        more = start + limit < len(ids)
        return JSONResponse({"data": page, "next": page[-1]["id"] if more and page else None})

    @app.get("/v1/{entity}/{record_id}")
    async def get(entity: str, record_id: str):
        table = _table(app, entity)
        row = table.get(record_id) if table else None
        return row if row else error(404, f"no {entity} {record_id}")

    @app.post("/v1/notes")
    async def create(request: Request):
        key = request.headers.get("idempotency-key")
        if key and key in app.state.idempotency:
            return app.state.idempotency[key]
        data = await request.json()
        if not data.get("title"):
            return error(422, "title is required")
        row = _insert(app, {"title": data["title"], "body": data.get("body", "")})
        if key:
            app.state.idempotency[key] = row
        return row

    @app.patch("/v1/notes/{record_id}")
    async def update(record_id: str, request: Request):
        row = app.state.notes.get(record_id)
        if row is None:
            return error(404, f"no notes {record_id}")
        data = await request.json()
        row.update({k: v for k, v in data.items() if k in ("title", "body")})
        row["updated_at"] = _now()
        return row

    @app.delete("/v1/notes/{record_id}")
    async def delete(record_id: str):
        if app.state.notes.delete(record_id) is None:
            return error(404, f"no notes {record_id}")
        return {"id": record_id, "deleted": True}

    return app


def _table(app: FastAPI, entity: str) -> Table | None:
    return {"notes": app.state.notes, "tags": app.state.tags}.get(entity)


def _parse(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _insert(app: FastAPI, data: dict) -> dict:
    return app.state.notes.insert({**data, "updated_at": _now()})


def signed_delivery(secret: str, event: dict, timestamp: int) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event).encode()
    return body, {"X-Example-Signature": sign(secret, timestamp, body), "Content-Type": "application/json"}


def send_webhook(url: str, secret: str, event: dict, timestamp: int) -> httpx.Response:
    body, headers = signed_delivery(secret, event, timestamp)
    return httpx.post(url, content=body, headers=headers)
