"""Where sync runs execute.

- :class:`LocalExecutor` (embedded mode, the default on SQLite): runs are
  asyncio tasks of the hub's own process, one at a time per connection and
  at most ``HUB_SYNC_LOCAL_CONCURRENCY`` (4 by default) at once; the others
  wait their turn, queued (after downtime every overdue connection is due
  at once).
- :class:`QueueExecutor` (the default on PostgreSQL): runs are procrastinate
  jobs on the same database, executed by ``hub worker`` processes
  (:func:`run_worker`) and by ``HUB_SYNC_WORKERS`` job slots of each API
  process (2 by default, so one process works alone too); several workers
  share the queue. The job's
  procrastinate ``lock`` (one per connection) keeps two runs of a connection
  from running at once, and the engine's lease guards against anything else
  (a ``hub sync`` from the command line). A run has one job at a time (its
  ``queueing_lock``, and :meth:`QueueExecutor.submit` adds none while one
  waits or runs).

A worker that dies leaves its jobs ``doing``, holding their connections'
locks. Those jobs belong to the workers' stalled-job check
(:func:`release_stalled`): once the dead worker's heartbeat is
``HUB_SYNC_STALLED_SECONDS`` old, each job goes back to its place in the queue
and the run resumes from its last committed page. The scheduler
(:mod:`hub.sync.scheduler`) only marks such runs queued, sooner when it can
tell the process is gone; it submits no second job for them.

``HUB_SYNC_EXECUTOR=local|queue`` overrides the choice (``queue`` on
PostgreSQL only: :func:`executor_kind` refuses it elsewhere).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from typing import Any, Protocol

import sqlalchemy as sa

from hub.config import QUEUE_NEEDS_POSTGRESQL
from hub.models import SyncRun, utcnow
from hub.runtime import Hub
from hub.sync.engine import SyncEngine
from hub.sync.leases import end_dead_run_lease
from hub.types import ConfigurationError

log = logging.getLogger("hub.sync.worker")

TASK = "hub.sync.run"
QUEUE = "sync"


class Executor(Protocol):
    async def start(self) -> None: ...
    async def submit(self, run: SyncRun) -> None: ...
    async def stop(self) -> None: ...
    def knows(self, run_id: str) -> bool: ...


def executor_kind(hub: Hub) -> str:
    """``local`` or ``queue``: ``HUB_SYNC_EXECUTOR``, else by the database.

    :raises ConfigurationError: ``queue`` is asked for without PostgreSQL or
        without procrastinate."""
    chosen = hub.settings.sync_executor
    if chosen == "queue":
        if hub.engine.dialect.name != "postgresql":
            raise ConfigurationError(QUEUE_NEEDS_POSTGRESQL)
        if importlib.util.find_spec("procrastinate") is None:
            raise ConfigurationError("HUB_SYNC_EXECUTOR=queue needs procrastinate: pip install 'hub-core[postgres]'")
        return chosen
    if chosen == "local":
        return chosen
    if hub.engine.dialect.name != "postgresql":
        return "local"
    if importlib.util.find_spec("procrastinate") is None:
        log.warning("procrastinate is not installed (pip install 'hub-core[postgres]'): "
                    "syncs run in this process only")
        return "local"
    return "queue"


def make_executor(hub: Hub) -> Executor:
    return QueueExecutor(hub) if executor_kind(hub) == "queue" else LocalExecutor(hub)


class LocalExecutor:
    """Runs execute as tasks of this process's event loop, ``concurrency``
    at once (``HUB_SYNC_LOCAL_CONCURRENCY``); a run waiting for a slot, or
    for its connection's earlier run, stays ``queued``."""

    def __init__(self, hub: Hub, engine: SyncEngine | None = None, concurrency: int | None = None):
        self.hub = hub
        self.engine = engine or SyncEngine(hub)
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.concurrency = max(1, hub.settings.sync_local_concurrency if concurrency is None else concurrency)
        self._slots = asyncio.Semaphore(self.concurrency)

    async def start(self) -> None:
        return None

    def knows(self, run_id: str) -> bool:
        return run_id in self.tasks

    async def submit(self, run: SyncRun) -> None:
        if run.id in self.tasks:
            return
        task = asyncio.create_task(self._execute(run.id, run.connection_id), name=f"sync-run-{run.id}")
        self.tasks[run.id] = task
        task.add_done_callback(lambda _t, run_id=run.id: self.tasks.pop(run_id, None))

    async def _execute(self, run_id: str, connection_id: str) -> None:
        lock = self._locks.setdefault(connection_id, asyncio.Lock())
        # The connection's turn first, then its lease (another process may hold it), then a
        # slot: a run waiting behind its connection's holds none.
        async with lock:
            await self.engine.execute(run_id, slot=self._slots)

    async def wait(self, timeout: float) -> None:
        """Wait until every submitted run is done (tests, the CLI)."""
        pending = list(self.tasks.values())
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def conninfo(hub: Hub) -> str:
    """The libpq connection string of the hub's PostgreSQL database."""
    url = hub.engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def make_app(hub: Hub) -> Any:
    """The procrastinate app on the hub's database, with the sync task.

    :raises ConfigurationError: procrastinate is not installed.
    """
    try:
        import procrastinate
    except ImportError:
        raise ConfigurationError("syncs on PostgreSQL run as procrastinate jobs: "
                                 "pip install 'hub-core[postgres]'") from None

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo(hub)))

    @app.task(name=TASK, queue=QUEUE)
    async def run_sync(run_id: str) -> None:
        await SyncEngine(hub).execute(run_id)

    return app


