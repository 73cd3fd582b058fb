"""Sync engine: a full pull of 50,000 records into SQLite, measured in one run.

Prints
- records/s of the full pull through the engine (pages upserted into the
  record store, the cursor committed with its pages) against the same pages
  fetched through the same hub client without storing (target >= 0.8x),
  twice: with a provider latency per page (20 ms by default; real APIs take
  100-500 ms to list 100 records), where the engine stores a page while the
  next one is on its way, and from the loopback fake answering at once,
  where the engine's own CPU (about 20 microseconds per record) competes
  with the parsing of the responses and with the fake on the same machine;
- the CPU time per record of the hub's process (fetching only, then fetching
  and storing) and of the fake, which show where the time of the no-latency
  run goes on a machine of few cores;
- the peak memory growth of the process during the pull (RSS sampled every
  20 ms; target < 50 MB);
- the achieved fraction of the rate-limit ceiling when pulling from a fake
  that enforces the provider's limit (steady rate after the burst; target
  >= 0.9), and the 429s the fake sent.

The provider is a parameter: ``python bench/sync.py --provider example``
(the default: the example provider's notes) or ``--provider stripe``
(customers, when hub-stripe is installed). The fakes run in child processes
so that they do not share the engine's GIL.

    python bench/sync.py [--provider example|stripe] [--records 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

warnings.simplefilter("ignore", DeprecationWarning)

import _common  # noqa: F401,E402  (puts the repository on sys.path)
from hub.config import Settings  # noqa: E402
from hub.models import Connection  # noqa: E402
from hub.plugins import PluginRegistry  # noqa: E402
from hub.runtime import Hub  # noqa: E402
from hub.services.orgs import create_organization  # noqa: E402
from hub.sync.engine import SyncEngine, create_run  # noqa: E402
from hub.testing import free_port  # noqa: E402
from hub.types import Credentials, Page  # noqa: E402


@dataclass
class Spec:
    """How to bench one provider: its plugin, its fake and an entity to pull."""

    name: str
    module: str
    fake: str
    entity: str
    credentials: dict[str, str]
    fake_options: Any  # (records, requests per second) -> fake factory kwargs
    page_size: int = 100
    extra_env: dict[str, str] = field(default_factory=dict)


def _example() -> Spec:
    from hub_example.testing import API_KEY

    return Spec("example", "hub_example", "hub_example.testing:create_app", "notes", {"api_key": API_KEY},
                lambda records, rate: {"notes": records, "rate": rate})


def _stripe() -> Spec:
    from hub_stripe.testing import API_KEY

    return Spec("stripe", "hub_stripe", "hub_stripe.testing:create_app", "customers", {"api_key": API_KEY},
                lambda records, rate: {"customers": records, "rate": rate, "validate": False})


PROVIDERS = {"example": _example, "stripe": _stripe}


class Recorder(httpx.AsyncBaseTransport):
    """The hub's transport, noting when each response arrived and its status;
    with ``latency`` it answers that much later, as a distant provider would."""

    def __init__(self, latency: float = 0.0) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.latency = latency
        self.times: list[float] = []
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.latency:
            await asyncio.sleep(self.latency)
        self.times.append(time.monotonic())
        self.statuses.append(response.status_code)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def steady_rate(self, burst: int) -> float:
        ok = [t for t, s in zip(self.times, self.statuses) if s < 400][burst:]
        return (len(ok) - 1) / (ok[-1] - ok[0]) if len(ok) > 1 else 0.0


class PeakRSS:
    """Samples the resident set size in a thread; ``growth`` is the peak
    above the size when sampling started."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.start = self.peak = rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss())

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_hub(spec: Spec, directory: Path, transport: httpx.AsyncBaseTransport | None = None) -> tuple[Hub, Connection]:
    import importlib

    registry = PluginRegistry()
    registry.register(importlib.import_module(spec.module), spec.name)
    hub = Hub(Settings(data_dir=directory, database_url=f"sqlite:///{directory / 'hub.db'}", secret_key="bench",
                       run_scheduler=False), registry, transport=transport)
    hub.migrate()
    with hub.session() as session:
        org, _key = create_organization(session, "bench")
    connection = Connection(organization_id=org.id, provider=spec.name, category="bench", name=spec.name)
    hub.store_credentials(connection, Credentials(secrets=dict(spec.credentials)))
    with hub.session() as session:
        session.add(connection)
        session.commit()
        session.refresh(connection)
    return hub, connection


def provider_env(spec: Spec, url: str, rate: float, burst: int) -> None:
    prefix = f"HUB_{spec.name.upper()}_"
    os.environ.update({f"{prefix}ORIGIN": url, f"{prefix}REQUESTS_PER_SECOND": str(rate),
                       f"{prefix}BURST": str(burst), **spec.extra_env})


async def fetch_only(hub: Hub, connection: Connection, spec: Spec) -> int:
    """Every page through the same client and hook as the engine, stored nowhere."""
    provider = hub.provider(spec.name)
    ctx = hub.context(provider, connection)
    cursor, count = None, 0
    while True:
        page: Page = await hub.call(provider, "list_records", ctx, entity=spec.entity, cursor=cursor,
                                    page_size=spec.page_size, filters={}, since=None)
        count += len(page.records)
        cursor = page.next_cursor
        if not cursor:
            return count


