"""Scale-out: runs queued on PostgreSQL (procrastinate) are executed by two
``hub worker`` processes sharing the queue, and the per-connection lock keeps
any connection from syncing twice at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import pytest
from sqlmodel import select

from hub.config import Settings
from hub.models import SyncRun
from hub.runtime import Hub
from hub.sync.scheduler import SyncService
from hub.sync.worker import QueueExecutor
from hub.testing import postgres
from hub_example.testing import API_KEY
from hub_example.testing import create_app as fake_app
from tests.sync_support import hub_command, make_connection, stored, subprocess_env

pytestmark = pytest.mark.postgres

CONNECTIONS = 4
RUNS_EACH = 3


def test_two_workers_share_the_queue_and_never_run_one_connection_twice_at_once(pg_server, tmp_path, serve_app,
                                                                              example_registry):
    database = postgres.create_database(pg_server, "hub_workers")
    fake = fake_app(notes=120, rate=1000, delay=0.03)
    url = serve_app(fake)
    hub = Hub(Settings(data_dir=tmp_path / "data", database_url=database, secret_key="test-secret-key"),
              example_registry)
    hub.migrate()
    connections = [make_connection(hub, "example", {"api_key": API_KEY}, org_name=f"org {i}")
                   for i in range(CONNECTIONS)]

    async def enqueue() -> list[str]:
        service = SyncService(hub, QueueExecutor(hub, workers=0))
        await service.start()
        try:
            return [(await service.request(c, entity="notes", full_refresh=bool(n))).id
                    for n in range(RUNS_EACH) for c in connections]
        finally:
            await service.stop()
            await hub.close()

    run_ids = asyncio.run(enqueue())
    env = subprocess_env(tmp_path, HUB_DATABASE_URL=database, HUB_EXAMPLE_ORIGIN=url)
    workers = [subprocess.Popen(hub_command() + ["worker", "--concurrency", "3"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    try:
        deadline = time.monotonic() + 90
        while True:
            with hub.session() as session:
                finished = session.exec(select(SyncRun).where(SyncRun.status.in_(("succeeded", "failed")))).all()
            if len(finished) == len(run_ids):
                break
            assert all(w.poll() is None for w in workers), [w.communicate() for w in workers]
            assert time.monotonic() < deadline, f"{len(finished)} of {len(run_ids)} runs finished in 90s"
            time.sleep(0.2)
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        logs = []
        for worker in workers:
            try:
                logs.append(worker.communicate(timeout=20)[0])
            except subprocess.TimeoutExpired:
                worker.kill()
                logs.append(worker.communicate()[0])

    with hub.session() as session:
        done = session.exec(select(SyncRun)).all()
    assert {r.status for r in done} == {"succeeded"}, [(r.status, r.error) for r in done]
    assert {r.owner.split(":")[1] for r in done} == {str(w.pid) for w in workers}, logs
    for connection in connections:
        mine = sorted((r for r in done if r.connection_id == connection.id), key=lambda r: r.started_at)
        assert len(mine) == RUNS_EACH
        for earlier, later in zip(mine, mine[1:]):
            assert later.started_at >= earlier.finished_at, "two runs of one connection overlapped"
        assert stored(hub, connection.id, "notes") == fake.state.notes.rows


def test_a_run_of_a_killed_worker_is_finished_by_the_other_worker(pg_server, tmp_path, serve_app, example_registry):
    database = postgres.create_database(pg_server, "hub_worker_killed")
    fake = fake_app(notes=600, rate=1000, delay=0.25)
    url = serve_app(fake)
    hub = Hub(Settings(data_dir=tmp_path / "data", database_url=database, secret_key="test-secret-key"),
              example_registry)
    hub.migrate()
    connection = make_connection(hub, "example", {"api_key": API_KEY})

    async def enqueue() -> str:
        service = SyncService(hub, QueueExecutor(hub, workers=0))
        await service.start()
        try:
            return (await service.request(connection, entity="notes")).id
        finally:
            await service.stop()
            await hub.close()

    run_id = asyncio.run(enqueue())
    env = subprocess_env(tmp_path, HUB_DATABASE_URL=database, HUB_EXAMPLE_ORIGIN=url, HUB_SYNC_STALLED_SECONDS="3")
    workers = {}
    for _ in range(2):
        worker = subprocess.Popen(hub_command() + ["worker"], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        workers[worker.pid] = worker

    def current() -> SyncRun:
        with hub.session() as session:
            return session.get(SyncRun, run_id)

    try:
        deadline = time.monotonic() + 60
        while not (current().status == "running" and current().pages >= 1):
            assert time.monotonic() < deadline, "the run did not start"
            time.sleep(0.05)
        victim = workers.pop(int(current().owner.split(":")[1]))
        victim.kill()
        victim.wait(10)
        killed_at = time.monotonic()
        while current().status not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, f"the run was not taken over: {current().status}"
            time.sleep(0.2)
        taken_over_in = time.monotonic() - killed_at
    finally:
        logs = []
        for worker in workers.values():
            worker.send_signal(signal.SIGTERM)
            try:
                logs.append(worker.communicate(timeout=20)[0])
            except subprocess.TimeoutExpired:
                worker.kill()
                logs.append(worker.communicate()[0])

    finished = current()
    (survivor,) = workers
    assert finished.status == "succeeded", (finished.error, logs)
    assert finished.owner.split(":")[1] == str(survivor)
    assert taken_over_in < 15, taken_over_in  # 3 s without a heartbeat, then the remaining pages
    assert stored(hub, connection.id, "notes") == fake.state.notes.rows
