"""Fixtures for the Stripe plugin's tests: the hub's API on SQLite in a tmp
dir, with the Stripe plugin registered, talking real HTTP to a fake Stripe."""

from __future__ import annotations

import httpx
import pytest

import hub_stripe
from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import PluginRegistry
from hub_stripe.testing import API_KEY
from hub_stripe.testing import create_app as create_fake

API = "/api/v1/integrations"


@pytest.fixture
def stripe(serve_app):
    """``(client, app)`` for a fake Stripe with a loose rate limit, spoken to
    directly (no hub), as a Stripe client of API version 2020-08-27."""
    app = create_fake(rate=1000, available=100_000)
    headers = {"Authorization": f"Bearer {API_KEY}", "Stripe-Version": "2020-08-27"}
    with httpx.Client(base_url=serve_app(app), headers=headers) as client:
        yield client, app


@pytest.fixture
def start_fake(serve_app, monkeypatch):
    """``start_fake(**options)``: serve a fake Stripe on loopback and point the
    hub's Stripe URLs at it; returns the fake's app (counters on ``app.state``)."""

    def start(**options):
        app = create_fake(**options)
        monkeypatch.setenv("HUB_STRIPE_ORIGIN", serve_app(app))
        return app

    return start


@pytest.fixture
def fake(start_fake):
    """A fake Stripe with Stripe's test-mode limit (25 requests per second)."""
    return start_fake(available=50_000)


@pytest.fixture
def hub_app(tmp_path, monkeypatch):
    for key in ("HUB_PLUGINS", "HUB_DATABASE_URL", "HUB_SECRET_KEY", "HUB_STRIPE_REQUESTS_PER_SECOND",
                "HUB_STRIPE_BURST"):
        monkeypatch.delenv(key, raising=False)
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path}/hub.db", secret_key="x",
                        http_retry_attempts=10, http_retry_base_delay=0.02)
    registry = PluginRegistry()
    registry.register(hub_stripe, "stripe")
    return create_app(settings, registry)


@pytest.fixture
def client(hub_client):
    return hub_client


@pytest.fixture
def auth(hub_auth):
    return hub_auth


@pytest.fixture
def connect(client, auth):
    """``connect(**credentials, config=...)``: a Stripe connection through the API."""

    def make(config=None, **credentials):
        body = {"provider": "stripe", "credentials": {"api_key": API_KEY, **credentials}, "config": config or {}}
        response = client.post(f"{API}/connections", json=body, headers=auth)
        assert response.status_code == 201, response.text
        return response.json()["connection"]

    return make
