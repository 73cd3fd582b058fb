"""pytest plugin registered through the ``pytest11`` entry point ``hub``.

Gives every test session ``serve_app``, ``hub_test_settings`` (a hub's
settings isolated from the shell's), ``hub_client`` and ``hub_auth`` (for a
``hub_app`` fixture the test suite defines), and the fixtures of the provider
conformance suite (:mod:`hub.testing.conformance`): a plugin package runs the
suite by subclassing ``ConformanceSuite`` with a ``target``. Imports of the
hub stay inside the fixtures so that loading this plugin costs nothing.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def serve_app():
    """Serve ASGI apps on loopback for the duration of the test: ``url = serve_app(app)``."""
    from contextlib import ExitStack

    from hub.testing import serve

    with ExitStack() as stack:
        yield lambda app: stack.enter_context(serve(app))


@pytest.fixture
def hub_test_settings(tmp_path, monkeypatch):
    """:class:`hub.config.Settings` of a hub of the test's own: its data
    directory and SQLite database under ``tmp_path``, a fixed secret key, and
    none of the shell's ``HUB_*`` settings (an operator's ``HUB_DATABASE_URL``
    would be written to). Provider settings (``HUB_ACME_ORIGIN``) stay: set
    them with ``monkeypatch.setenv``."""
    from hub.config import Settings

    for name in [*Settings.model_fields, "plugins"]:
        monkeypatch.delenv(f"HUB_{name.upper()}", raising=False)
    return Settings(data_dir=tmp_path / "hub-data", database_url=f"sqlite:///{tmp_path / 'hub.db'}",
                    secret_key="test-secret-key")


@pytest.fixture
def hub_client(hub_app):
    """A ``TestClient`` of the suite's ``hub_app`` fixture (a
    :func:`hub.api.main.create_app` app), its lifespan run."""
    from fastapi.testclient import TestClient

    with TestClient(hub_app) as client:
        yield client


@pytest.fixture
def hub_auth(hub_client, hub_app):
    """``Authorization`` headers of a new organization of ``hub_app``."""
    from hub.services.orgs import create_organization

    with hub_app.state.hub.session() as session:
        _org, key = create_organization(session, "acme")
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="class")
def hub_conformance(request):
    """The :class:`~hub.testing.conformance.ConformanceTarget` of the test
    class (its ``target`` attribute)."""
    from hub.testing.conformance import ConformanceTarget

    target = getattr(request.cls, "target", None)
    if not isinstance(target, ConformanceTarget):
        pytest.fail("set `target = ConformanceTarget(provider=..., fake_app=..., ...)` on the "
                    "ConformanceSuite subclass", pytrace=False)
    return target


@pytest.fixture(scope="class")
def conformance(hub_conformance, tmp_path_factory):
    """A :class:`~hub.testing.conformance.Harness`: the target's fake and a hub
    serving it on loopback, with one connection, shared by the class's tests."""
    from hub.testing.conformance import Harness

    harness = Harness(hub_conformance, tmp_path_factory.mktemp(f"conformance-{hub_conformance.provider}"))
    harness.start()
    try:
        yield harness
    finally:
        harness.stop()
