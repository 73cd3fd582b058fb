"""Rate limiting in the core's client: declared per-endpoint limits pace only
their endpoint, on top of the connection's limit, and the operator can turn
them off."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from hub.config import Settings
from hub.models import Connection
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.types import EntitySchema, ProviderInfo, RateLimit
from tests.conftest import module_plugin

INFO = ProviderInfo(
    name="paced", label="Paced", category="test", auth_type="api_key", urls={"api": "https://paced.invalid"},
    rate_limit=RateLimit(requests_per_second=1000, burst=1000),
    endpoint_rate_limits={"/slow": RateLimit(requests_per_second=10, burst=1)},
)


class LimiterWaits:
    """Stands for ``asyncio`` in ``hub.http`` and keeps the delays its
    limiters sleep: whether a limit paced the calls, told apart from a
    loaded machine's slow calls, which wall time alone cannot do."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name: str):
        return getattr(asyncio, name)

    async def sleep(self, delay: float, result=None):
        self.delays.append(delay)
        return await asyncio.sleep(delay, result)


@pytest.fixture
def limiter_waits(monkeypatch) -> LimiterWaits:
    import hub.http

    waits = LimiterWaits()
    monkeypatch.setattr(hub.http, "asyncio", waits)
    return waits


def timed_calls(hub: Hub, path: str, count: int) -> float:
    provider = hub.provider("paced")
    connection = Connection(id="c1", organization_id="o", provider="paced", category="test", name="p")

    async def calls() -> float:
        ctx = hub.context(provider, connection)
        started = time.monotonic()
        for _ in range(count):
            await ctx.http.get(ctx.url(path=path))
        elapsed = time.monotonic() - started
        await hub.close()
        return elapsed

    return asyncio.run(calls())


@pytest.fixture
def settings(tmp_path):
    """No database is involved: one SQLite file is enough."""
    return Settings(data_dir=tmp_path, secret_key="test-secret-key")


def make_hub(settings, monkeypatch, **env: str) -> Hub:
    for key, value in env.items():
        monkeypatch.setenv(f"HUB_PACED_{key}", value)
    registry = PluginRegistry()
    registry.register(module_plugin("paced_plugin", INFO, [EntitySchema("things", "Things")]), "paced")
    return Hub(settings, registry, transport=httpx.MockTransport(lambda request: httpx.Response(200, json={})))


def test_endpoint_limit_paces_only_its_endpoint(settings, monkeypatch, limiter_waits):
    assert timed_calls(make_hub(settings, monkeypatch), "/slow", 6) >= 0.45  # 1 at once, then 10/s
    limiter_waits.delays.clear()
    timed_calls(make_hub(settings, monkeypatch), "/fast", 20)
    assert limiter_waits.delays == []  # (paced at 10/s, it would wait before 19 of them)


def test_operator_can_turn_endpoint_limits_off(settings, monkeypatch, limiter_waits):
    timed_calls(make_hub(settings, monkeypatch, ENDPOINT_RATE_LIMITS="off"), "/slow", 6)
    assert limiter_waits.delays == []
