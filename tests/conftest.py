from __future__ import annotations

import itertools
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub import hookimpl
from hub.api.main import create_app
from hub.config import Settings
from hub.plugins import PluginRegistry
from hub.services.orgs import create_organization
from hub.testing import postgres
from hub.types import EntitySchema, ProviderInfo
from tests.sync_support import ledger_hub, make_connection

# The example provider is importable for tests without being installed.
sys.path.insert(0, str(Path(__file__).parent / "example_provider"))

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    if not postgres.available():
        pytest.fail("PostgreSQL is not installed: run `apt-get install postgresql` (the suite tests both databases)")
    with postgres.throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    server = request.getfixturevalue("pg_server")
    return postgres.create_database(server, f"hub_test_{next(_db_counter)}")


@pytest.fixture
def settings(tmp_path, database_url, monkeypatch):
    for key in ("HUB_PLUGINS", "HUB_DATABASE_URL", "HUB_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    return Settings(data_dir=tmp_path / "data", database_url=database_url, secret_key="test-secret-key")


@pytest.fixture
def hub(settings, ledger):
    """A hub serving the module's ``ledger`` fixture (a sync test provider) as ``ledger``."""
    return ledger_hub(settings, ledger)


@pytest.fixture
def conn(hub):
    """A connection of the ``hub`` fixture to its ledger."""
    return make_connection(hub, "ledger", {"api_key": "k"})


@pytest.fixture
def example_registry():
    import hub_example

    registry = PluginRegistry()
    registry.register(hub_example, "example")
    return registry


@pytest.fixture
def example_fake(serve_app):
    """The Example Notes fake on loopback: (base_url, app)."""
    from hub_example.testing import create_app as fake_app

    app = fake_app(notes=23)
    return serve_app(app), app


@pytest.fixture
def hub_app(settings, example_registry, example_fake, monkeypatch):
    monkeypatch.setenv("HUB_EXAMPLE_ORIGIN", example_fake[0])
    return create_app(settings, example_registry)


@pytest.fixture
def relay_app(settings):
    """A hub app (its webhook processor polling fast) serving the Relay
    provider of tests/test_sync_webhooks.py: (relay, app, client)."""
    from tests.test_sync_webhooks import Relay

    relay = Relay(items=2)
    registry = PluginRegistry()
    registry.register(relay, "ledger")
    app = create_app(settings, registry)
    with TestClient(app) as client:
        app.state.webhook_processor.poll_seconds = 0.05
        yield relay, app, client


@pytest.fixture
def client(hub_app):
    with TestClient(hub_app) as c:
        yield c


def make_org(app, name: str = "acme") -> dict[str, str]:
    hub = app.state.hub
    with hub.session() as session:
        org, key = create_organization(session, name)
    return {"Authorization": f"Bearer {key}", "org_id": org.id}


@pytest.fixture
def auth(client, hub_app):
    headers = make_org(hub_app)
    headers.pop("org_id")
    return headers


def module_plugin(name: str, info: ProviderInfo, schemas: list[EntitySchema] | None = None,
                  **hooks: Callable[..., Any]) -> types.ModuleType:
    """A provider plugin module made in a test: ``provider_info`` answers
    ``info``, ``entity_schemas`` answers ``schemas`` (left out when ``None``),
    and each keyword is one more hook implementation."""
    module = types.ModuleType(name)
    module.provider_info = hookimpl(lambda: info)
    if schemas is not None:
        module.entity_schemas = hookimpl(lambda: schemas)
    for hook, function in hooks.items():
        setattr(module, hook, hookimpl(function))
    return module


API = "/api/v1/integrations"


@contextmanager
def connected_plugin(settings: Settings, module: types.ModuleType, provider: str,
                     credentials: dict[str, Any] | None = None) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    """The hub serving ``module`` as ``provider``, an organization's headers
    and a connection of it (typed credentials): ``(client, auth, connection_id)``."""
    registry = PluginRegistry()
    registry.register(module, provider)
    app = create_app(settings, registry)
    with TestClient(app) as client:
        auth = make_org(app)
        auth.pop("org_id")
        connection = client.post(f"{API}/connections", json={"provider": provider,
                                                             "credentials": credentials or {"api_key": "k"}},
                                 headers=auth)
        assert connection.status_code == 201, connection.text
        yield client, auth, connection.json()["connection"]["id"]
