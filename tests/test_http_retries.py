"""The core client's retries: what may be sent again (idempotent methods, an
Idempotency-Key, a request that never left) and what may not (a POST the
provider may have applied), 429s the provider asks to wait out, a deadline
over all attempts, and a Retry-After for the API's client in every
rate_limited answer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from hub.config import Settings
from hub.models import Connection
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.types import EntitySchema, ProviderInfo, ProviderUnavailable, RateLimited, RateLimit
from tests.conftest import module_plugin

INFO = ProviderInfo(name="scripted", label="Scripted", category="test", auth_type="api_key",
                    urls={"api": "https://scripted.invalid"}, rate_limit=RateLimit(requests_per_second=1000,
                                                                                    burst=1000))


def call(tmp_path, answers: list[Callable[[httpx.Request], httpx.Response]], method: str = "POST",
         **kwargs) -> tuple[object, list[httpx.Request]]:
    """Send one request through a connection's client to a provider that
    answers with ``answers`` in turn; the outcome (response or error) and
    what reached the provider."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1](request)

    registry = PluginRegistry()
    registry.register(module_plugin("scripted_plugin", INFO, [EntitySchema("things", "Things")]), "scripted")
    hub = Hub(Settings(data_dir=tmp_path, secret_key="k", http_retry_base_delay=0.01), registry,
              transport=httpx.MockTransport(handler))
    connection = Connection(id="c1", organization_id="o", provider="scripted", category="test", name="s")

    async def send() -> object:
        ctx = hub.context(hub.provider("scripted"), connection)
        ctx.http.retry.deadline = kwargs.pop("deadline", ctx.http.retry.deadline)
        try:
            return await ctx.http.request(method, ctx.url(path="/things"), **kwargs)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc
        finally:
            await hub.close()

    return asyncio.run(send()), seen


def status(code: int, **headers: str) -> Callable[[httpx.Request], httpx.Response]:
    return lambda request: httpx.Response(code, headers=headers, json={})


def timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("no answer", request=request)


def refused(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_a_post_the_provider_may_have_applied_is_not_sent_again(tmp_path):
    outcome, seen = call(tmp_path, [status(502), status(201)])
    assert isinstance(outcome, ProviderUnavailable) and len(seen) == 1
    outcome, seen = call(tmp_path, [timeout, status(201)])
    assert isinstance(outcome, ProviderUnavailable) and len(seen) == 1
    assert "may have applied it, so it was not sent again" in outcome.message


def test_what_is_safe_to_repeat_is_retried(tmp_path):
    for method, headers, kwargs in (("GET", {}, {}), ("PUT", {}, {}), ("POST", {"Idempotency-Key": "k1"}, {}),
                                    ("POST", {}, {"idempotent": True})):
        outcome, seen = call(tmp_path, [status(502), timeout, status(200)], method=method, headers=headers,
                             **kwargs)
        assert isinstance(outcome, httpx.Response) and outcome.status_code == 200, (method, outcome)
        assert len(seen) == 3
    # A POST whose connection was never made, or that was refused with a 429, did not reach the provider.
    outcome, seen = call(tmp_path, [refused, status(429, **{"Retry-After": "0"}), status(201)])
    assert isinstance(outcome, httpx.Response) and outcome.status_code == 201 and len(seen) == 3


def test_a_429_storm_the_provider_paces_is_waited_out_not_counted_as_failures(tmp_path):
    storm = [status(429, **{"Retry-After": "0.01"})] * 12 + [status(200)]
    outcome, seen = call(tmp_path, storm, method="GET")
    assert isinstance(outcome, httpx.Response) and outcome.status_code == 200 and len(seen) == 13


def test_no_request_goes_on_past_the_deadline(tmp_path):
    outcome, seen = call(tmp_path, [status(503, **{"Retry-After": "0.2"})] * 10, method="GET", deadline=0.5)
    assert isinstance(outcome, ProviderUnavailable) and 2 <= len(seen) <= 4


def test_rate_limited_always_says_when_to_come_back(tmp_path):
    outcome, seen = call(tmp_path, [status(429)] * 10, method="GET")
    assert isinstance(outcome, RateLimited) and outcome.retry_after is not None and outcome.retry_after >= 1
    assert len(seen) == 6


def test_an_attempt_under_way_is_cut_off_at_the_deadline(tmp_path):
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    started = time.monotonic()
    outcome, seen = call(tmp_path, [slow], method="GET", deadline=0.5)
    assert isinstance(outcome, ProviderUnavailable) and "no answer within 0.5 s" in outcome.message
    assert time.monotonic() - started < 3 and len(seen) == 1


def test_the_operator_sets_how_long_a_hung_provider_may_hold_a_call(tmp_path):
    """HUB_HTTP_TIMEOUT_SECONDS and HUB_HTTP_DEADLINE_SECONDS, against a real
    socket that accepts and never answers (90 s by default, longer than many
    proxies wait)."""
    import socket

    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(8)
    registry = PluginRegistry()
    registry.register(module_plugin("scripted_plugin", INFO, [EntitySchema("things", "Things")]), "scripted")
    hub = Hub(Settings(data_dir=tmp_path, secret_key="k", http_timeout_seconds=0.3, http_deadline_seconds=1.0,
                       http_retry_base_delay=0.01), registry)
    connection = Connection(id="c1", organization_id="o", provider="scripted", category="test", name="s")

    async def send() -> object:
        ctx = hub.context(hub.provider("scripted"), connection)
        try:
            return await ctx.http.request("GET", f"http://127.0.0.1:{hung.getsockname()[1]}/things")
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            return exc
        finally:
            await hub.close()

    started = time.monotonic()
    try:
        outcome = asyncio.run(send())
    finally:
        hung.close()
    assert isinstance(outcome, ProviderUnavailable), outcome
    assert time.monotonic() - started < 3
