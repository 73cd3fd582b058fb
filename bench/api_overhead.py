"""API overhead of the hub, measured in one run on loopback.

1. ``GET /connections/{id}/entities/notes/records`` through the hub versus a
   direct ``httpx`` call to the same fake provider (the example provider's
   fake, answering with a provider-like latency of PROVIDER_LATENCY_MS).
   Target: hub p50 at most 1.3x direct.
2. ``GET /providers`` throughput versus a bare FastAPI endpoint returning the
   same JSON. Target: at least 0.7x.

Each server runs in its own process; the load generator is this process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile

import httpx

from _common import ROOT, latencies, p50, server, throughput

PROVIDER_LATENCY_MS = float(os.environ.get("PROVIDER_LATENCY_MS", "20"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "300"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))


def fake_factory(latency_ms: float):
    import asyncio as _asyncio

    from hub_example.testing import create_app

    app = create_app(notes=200, rate=1_000_000)

    @app.middleware("http")
    async def provider_latency(request, call_next):
        await _asyncio.sleep(latency_ms / 1000)
        return await call_next(request)

    return app


def hub_factory():
    import hub_example

    from hub.api.main import create_app
    from hub.config import Settings
    from hub.plugins import PluginRegistry

    registry = PluginRegistry()
    registry.register(hub_example, "example")
    return create_app(Settings(), registry)


def bare_factory(payload: dict):
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/providers")
    async def providers():
        return payload

    @app.get("/")
    async def root():
        return {}

    return app


def main() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    data = tempfile.mkdtemp(prefix="hub-bench-")
    from hub_example.testing import API_KEY

    # The fake enforces no limit here: measure the hub, not the rate limiter.
    env = {"HUB_DATA_DIR": data, "HUB_SECRET_KEY": "bench", "HUB_RUN_SCHEDULER": "false",
           "HUB_EXAMPLE_REQUESTS_PER_SECOND": "1000000", "HUB_EXAMPLE_BURST": "1000"}
    with server("api_overhead:fake_factory", 18801, latency_ms=PROVIDER_LATENCY_MS) as fake:
        env["HUB_EXAMPLE_ORIGIN"] = fake
        with server("api_overhead:hub_factory", 18802, env=env) as hub:
            key = _create_org(data)
            auth = {"Authorization": f"Bearer {key}"}
            created = httpx.post(f"{hub}/api/v1/integrations/connections", headers=auth,
                                 json={"provider": "example", "credentials": {"api_key": API_KEY}})
            created.raise_for_status()
            connection = created.json()["connection"]["id"]
            hub_url = f"{hub}/api/v1/integrations/connections/{connection}/entities/notes/records?limit=50"
            direct_url = f"{fake}/v1/notes?limit=50"
            direct_auth = {"Authorization": f"Bearer {API_KEY}"}

            direct_lat = asyncio.run(latencies(direct_url, direct_auth, REQUESTS))
            hub_lat = asyncio.run(latencies(hub_url, auth, REQUESTS))
            direct_rps = asyncio.run(throughput(direct_url, direct_auth, SECONDS))
            hub_rps = asyncio.run(throughput(hub_url, auth, SECONDS))

            providers_url = f"{hub}/api/v1/integrations/providers"
            payload = httpx.get(providers_url).json()
            hub_providers_rps = asyncio.run(throughput(providers_url, {}, SECONDS))
        with server("api_overhead:bare_factory", 18803, payload=payload) as bare:
            bare_rps = asyncio.run(throughput(f"{bare}/providers", {}, SECONDS))

    ratio = p50(hub_lat) / p50(direct_lat)
    print(f"provider latency simulated by the fake: {PROVIDER_LATENCY_MS:.0f} ms")
    print(f"records p50: hub {p50(hub_lat) * 1000:.2f} ms, direct {p50(direct_lat) * 1000:.2f} ms, "
          f"overhead {(p50(hub_lat) - p50(direct_lat)) * 1000:.2f} ms, ratio {ratio:.2f}x (target <= 1.3x)")
    print(f"records throughput (8 clients): hub {hub_rps:.0f} req/s, direct {direct_rps:.0f} req/s, "
          f"ratio {hub_rps / direct_rps:.2f}x")
    print(f"GET /providers throughput: hub {hub_providers_rps:.0f} req/s, bare FastAPI {bare_rps:.0f} req/s, "
          f"ratio {hub_providers_rps / bare_rps:.2f}x (target >= 0.7x)")


def _create_org(data_dir: str) -> str:
    from hub.config import Settings
    from hub.runtime import Hub
    from hub.services.orgs import create_organization
    from hub.plugins import PluginRegistry

    hub = Hub(Settings(data_dir=data_dir, secret_key="bench"), PluginRegistry())
    with hub.session() as session:
        _org, key = create_organization(session, "bench")
    return key


if __name__ == "__main__":
    main()
