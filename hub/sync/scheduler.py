"""Scheduling sync runs, and the sync side of the API process.

:class:`Scheduler` ticks every ``settings.scheduler_interval_seconds``: it
puts runs whose process died back in the queue, hands queued runs nobody
executes to the executor, and starts a run for every connection with
``sync_enabled`` whose ``next_sync_at`` has come (and every sync config with
its own ``schedule_minutes``), moving ``next_sync_at`` on in whole periods
(:func:`following`: after downtime, one catch-up run each, and each keeps
its phase). It also purges
old states, tombstones, sync logs and webhook events, tries again to revoke the grants of deleted
connections whose revocation failed, and every ten minutes refreshes the grants that would lapse
unused (:func:`hub.services.connections.renew_grants`). The move is a
conditional update, so several API processes never schedule a run twice.

:func:`start_background` is a background starter (``starter(app) -> object
with async stop()``): it starts the executor, the scheduler (when
``settings.run_scheduler``) and the webhook processor of an API process.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import select

from hub.models import Connection, EventDelivery, EventEndpoint, IdempotentCreate, SyncConfig, SyncRun, WebhookEvent, utcnow
from hub.runtime import Hub
from hub.sync.engine import create_run, interrupted_runs, requeue, waited_for
from hub.sync.store import purge_tombstones
from hub.sync.worker import Executor, make_executor
from hub.types import HubError

log = logging.getLogger("hub.sync.scheduler")

#: A queued run older than this is handed to the executor again (its job
#: may have been lost); the executor adds no job to a run that has one.
STALE_QUEUED = timedelta(minutes=10)
#: How often the scheduler looks for grants about to lapse (hub.services.connections.renew_grants).
GRANT_UPKEEP_EVERY = timedelta(minutes=10)


def following(due: datetime | None, minutes: int, now: datetime) -> datetime:
    """The next time of a schedule due at ``due``: whole periods on from it,
    the first after ``now``. A schedule keeps its phase after downtime (the
    overdue connections do not all run in step from then on), and makes one
    catch-up run, not one per period missed. Unscheduled before: a period
    from now."""
    period = timedelta(minutes=minutes)
    if due is None:
        return now + period
    if due > now:
        return due
    return due + period * ((now - due) // period + 1)


class SyncService:
    """Creates runs and hands them to the executor."""

    def __init__(self, hub: Hub, executor: Executor | None = None):
        self.hub = hub
        self.executor = executor or make_executor(hub)

    async def start(self) -> None:
        await self.executor.start()

    async def stop(self) -> None:
        await self.executor.stop()

    async def submit(self, run: SyncRun) -> None:
        await self.executor.submit(run)

    async def request(self, connection: Connection, *, entity: str | None = None, full_refresh: bool = False,
                      direction: str | None = None, trigger: str = "manual", coalesce: bool = False) -> SyncRun:
        run, _new = await asyncio.to_thread(
            lambda: create_run(self.hub, connection, entity=entity, full_refresh=full_refresh, direction=direction,
                               trigger=trigger, coalesce=coalesce))
        await self.submit(run)
        return run


class Scheduler:
    def __init__(self, service: SyncService, interval: float):
        self.service = service
        self.hub = service.hub
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        #: Revocations are tried beside the ticks: a provider hanging on them never holds up scheduling.
        self._revoking: asyncio.Task[Any] | None = None
        #: Grants about to lapse are refreshed beside the ticks too, every GRANT_UPKEEP_EVERY.
        self._renewing: asyncio.Task[Any] | None = None
        self._renewed_at: datetime | None = None

    async def start(self) -> Scheduler:
        self._task = asyncio.create_task(self._loop(), name="sync-scheduler")
        return self

    async def _loop(self) -> None:
        first = True
        while True:
            try:
                if first:
                    await self.recover(everything=True)
                    first = False
                await self.tick()
            except Exception:
                log.exception("sync scheduler tick failed")
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        for task in (self._task, self._revoking, self._renewing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._revoking = self._renewing = None

    async def recover(self, everything: bool = False) -> list[str]:
        """Requeue runs whose process is gone; submit queued runs nobody
        executes (``everything``: every queued run, at start-up), but not
        those a live ``hub sync`` waits to execute itself (:func:`waited_for`).

        In queue mode a run keeps its job: submitting a run whose job waits,
        or is still ``doing`` in a dead worker, adds none, and the workers'
        stalled-job check puts the dead worker's job back in the queue
        (:func:`hub.sync.worker.release_stalled`). A second job would be
        stuck behind the first on the connection's lock."""
        submitted = []
        for run in await asyncio.to_thread(interrupted_runs, self.hub):
            if await asyncio.to_thread(requeue, self.hub, run.id, run.owner,
                                       "interrupted: its process stopped; resumed from the last stored page"):
                log.warning("resuming interrupted sync run %s of connection %s", run.id, run.connection_id)
                await self.service.submit(run)
                submitted.append(run.id)
        now = utcnow()
        stale = now - STALE_QUEUED
        for run in await asyncio.to_thread(self._queued):
            if run.id in submitted or waited_for(run, now):  # (hub sync's own run: it executes it)
                continue
            if everything or not self.service.executor.knows(run.id) or run.queued_at < stale:
                await self.service.submit(run)
                submitted.append(run.id)
        return submitted

    async def tick(self, now: datetime | None = None) -> list[str]:
        """One round of scheduling; returns the ids of the runs submitted."""
        now = now or utcnow()
        submitted = await self.recover()
        # Claiming writes to the database, which a pull may hold for a moment
        # (SQLite): in a thread, so that the API's event loop never waits on it.
        for connection, entity in await asyncio.to_thread(self._claim_due, now):
            submitted += await self._start(connection, entity)
        await asyncio.to_thread(self.purge, now)
        if self._revoking is None or self._revoking.done():
            self._revoking = asyncio.create_task(self._revoke(now), name="pending-revocations")
        if (self._renewing is None or self._renewing.done()) and (
                self._renewed_at is None or now - self._renewed_at >= GRANT_UPKEEP_EVERY):
            self._renewed_at = now
            self._renewing = asyncio.create_task(self._renew(now), name="grant-upkeep")
        return submitted

    async def _renew(self, now: datetime) -> None:
        from hub.services.connections import renew_grants

        try:
            await renew_grants(self.hub, now)
        except Exception:
            log.exception("renewing grants failed")

    async def _revoke(self, now: datetime) -> None:
        from hub.services.connections import retry_revocations

        try:
            await retry_revocations(self.hub, now)
        except Exception:
            log.exception("retrying pending revocations failed")

    def _queued(self) -> list[SyncRun]:
        with self.hub.session() as session:
            return list(session.exec(select(SyncRun).where(SyncRun.status == "queued")
                                     .order_by(SyncRun.queued_at).limit(500)))

    def _claim_due(self, now: datetime) -> list[tuple[Connection, str | None]]:
        """The connections (entity None) and sync configs whose time has come,
        each claimed by moving its ``next_sync_at`` on."""
        with self.hub.session() as session:
            connections = list(session.exec(select(Connection).where(
                Connection.sync_enabled, sa.or_(Connection.next_sync_at.is_(None), Connection.next_sync_at <= now))))
            configs = list(session.exec(
                select(SyncConfig).join(Connection, Connection.id == SyncConfig.connection_id).where(
                    Connection.sync_enabled, SyncConfig.enabled, SyncConfig.schedule_minutes.is_not(None),
                    sa.or_(SyncConfig.next_sync_at.is_(None), SyncConfig.next_sync_at <= now))))
        # Each claimed on its own: a claim failing for a passing reason (SQLite's write lock held
        # past its wait) leaves that one due for the next tick, and the runs of those claimed
        # before it are still started (their next_sync_at has moved on: lost, they would wait a
        # whole period).
        due: list[tuple[Connection, str | None]] = []
        for connection in connections:
            try:
                if self._advance(Connection, Connection.id == connection.id, Connection.next_sync_at, now,
                                 following(connection.next_sync_at, connection.sync_frequency_minutes, now)):
                    try:
                        follows = self._follows_connection_schedule(connection.id)
                    except Exception:  # (claimed: _start tells whether there is anything to run)
                        log.exception("reading the sync configs of connection %s failed", connection.id)
                        follows = True
                    if follows:
                        due.append((connection, None))
            except Exception:
                log.exception("claiming the scheduled sync of connection %s failed: the next tick tries again",
                              connection.id)
        for config in configs:
            try:
                if self._advance(SyncConfig, SyncConfig.id == config.id, SyncConfig.next_sync_at, now,
                                 following(config.next_sync_at, config.schedule_minutes or 60, now)):
                    with self.hub.session() as session:
                        owner = session.get(Connection, config.connection_id)
                    if owner is not None:
                        due.append((owner, config.entity))
            except Exception:
                log.exception("claiming the scheduled sync of %s of connection %s failed: the next tick tries "
                              "again", config.entity, config.connection_id)
        return due

    def _follows_connection_schedule(self, connection_id: str) -> bool:
        """Whether a scheduled run of the whole connection has something to
        run: an enabled config without a schedule of its own (or no config
        yet: the run makes the default ones). When every enabled config has
        its own ``schedule_minutes``, the connection's schedule runs nothing
        (a run would fail with ``sync_config_not_found``); every config
        disabled is left to :meth:`_start`, which says so."""
        with self.hub.session() as session:
            configs = session.exec(select(SyncConfig.enabled, SyncConfig.schedule_minutes)
                                   .where(SyncConfig.connection_id == connection_id)).all()
        enabled = [minutes for on, minutes in configs if on]
        return not enabled or any(minutes is None for minutes in enabled)

    def purge(self, now: datetime) -> int:
        """Drop tombstones older than ``sync_tombstone_days``, finished runs
        older than ``sync_log_retention_days``, webhook events applied or
        ignored more than ``webhook_retention_days`` ago and events delivered
        to the app more than ``event_retention_days`` ago (0
        keeps each for good), OAuth states expired for a day and create outcomes kept past
        their idempotency keys' day. Returns the tombstones dropped."""
        from hub.services.oauth import purge_states
        from hub.services.records import expired_keys

        purge_states(self.hub, now - timedelta(days=1))
        creates = IdempotentCreate.__table__
        # (They hold the records made, personal data: kept no longer than their keys are honoured.)
        _purge(self.hub, creates, expired_keys(now))
        settings = self.hub.settings
        runs, events, deliveries = SyncRun.__table__, WebhookEvent.__table__, EventDelivery.__table__
        for what, table, done, when, days in (
                ("finished sync runs", runs, ("succeeded", "failed"), runs.c.finished_at,
                 settings.sync_log_retention_days),
                # (An event without its time of processing, from before it was kept, counts from its receipt.)
                ("applied or ignored webhook events", events, ("processed", "ignored"),
                 sa.func.coalesce(events.c.processed_at, events.c.received_at), settings.webhook_retention_days)):
            if days > 0:
                dropped = _purge(self.hub, table, table.c.status.in_(done), when < now - timedelta(days=days))
                if dropped:
                    log.info("purged %d %s older than %d days", dropped, what, days)
        days = settings.event_retention_days
        if days > 0:
            # Sent (or given up on) that long ago, or held that long by an endpoint disabled since:
            # never one still being tried.
            dropped = _purge(self.hub, deliveries, sa.or_(
                sa.and_(deliveries.c.status.in_(("delivered", "failed")),
                        sa.func.coalesce(deliveries.c.last_attempt_at, deliveries.c.created_at)
                        < now - timedelta(days=days)),
                sa.and_(deliveries.c.status == "pending", deliveries.c.created_at < now - timedelta(days=days),
                        sa.or_(deliveries.c.next_attempt_at.is_(None), deliveries.c.endpoint_id.in_(
                            sa.select(EventEndpoint.id).where(EventEndpoint.enabled.is_(False)))))))
            if dropped:
                log.info("purged %d events for the app older than %d days", dropped, days)
        days = settings.sync_tombstone_days
        if days <= 0:
            return 0
        with self.hub.session() as session:
            purged = purge_tombstones(session, before=now - timedelta(days=days))
            session.commit()
        if purged:
            log.info("purged %d deleted records older than %d days", purged, days)
        return purged

    def _advance(self, model: Any, which: Any, column: Any, now: datetime, upcoming: datetime) -> bool:
        with self.hub.session() as session:
            moved = session.execute(sa.update(model).where(which, sa.or_(column.is_(None), column <= now))
                                    .values(next_sync_at=upcoming))
            session.commit()
        return moved.rowcount == 1

    async def _start(self, connection: Connection, entity: str | None) -> list[str]:
        if connection.provider not in self.hub.registry.providers:
            # Uninstalled, or left out by HUB_PLUGINS: say so where operators look (its
            # status), once; a run ending well after the plugin is back clears it.
            message = f"{self.hub.registry.missing(connection.provider)}: this connection cannot sync"
            if (connection.status, connection.last_error) != ("error", message):
                log.warning("connection %s: %s", connection.id, message)
                await asyncio.to_thread(self.hub.mark, connection.id, "error", message)
            return []
        try:
            run, new = await asyncio.to_thread(lambda: create_run(self.hub, connection, entity=entity,
                                                                  trigger="schedule", coalesce=True))
        except HubError as exc:  # every config disabled, say: nothing to run
            log.info("no scheduled sync of connection %s: %s", connection.id, exc.message)
            return []
        except Exception:
            log.exception("could not schedule a sync of connection %s", connection.id)
            return []
        if not new:
            return []
        await self.service.submit(run)
        return [run.id]


