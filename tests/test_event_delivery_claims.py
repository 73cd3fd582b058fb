"""The event deliverer:

- claims and records in a thread, so that on SQLite a sync holding the write
  lock does not stall the API's event loop (and every request with it);
- records an attempt the app answered 2xx while its endpoint was being
  disabled, so that it is not sent again once the endpoint is enabled.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hub.config import Settings
from hub.services import events as service
from hub.services.events import EventDeliverer
from hub.sync.store import lock
from tests.test_events import deliveries, endpoint_with_an_event, hub_with_a_connection, receiving_app


def test_claiming_deliveries_on_sqlite_does_not_stall_the_event_loop_while_a_writer_holds_the_lock(
        tmp_path, serve_app, monkeypatch):
    for key in ("HUB_PLUGINS", "HUB_DATABASE_URL", "HUB_SECRET_KEY"):
        monkeypatch.delenv(key, raising=False)
    hub, org_id, connection_id = hub_with_a_connection(Settings(
        data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'hub.db'}", secret_key="test-secret-key"))
    service.create_endpoint(hub, org_id, url=f"{serve_app(receiving_app())}/hook", events=[], description=None,
                            enabled=True)
    hub.mark(connection_id, "error", "refused")  # an event due now

    holding, release = threading.Event(), threading.Event()

    def writer() -> None:  # a sync's page being written: it holds SQLite's write lock for a moment
        with hub.session() as session:
            lock(session)
            holding.set()
            release.wait(30)
            session.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(30)

    async def scenario() -> float:
        deliverer = EventDeliverer(hub)
        gaps: list[float] = []

        async def heartbeat() -> None:  # any request the process serves meanwhile
            last = time.monotonic()
            while True:
                await asyncio.sleep(0.02)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        beating = asyncio.create_task(heartbeat())
        threading.Timer(8.0, release.set).start()  # (the writer's page is done in 8 s)
        try:
            await asyncio.sleep(0.1)
            assert await deliverer.deliver_once() == 1
            await asyncio.sleep(0.1)
        finally:
            beating.cancel()
            await deliverer.stop()
        return max(gaps)

    longest = asyncio.run(scenario())
    release.set()
    thread.join(5)
    hub.engine.dispose()
    # Waiting on the loop stops it the whole 8 s; a loaded machine may hold a process back a few seconds.
    assert longest < 4, f"the event loop stood still {longest:.2f} s while the deliverer waited for the write lock"


def test_an_event_answered_2xx_while_its_endpoint_was_disabled_is_not_sent_again(bare_hub, serve_app):
    hub, org_id, connection_id = bare_hub
    receiver, endpoint = endpoint_with_an_event(hub, org_id, connection_id, serve_app)
    deliverer = EventDeliverer(hub)

    async def scenario() -> None:
        try:
            [claimed] = deliverer._claim()
            outcome = await deliverer._send(claimed)  # the app answers 200 ...
            assert outcome.delivered
            # ... while its owner disables the endpoint (say, to change its URL), then enables it again.
            service.update_endpoint(hub, org_id, endpoint.id, {"enabled": False})
            service.update_endpoint(hub, org_id, endpoint.id, {"enabled": True})
            deliverer._record(claimed, outcome)
            await deliverer.deliver_once()
        finally:
            await deliverer.stop()

    asyncio.run(scenario())
    [delivery] = deliveries(hub)
    assert len(receiver.state.log.received) == 1, "the app received the event it had answered 200 to again"
    assert delivery.status == "delivered"


@pytest.fixture
def bare_hub(settings):
    return hub_with_a_connection(settings)

