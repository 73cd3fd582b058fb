"""Fixtures for the Salesforce plugin's tests: the fake Salesforce over real
HTTP on loopback as two hosts (one server each, started once for the session,
each test plugging in its own fresh fake): ``login`` plays
login.salesforce.com and ``sandbox`` test.salesforce.com. The plugin reaches
them through its ``login_url`` settings, not ``origin``: the org's API host is
the ``instance_url`` the token answer names, as against Salesforce. The hub
(SQLite) has only this plugin."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import hub_salesforce
from hub.api.main import create_app
from hub.config import Settings
from hub.models import Connection
from hub.plugins import PluginRegistry
from hub.services.orgs import create_organization
from hub.testing import HubAPI, Switch, serve
from hub.testing.fakes import Scripted
from hub_salesforce import testing as fake

API = "/api/v1/integrations"


@dataclass
class SFDC(HubAPI):
    """The hub's API client, an organization's auth headers, the fake Salesforce and its two hosts."""

    fake: Scripted
    hub_app: FastAPI
    login: str
    sandbox: str

    @property
    def app(self) -> FastAPI:
        return self.fake.app

    def org(self, org_id: str = fake.ORG_ID) -> fake.Org:
        return self.app.state.orgs[org_id]

    def start(self, **params: str) -> str:
        response = self.client.get(f"{API}/oauth/salesforce/authorize", params=params, headers=self.auth)
        assert response.status_code == 200, response.text
        return response.json()["authorization_url"]

    def consent(self, authorization_url: str) -> dict[str, str]:
        """The fake user approves at the login host: the query Salesforce redirects back with."""
        response = httpx.get(authorization_url, timeout=10)
        assert response.status_code == 302, response.text
        location = urlsplit(response.headers["location"])
        assert location.path == f"{API}/oauth/salesforce/callback"
        return {k: v[0] for k, v in parse_qs(location.query).items()}

    def callback(self, query: dict[str, str]) -> httpx.Response:
        return self.client.get(f"{API}/oauth/salesforce/callback", params=query)

    def connect(self, **params: str) -> dict[str, Any]:
        response = self.callback(self.consent(self.start(**params)))
        assert response.status_code == 200, response.text
        return response.json()["connection"]

    def secrets(self, connection_id: str) -> dict[str, Any]:
        hub = self.hub_app.state.hub
        with hub.session() as session:
            return hub.cipher.decrypt_json(session.get(Connection, connection_id).credentials_encrypted)

    def api_calls(self, since: int = 0) -> list[tuple[str, str, str]]:
        """(host, method, path) of the API calls the fake answered, from the ``since``-th on."""
        return self.app.state.calls[since:]


@pytest.fixture(scope="session")
def salesforce_hosts():
    login, sandbox = Switch(), Switch()
    with serve(login) as login_url, serve(sandbox) as sandbox_url:
        yield (login, login_url), (sandbox, sandbox_url)


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """Options of the fake; tests override them with ``parametrize``."""
    return {}


@pytest.fixture
def hub_env() -> dict[str, str]:
    """``HUB_SALESFORCE_*`` settings: the hub's own pacing loose (these tests are not about it)."""
    return {"REQUESTS_PER_SECOND": "1000", "BURST": "1000"}


@pytest.fixture
def sfdc(salesforce_hosts, fake_options, hub_env, tmp_path, monkeypatch):
    (login, login_url), (sandbox, sandbox_url) = salesforce_hosts
    app = Scripted(fake.create_app(**fake_options))
    app.app.state.sandbox_logins = {sandbox_url}
    login.app = sandbox.app = app
    for key in [k for k in os.environ if k.startswith("HUB_")]:
        monkeypatch.delenv(key)
    env = {"LOGIN_URL": login_url, "SANDBOX_LOGIN_URL": sandbox_url, "CLIENT_ID": fake.CLIENT_ID,
           "CLIENT_SECRET": fake.CLIENT_SECRET, **hub_env}
    for key, value in env.items():
        monkeypatch.setenv(f"HUB_SALESFORCE_{key}", value)
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        public_url="https://hub.example.com", run_scheduler=False, http_retry_attempts=3,
                        http_retry_base_delay=0.01)
    registry = PluginRegistry()
    registry.register(hub_salesforce, "salesforce")
    hub_app = create_app(settings, registry)
    with TestClient(hub_app) as client:
        with hub_app.state.hub.session() as session:
            _org, key = create_organization(session, "acme")
        yield SFDC(client, {"Authorization": f"Bearer {key}"}, app, hub_app, login_url, sandbox_url)


@pytest.fixture
def connection(sfdc) -> dict[str, Any]:
    """A connection to the production org through the OAuth flow."""
    return sfdc.connect()
