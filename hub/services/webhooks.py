"""Webhook intake: route a raw delivery to its connection, verify, store once;
then, after the response, apply the stored events (:class:`WebhookProcessor`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from hub.models import Connection, SyncConfig, SyncRun, WebhookEvent, WebhookEventState, utcnow
from hub.plugins import Provider
from hub.runtime import Hub
from hub.types import HubError, NotFound, WebhookRejected
from hub.types import WebhookEvent as Event
from hub.types import WebhookRequest

log = logging.getLogger("hub.webhooks")


class UnknownConnection(HubError):
    code = "unknown_webhook_connection"
    status = 404


@dataclass
class IntakeResult:
    connection_id: str
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def find_connection(hub: Hub, provider: Provider, connection_id: str | None, key: str | None) -> Connection:
    with hub.session() as session:
        query = select(Connection).where(Connection.provider == provider.name)
        if connection_id:
            query = query.where(Connection.id == connection_id)
        elif key:
            query = query.where(Connection.webhook_key == key)
        else:
            raise UnknownConnection("the delivery does not say which connection it belongs to")
        connection = session.exec(query).first()
    if connection is None:
        raise UnknownConnection("no connection matches this delivery")
    return connection


async def receive(hub: Hub, provider: Provider, request: WebhookRequest) -> IntakeResult:
    """Verify a delivery and store its events; duplicates are recognised, not stored again.

    :raises WebhookRejected: verification failed.
    :raises UnknownConnection: no connection matches.
    """
    if not provider.implements("verify_webhook"):
        raise NotFound(f"{provider.name} does not receive webhooks", code="webhooks_not_supported")
    key = None
    connection_id = request.query.get("connection_id")
    if not connection_id and provider.implements("webhook_connection_key"):
        try:
            key = await provider.call("webhook_connection_key", request=request)
        except HubError:
            raise
        except Exception:
            raise WebhookRejected("malformed delivery") from None
    connection = find_connection(hub, provider, connection_id, key)
    ctx = hub.context(provider, connection)
    try:
        events = await provider.call("verify_webhook", ctx=ctx, request=request)
    except HubError:
        raise
    except Exception:
        log.exception("webhook verification by %s crashed", provider.name)
        raise WebhookRejected("malformed delivery") from None
    result = IntakeResult(connection_id=connection.id)
    for event in events or []:
        stored_id = _store_once(hub, provider, connection, event)
        (result.accepted if stored_id else result.duplicates).append(event.dedup_key)
    return result


def _store_once(hub: Hub, provider: Provider, connection: Connection, event: Event) -> str | None:
    row = WebhookEvent(
        provider=provider.name, dedup_key=event.dedup_key[:255], connection_id=connection.id,
        organization_id=connection.organization_id, type=event.type[:128], entity=event.entity,
        action=event.action, record_id=event.record_id, payload=event.record, raw=event.raw or None,
    )
    with hub.session() as session:
        session.add(row)
        session.add(WebhookEventState(event_id=row.id, occurred_at=event.occurred_at))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
    return row.id


# ---------------------------------------------------------------- processing

BACKOFF_BASE_SECONDS = 2.0
BACKOFF_CAP_SECONDS = 600.0
MAX_ATTEMPTS = 15
BATCH_SIZE = 200


def backoff(attempts: int) -> timedelta:
    """Delay before the next try of an event that failed ``attempts`` times."""
    return timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)))


@dataclass
class BatchResult:
    handled: int = 0
    failed: int = 0
    runs: list[SyncRun] = field(default_factory=list)


Submit = Callable[[SyncRun], Awaitable[None]]


class WebhookProcessor:
    """Applies stored webhook events after the delivery was answered.

    An event carrying the full record upserts it into the record store; a
    deletion marks the record deleted; anything else queues an incremental
    sync of the entity. Records are ordered by version, so deliveries may
    arrive in any order. An event that fails stays ``pending`` with its
    ``attempts`` and ``error`` and is tried again with exponential backoff;
    after :data:`MAX_ATTEMPTS` it is ``failed``. Several processes may process
    together: each event is claimed by one (``FOR UPDATE SKIP LOCKED``).
    """

    def __init__(self, hub: Hub, submit: Submit | None = None, poll_seconds: float = 5.0,
                 gather_seconds: float = 0.05):
        self.hub = hub
        self.submit = submit
        self.poll_seconds = poll_seconds
        self.gather_seconds = gather_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def notify(self) -> None:
        """Wake the processor: events were stored."""
        self._wake.set()

    async def start(self) -> WebhookProcessor:
        self._task = asyncio.create_task(self._loop(), name="webhook-processor")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                result = await self.process_once()
            except Exception:
                log.exception("webhook processing failed")
                result = BatchResult()
            if result.handled >= BATCH_SIZE:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                # A burst of deliveries is applied as one batch, not one by one.
                await asyncio.sleep(self.gather_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def process_once(self) -> BatchResult:
        """Apply one batch of due events; submit the syncs they asked for."""
        result = await asyncio.to_thread(self._process_batch)
        if self.submit is not None:
            for run in result.runs:
                await self.submit(run)
        return result

    async def drain(self, timeout: float = 30.0) -> int:
        """Process until no event is due (or ``timeout`` passes); returns how many were handled."""
        deadline = asyncio.get_running_loop().time() + timeout
        total = 0
        while asyncio.get_running_loop().time() < deadline:
            result = await self.process_once()
            total += result.handled
            if result.handled == 0:
                break
        return total

    def _process_batch(self) -> BatchResult:
        from hub.sync.store import entity_key, lock

        result = BatchResult()
        now = utcnow()
        events, states = WebhookEvent.__table__, WebhookEventState.__table__
        with self.hub.session() as session:
            dialect = session.connection().dialect.name
            if dialect == "sqlite":
                lock(session)
            query = (sa.select(events.c.id, events.c.provider, events.c.connection_id, events.c.entity,
                               events.c.action, events.c.record_id, events.c.payload, events.c.attempts,
                               states.c.occurred_at, states.c.event_id.label("state_id"))
                     .select_from(events.outerjoin(states, states.c.event_id == events.c.id))
                     .where(events.c.status == "pending",
                            sa.or_(states.c.next_attempt_at.is_(None), states.c.next_attempt_at <= now))
                     .order_by(events.c.received_at, events.c.id).limit(BATCH_SIZE))
            if dialect == "postgresql":
                query = query.with_for_update(skip_locked=True, of=events)
            rows = session.execute(query).all()
            if not rows:
                return result
            if dialect == "postgresql":
                lock(session, *{entity_key(e.connection_id or "", e.entity or "") for e in rows})
            context: dict[Any, Any] = {}
            event_changes, state_changes, new_states = [], [], []
            for event in rows:
                attempts = event.attempts + 1
                status, error, next_attempt = "processed", None, None
                try:
                    with session.begin_nested():
                        status = self._apply(session, event, now, result, context)
                except Exception as exc:
                    context.clear()
                    error = exc.message if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}"
                    log.warning("webhook event %s failed (attempt %d): %s", event.id, attempts, error)
                    status = "failed" if attempts >= MAX_ATTEMPTS else "pending"
                    next_attempt = now + backoff(attempts)
                    result.failed += 1
                result.handled += 1
                event_changes.append({"b_id": event.id, "b_status": status, "b_attempts": attempts,
                                      "b_error": error and error[:2000],
                                      "b_processed": None if error else now})
                state = {"b_id": event.id, "b_next": next_attempt, "b_last": now}
                (state_changes if event.state_id else new_states).append(state)
            session.execute(sa.update(events).where(events.c.id == sa.bindparam("b_id")).values(
                status=sa.bindparam("b_status"), attempts=sa.bindparam("b_attempts"), error=sa.bindparam("b_error"),
                processed_at=sa.bindparam("b_processed")), event_changes)
            if state_changes:
                session.execute(sa.update(states).where(states.c.event_id == sa.bindparam("b_id")).values(
                    next_attempt_at=sa.bindparam("b_next"), last_attempt_at=sa.bindparam("b_last")), state_changes)
            if new_states:
                session.execute(sa.insert(states), [{"event_id": s["b_id"], "next_attempt_at": s["b_next"],
                                                     "last_attempt_at": s["b_last"]} for s in new_states])
            session.commit()
        return result

    def _apply(self, session: Session, event: Any, now: datetime, result: BatchResult,
               context: dict[Any, Any]) -> str:
        from hub.sync.store import apply_deletions, apply_records

        provider = self.hub.registry.providers.get(event.provider)
        if provider is None:
            raise HubError(f"provider {event.provider} is not loaded", code="unknown_provider")
        if event.connection_id not in context:
            context[event.connection_id] = session.get(Connection, event.connection_id) if event.connection_id else None
        connection = context[event.connection_id]
        if connection is None or not event.entity or event.entity not in provider.schemas:
            return "ignored"
        schema = provider.schemas[event.entity]
        key = (connection.id, schema.name)
        if key not in context:
            context[key] = session.exec(select(SyncConfig).where(SyncConfig.connection_id == connection.id,
                                                                 SyncConfig.entity == schema.name)).first()
        config = context[key]
        policy = config.conflict_policy if config else "provider_wins"
        occurred = event.occurred_at
        record = event.payload if isinstance(event.payload, dict) else None
        if event.action == "deleted":
            remote_id = event.record_id or (record or {}).get(schema.id_field)
            if remote_id in (None, ""):
                return "ignored"
            apply_deletions(session, connection_id=connection.id, entity=schema.name, policy=policy,
                            remote_ids=[str(remote_id)], now=now, version=occurred)
            return "processed"
        if record and record.get(schema.id_field) not in (None, ""):
            apply_records(session, connection_id=connection.id, schema=schema, policy=policy, records=[record],
                          now=now, fallback_version=occurred)
            return "processed"
        run, context[key] = self._queue_sync(session, connection, schema.name, config)
        if all(r.id != run.id for r in result.runs):
            result.runs.append(run)
        return "processed"

    @staticmethod
    def _queue_sync(session: Session, connection: Connection, entity: str,
                    config: SyncConfig | None) -> tuple[SyncRun, SyncConfig]:
        """A queued incremental sync of the entity (an existing queued one is
        reused), with a pull config when the entity has none."""
        if config is None:
            config = SyncConfig(organization_id=connection.organization_id, connection_id=connection.id,
                                entity=entity)
            session.add(config)
        queued = session.exec(select(SyncRun).where(
            SyncRun.connection_id == connection.id, SyncRun.status == "queued", SyncRun.entity == entity,
            SyncRun.direction.in_(("pull", "both")))).first()
        if queued is not None:
            return queued, config
        run = SyncRun(organization_id=connection.organization_id, connection_id=connection.id, entity=entity,
                      direction="pull", trigger="webhook")
        session.add(run)
        return run, config
