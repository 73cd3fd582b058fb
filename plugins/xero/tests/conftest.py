"""Fixtures for the Xero plugin's tests: the fake Xero over real HTTP on
loopback, the hub (SQLite) with only this plugin, and a harness that connects
Xero organisations through the hub's OAuth API."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hub_xero
from hub.api.main import create_app
from hub.config import Settings
from hub.models import Connection
from hub.plugins import PluginRegistry
from hub.testing import HubAPI
from hub.services.orgs import create_organization
from hub_xero import testing as fake

API = "/api/v1/integrations"
PUBLIC_URL = "https://hub.example.com"


@dataclasses.dataclass
class Xero(HubAPI):
    """The hub's API client, an organization's auth headers, and the fake Xero."""

    fake: FastAPI
    hub_app: FastAPI

    def organization(self, name: str) -> dict[str, str]:
        """The auth headers of another organization."""
        with self.hub_app.state.hub.session() as session:
            _org, key = create_organization(session, name)
        return {"Authorization": f"Bearer {key}"}

    def authorize(self, auth: dict[str, str] | None = None, **params: str) -> str:
        """Start the flow through the hub: the URL to send the user to."""
        response = self.client.get(f"{API}/oauth/xero/authorize", params=params, headers=auth or self.auth)
        assert response.status_code == 200, response.text
        return response.json()["authorization_url"]

    def consent(self, authorization_url: str, tenants: tuple[str, ...] = (fake.TENANT,)) -> str:
        """The user approves the app for ``tenants`` at Xero: the path and query Xero sends them back to."""
        self.fake.state.consent = list(tenants)
        response = httpx.get(authorization_url, follow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        back = urlsplit(response.headers["location"])
        assert f"{back.scheme}://{back.netloc}" == PUBLIC_URL
        return f"{back.path}?{back.query}"

    def callback(self, tenants: tuple[str, ...] = (fake.TENANT,), auth: dict[str, str] | None = None,
                 **params: str) -> httpx.Response:
        return self.client.get(self.consent(self.authorize(auth, **params), tenants))

    def connect(self, tenants: tuple[str, ...] = (fake.TENANT,), auth: dict[str, str] | None = None,
                **params: str) -> dict[str, Any]:
        callback = self.callback(tenants, auth, **params)
        assert callback.status_code == 200, callback.text
        return callback.json()["connection"]

    def secrets(self, connection: dict[str, Any]) -> dict[str, Any]:
        hub = self.hub_app.state.hub
        with hub.session() as session:
            return hub.cipher.decrypt_json(session.get(Connection, connection["id"]).credentials_encrypted)

    def deliver(self, headers: dict[str, str], body: bytes) -> httpx.Response:
        return self.client.post(f"{API}/webhooks/xero", content=body, headers=headers)

    def tenant(self, tenant: str = fake.TENANT) -> fake.Tenant:
        return self.fake.state.tenant(tenant)


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """Options of the fake Xero; a test overrides them with ``parametrize``. By
    default windows no test reaches (tests about the limits scale them down)."""
    return {"minute": (10_000, 60.0)}


@pytest.fixture
def limits() -> dict[str, Any]:
    """The plugin's declared limits (``hub_xero.info`` arguments), Xero's unless a
    test scales them down in time; the hub's windows match the fake's by default."""
    return {"minute": (10_000, 60.0)}


@pytest.fixture
def xero(serve_app, fake_options, limits, tmp_path, monkeypatch) -> Xero:
    app = fake.create_app(**fake_options)
    fake_url = serve_app(app)
    for key in ("HUB_PLUGINS", "HUB_DATABASE_URL", "HUB_SECRET_KEY", "HUB_PUBLIC_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"ORIGIN": fake_url, "CLIENT_ID": fake.CLIENT_ID, "CLIENT_SECRET": fake.CLIENT_SECRET,
                       "WEBHOOK_KEY": fake.WEBHOOK_KEY}.items():
        monkeypatch.setenv(f"HUB_XERO_{key}", value)
    monkeypatch.setattr(hub_xero, "INFO", hub_xero.info(**limits))
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        public_url=PUBLIC_URL, run_scheduler=False, http_retry_attempts=4,
                        http_retry_base_delay=0.02)
    registry = PluginRegistry()
    registry.register(hub_xero, "xero")
    hub_app = create_app(settings, registry)
    with TestClient(hub_app) as client:
        with hub_app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        yield Xero(client, {"Authorization": f"Bearer {key}"}, app, hub_app)


