"""The API's database reads do not hold the event loop where a query is a
network round trip (PostgreSQL): every other request would wait on it. On
SQLite (in-process) they run inline, a thread hop costing more than a read."""

from __future__ import annotations

import threading

from hub_example.testing import API_KEY

from hub.services import connections as connection_service
from hub.sync import stored
from tests.conftest import API


def test_reads_run_off_the_event_loop_on_postgresql_only(client, auth, hub_app, monkeypatch, database_url):
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs", json={"entity": "notes"},
                         headers=auth).json()["sync_config"]
    threads: dict[str, set[int]] = {}

    def noting(name, real):
        def call(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.get_ident())
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(connection_service, "list_connections",
                        noting("connections", connection_service.list_connections))
    monkeypatch.setattr(stored, "list_records", noting("records", stored.list_records))
    loop_threads: set[int] = set()
    hub = hub_app.state.hub
    real_db = hub.db

    async def db(fn, *args, **kwargs):  # runs on the event loop's thread
        loop_threads.add(threading.get_ident())
        return await real_db(fn, *args, **kwargs)

    monkeypatch.setattr(hub, "db", db)

    assert client.get(f"{API}/connections", headers=auth).status_code == 200
    assert client.get(f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/records",
                      headers=auth).status_code == 200
    on_loop = {name: bool(ids & loop_threads) for name, ids in threads.items()}
    postgresql = hub.engine.dialect.name == "postgresql"
    assert on_loop == {"connections": not postgresql, "records": not postgresql}, (on_loop, database_url)


def test_writes_run_off_the_event_loop_on_every_database(client, auth, hub_app, monkeypatch):
    """A write may wait for SQLite's write lock (a pull holding it): on the
    event loop, every request would wait with it."""
    threads: dict[str, set[int]] = {}

    def noting(name, real):
        def call(*args, **kwargs):
            threads.setdefault(name, set()).add(threading.get_ident())
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(connection_service, "_save_new", noting("save", connection_service._save_new))
    hub = hub_app.state.hub
    monkeypatch.setattr(hub, "mark", noting("mark", hub.mark))
    loop_threads: set[int] = set()
    real_db = hub.db

    async def db(fn, *args, **kwargs):
        loop_threads.add(threading.get_ident())
        return await real_db(fn, *args, **kwargs)

    monkeypatch.setattr(hub, "db", db)
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth)
    assert connection.status_code == 201, connection.text
    assert client.post(f"{API}/connections/{connection.json()['connection']['id']}/test",
                       headers=auth).status_code == 200
    assert loop_threads and set(threads) == {"save", "mark"}
    assert not (threads["save"] | threads["mark"]) & loop_threads