async def ensure_queue_schema(hub: Hub, app: Any) -> None:
    """Install procrastinate's tables once, under an advisory lock so that
    processes starting together do not race. ``app`` must be open."""
    check = sa.text("SELECT to_regclass('procrastinate_jobs')")
    with hub.engine.connect() as connection:
        if connection.execute(check).scalar() is not None:
            return
        connection.execute(sa.text("SELECT pg_advisory_lock(4242001)"))
        connection.commit()
        try:
            if connection.execute(check).scalar() is None:
                await app.schema_manager.apply_schema_async()
        finally:
            connection.rollback()
            connection.execute(sa.text("SELECT pg_advisory_unlock(4242001)"))
            connection.commit()


def _run_lock(run_id: str) -> str:
    """The ``queueing_lock`` of a run's job."""
    return f"sync-run-{run_id}"


_HAS_JOB = ("SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE queueing_lock = %(queueing_lock)s "
            "AND status IN ('todo', 'doing')) AS found")


def embedded_workers(hub: Hub) -> int:
    """How many runs an API process executes itself in queue mode
    (``HUB_SYNC_WORKERS``, default 2; 0 leaves them to ``hub worker``)."""
    return max(0, hub.settings.sync_workers)


class QueueExecutor:
    """Runs become procrastinate jobs, executed by ``hub worker`` processes
    and by ``workers`` job slots of this process."""

    def __init__(self, hub: Hub, workers: int | None = None):
        self.hub = hub
        self.app = make_app(hub)
        self.workers = embedded_workers(hub) if workers is None else workers
        self._open = False
        self._tasks: list[asyncio.Task[Any]] = []

    def knows(self, run_id: str) -> bool:
        # The queue lives in the database: submit() looks there and adds a job
        # only to a queued run that has none (its job aborted by a worker
        # stopped mid-run, say), so the scheduler may submit every queued run.
        return False

    async def start(self) -> None:
        await self.app.open_async()
        self._open = True
        await ensure_queue_schema(self.hub, self.app)
        if self.workers:
            self._tasks = [
                asyncio.create_task(self.app.run_worker_async(**_worker_options(self.hub, self.workers,
                                                                                 install=False))),
                asyncio.create_task(_retry_stalled(self.hub, self.app)),
            ]

    async def submit(self, run: SyncRun) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        if not self._open:
            await self.start()
        found = await self.app.connector.execute_query_one_async(query=_HAS_JOB, queueing_lock=_run_lock(run.id))
        if found["found"]:
            # Waiting, or running: also the job of a dead worker, which the stalled-job check puts back.
            return
        try:
            await self.app.configure_task(
                name=TASK, queue=QUEUE, lock=f"sync-connection-{run.connection_id}",
                queueing_lock=_run_lock(run.id),
            ).defer_async(run_id=run.id)
        except AlreadyEnqueued:
            pass

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._open:
            self._open = False
            await self.app.close_async()


