"""Events for the tenant's app, measured in one run.

Prints
- the events per second one API process's deliverer sends to an endpoint of
  the app on loopback that answers at once (signed, recorded one by one),
  from a backlog of ``--events`` queued events;
- what telling the app costs a sync: a full pull of ``--records`` Stripe
  customers into SQLite without an endpoint, then with one taking
  ``records.changed`` (an event per page, written in the page's transaction).

    python bench/app_events.py [--events 3000] [--records 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
import warnings
from pathlib import Path

warnings.simplefilter("ignore", DeprecationWarning)

import _common  # noqa: F401,E402  (puts the repository on sys.path)
from hub.config import Settings  # noqa: E402
from hub.events import emit  # noqa: E402
from hub.models import EventDelivery  # noqa: E402
from hub.plugins import PluginRegistry  # noqa: E402
from hub.runtime import Hub  # noqa: E402
from hub.services import events as service  # noqa: E402
from hub.services.orgs import create_organization  # noqa: E402
from hub.testing import free_port  # noqa: E402


def receiver():
    """The app's endpoint: answers 200 to every event."""
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def hook(request):
        await request.body()
        return Response("ok")

    return Starlette(routes=[Route("/{path:path}", hook, methods=["GET", "POST"])])


def delivery_rate(events: int) -> tuple[float, int]:
    directory = Path(tempfile.mkdtemp(prefix="bench-events-"))
    hub = Hub(Settings(data_dir=directory, database_url=f"sqlite:///{directory / 'hub.db'}", secret_key="bench",
                       run_scheduler=False), PluginRegistry())
    hub.migrate()
    with hub.session() as session:
        org, _key = create_organization(session, "bench")
    with _common.server("app_events:receiver", free_port()) as url:
        service.create_endpoint(hub, org.id, url=f"{url}/hook", events=[], description=None, enabled=True)
        with hub.session() as session:
            for number in range(events):
                emit(session, org.id, "sync.succeeded", {"run": {"id": f"run{number}", "created": number}})
            session.commit()

        async def drain() -> float:
            deliverer = service.EventDeliverer(hub)
            try:
                started = time.perf_counter()
                while await deliverer.deliver_once():
                    pass
                return time.perf_counter() - started
            finally:
                await deliverer.stop()

        seconds = asyncio.run(drain())
    with hub.session() as session:
        delivered = session.query(EventDelivery).filter(EventDelivery.status == "delivered").count()
    return events / seconds, delivered


def pull_cost(records: int) -> tuple[float, float, int]:
    import sync as sync_bench

    spec = sync_bench.PROVIDERS["stripe"]()
    rates = []
    told = 0
    with _common.server(spec.fake, free_port(), **spec.fake_options(records, 100_000)) as url:
        sync_bench.provider_env(spec, url, 100_000, 100_000)
        for listening in (False, True):
            hub, connection = sync_bench.make_hub(spec, Path(tempfile.mkdtemp(prefix="bench-events-")))
            if listening:
                service.create_endpoint(hub, connection.organization_id, url="https://app.example.com/hook",
                                        events=["records.changed"], description=None, enabled=True)

            async def measure() -> float:
                try:
                    started = time.perf_counter()
                    result = await sync_bench.pull(hub, connection, spec)
                    assert result.status == "succeeded" and result.created == records, result.error
                    return time.perf_counter() - started
                finally:
                    await hub.close()

            rates.append(records / asyncio.run(measure()))
            if listening:
                with hub.session() as session:
                    told = session.query(EventDelivery).count()
    return rates[0], rates[1], told


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    rate, delivered = delivery_rate(args.events)
    print(f"delivery: {delivered} of {args.events} events delivered to a loopback endpoint at {rate:,.0f} events/s "
          f"(one process; each signed, sent and recorded)")
    plain, listened, told = pull_cost(args.records)
    print(f"records.changed: a full pull of {args.records} Stripe customers into SQLite at {plain:,.0f} records/s "
          f"without an endpoint, {listened:,.0f} records/s with one taking records.changed ({told} events "
          f"written) = {listened / plain:.2f}x")


if __name__ == "__main__":
    main()
