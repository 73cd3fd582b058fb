"""The API's database work and the event loop: reads run off the loop where a
query is a network round trip (PostgreSQL), inline on SQLite (in-process, a
thread hop costing more than a read); writes, which may wait for SQLite's
write lock while a pull holds it, run off the loop on every database."""

from __future__ import annotations

import threading

from hub_example.testing import API_KEY

from hub.services import connections as connection_service
from hub.sync import stored
from tests.conftest import API


class Threads:
    """Which threads ran the functions it wraps, and which thread is the event loop's."""

    def __init__(self, hub, monkeypatch):
        self.seen: dict[str, set[int]] = {}
        self.loop: set[int] = set()
        real_db = hub.db

        async def db(fn, *args, **kwargs):  # awaited on the event loop's thread
            self.loop.add(threading.get_ident())
            return await real_db(fn, *args, **kwargs)

        monkeypatch.setattr(hub, "db", db)
        self.monkeypatch = monkeypatch

    def watch(self, owner, name: str) -> None:
        real = getattr(owner, name)

        def call(*args, **kwargs):
            self.seen.setdefault(name, set()).add(threading.get_ident())
            return real(*args, **kwargs)

        self.monkeypatch.setattr(owner, name, call)

    def on_loop(self) -> dict[str, bool]:
        assert self.loop, "nothing ran through Hub.db"
        return {name: bool(ids & self.loop) for name, ids in self.seen.items()}


def test_reads_run_off_the_event_loop_on_postgresql_only(client, auth, hub_app, monkeypatch):
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth).json()["connection"]
    config = client.post(f"{API}/connections/{connection['id']}/sync-configs", json={"entity": "notes"},
                         headers=auth).json()["sync_config"]
    hub = hub_app.state.hub
    threads = Threads(hub, monkeypatch)
    threads.watch(connection_service, "list_connections")
    threads.watch(stored, "list_records")
    assert client.get(f"{API}/connections", headers=auth).status_code == 200
    assert client.get(f"{API}/connections/{connection['id']}/sync-configs/{config['id']}/records",
                      headers=auth).status_code == 200
    inline = hub.engine.dialect.name == "sqlite"
    assert threads.on_loop() == {"list_connections": inline, "list_records": inline}


def test_writes_run_off_the_event_loop_on_every_database(client, auth, hub_app, monkeypatch):
    hub = hub_app.state.hub
    threads = Threads(hub, monkeypatch)
    threads.watch(connection_service, "_save_new")
    threads.watch(hub, "mark")
    connection = client.post(f"{API}/connections", json={"provider": "example", "credentials": {"api_key": API_KEY}},
                             headers=auth)
    assert connection.status_code == 201, connection.text
    assert client.post(f"{API}/connections/{connection.json()['connection']['id']}/test",
                       headers=auth).status_code == 200
    assert threads.on_loop() == {"_save_new": False, "mark": False}