def _worker_options(hub: Hub, concurrency: int, install: bool, name: str | None = None) -> dict[str, Any]:
    stalled = hub.settings.sync_stalled_seconds
    return {"queues": [QUEUE], "concurrency": concurrency, "name": name, "install_signal_handlers": install,
            "fetch_job_polling_interval": 1.0, "delete_jobs": "successful",
            # A stopping worker (SIGTERM) stops its heartbeat at once: it must give its runs
            # back (aborted, requeued) before the others take it for dead and retry them.
            "shutdown_graceful_timeout": min(10.0, stalled / 3),
            # A worker's heartbeat, and how long without one makes its jobs stalled.
            "update_heartbeat_interval": stalled / 3, "stalled_worker_timeout": stalled}


async def run_worker(hub: Hub, *, concurrency: int = 4, name: str | None = None) -> None:
    """Execute queued sync runs until SIGINT or SIGTERM (``hub worker``).

    Jobs of a worker that died mid-run are retried by the other workers once
    its heartbeat is ``HUB_SYNC_STALLED_SECONDS`` old; the run resumes from
    its last committed page.
    """
    app = make_app(hub)
    async with app.open_async():
        await ensure_queue_schema(hub, app)
        watcher = asyncio.create_task(_retry_stalled(hub, app))
        try:
            await app.run_worker_async(**_worker_options(hub, concurrency, install=True, name=name))
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _retry_stalled(hub: Hub, app: Any) -> None:
    """Put back in the queue the jobs of workers whose heartbeat stopped (killed, crashed, machine lost)."""
    stalled = hub.settings.sync_stalled_seconds
    while True:
        await asyncio.sleep(stalled / 3)
        try:
            jobs = await app.job_manager.get_stalled_jobs(queue=QUEUE, task_name=TASK,
                                                          seconds_since_heartbeat=stalled)
        except Exception:
            log.warning("could not check for stalled sync jobs", exc_info=True)
            continue
        for job in jobs:
            try:
                if await asyncio.to_thread(release_stalled, hub, job.id, stalled):
                    log.warning("retrying stalled sync job %s (run %s)", job.id, job.task_kwargs.get("run_id"))
            except Exception:
                log.warning("could not retry stalled sync job %s", job.id, exc_info=True)


_STALLED_JOB = """
SELECT job.queueing_lock, job.args
  FROM procrastinate_jobs job
  LEFT JOIN procrastinate_workers worker ON worker.id = job.worker_id
 WHERE job.id = %(job_id)s AND job.status = 'doing'
   AND (worker.id IS NULL OR worker.last_heartbeat < NOW() - make_interval(secs => %(seconds)s))
   FOR UPDATE OF job
"""


def release_stalled(hub: Hub, job_id: int, seconds: float) -> bool:
    """Put a dead worker's job back in the queue, in one transaction.

    The job is checked again under a row lock (still ``doing``, its worker
    still silent for ``seconds``), so a job that another worker already put
    back, or took up again, is left alone. A job the scheduler queued for
    the same run meanwhile is dropped: the stalled job keeps the run's place
    in its connection's queue (procrastinate runs a lock's jobs in id order).
    The run's lease is ended, so its next execution need not wait for it to
    expire.

    :returns: whether the job was put back (not when it needed nothing).
    """
    from procrastinate import sql

    with hub.engine.begin() as connection:
        found = connection.exec_driver_sql(_STALLED_JOB, {"job_id": job_id, "seconds": float(seconds)}).first()
        if found is None:
            return False
        queueing_lock, args = found
        if queueing_lock:
            connection.exec_driver_sql(
                "DELETE FROM procrastinate_jobs WHERE queueing_lock = %(queueing_lock)s AND status = 'todo'",
                {"queueing_lock": queueing_lock})
        connection.exec_driver_sql(sql.queries["retry_job"], {
            "job_id": job_id, "retry_at": utcnow(), "new_priority": None, "new_queue_name": None,
            "new_lock": None})
        run_id = (args or {}).get("run_id")
        if run_id:
            end_dead_run_lease(connection, run_id)
        return True
