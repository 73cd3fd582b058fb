"""Fixtures for the HubSpot plugin's tests: the fake HubSpot over real HTTP on
loopback, the hub (SQLite) with only this plugin, and a harness that connects
portals through the hub's OAuth API."""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hub_hubspot
from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import PluginRegistry
from hub.testing import HubAPI
from hub.services.orgs import create_organization
from hub_hubspot import testing as fake

API = "/api/v1/integrations"
PUBLIC_URL = "https://hub.example.com"


@dataclasses.dataclass
class HubSpot(HubAPI):
    """The hub's API client, an organization's auth headers, and the fake HubSpot."""

    fake: FastAPI
    fake_url: str
    hub_app: FastAPI

    def organization(self, name: str) -> dict[str, str]:
        """The auth headers of another organization."""
        with self.hub_app.state.hub.session() as session:
            _org, key = create_organization(session, name)
        return {"Authorization": f"Bearer {key}"}

    def authorize(self, auth: dict[str, str] | None = None) -> str:
        """Start the flow through the hub: the URL to send the user to."""
        response = self.client.get(f"{API}/oauth/hubspot/authorize", headers=auth or self.auth)
        assert response.status_code == 200, response.text
        return response.json()["authorization_url"]

    def consent(self, authorization_url: str, portal: int = fake.PORTAL_ID) -> str:
        """The user picks ``portal`` at HubSpot: the path and query HubSpot sends them back to."""
        self.fake.state.consenting_portal = portal
        response = httpx.get(authorization_url, follow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        back = urlsplit(response.headers["location"])
        assert f"{back.scheme}://{back.netloc}" == PUBLIC_URL
        return f"{back.path}?{back.query}"

    def connect(self, portal: int = fake.PORTAL_ID, auth: dict[str, str] | None = None) -> dict[str, Any]:
        callback = self.client.get(self.consent(self.authorize(auth), portal))
        assert callback.status_code == 200, callback.text
        return callback.json()["connection"]

    def deliver(self, headers: dict[str, str], body: bytes, **params: str) -> httpx.Response:
        return self.client.post(f"{API}/webhooks/hubspot", params=params, content=body, headers=headers)

    @property
    def webhook_url(self) -> str:
        """The URL HubSpot is given for its deliveries (what v3 signs)."""
        return self.hub_app.state.hub.webhook_url("hubspot")


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """Options of the fake HubSpot; a test overrides them with ``parametrize``. By
    default a window no test reaches (tests about the limit scale it down)."""
    return {"ten_secondly": (10_000, 10.0)}


@pytest.fixture
def limits() -> dict[str, Any]:
    """The plugin's declared limits (``hub_hubspot.info`` arguments), HubSpot's unless a
    test scales them down in time; the hub's window matches the fake's by default."""
    return {"ten_secondly": (10_000, 10.0)}


@pytest.fixture
def hub_settings(request, monkeypatch) -> dict[str, Any]:
    """The hub's settings a test parametrizes; parametrized indirectly, the
    value of ``HUB_HUBSPOT_PROPERTIES`` (else unset)."""
    said = getattr(request, "param", None)
    if said:
        monkeypatch.setenv("HUB_HUBSPOT_PROPERTIES", said)
    return {}


@pytest.fixture
def hubspot(serve_app, fake_options, limits, hub_settings, tmp_path, monkeypatch) -> HubSpot:
    app = fake.create_app(**fake_options)
    fake_url = serve_app(app)
    for key in ("HUB_PLUGINS", "HUB_DATABASE_URL", "HUB_SECRET_KEY", "HUB_PUBLIC_URL"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {"ORIGIN": fake_url, "CLIENT_ID": fake.CLIENT_ID,
                       "CLIENT_SECRET": fake.CLIENT_SECRET}.items():
        monkeypatch.setenv(f"HUB_HUBSPOT_{key}", value)
    monkeypatch.setattr(hub_hubspot, "INFO", hub_hubspot.info(**limits))
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        public_url=PUBLIC_URL, run_scheduler=False, http_retry_attempts=4,
                        http_retry_base_delay=0.02, **hub_settings)
    registry = PluginRegistry()
    registry.register(hub_hubspot, "hubspot")
    hub_app = create_app(settings, registry)
    with TestClient(hub_app) as client:
        with hub_app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        yield HubSpot(client, {"Authorization": f"Bearer {key}"}, app, fake_url, hub_app)
