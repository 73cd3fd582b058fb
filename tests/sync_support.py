"""Helpers of the sync tests: an in-memory provider ("ledger"), hub and
connection set-up, waiting for runs, launching ``hub`` commands as
subprocesses with the example provider discoverable, and the fixtures
``stripe_env`` and ``shopify_env``: the hub's API over the fake Stripe or the
fake Shopify (real loopback HTTP)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from hub import hookimpl, testing
from hub.models import Connection, SyncRecord, SyncRun
from hub.runtime import Hub
from hub.services.orgs import create_organization
from hub.testing import wait_for_run
from hub.types import (
    Credentials,
    EntityField,
    EntitySchema,
    NotFound,
    Page,
    ProviderInfo,
    ProviderUnavailable,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = ROOT / "tests" / "example_provider"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


class Ledger:
    """An in-memory provider.

    ``items`` pages by position and filters by ``updated_at`` (incremental by
    watermark); ``changes`` is a change log paged like Plaid's
    ``/transactions/sync``: removals come as ``Page.deleted_ids`` and the
    position after the last page as ``Page.watermark``.
    ``fail_on_call`` makes that list call (1-based) raise ``ProviderUnavailable``.
    ``parsed_pages`` returns each page as a real client would, newly parsed
    from JSON (new objects and strings), not copies sharing the stored values.
    """

    def __init__(self, items: int = 0):
        self.items: dict[str, dict[str, Any]] = {}
        self.log: list[tuple[str, str, dict[str, Any] | None]] = []
        self.calls: list[tuple[str, str | None, datetime | None]] = []
        self.fail_on_call: int | None = None
        self.on_call: Any = None
        #: When set, the next cursor after each ``items`` cursor (pages going round in a cycle).
        self.next_cursors: dict[str | None, str | None] | None = None
        self.parsed_pages = False
        #: Items whose updates fail as if the provider were down.
        self.failing_updates: set[str] = set()
        #: Called with the item's id before each update.
        self.on_update: Any = None
        self.clock = T0
        for i in range(items):
            self.put(f"it_{i:05d}", {"name": f"item {i}", "amount": i * 100, "active": i % 2 == 0})

    def tick(self) -> str:
        self.clock += timedelta(seconds=1)
        return self.clock.isoformat()

    def put(self, item_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        record = {**self.items.get(item_id, {}), **fields, "id": item_id, "updated_at": self.tick()}
        self.items[item_id] = record
        self.log.append(("upsert", item_id, dict(record)))
        return record

    def remove(self, item_id: str) -> None:
        self.items.pop(item_id, None)
        self.log.append(("remove", item_id, None))

    @hookimpl
    def provider_info(self):
        return ProviderInfo(name="ledger", label="Ledger", category="test", auth_type="api_key",
                            credential_fields=(EntityField("api_key", required=True),))

    @hookimpl
    def entity_schemas(self):
        fields = (
            EntityField("id", readonly=True), EntityField("name"), EntityField("amount", type="integer"),
            EntityField("active", type="boolean"), EntityField("updated_at", type="datetime", readonly=True),
            EntityField("details", type="object"),
        )
        return [
            EntitySchema("items", "Items", fields, updated_field="updated_at", supports_create=True,
                         supports_update=True, supports_delete=True, supports_since=True),
            EntitySchema("changes", "Changes", fields, updated_field="updated_at"),
        ]

    @hookimpl
    def list_records(self, entity, cursor, page_size, since):
        self.calls.append((entity, cursor, since))
        if self.on_call is not None:
            self.on_call(len(self.calls))
        if self.fail_on_call is not None and len(self.calls) == self.fail_on_call:
            raise ProviderUnavailable("ledger is down")
        start = int(cursor or 0)
        if entity == "items":
            rows = [r for r in self.items.values()
                    if since is None or datetime.fromisoformat(r["updated_at"]) >= since]
            page = rows[start:start + page_size]
            more = start + page_size < len(rows)
            next_cursor = str(start + page_size) if more else None
            if self.next_cursors is not None:
                next_cursor = self.next_cursors.get(cursor)
            records = json.loads(json.dumps(page)) if self.parsed_pages else [dict(r) for r in page]
            return Page(records=records, next_cursor=next_cursor)
        entries = self.log[start:start + page_size]
        end = start + len(entries)
        more = end < len(self.log)
        return Page(records=[dict(r) for op, _, r in entries if op == "upsert"],
                    deleted_ids=[i for op, i, _ in entries if op == "remove"],
                    next_cursor=str(end) if more else None, watermark=None if more else str(end))

    @hookimpl
    def create_record(self, entity, data, idempotency_key):
        item_id = f"it_new_{len(self.items)}_{idempotency_key[-6:]}"
        return dict(self.put(item_id, data))

    @hookimpl
    def update_record(self, entity, record_id, data):
        if self.on_update is not None:
            self.on_update(record_id)
        if record_id in self.failing_updates:
            raise ProviderUnavailable(f"ledger cannot update {record_id} right now")
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        return dict(self.put(record_id, data))

    @hookimpl
    def delete_record(self, entity, record_id):
        if record_id not in self.items:
            raise NotFound(f"no item {record_id}")
        self.remove(record_id)
        return True


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def ledger_hub(settings: Any, ledger: Any) -> Hub:
    """A migrated hub serving ``ledger`` (or a variant of it) as the provider ``ledger``."""
    from hub.plugins import PluginRegistry

    registry = PluginRegistry()
    registry.register(ledger, "ledger")
    hub = Hub(settings, registry)
    hub.migrate()
    return hub


@contextmanager
def serving(settings: Any, provider: Any) -> Iterator[tuple[Any, Any, dict[str, str]]]:
    """The hub's app serving ``provider`` (a ledger variant) as ``ledger``,
    with a client that answers 500s rather than raising, and the headers of a
    new organization: ``(app, client, headers)``."""
    from fastapi.testclient import TestClient

    from hub.api.main import create_app
    from hub.plugins import PluginRegistry
    from tests.conftest import make_org

    registry = PluginRegistry()
    registry.register(provider, "ledger")
    app = create_app(settings, registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = make_org(app)
        headers.pop("org_id")
        yield app, client, headers


def make_connection(hub: Hub, provider: str, credentials: dict[str, Any], org_name: str = "acme",
                    **fields: Any) -> Connection:
    """An organization and a connection to ``provider`` straight in the database."""
    with hub.session() as session:
        org, _key = create_organization(session, org_name)
    connection = Connection(organization_id=org.id, provider=provider, category="test", name=provider, **fields)
    hub.store_credentials(connection, Credentials(secrets=credentials))
    with hub.session() as session:
        session.add(connection)
        session.commit()
        session.refresh(connection)
    return connection


def stored(hub: Hub, connection_id: str, entity: str, include_deleted: bool = False) -> dict[str, dict[str, Any]]:
    """The stored records by provider id (live ones only, by default)."""
    from sqlmodel import select

    with hub.session() as session:
        rows = session.exec(select(SyncRecord).where(SyncRecord.connection_id == connection_id,
                                                     SyncRecord.entity == entity))
        return {r.remote_id: r.data for r in rows if include_deleted or not r.deleted}


def stored_rows(hub: Hub, connection_id: str, entity: str) -> list[SyncRecord]:
    from sqlmodel import select

    with hub.session() as session:
        return list(session.exec(select(SyncRecord).where(SyncRecord.connection_id == connection_id,
                                                          SyncRecord.entity == entity)))


def get_run(hub: Hub, run_id: str) -> SyncRun:
    with hub.session() as session:
        run = session.get(SyncRun, run_id)
        assert run is not None
        return run


def wait_run(client: Any, auth: dict[str, str], connection_id: str, run_id: str, timeout: float = 20) -> dict:
    """Poll the API until the run finished; returns it."""
    return wait_for_run(client, auth, connection_id, run_id, timeout)


def wait_until(predicate: Any, timeout: float = 30, interval: float = 0.05, message: str = "condition") -> None:
    """:func:`hub.testing.wait_until`, as this module's callers name its arguments."""
    testing.wait_until(predicate, message, timeout, interval)


