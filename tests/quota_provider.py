"""A provider limited as Xero is, scaled down in time, and its fake server:
per tenant a "minute" and a "day" window and a bound on concurrent calls,
per app a "minute" shared by every tenant; each answer tells what is left
(``X-MinLimit-Remaining``, ``X-DayLimit-Remaining``,
``X-AppMinLimit-Remaining``), and a refusal is a 429 with ``Retry-After`` and
``X-Rate-Limit-Problem`` naming the window. For the core's rate limits of
several windows and scopes."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import types
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from hub import hookimpl
from hub.testing.fakes import WindowLimit
from hub.types import EntityField, EntitySchema, Page, ProviderInfo, RateLimit, RateLimited, RequestAuth

#: (calls, seconds) of each window: Xero's 60 a minute and 5,000 a day per tenant, 10,000 a
#: minute per app, here in seconds and a few calls.
MINUTE, DAY, APP_MINUTE = (4, 1.0), (14, 30.0), (6, 1.0)
CONCURRENT = 2
PAGES = 8


def info(day: tuple[int, float] = DAY) -> ProviderInfo:
    return ProviderInfo(
        name="quota", label="Quota", category="accounting", auth_type="api_key",
        urls={"api": "https://quota.invalid"},
        rate_limits=(
            RateLimit.per(*MINUTE, name="minute", remaining_header="X-MinLimit-Remaining"),
            RateLimit.per(*day, name="day", remaining_header="X-DayLimit-Remaining"),
            RateLimit.per(*APP_MINUTE, scope="app", name="appminute", remaining_header="X-AppMinLimit-Remaining"),
        ),
        max_concurrent_requests=CONCURRENT,
        credential_fields=(EntityField("api_key", "API key", required=True),),
    )


def build_plugin(day: tuple[int, float] = DAY) -> types.ModuleType:
    plugin = types.ModuleType("quota_plugin")
    declared = info(day)

    @hookimpl
    def provider_info():
        return declared

    @hookimpl
    def entity_schemas():
        return [EntitySchema("contacts", "Contacts", (EntityField("id"), EntityField("name")))]

    @hookimpl
    def request_auth(ctx):
        return RequestAuth(headers={"Authorization": f"Bearer {ctx.credentials['api_key']}"})

    @hookimpl
    def describe_error(response):
        problem = response.headers.get("X-Rate-Limit-Problem")
        if response.status_code == 429 and problem:
            return RateLimited(f"the {problem} limit is reached", limit=problem)
        return None

    @hookimpl
    async def test_connection(ctx):
        tenant = await ctx.http.json("GET", ctx.url(path="/tenant"))
        return {"account": tenant["id"]}

    @hookimpl
    async def list_records(ctx, entity, cursor):
        page = int(cursor or 0)
        body = await ctx.http.json("GET", ctx.url(path=f"/{entity}"), params={"page": page})
        return Page(records=body["contacts"], next_cursor=str(page + 1) if body["more"] else None)

    for name in ("provider_info", "entity_schemas", "request_auth", "describe_error", "test_connection",
                 "list_records"):
        setattr(plugin, name, locals()[name])
    return plugin


@dataclass
class QuotaState:
    day: tuple[int, float] = DAY
    windows: dict[tuple[str, str], WindowLimit] = field(default_factory=dict)
    app: WindowLimit = field(default_factory=lambda: WindowLimit(*APP_MINUTE))
    under_way: dict[str, int] = field(default_factory=dict)
    most_under_way: int = 0
    #: (time, tenant, status) of every call.
    calls: list[tuple[float, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def window(self, tenant: str, name: str) -> WindowLimit:
        figures = {"minute": MINUTE, "day": self.day}[name]
        return self.windows.setdefault((tenant, name), WindowLimit(*figures))

    def refused(self) -> list[tuple[float, str, int]]:
        return [call for call in self.calls if call[2] == 429]


def create_app(day: tuple[int, float] = DAY, latency: float = 0.02) -> FastAPI:
    app = FastAPI()
    state = app.state.quota = QuotaState(day=day)

    @app.middleware("http")
    async def limits(request: Request, call_next):
        tenant = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not tenant:
            return JSONResponse({"Title": "Unauthorized"}, status_code=401)
        with state.lock:
            now = time.monotonic()
            # (The tenant's own details count against no day: as Xero's GET /connections, not tenant-scoped.)
            limits = {"minute": state.window(tenant, "minute"), "appminute": state.app}
            if request.url.path != "/tenant":
                limits["day"] = state.window(tenant, "day")
            decisions = {name: limit.hit() for name, limit in limits.items()}
            problem = next((name for name, decision in decisions.items() if not decision.allowed), None)
            if problem:
                # A refused call is not counted (taken from the windows that had room, given back).
                for name, decision in decisions.items():
                    if decision.allowed:
                        limits[name].give_back()
            waits = {name: decision.retry_after for name, decision in decisions.items()}
            state.calls.append((now, tenant, 429 if problem else 200))
            state.under_way[tenant] = state.under_way.get(tenant, 0) + 1
            state.most_under_way = max(state.most_under_way, state.under_way[tenant])
            headers = {"X-MinLimit-Remaining": str(state.window(tenant, "minute").remaining()),
                       "X-DayLimit-Remaining": str(state.window(tenant, "day").remaining()),
                       "X-AppMinLimit-Remaining": str(state.app.remaining())}
        try:
            await asyncio.sleep(latency)
            if problem:
                return JSONResponse({"Title": "Too many requests"}, status_code=429, headers={
                    **headers, "Retry-After": str(max(1, math.ceil(waits[problem]))), "X-Rate-Limit-Problem": problem})
            response = await call_next(request)
            response.headers.update(headers)
            return response
        finally:
            with state.lock:
                state.under_way[tenant] -= 1

    @app.get("/tenant")
    def tenant(request: Request):
        return {"id": request.headers["authorization"].removeprefix("Bearer ")}

    @app.get("/contacts")
    def contacts(page: int = 0):
        return {"contacts": [{"id": f"c{page}", "name": f"Contact {page}"}], "more": page + 1 < PAGES}

    return app