async def pull(hub: Hub, connection: Connection, spec: Spec, page_size: int | None = None) -> Any:
    run, _new = create_run(hub, connection, entity=spec.entity, full_refresh=True, trigger="bench")
    return await SyncEngine(hub, page_size=page_size or spec.page_size).execute(run.id)


@dataclass
class Throughput:
    fetch_rate: float
    pull_rate: float
    memory_growth: int
    #: CPU microseconds per record: this (the hub's) process fetching only,
    #: then fetching and storing; the fake meanwhile.
    fetch_cpu: float
    pull_cpu: float
    fake_fetch_cpu: float
    fake_pull_cpu: float


def children_cpu() -> float:
    """CPU seconds used so far by this process's children (the fake)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def throughput(spec: Spec, records: int, latency: float = 0.0) -> Throughput:
    with _common.server(spec.fake, free_port(), **spec.fake_options(records, 100_000)) as url:
        provider_env(spec, url, 100_000, 100_000)
        hub, connection = make_hub(spec, Path(tempfile.mkdtemp(prefix="bench-sync-")), transport=Recorder(latency))

        async def measure() -> Throughput:
            try:
                started, cpu, fake_cpu = time.perf_counter(), time.process_time(), children_cpu()
                fetched = await fetch_only(hub, connection, spec)
                fetch_seconds = time.perf_counter() - started
                fetch_cpu, fake_fetch_cpu = time.process_time() - cpu, children_cpu() - fake_cpu
                with PeakRSS() as memory:
                    started, cpu, fake_cpu = time.perf_counter(), time.process_time(), children_cpu()
                    result = await pull(hub, connection, spec)
                    pull_seconds = time.perf_counter() - started
                    pull_cpu, fake_pull_cpu = time.process_time() - cpu, children_cpu() - fake_cpu
            finally:
                await hub.close()
            assert fetched == records, f"fetched {fetched} of {records}"
            assert result.status == "succeeded" and result.created == records, (result.status, result.error)
            per_record = 1e6 / records
            return Throughput(fetched / fetch_seconds, records / pull_seconds, memory.growth,
                              fetch_cpu * per_record, pull_cpu * per_record, fake_fetch_cpu * per_record,
                              fake_pull_cpu * per_record)

        return asyncio.run(measure())


def ceiling(spec: Spec, records: int, rate: float, page_size: int) -> tuple[float, int, int, float]:
    with _common.server(spec.fake, free_port(), **spec.fake_options(records, rate)) as url:
        provider_env(spec, url, rate, int(rate))
        recorder = Recorder()
        hub, connection = make_hub(spec, Path(tempfile.mkdtemp(prefix="bench-sync-")), transport=recorder)

        async def measure() -> Any:
            try:
                return await pull(hub, connection, spec, page_size)
            finally:
                await hub.close()

        started = time.perf_counter()
        result = asyncio.run(measure())
        elapsed = time.perf_counter() - started
    assert result.status == "succeeded" and result.created == records, (result.status, result.error)
    refused = sum(1 for s in recorder.statuses if s == 429)
    return recorder.steady_rate(int(rate)) / rate, len(recorder.statuses), refused, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--provider", choices=sorted(PROVIDERS), default="example")
    parser.add_argument("--records", type=int, default=int(os.environ.get("BENCH_RECORDS", "50000")))
    parser.add_argument("--limited-records", type=int, default=4000,
                        help="records of the rate-limit run (pages of 10)")
    parser.add_argument("--rate", type=float, default=25.0, help="the limited fake's requests per second")
    parser.add_argument("--latency", type=float, default=0.02,
                        help="provider latency per page of the second throughput run, in seconds")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    spec = PROVIDERS[args.provider]()

    print(f"{spec.name} {spec.entity}: full pull of {args.records} records in pages of {spec.page_size}")
    for latency in (args.latency, 0.0):
        measured = throughput(spec, args.records, latency)
        where = (f"with {latency * 1000:g} ms of provider latency per page" if latency else
                 "from the loopback fake with no added latency (the engine's CPU is the limit)")
        ratio = measured.pull_rate / measured.fetch_rate
        print(f"  {where}:")
        print(f"    fetched without storing {measured.fetch_rate:,.0f} records/s; through the engine into SQLite "
              f"{measured.pull_rate:,.0f} records/s = {ratio:.2f}x (target >= 0.8x)")
        print(f"    CPU per record: the hub {measured.fetch_cpu:.1f} us fetching, {measured.pull_cpu:.1f} us "
              f"fetching and storing; the fake {measured.fake_fetch_cpu:.1f} / {measured.fake_pull_cpu:.1f} us "
              f"({os.cpu_count()} cores)")
        print(f"    peak memory growth during the pull: {measured.memory_growth / 2**20:.1f} MB (target < 50 MB)")
    fraction, requests, refused, elapsed = ceiling(spec, args.limited_records, args.rate, page_size=10)
    print(f"  rate limit {args.rate:g} req/s: {args.limited_records} records, {requests} requests in {elapsed:.1f} s; "
          f"steady rate {fraction:.3f} of the ceiling (target >= 0.9); 429s: {refused}")


if __name__ == "__main__":
    main()