def waiting_for_a_lock(hub: Hub) -> bool:
    """Whether a session of the hub's PostgreSQL database waits for a lock
    (a row's, or an advisory lock's) held by another."""
    with hub.engine.connect() as connection:
        return bool(connection.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").scalar())


def subprocess_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Environment for ``hub`` subprocesses that sees the example provider.

    When ``hub-example`` is not installed, a minimal distribution record on
    ``PYTHONPATH`` declares its entry point."""
    paths = [str(EXAMPLE_DIR), str(ROOT)]
    try:
        found = importlib.metadata.entry_points(group="hub.providers", name="example")
    except Exception:
        found = ()
    if not found:
        dist = tmp_path / "dists" / "hub_example-0.0.0.dist-info"
        dist.mkdir(parents=True, exist_ok=True)
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hub-example\nVersion: 0.0.0\n")
        (dist / "entry_points.txt").write_text("[hub.providers]\nexample = hub_example\n")
        paths.insert(0, str(dist.parent))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update({"PYTHONPATH": os.pathsep.join(paths + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "HUB_PLUGINS": "example", "HUB_SECRET_KEY": "test-secret-key",
                "HUB_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def hub_command() -> list[str]:
    return [sys.executable, "-m", "hub.cli"]


# ---------------------------------------------------------------- the API over a fake Stripe or Shopify

API = "/api/v1/integrations"



class ProviderApi:
    """The hub's records and sync-config API of one connection, over a fake
    provider (``fake``) served on loopback."""

    def __init__(self, client, auth, cid, fake):
        self.client, self.auth, self.cid, self.fake = client, auth, cid, fake

    def config(self, entity, mappings, direction="both", policy="provider_wins"):
        r = self.client.post(f"{API}/connections/{self.cid}/sync-configs",
                             json={"entity": entity, "direction": direction, "conflict_policy": policy,
                                   "mappings": mappings}, headers=self.auth)
        return r

    def use(self, entity, mappings, **kw):
        r = self.config(entity, mappings, **kw)
        assert r.status_code == 201, r.text
        self.entity = entity
        self.config_url = f"{API}/connections/{self.cid}/sync-configs/{r.json()['sync_config']['id']}"
        self.records = f"{self.config_url}/records"
        return r.json()["sync_config"]

    def run(self, direction="pull", **body):
        r = self.client.post(f"{API}/connections/{self.cid}/sync", json={"entity": self.entity,
                                                                        "direction": direction, **body},
                             headers=self.auth)
        assert r.status_code == 202, r.text
        return wait_for_run(self.client, self.auth, self.cid, r.json()["run"]["id"])

    def wait(self, run_id):
        return wait_for_run(self.client, self.auth, self.cid, run_id)

    def get(self, rid, mapped=True):
        return self.client.get(f"{self.records}/{rid}", params={"mapped": mapped}, headers=self.auth)

    def list(self, **params):
        return self.client.get(self.records, params=params, headers=self.auth)

    def put(self, rid, data, **kw):
        return self.client.put(f"{self.records}/{rid}", json={"data": data, **kw}, headers=self.auth)

    def post(self, data, **kw):
        return self.client.post(self.records, json={"data": data, **kw}, headers=self.auth)

    def put_mappings(self, mappings):
        return self.client.put(f"{self.config_url}/mappings", json={"mappings": mappings}, headers=self.auth)


def _api_settings(tmp_path, monkeypatch):
    from hub.config import Settings

    for key in [k for k in os.environ if k.startswith("HUB_")]:
        monkeypatch.delenv(key)
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                    http_retry_attempts=4, http_retry_base_delay=0.01, oauth_return_hosts="app.example.com")


@pytest.fixture
def stripe_env(serve_app, tmp_path, monkeypatch):
    """The hub's API over the fake Stripe, with a connection to it."""
    from fastapi.testclient import TestClient

    from hub.api.main import create_app
    from hub.plugins import PluginRegistry
    import hub_stripe
    from hub_stripe.testing import API_KEY, create_app as create_fake

    settings = _api_settings(tmp_path, monkeypatch)
    fake = create_fake(rate=1000, available=100_000)
    monkeypatch.setenv("HUB_STRIPE_ORIGIN", serve_app(fake))
    registry = PluginRegistry()
    registry.register(hub_stripe, "stripe")
    app = create_app(settings, registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        with app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        auth = {"Authorization": f"Bearer {key}"}
        r = client.post(f"{API}/connections", json={"provider": "stripe", "credentials": {"api_key": API_KEY}},
                        headers=auth)
        assert r.status_code == 201, r.text
        yield ProviderApi(client, auth, r.json()["connection"]["id"], fake)


SHOPIFY_APP_URL = "https://app.example.com/shopify/done"


@pytest.fixture
def shopify_app(serve_app, tmp_path, monkeypatch):
    """The hub's API over the fake Shopify, no shop connected yet: (client, auth, fake's app)."""
    with _shopify_hub(serve_app, tmp_path, monkeypatch) as started:
        yield started


@contextmanager
def _shopify_hub(serve_app, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from hub.api.main import create_app
    from hub.plugins import PluginRegistry
    import hub_shopify
    from hub_shopify import testing as fake

    shop = fake.create_app(products=0, capacity=40, leak_per_second=50.0)
    url = serve_app(shop)
    settings = _api_settings(tmp_path, monkeypatch)
    for key, value in {"ORIGIN": url, "CLIENT_ID": fake.CLIENT_ID, "CLIENT_SECRET": fake.CLIENT_SECRET,
                       "REQUESTS_PER_SECOND": "50"}.items():
        monkeypatch.setenv(f"HUB_SHOPIFY_{key}", value)
    registry = PluginRegistry()
    registry.register(hub_shopify, "shopify")
    app = create_app(settings, registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        with app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        yield client, {"Authorization": f"Bearer {key}"}, shop


def shopify_consent(client, auth) -> dict[str, str]:
    """Begin the OAuth flow and consent at the fake Shopify: the callback's query (state, code, shop...)."""
    from hub_shopify import testing as fake

    r = client.get(f"{API}/oauth/shopify/authorize", params={"shop": fake.SHOP, "redirect_uri": SHOPIFY_APP_URL},
                   headers=auth)
    assert r.status_code == 200, r.text
    consent = httpx.get(r.json()["authorization_url"], follow_redirects=False, timeout=10)
    return {k: v[0] for k, v in parse_qs(urlsplit(consent.headers["location"]).query).items()}


@pytest.fixture
def shopify_env(serve_app, tmp_path, monkeypatch):
    """The hub's API over the fake Shopify, connected through its OAuth consent."""
    with _shopify_hub(serve_app, tmp_path, monkeypatch) as (client, auth, shop):
        back = client.get(f"{API}/oauth/shopify/callback", params=shopify_consent(client, auth),
                          follow_redirects=False)
        result = {k: v[0] for k, v in parse_qs(urlsplit(back.headers["location"]).query).items()}
        assert result["status"] == "connected", result
        yield ProviderApi(client, auth, result["connection_id"], shop)
