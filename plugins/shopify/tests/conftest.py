"""Fixtures for the Shopify plugin's tests: the fake shop over real HTTP on
loopback, the hub (SQLite) with only this plugin, and a harness that walks the
OAuth flow through the hub's REST API."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hub_shopify
from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import PluginRegistry
from hub.services.orgs import create_organization
from hub.testing import Switch, serve
from hub_shopify import testing as fake

API = "/api/v1/integrations"
APP_URL = "https://app.example.com/shopify/done"


@dataclass
class Harness:
    """The hub's API client, an organization's auth headers, and the fake shop."""

    client: TestClient
    auth: dict[str, str]
    shop: FastAPI
    shop_url: str
    hub_app: FastAPI

    def start(self, shop: str = fake.SHOP) -> str:
        """GET the hub's authorize endpoint; the provider URL to send the user to."""
        response = self.client.get(f"{API}/oauth/shopify/authorize",
                                   params={"shop": shop, "redirect_uri": APP_URL}, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["authorization_url"]

    def consent(self, authorization_url: str) -> dict[str, str]:
        """The fake shop approves: the query of its redirect back to the hub."""
        response = httpx.get(authorization_url, follow_redirects=False, timeout=10)
        assert response.status_code == 302, response.text
        location = urlsplit(response.headers["location"])
        assert location.path == f"{API}/oauth/shopify/callback"
        return {k: v[0] for k, v in parse_qs(location.query).items()}

    def finish(self, query: dict[str, str]) -> dict[str, str]:
        """Call the hub's callback; the query of its redirect to the app."""
        response = self.client.get(f"{API}/oauth/shopify/callback", params=query, follow_redirects=False)
        assert response.status_code == 302, response.text
        target = response.headers["location"]
        assert target.startswith(APP_URL + "?")
        return {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}

    def connect(self) -> str:
        result = self.finish(self.consent(self.start()))
        assert result["status"] == "connected", result
        return result["connection_id"]

    def records(self, connection_id: str, entity: str) -> str:
        return f"{API}/connections/{connection_id}/entities/{entity}/records"

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers=self.auth)

    def post(self, path: str, json: Any = None) -> httpx.Response:
        return self.client.post(path, json=json, headers=self.auth)

    def put(self, path: str, json: Any = None) -> httpx.Response:
        return self.client.put(path, json=json, headers=self.auth)

    def delete(self, path: str) -> httpx.Response:
        return self.client.delete(path, headers=self.auth)

    def action(self, connection_id: str, name: str, **params: Any) -> httpx.Response:
        return self.post(f"{API}/connections/{connection_id}/actions/{name}", {"params": params})


@pytest.fixture(scope="session")
def shop_server():
    switch = Switch()
    with serve(switch) as url:
        yield switch, url


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """Options of the fake shop; tests override them with ``parametrize``."""
    return {"products": 23, "capacity": 40, "leak_per_second": 50.0}


@pytest.fixture
def hub_env() -> dict[str, str]:
    """Extra ``HUB_SHOPIFY_*`` settings; the hub paces itself like the fake leaks."""
    return {"REQUESTS_PER_SECOND": "50"}


@pytest.fixture
def shopify(shop_server, fake_options, hub_env, tmp_path, monkeypatch):
    switch, shop_url = shop_server
    switch.app = shop = fake.create_app(**fake_options)
    for key in [k for k in os.environ if k.startswith("HUB_")]:
        monkeypatch.delenv(key)
    env = {"ORIGIN": shop_url, "CLIENT_ID": fake.CLIENT_ID, "CLIENT_SECRET": fake.CLIENT_SECRET, **hub_env}
    for key, value in env.items():
        monkeypatch.setenv(f"HUB_SHOPIFY_{key}", value)
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        http_retry_attempts=4, http_retry_base_delay=0.01, oauth_return_hosts="app.example.com")
    registry = PluginRegistry()
    registry.register(hub_shopify, "shopify")
    hub_app = create_app(settings, registry)
    with TestClient(hub_app) as client:
        with hub_app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        yield Harness(client, {"Authorization": f"Bearer {key}"}, shop, shop_url, hub_app)
