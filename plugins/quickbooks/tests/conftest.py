"""Fixtures for the QuickBooks plugin's tests: the fake Intuit over real HTTP
on loopback (one server for the session, each test plugging in its own fake),
the hub (SQLite) with only this plugin, and helpers that walk the OAuth flow
through the hub's REST API."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hub_quickbooks
from hub.api.main import create_app
from hub.config import Settings
from hub.models import Connection
from hub.plugins import PluginRegistry
from hub.services.orgs import create_organization
from hub.testing import HubAPI, Switch, serve
from hub.testing.fakes import Scripted
from hub_quickbooks import testing as fake

API = "/api/v1/integrations"


@dataclass
class QBO(HubAPI):
    """The hub's API client, an organization's auth headers, and the fake Intuit."""

    fake: Any  # the fake's app (or a Scripted around it)
    hub_app: FastAPI

    @property
    def app(self) -> FastAPI:
        return getattr(self.fake, "app", self.fake)

    def organization(self, name: str = "other") -> dict[str, str]:
        with self.hub_app.state.hub.session() as session:
            _org, key = create_organization(session, name)
        return {"Authorization": f"Bearer {key}"}

    def start(self, auth: dict[str, str] | None = None) -> str:
        response = self.client.get(f"{API}/oauth/quickbooks/authorize", headers=auth or self.auth)
        assert response.status_code == 200, response.text
        return response.json()["authorization_url"]

    def consent(self, authorization_url: str, realm: str = fake.REALM) -> dict[str, str]:
        """The fake user approves, choosing the company ``realm``: the query Intuit redirects back with."""
        response = httpx.get(f"{authorization_url}&{urlencode({'realm': realm})}", timeout=10)
        assert response.status_code in (302, 307), response.text
        location = urlsplit(response.headers["location"])
        assert location.path == f"{API}/oauth/quickbooks/callback"
        return {k: v[0] for k, v in parse_qs(location.query).items()}

    def callback(self, query: dict[str, str]) -> httpx.Response:
        return self.client.get(f"{API}/oauth/quickbooks/callback", params=query)

    def connect(self, realm: str = fake.REALM, auth: dict[str, str] | None = None) -> dict[str, Any]:
        response = self.callback(self.consent(self.start(auth), realm))
        assert response.status_code == 200, response.text
        return response.json()["connection"]

    def secrets(self, connection_id: str) -> dict[str, Any]:
        hub = self.hub_app.state.hub
        with hub.session() as session:
            return hub.cipher.decrypt_json(session.get(Connection, connection_id).credentials_encrypted)

    def row(self, connection_id: str) -> Connection:
        with self.hub_app.state.hub.session() as session:
            return session.get(Connection, connection_id)

    def queries(self) -> list[str]:
        """The query texts the fake was asked, in order."""
        return [query["query"] for _method, path, query in self.app.state.calls if path.endswith("/query")]


@pytest.fixture(scope="session")
def intuit_server():
    switch = Switch()
    with serve(switch) as url:
        yield switch, url


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """Options of the fake; tests override them with ``parametrize``. Loose limits by default."""
    return {"per_second": 1000, "per_minute": 100_000}


@pytest.fixture
def hub_env() -> dict[str, str]:
    """``HUB_QUICKBOOKS_*`` settings: the hub's own pacing off where a test is not about it,
    and a short wait after a 429 (Intuit advises a minute)."""
    return {"REQUESTS_PER_SECOND": "500", "BURST": "500", "RATE_LIMITS": "off", "THROTTLE_WAIT_SECONDS": "0.5"}


@pytest.fixture
def qbo(intuit_server, fake_options, hub_env, tmp_path, monkeypatch):
    switch, url = intuit_server
    switch.app = Scripted(fake.create_app(**fake_options))
    for key in [k for k in os.environ if k.startswith("HUB_")]:
        monkeypatch.delenv(key)
    env = {"ORIGIN": url, "CLIENT_ID": fake.CLIENT_ID, "CLIENT_SECRET": fake.CLIENT_SECRET,
           "WEBHOOK_VERIFIER_TOKEN": fake.VERIFIER_TOKEN, **hub_env}
    for key, value in env.items():
        monkeypatch.setenv(f"HUB_QUICKBOOKS_{key}", value)
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        http_retry_attempts=4, http_retry_base_delay=0.01)
    registry = PluginRegistry()
    registry.register(hub_quickbooks, "quickbooks")
    hub_app = create_app(settings, registry)
    with TestClient(hub_app) as client:
        with hub_app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        yield QBO(client, {"Authorization": f"Bearer {key}"}, switch.app, hub_app)


@pytest.fixture
def connection(qbo) -> dict[str, Any]:
    """A connection to the company ``fake.REALM`` through the OAuth flow."""
    return qbo.connect()
