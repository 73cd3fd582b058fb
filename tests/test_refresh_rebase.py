"""A refresh that moves the provider's host (Salesforce's ``instance_url``)
moves the calls it retries: each call built on the old host is sent again to
the new one, also a second call of the same context whose 401 comes after the
first call's refresh moved it."""
import asyncio
import types

import httpx
import pytest

from hub import hookimpl
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.types import Credentials, EntityField, EntitySchema, Page, ProviderInfo, RequestAuth
from tests.sync_support import make_connection

OLD, NEW = "https://old.example.test", "https://new.example.test"


def plugin():
    p = types.ModuleType("movers")
    info = ProviderInfo(name="movers", label="Movers", category="crm", auth_type="oauth2",
                        urls={"authorize": "https://login.example.test/a", "token": "https://login.example.test/t",
                              "api": "{instance_url}/services/data"},
                        config_fields=(EntityField("instance_url", "Instance URL", readonly=True),))
    counter = {"refreshes": 0}

    @hookimpl
    def provider_info():
        return info

    @hookimpl
    def entity_schemas():
        return [EntitySchema("contacts", "Contacts", (EntityField("id"),))]

    @hookimpl
    async def refresh_credentials(ctx):
        counter["refreshes"] += 1
        return Credentials(secrets={"access_token": f"t{counter['refreshes']}"}, config={"instance_url": NEW})

    @hookimpl
    def authorization_url(ctx, redirect_uri, state, code_challenge):
        return "https://login.example.test/a"

    @hookimpl
    async def exchange_code(ctx, code, redirect_uri, code_verifier):
        raise NotImplementedError

    @hookimpl
    def request_auth(ctx):
        return RequestAuth(headers={"Authorization": f"Bearer {ctx.credentials['access_token']}"})

    @hookimpl
    async def list_records(ctx, entity):
        return Page(records=[])

    for name, value in list(locals().items()):
        if hasattr(value, "hub_impl"):
            setattr(p, name, value)
    p.counter = counter
    return p


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_calls_in_flight_when_a_refresh_moves_the_host_are_all_sent_again_to_the_new_host(settings):
    mod = plugin()
    registry = PluginRegistry()
    registry.register(mod, "movers")
    hub = Hub(settings, registry)
    hub.migrate()
    connection = make_connection(hub, "movers", {"access_token": "t0", "refresh_token": "r"},
                                 config={"instance_url": OLD})
    seen: list[str] = []

    async def run():
        first_retried = asyncio.Event()

        async def handler(request: httpx.Request):
            seen.append(f"{request.url.host}{request.url.path} {request.headers['authorization']}")
            if request.url.host == "old.example.test":
                if request.url.path.endswith("/b"):
                    await first_retried.wait()  # B's 401 arrives after A's refresh and retry
                return httpx.Response(401, json={"error": "INVALID_SESSION_ID"})
            first_retried.set()
            return httpx.Response(200, json={"ok": request.url.path})

        hub.pool.transport = httpx.MockTransport(handler)
        try:
            ctx = hub.context(hub.provider("movers"), connection)
            a, b = ctx.url("api", path="/a"), ctx.url("api", path="/b")  # both built on the old host
            return await asyncio.gather(ctx.http.json("GET", a), ctx.http.json("GET", b), return_exceptions=True)
        finally:
            await hub.close()

    results = asyncio.run(run())
    assert results == [{"ok": "/services/data/a"}, {"ok": "/services/data/b"}], (results, seen)
    assert [line.split(" ")[0] for line in seen if line.startswith("new.")] == [
        "new.example.test/services/data/a", "new.example.test/services/data/b"], seen
