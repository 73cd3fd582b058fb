from __future__ import annotations

import pytest

from hub_plaid.testing import CLIENT_ID, SECRET
from hub_plaid.testing import create_app as create_fake
from plaid_helpers import build_hub_app, link

@pytest.fixture
def fake(serve_app):
    """The fake Plaid on loopback: its state object, with ``.url`` set."""
    app = create_fake(transactions=120, institutions=40)
    plaid = app.state.plaid
    plaid.url = serve_app(app)
    return plaid


@pytest.fixture
def plaid_env(fake, monkeypatch):
    for key, value in {"ORIGIN": fake.url, "CLIENT_ID": CLIENT_ID, "SECRET": SECRET, "CLIENT_NAME": "Acme Books",
                       "REQUESTS_PER_SECOND": "200", "BURST": "200",
                       # the fake's per-Item limits are set per test; test_plaid_api checks the declared ones
                       "ENDPOINT_RATE_LIMITS": "off"}.items():
        monkeypatch.setenv(f"HUB_PLAID_{key}", value)
    for key in ("HUB_PLAID_ENVIRONMENT", "HUB_PLAID_WEBHOOK", "HUB_PLUGINS"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def hub_app(tmp_path, plaid_env):
    return build_hub_app(tmp_path)


@pytest.fixture
def client(hub_client):
    return hub_client


@pytest.fixture
def auth(hub_auth):
    return hub_auth


@pytest.fixture
def connection(client, auth, fake):
    return link(client, auth, fake)


@pytest.fixture(autouse=True)
def fresh_key_cache():
    """Verification keys and the look-up budget are per process: each test starts afresh."""
    import hub_plaid

    hub_plaid._verification_keys.clear()
    hub_plaid._key_lookups.clear()
    hub_plaid._refused_kids.clear()
