"""Scale-out: runs queued on PostgreSQL (procrastinate) are executed by two
``hub worker`` processes sharing the queue, and the per-connection lock keeps
any connection from syncing twice at once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from datetime import timedelta

import pytest
from sqlmodel import select

from hub.config import Settings
from hub.models import SyncLease, SyncRun, utcnow
from hub.runtime import Hub
from hub.sync.engine import LEASE_TTL
from hub.sync.scheduler import Scheduler, SyncService
from hub.sync.leases import Lease, new_owner
from hub.sync.worker import QUEUE, TASK, QueueExecutor, release_stalled
from hub.testing import postgres
from hub_example.testing import API_KEY
from hub_example.testing import create_app as fake_app
from tests.sync_support import hub_command, make_connection, stored, subprocess_env

pytestmark = pytest.mark.postgres

CONNECTIONS = 4
RUNS_EACH = 3


def stop_workers(workers: dict[int, subprocess.Popen]) -> list[str]:
    """Stop ``hub worker`` processes as an operator would (SIGTERM, then kill); their output."""
    logs = []
    for worker in workers.values():
        worker.send_signal(signal.SIGTERM)
        try:
            logs.append(worker.communicate(timeout=20)[0])
        except subprocess.TimeoutExpired:
            worker.kill()
            logs.append(worker.communicate()[0])
    return logs


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
            assert time.monotonic() - killed_at < LEASE_TTL + 30, f"the run was not taken over: {current().status}"
            time.sleep(0.2)
        taken_over_in = time.monotonic() - killed_at
    finally:
        logs = stop_workers(workers)

    finished = current()
    (survivor,) = workers
    assert finished.status == "succeeded", (finished.error, logs)
    assert finished.owner.split(":")[1] == str(survivor)
    # 3 s without a heartbeat, then the remaining pages (some 5 s): not once the dead worker's lease ran out.
    assert taken_over_in < LEASE_TTL / 2, taken_over_in
    assert stored(hub, connection.id, "notes") == fake.state.notes.rows


def test_runs_of_a_killed_worker_finish_while_an_api_scheduler_recovers_them(pg_server, tmp_path, serve_app,
                                                                             example_registry, caplog):
    """The API's scheduler sees the killed worker's pid gone at once and puts
    its runs back in the queue, long before the surviving worker finds the
    dead worker's procrastinate jobs stalled: the two recoveries must not
    fight, every run finishes (the interrupted ones resumed, not restarted) and
    no connection syncs twice at once."""
    database = postgres.create_database(pg_server, "hub_worker_killed_scheduler")
    fake = fake_app(notes=600, rate=1000, delay=0.2)
    url = serve_app(fake)
    hub = Hub(Settings(data_dir=tmp_path / "data", database_url=database, secret_key="test-secret-key"),
              example_registry)
    hub.migrate()
    connections = [make_connection(hub, "example", {"api_key": API_KEY}, org_name=f"org {i}") for i in range(2)]
    env = subprocess_env(tmp_path, HUB_DATABASE_URL=database, HUB_EXAMPLE_ORIGIN=url, HUB_SYNC_STALLED_SECONDS="3")
    workers: dict[int, subprocess.Popen[str]] = {}

    def runs() -> list[SyncRun]:
        with hub.session() as session:
            return list(session.exec(select(SyncRun)))

    def jobs() -> list[tuple[str, str]]:
        with hub.engine.connect() as connection:
            return [tuple(row) for row in connection.exec_driver_sql(
                "SELECT status::text, queueing_lock FROM procrastinate_jobs WHERE status IN ('todo', 'doing')")]

    async def scenario() -> tuple[dict[str, int], float]:
        service = SyncService(hub, QueueExecutor(hub, workers=0))
        await service.start()
        scheduler = Scheduler(service, interval=0.3)
        try:
            for full_refresh in (False, True):
                for connection in connections:
                    await service.request(connection, entity="notes", full_refresh=full_refresh)
            for _ in range(2):
                worker = subprocess.Popen(hub_command() + ["worker"], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
                workers[worker.pid] = worker
            await scheduler.start()
            deadline = time.monotonic() + 60
            while True:
                victim_runs = [r for r in await asyncio.to_thread(runs) if r.status == "running" and r.pages >= 2]
                if victim_runs:
                    break
                assert time.monotonic() < deadline, "no run started"
                await asyncio.sleep(0.05)
            victim = workers.pop(int(victim_runs[0].owner.split(":")[1]))
            victim.kill()
            victim.wait(10)
            killed_at = time.monotonic()
            # Every run the victim held, with the pages it had committed.
            interrupted = {r.id: r.pages for r in await asyncio.to_thread(runs)
                           if r.status == "running" and r.owner.split(":")[1] == str(victim.pid)}
            while not all(r.status in ("succeeded", "failed") for r in await asyncio.to_thread(runs)):
                assert time.monotonic() - killed_at < LEASE_TTL + 30, (
                    [(r.status, r.error) for r in await asyncio.to_thread(runs)], await asyncio.to_thread(jobs))
                await asyncio.sleep(0.2)
            return interrupted, time.monotonic() - killed_at
        finally:
            await scheduler.stop()
            await service.stop()
            await hub.close()

    try:
        interrupted, finished_in = asyncio.run(scenario())
    finally:
        logs = stop_workers(workers)

    done = runs()
    assert {r.status for r in done} == {"succeeded"}, [(r.status, r.error) for r in done]
    # Recovered at once (some 5 s of pages left): not once the dead worker's leases ran out.
    assert interrupted and finished_in < LEASE_TTL / 2, (interrupted, finished_in)
    # Every run is one full pass of 6 pages: the interrupted ones went on from
    # their last committed page (a restart would have stored more), in their turn.
    assert {r.pages for r in done} == {6}, [(r.id in interrupted, r.pages) for r in done]
    for connection in connections:
        mine = sorted((r for r in done if r.connection_id == connection.id), key=lambda r: r.started_at)
        assert len(mine) == 2
        assert mine[1].started_at >= mine[0].finished_at, "two runs of one connection overlapped"
        assert stored(hub, connection.id, "notes") == fake.state.notes.rows
    assert jobs() == []
    # Both recoveries happened: the scheduler's (at once) and the surviving worker's.
    requeued = {r.args[0] for r in caplog.records if r.getMessage().startswith("resuming interrupted sync run")}
    assert requeued == set(interrupted), (requeued, interrupted)
    assert any("retrying stalled sync job" in log for log in logs), logs
    assert not any("could not" in log for log in logs), logs


def test_a_stalled_job_goes_back_in_its_place_and_ends_the_lease_of_its_lost_machine(pg_server, tmp_path,
                                                                                     example_registry):
    """The stalled-job check, step by step: a worker on another machine (its
    pid cannot be checked) took a run's job and was lost; a scheduler queued
    a second job for the run meanwhile. Once the worker's heartbeat is old,
    the job goes back to its place (before the connection's later run), the
    second job goes, and the run's lease can be taken over at once."""
    database = postgres.create_database(pg_server, "hub_worker_stalled")
    hub = Hub(Settings(data_dir=tmp_path / "data", database_url=database, secret_key="test-secret-key"),
              example_registry)
    hub.migrate()
    connection = make_connection(hub, "example", {"api_key": API_KEY})
    lost = "another-machine:4242:0123456789ab"

    def jobs() -> list[tuple[int, str, str]]:
        with hub.engine.connect() as db:
            return [tuple(row) for row in db.exec_driver_sql(
                "SELECT id, status::text, queueing_lock FROM procrastinate_jobs ORDER BY id")]

    async def scenario() -> None:
        executor = QueueExecutor(hub, workers=0)
        service = SyncService(hub, executor)
        await service.start()
        manager = executor.app.job_manager
        try:
            first = await service.request(connection, entity="notes")
            second = await service.request(connection, entity="notes", full_refresh=True)
            worker_id = await manager.register_worker()
            job = await manager.fetch_job(queues=[QUEUE], worker_id=worker_id)
            assert job.task_kwargs == {"run_id": first.id}
            with hub.session() as session:
                session.get(SyncRun, first.id).status = "running"
                session.get(SyncRun, first.id).owner = lost
                session.add(SyncLease(connection_id=connection.id, owner=lost, run_id=first.id,
                                      expires_at=utcnow() + timedelta(seconds=60)))
                session.commit()
            # Submitting a run whose job is running (or waiting) adds no job.
            await service.submit(first)
            assert [status for _id, status, _lock in jobs()] == ["doing", "todo"]
            # A scheduler of an older hub queued the run again regardless.
            await executor.app.configure_task(name=TASK, queue=QUEUE, lock=f"sync-connection-{connection.id}",
                                              queueing_lock=f"sync-run-{first.id}").defer_async(run_id=first.id)
            assert not await asyncio.to_thread(release_stalled, hub, job.id, 3), "its worker is alive"
            with hub.engine.begin() as db:
                db.exec_driver_sql("UPDATE procrastinate_workers SET last_heartbeat = NOW() - interval '1 minute'")
            stalled = await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=3)
            assert [j.id for j in stalled] == [job.id]
            assert await asyncio.to_thread(release_stalled, hub, job.id, 3)
            assert not await asyncio.to_thread(release_stalled, hub, job.id, 3), "already back in the queue"
            assert jobs() == [(job.id, "todo", f"sync-run-{first.id}"), (job.id + 1, "todo", f"sync-run-{second.id}")]
            taken = Lease(hub, connection.id, new_owner(), first.id, 60)
            assert await asyncio.to_thread(taken.try_acquire), "the lost machine's lease still holds"
            await asyncio.to_thread(taken.release)
            other = await manager.register_worker()
            assert (await manager.fetch_job(queues=[QUEUE], worker_id=other)).id == job.id
        finally:
            await service.stop()
            await hub.close()

    asyncio.run(scenario())