#: How long one part of the background may take to stop before the process stops without it.
STOP_SECONDS = 20.0


class Background:
    """What :func:`start_background` started, stopped in reverse order."""

    def __init__(self, parts: list[Any]):
        self.parts = parts

    async def stop(self) -> None:
        """Stop each part, waiting :data:`STOP_SECONDS` at most for each: a
        part stuck in its stop (an await that nothing will end) is logged and
        left, rather than the process never stopping."""
        for part in reversed(self.parts):
            stopping = asyncio.ensure_future(part.stop())
            done, _pending = await asyncio.wait({stopping}, timeout=STOP_SECONDS)
            if not done:
                log.error("stopping %s took more than %g s: the process stops without waiting for it",
                          type(part).__name__, STOP_SECONDS)
                stopping.cancel()
                continue
            if not stopping.cancelled() and stopping.exception() is not None:
                log.error("stopping %s failed", type(part).__name__, exc_info=stopping.exception())


async def start_background(app: Any) -> Background:
    """Start the sync executor, the scheduler, the webhook processor and the
    event deliverer of an API process; sets ``app.state.sync``,
    ``app.state.webhook_processor`` and ``app.state.event_deliverer``."""
    from hub.services.events import EventDeliverer
    from hub.services.webhooks import WebhookProcessor

    hub: Hub = app.state.hub
    service = SyncService(hub)
    await service.start()
    parts: list[Any] = [service]
    app.state.sync = service
    processor = WebhookProcessor(hub, submit=service.submit)
    parts.append(await processor.start())
    app.state.webhook_processor = processor
    deliverer = EventDeliverer(hub)
    parts.append(await deliverer.start())
    app.state.event_deliverer = deliverer
    scheduler = Scheduler(service, hub.settings.scheduler_interval_seconds)
    app.state.sync_scheduler = scheduler
    if hub.settings.run_scheduler:
        parts.append(await scheduler.start())
    else:
        await scheduler.recover(everything=True)
    return Background(parts)


#: Rows deleted by one transaction of a purge: a long backlog (the first purge
#: of a busy hub) does not hold the write lock for long.
PURGE_BATCH = 5000


def _purge(hub: Hub, table: sa.Table, *conditions: Any) -> int:
    """Delete the rows of ``table`` meeting ``conditions``, a batch per transaction."""
    key = table.c.id
    dropped = 0
    while True:
        with hub.session() as session:
            batch = sa.select(key).where(*conditions).limit(PURGE_BATCH).scalar_subquery()
            count = session.execute(sa.delete(table).where(key.in_(batch))).rowcount or 0
            session.commit()
        dropped += count
        if count < PURGE_BATCH:
            return dropped
