"""hub/api/errors.py now answers every sqlalchemy ``OperationalError`` as 503
``database_unavailable`` with ``Retry-After: 5`` ("the request is fine, and
may be sent again"), logged without a traceback. On SQLite, a query against
a table or column that is not there (a migration missing, a bug) is an
``OperationalError`` too (``no such table``): it was 500 ``internal_error``
with its traceback logged; now clients are told to retry for ever, and the
log shows one line, as for a database that is briefly down."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hub.api.main import create_app
from tests.conftest import API, make_org


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_missing_table_is_a_bug_not_a_database_to_wait_for(settings, example_registry):
    app = create_app(settings, example_registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = make_org(app)
        headers.pop("org_id")
        with app.state.hub.engine.begin() as connection:
            connection.execute(sa.text("DROP TABLE event_endpoints"))  # as a migration that never ran
        response = client.get(f"{API}/event-endpoints", headers=headers)
        # Fails: 503 database_unavailable, Retry-After: 5 ("no such table: event_endpoints").
        assert response.status_code == 500, (response.status_code, response.text)
        assert response.json()["code"] == "internal_error"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_pool_with_no_connection_free_is_database_unavailable(settings, example_registry):
    """The other side: a database that cannot serve *for now* because every
    connection of the engine's pool is in use (QueuePool: 5 + 10 on SQLite,
    10 + 20 on PostgreSQL, 30 s wait) raises ``sqlalchemy.exc.TimeoutError``,
    neither OperationalError nor InterfaceError: still 500 "a bug", with no
    Retry-After, where README promises ``database_unavailable`` (503) when
    the database is "down, unreachable or locked for now"."""
    app = create_app(settings, example_registry)
    with TestClient(app, raise_server_exceptions=False) as client:
        hub = app.state.hub
        hub.engine = sa.create_engine(settings.database_url, pool_size=1, max_overflow=0, pool_timeout=0.2,
                                      connect_args={"check_same_thread": False}, hide_parameters=True)
        with hub.engine.connect():  # (every connection of the pool busy: sync runs, other requests)
            response = client.get("/healthz")
        # Fails: 500 internal_error ("QueuePool limit of size 1 overflow 0 reached").
        assert response.status_code == 503, (response.status_code, response.text)
        assert response.json()["code"] == "database_unavailable"
