"""Testing kit for the hub and its plugins.

- :func:`serve` runs an ASGI app (a fake provider, the hub itself) on loopback
  in a background thread, for tests that talk real HTTP; :class:`Switch`
  lets one such server serve a fresh fake to each test.
- :mod:`hub.testing.fakes` holds what every fake provider server needs: rate
  limiters that answer 429 like providers do, and in-memory tables.
- :mod:`hub.testing.conformance` is the conformance suite for provider
  plugins; :mod:`hub.testing.pytest_plugin` (loaded by pytest) gives its
  fixtures, and ``serve_app``, ``hub_test_settings``, ``hub_client``, ``hub_auth``.
- :func:`wait_for_run` waits through the API for a sync run to finish;
  :func:`wait_until`, for anything a thread, task, process or server does.
- :class:`HubAPI` is the hub's REST API as one organization calls it, for a
  plugin's test harness to extend with its provider's flows.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serve(app, port: int | None = None, log_level: str = "warning") -> Iterator[str]:  # noqa: ANN001
    """Serve ``app`` on ``127.0.0.1`` until the block exits; yields the base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level, lifespan="on",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


API_PREFIX = "/api/v1/integrations"


@dataclass
class HubAPI:
    """The hub's REST API as one organization calls it: ``client`` (a
    TestClient of the hub's app, or an httpx client) with ``auth``, the
    organization's headers (``auth=`` on a call speaks for another)."""

    client: Any
    auth: dict[str, str]

    def records(self, connection: dict[str, Any] | str, entity: str, record_id: str | None = None) -> str:
        """The path of a connection's (its answer, or its id) records of ``entity``, or of one."""
        connection_id = connection if isinstance(connection, str) else connection["id"]
        url = f"{API_PREFIX}/connections/{connection_id}/entities/{entity}/records"
        return f"{url}/{record_id}" if record_id is not None else url

    def get(self, path: str, auth: dict[str, str] | None = None, **params: Any) -> Any:
        return self.client.get(path, params=params, headers=auth or self.auth)

    def post(self, path: str, json: Any = None, auth: dict[str, str] | None = None, **kwargs: Any) -> Any:
        return self.client.post(path, json=json, headers=auth or self.auth, **kwargs)

    def put(self, path: str, json: Any = None, auth: dict[str, str] | None = None) -> Any:
        return self.client.put(path, json=json, headers=auth or self.auth)

    def delete(self, path: str, auth: dict[str, str] | None = None) -> Any:
        return self.client.delete(path, headers=auth or self.auth)

    def sync_config(self, connection: dict[str, Any] | str, entity: str, **body: Any) -> str:
        """Create a sync config of a connection's ``entity`` (``body``:
        ``direction``, ``mappings``...); returns the path of its stored records."""
        connection_id = connection if isinstance(connection, str) else connection["id"]
        configs = f"{API_PREFIX}/connections/{connection_id}/sync-configs"
        created = self.post(configs, {"entity": entity, **body})
        assert created.status_code == 201, created.text
        return f"{configs}/{created.json()['sync_config']['id']}/records"

    def sync(self, connection: dict[str, Any] | str, entity: str | None = None, *, succeeded: bool = True,
             timeout: float = 20, **body: Any) -> dict[str, Any]:
        """Start a sync run of a connection (``POST /connections/{id}/sync``
        of ``entity`` and ``body``: ``direction``, ``full_refresh``) and wait
        for it to end; returns the run, which must have ``succeeded`` unless
        told otherwise."""
        connection_id = connection if isinstance(connection, str) else connection["id"]
        if entity is not None:
            body["entity"] = entity
        started = self.post(f"{API_PREFIX}/connections/{connection_id}/sync", body)
        assert started.status_code == 202, started.text
        run = wait_for_run(self.client, self.auth, connection_id, started.json()["run"]["id"], timeout)
        if succeeded:
            assert run["status"] == "succeeded", run
        return run

    def stored(self, records_url: str, **params: Any) -> dict[str, Any]:
        """A sync config's stored records (its ``.../records`` path), every
        page of them, by provider id (the hub's, for a record not created at
        the provider yet): their ``data`` (mapped, or raw with
        ``mapped=False``); ``include_deleted=True`` adds the deleted ones."""
        found, cursor = {}, None
        while True:
            answer = self.get(records_url, limit=500, **params, **({"cursor": cursor} if cursor else {}))
            assert answer.status_code == 200, answer.text
            body = answer.json()
            found |= {r["remote_id"] or r["id"]: r["data"] for r in body["records"]}
            if not (cursor := body.get("next_cursor")):
                return found


class Switch:
    """An ASGI app forwarding to whichever app (a fake provider) ``app`` holds
    now: one loopback server, started once for the session, serves each test's
    own fresh fake (starting a server per test costs its start)."""

    def __init__(self) -> None:
        self.app = None

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] == "lifespan":  # (the fakes plugged in have none of their own to run)
            while True:
                message = await receive()
                await send({"type": f"{message['type']}.complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await self.app(scope, receive, send)


def wait_until(condition: Callable[[], Any], what: str = "the condition", timeout: float = 30.0,
               interval: float = 0.05) -> Any:
    """Poll ``condition()`` until it returns something true; return that.

    For what another thread, task, process or server does: a test waits for
    it to happen, not a fixed time (too short on a loaded machine, too long
    on an idle one). ``timeout`` is generous: reaching it fails the test
    (AssertionError naming ``what``), so it only bounds a test that would
    fail anyway."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(interval)
    return found


def wait_for_run(client, headers: dict[str, str], connection_id: str, run_id: str,  # noqa: ANN001
                 timeout: float = 20) -> dict:
    """Poll ``GET /connections/{id}/sync/runs/{run_id}`` (through ``client``, a
    TestClient or an httpx client, whose base URL may already end in
    ``/api/v1/integrations``, as the conformance ``Harness.api`` does) until
    the sync run has finished; returns it."""
    prefix = "/api/v1/integrations"
    if str(getattr(client, "base_url", "")).rstrip("/").endswith(prefix):
        prefix = ""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"{prefix}/connections/{connection_id}/sync/runs/{run_id}",
                         headers=headers).json()["run"]
        if run["status"] in ("succeeded", "failed"):
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']} after {timeout}s"
        time.sleep(0.05)