def test_a_queued_run_whose_job_is_gone_gets_one_at_the_next_tick(pg_server, tmp_path, example_registry):
    """A worker stopped mid-run past its shutdown timeout aborts its job and
    puts the run back to queued: the scheduler's next tick gives it a job
    again (not 10 minutes later), and never a second one."""
    database = postgres.create_database(pg_server, "hub_worker_jobless")
    hub = Hub(Settings(data_dir=tmp_path / "data", database_url=database, secret_key="test-secret-key"),
              example_registry)
    hub.migrate()
    connection = make_connection(hub, "example", {"api_key": API_KEY})

    def statuses() -> list[str]:
        with hub.engine.connect() as db:
            return [row[0] for row in db.exec_driver_sql("SELECT status::text FROM procrastinate_jobs ORDER BY id")]

    async def scenario() -> None:
        executor = QueueExecutor(hub, workers=0)
        service = SyncService(hub, executor)
        await service.start()
        try:
            run = await service.request(connection, entity="notes")
            with hub.engine.begin() as db:
                db.exec_driver_sql("UPDATE procrastinate_jobs SET status = 'aborted'")
            scheduler = Scheduler(service, interval=60)
            assert await scheduler.recover() == [run.id]
            assert statuses() == ["aborted", "todo"]
            await scheduler.recover()
            assert statuses() == ["aborted", "todo"]
        finally:
            await service.stop()
            await hub.close()

    asyncio.run(scenario())
