"""Webhook intake: route a raw delivery to its connection, verify, store once
per connection; then, after the response, apply the stored events
(:class:`WebhookProcessor`). :func:`list_events` and :func:`retry_event` are
the operator's view of them."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from hub.background import BackgroundLoop
from hub.events import emit, status_changed
from hub.http import mend_surrogates
from hub.models import Connection, DroppedSyncEntity, SyncConfig, SyncRun, WebhookEvent, WebhookEventState, utcnow
from hub.plugins import Provider
from hub.runtime import Hub
from hub.sync.store import MAX_RECORD_ID
from hub.types import (CONNECTION_BROKEN, CONNECTION_REPAIRED, CONNECTION_WARNING, REDACTED, HubError, NotFound,
                       ProviderError, RateLimited, WebhookRejected)
from hub.types import WebhookEvent as Event
from hub.types import WebhookRequest

log = logging.getLogger("hub.webhooks")
_CONNECTION_ACTIONS = (CONNECTION_BROKEN, CONNECTION_REPAIRED, CONNECTION_WARNING)


class UnknownConnection(HubError):
    code = "unknown_webhook_connection"
    status = 404


#: What the sender of a delivery the hub does not accept is told, whatever the
#: reason (the log says which): the route answers anyone, and answers that differ
#: between "no such connection" and "bad signature" would tell which shops or
#: accounts have a connection here.
NOT_VERIFIED = "the delivery could not be verified"


@dataclass
class IntakeResult:
    connection_id: str | None  # (None: a delivery for no connection, acknowledged: verify_app_webhook)
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


#: Longest entity name the record store holds (its column's).
MAX_ENTITY = 64
#: Longest account key a connection holds (its column's; connection ids are shorter).
MAX_WEBHOOK_KEY = Connection.__table__.c.webhook_key.type.length
#: Longest dedup key stored as it is (the column's length); longer ones are stored as their digest.
MAX_DEDUP_KEY = WebhookEvent.__table__.c.dedup_key.type.length
#: Deepest record the record store takes: orjson writes no deeper JSON (hub.sync.store.canonical).
MAX_RECORD_DEPTH = 254

#: Most provider-side accounts one delivery may name (a batch of several companies).
MAX_DELIVERY_KEYS = 100


def find_connections(hub: Hub, provider: Provider, connection_id: str | None,
                     key: str | list[str] | None) -> list[Connection]:
    """The connection a delivery names, or every connection of its
    provider-side accounts (``key``, or several: a batch of several
    companies): two organizations may connect one shop, and an app-level
    delivery (an uninstall) concerns both. A connection is found by its
    ``webhook_key``, or, having none, by its ``provider_account``. Accounts
    no connection has are passed over."""
    keys = [key] if isinstance(key, str) else list(key or [])
    with hub.session() as session:
        query = select(Connection).where(Connection.provider == provider.name)
        if connection_id:
            query = query.where(Connection.id == connection_id)
        elif keys:
            # By the account deliveries carry, else by the one the connection's test named (a
            # provider whose connections are made from a typed key: HubSpot's portal, Xero's tenant).
            query = query.where(sa.or_(Connection.webhook_key.in_(keys), sa.and_(
                Connection.webhook_key.is_(None), Connection.provider_account.in_(keys))))
        else:
            raise UnknownConnection("the delivery does not say which connection it belongs to")
        connections = list(session.exec(query.order_by(Connection.created_at)))
    if not connections:
        raise UnknownConnection("no connection matches this delivery")
    return connections


async def receive(hub: Hub, provider: Provider, request: WebhookRequest) -> IntakeResult:
    """Verify a delivery and store its events, for each connection it
    belongs to that accepts it; duplicates are recognised, not stored again.

    :raises WebhookRejected: no connection matches, or none accepts the
        delivery: ``webhook_rejected`` with :data:`NOT_VERIFIED` whatever the
        reason (credentials unreadable, a plugin's error of another kind),
        which is logged; only ``webhook_stale`` (after a valid signature) as it is.
    :raises NotFound: the provider receives no webhooks (``webhooks_not_supported``).
    """
    try:
        return await _receive(hub, provider, request)
    except _RefusedByEach as refused:  # (each connection's reason logged already)
        if refused.first.code == "webhook_stale":
            raise refused.first from None
    except HubError as exc:
        if exc.code in ("webhook_stale", "webhooks_not_supported"):
            raise
        log.warning("a %s delivery was refused (%s): %s", provider.name, exc.code, exc.message)
    raise WebhookRejected(NOT_VERIFIED)


class _RefusedByEach(Exception):
    """Each connection a delivery names refused it (``first``: the first one's reason)."""

    def __init__(self, first: HubError):
        super().__init__(first.message)
        self.first = first


def _usable_key(value: str) -> bool:
    # A NUL is refused by PostgreSQL and looked up by SQLite: neither is a connection's.
    return 0 < len(value) <= MAX_WEBHOOK_KEY and "\x00" not in value


async def _receive(hub: Hub, provider: Provider, request: WebhookRequest) -> IntakeResult:
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
        if key is not None and not (isinstance(key, str) or (
                isinstance(key, list) and 0 < len(key) <= MAX_DELIVERY_KEYS and all(isinstance(k, str) for k in key))):
            # Read from an unverified body ({"account": {...}}): not something to look up.
            raise WebhookRejected("malformed delivery: the accounts it names are not texts")
    if not all(_usable_key(k) for k in ([connection_id] if connection_id else [key] if isinstance(key, str)
                                        else key or [])):
        raise UnknownConnection("the connection id or account the delivery names is not one a connection can have")
    try:
        connections = await hub.db(find_connections, hub, provider, connection_id, key)
    except UnknownConnection:
        # (No account named at all: Xero's intent-to-receive check, an empty delivery.)
        if connection_id or not await _signed_for_the_app(hub, provider, request):
            raise
        # An account the hub no longer holds (its connection deleted): nothing to store, and
        # a refusal would have the provider retry, then count the app's endpoint as failing.
        log.info("a signed %s delivery for an account no connection has was acknowledged", provider.name)
        return IntakeResult(connection_id=None)
    result: IntakeResult | None = None
    rejection: HubError | None = None
    for connection in connections:
        try:
            ctx = hub.context(provider, connection)  # (its secrets unreadable: credentials_unreadable)
            events = await provider.call("verify_webhook", ctx=ctx, request=request)
        except HubError as exc:
            # Each connection checks with its own secret: one refusing is not all refusing.
            log.warning("connection %s refused a %s delivery (%s): %s", connection.id, provider.name, exc.code,
                        exc.message)
            rejection = rejection or exc
            continue
        except Exception:
            log.exception("webhook verification by %s crashed", provider.name)
            rejection = rejection or WebhookRejected("malformed delivery")
            continue
        result = result or IntakeResult(connection_id=connection.id)
        for given, event in zip(events or [], _well_formed(provider, events)):
            # A key stored as its digest was stored cut before: a retry from then is a duplicate too.
            cut = str(given.dedup_key)[:MAX_DEDUP_KEY] if event.dedup_key != str(given.dedup_key) else None
            # In a thread: on SQLite a pull may hold the write lock for a moment, and
            # the event loop (other deliveries, the pull itself) must not wait with it.
            stored_id = await asyncio.to_thread(_store_once, hub, provider, connection, event, cut)
            (result.accepted if stored_id else result.duplicates).append(event.dedup_key)
    if result is None:
        assert rejection is not None
        raise _RefusedByEach(rejection)
    return result


async def _signed_for_the_app(hub: Hub, provider: Provider, request: WebhookRequest) -> bool:
    if not provider.implements("verify_app_webhook"):
        return False
    try:
        return await provider.call("verify_app_webhook", ctx=hub.app_context(provider), request=request) is True
    except HubError as exc:  # (the operator's app secret not configured, say)
        if exc.code == "webhook_stale":
            raise  # answered as a stale delivery for an account with a connection is
        log.warning("%s could not check a delivery's app signature (%s): %s", provider.name, exc.code, exc.message)
    except Exception:
        log.exception("app signature check by %s crashed", provider.name)
    return False


def _well_formed(provider: Provider, events: Any) -> list[Event]:
    """``verify_webhook``'s events, with ids a provider sends as numbers made text.

    :raises ProviderError: not a list of :class:`hub.types.WebhookEvent`, or one
        without a dedup key or type (a plugin bug).
    """
    if events is None:
        return []
    if not isinstance(events, (list, tuple)) or not all(isinstance(e, Event) for e in events):
        raise ProviderError(f"provider {provider.name} returned {type(events).__name__} from verify_webhook, "
                            f"expected a list of hub.types.WebhookEvent (hub/hookspecs.py)")
    checked = []
    for event in events:
        if (not isinstance(event.dedup_key, (str, int)) or isinstance(event.dedup_key, bool)
                or event.dedup_key == "" or not isinstance(event.type, str)):
            raise ProviderError(f"provider {provider.name} returned from verify_webhook an event without a text "
                                f"dedup_key and type: {event.dedup_key!r}, {event.type!r} (hub/hookspecs.py)")
        record_id, record = None if event.record_id in (None, "") else str(event.record_id), event.record
        if record is not None and _deeper_than(record, MAX_RECORD_DEPTH):
            # The record store cannot hold it (nor the API write it out): applied, it would fail
            # every retry alike. The event brings a pull instead, which says so once.
            record = None
        if (record_id is not None and len(record_id) > MAX_RECORD_ID) or isinstance(event.record_id, bool) or (
                event.record_id is not None and not isinstance(event.record_id, (str, int))):
            # No record is stored under such an id (too long, or an object or list where an id
            # belongs, as a malformed payload gives): the event then brings a pull of its entity.
            record_id = record = None
        # (Lone surrogates, which JSON allows and UTF-8 cannot hold, mended: stored, they failed every try.)
        dedup_key = mend_surrogates(str(event.dedup_key))
        if len(dedup_key) > MAX_DEDUP_KEY:
            # Cut, two events differing past the cut would be one; a digest keeps them apart.
            dedup_key = "sha256:" + hashlib.sha256(dedup_key.encode()).hexdigest()
        entity = event.entity if not isinstance(event.entity, str) or len(event.entity) <= MAX_ENTITY else None
        message = None if event.message is None else str(event.message)[:2000]
        checked.append(dataclasses.replace(event, dedup_key=dedup_key, message=mend_surrogates(message),
                                           type=mend_surrogates(event.type), record_id=mend_surrogates(record_id),
                                           record=mend_surrogates(record), entity=mend_surrogates(entity)))
    return checked


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether JSON ``value`` nests objects and arrays more than ``limit`` deep."""
    level = [value]
    for _ in range(limit + 1):
        level = [item for node in level if isinstance(node, (dict, list))
                 for item in (node.values() if isinstance(node, dict) else node)]
        if not level:
            return False
    return True


def _store_once(hub: Hub, provider: Provider, connection: Connection, event: Event,
                also_known_as: str | None = None) -> str | None:
    """Store the event unless the connection already has one with its dedup
    key (or ``also_known_as``, the key as an earlier version stored it)."""
    if also_known_as is not None:
        with hub.session() as session:
            if session.exec(select(WebhookEvent.id).where(WebhookEvent.connection_id == connection.id,
                                                          WebhookEvent.dedup_key == also_known_as)).first():
                return None
    row = WebhookEvent(
        provider=provider.name, dedup_key=event.dedup_key, connection_id=connection.id,
        organization_id=connection.organization_id, type=event.type[:128], entity=event.entity,
        action=event.action[:16], record_id=event.record_id, raw=event.raw or None,
        # A connection event keeps what the provider said instead of a record.
        payload={"message": event.message} if event.action in _CONNECTION_ACTIONS else event.record,
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
#: How long since its arrival an event waits out a provider's long rate limits without using up its tries.
RATE_LIMIT_WAIT_DAYS = 7
MAX_ATTEMPTS = 15
BATCH_SIZE = 200
#: How long events whose record is to be fetched are left to the processor that
#: will fetch it (renewed as each fetch begins): another processor taking them up
#: meanwhile would fetch the record again. A processor gone before fetching
#: leaves them to the next after this long.
REFETCH_HOLD_SECONDS = 60.0
#: An event waiting for a sync run is looked at again after twice the time
#: since its last look, at most this long: the run may take minutes.
WAIT_CAP_SECONDS = 60.0


def _failure(exc: BaseException) -> str:
    """Why an event's attempt failed, for its ``error``."""
    return exc.message if isinstance(exc, HubError) else f"{type(exc).__name__}: {exc}"


def backoff(attempts: int) -> timedelta:
    """Delay before the next try of an event that failed ``attempts`` times."""
    return timedelta(seconds=min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)))


@dataclass
class Waiting:
    """The event waits (for a sync run of its entity, a fetch of its record,
    its plugin): looked at again after ``delay``, with no attempt counted;
    ``reason``, when given, is shown as its ``error`` meanwhile."""

    delay: timedelta
    reason: str | None = None


@dataclass
class BatchResult:
    handled: int = 0
    failed: int = 0
    runs: list[SyncRun] = field(default_factory=list)
    #: Events whose record is stored in another version of their second, with
    #: the record's id: the provider's current version settles them.
    refetch: list[tuple[Any, str]] = field(default_factory=list)


Submit = Callable[[SyncRun], Awaitable[None]]


def _tell_changes(session: Session, connection: Connection | None, config: SyncConfig | None, event: Any,
                  changes: Any) -> None:
    """Tell the app of the records ``event`` changed (``records.changed``), in its transaction."""
    from hub.sync.store import tell_changes

    if changes and connection is not None:
        tell_changes(session, None, organization_id=connection.organization_id, connection_id=connection.id,
                     provider=event.provider, entity=event.entity, sync_config_id=config.id if config else None,
                     changes=changes, source="webhook", webhook_event_id=event.id)


class WebhookProcessor(BackgroundLoop):
    """Applies stored webhook events after the delivery was answered.

    An event carrying the full record upserts it into the record store; a
    deletion marks the record deleted; anything else needs an incremental
    sync of the entity: it queues one (or joins the one queued) and stays
    ``pending`` until a pull of its entity that started after the event was
    received has succeeded. Records are ordered by version, so deliveries may
    arrive in any order; one whose version equals the stored one's (versions
    are often whole seconds) with other content cannot be ordered, and the
    provider's current version of that record is fetched and stored instead. An event that fails (its sync run too) stays
    ``pending`` with its ``attempts`` and ``error`` and is tried again with
    exponential backoff, a failed sync with a new run; after
    :data:`MAX_ATTEMPTS` it is ``failed``. Several processes may process
    together: each event is claimed by one (``FOR UPDATE SKIP LOCKED``).
    """

    def __init__(self, hub: Hub, submit: Submit | None = None, poll_seconds: float = 5.0,
                 gather_seconds: float = 0.05):
        self.hub = hub
        self.submit = submit
        self.poll_seconds = poll_seconds
        self.gather_seconds = gather_seconds
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Wake the processor: events were stored."""
        self._wake.set()

    task_name = "webhook-processor"

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
        """Apply one batch of due events; submit the syncs they asked for, and
        fetch the records whose version they could not order."""
        result = await asyncio.to_thread(self._process_batch)
        if self.submit is not None:
            for run in result.runs:
                await self.submit(run)
        settled: dict[tuple[str, str, str], bool] = {}
        events_of: dict[tuple[str, str, str], list[Any]] = {}
        for event, remote_id in result.refetch:
            events_of.setdefault((event.connection_id, event.entity, remote_id), []).append(event)
        for event, remote_id in result.refetch:
            key = (event.connection_id, event.entity, remote_id)
            # One fetch settles every event of the record in the batch (a failed one, none:
            # they wait for their next attempt), as of the latest of them: one of a later
            # second than the first may be stored already (applied in the same batch).
            if key not in settled:
                await asyncio.to_thread(self._hold, events_of[key])
                latest = max((e.occurred_at for e in events_of[key] if e.occurred_at), default=None)
                settled[key] = await self._refetch(event, remote_id, latest)
            elif settled[key]:
                try:
                    await asyncio.to_thread(self._settled_with_another, event)
                except Exception as exc:  # (a database error: the event is tried again)
                    await asyncio.to_thread(self._refetch_failed, event, _failure(exc))
        return result

    def _hold(self, events: list[Any]) -> None:
        """Leave ``events`` to this processor while their record is fetched (see :data:`REFETCH_HOLD_SECONDS`)."""
        states = WebhookEventState.__table__
        with self.hub.session() as session:
            session.execute(sa.update(states).where(states.c.event_id.in_([e.id for e in events])).values(
                next_attempt_at=utcnow() + timedelta(seconds=REFETCH_HOLD_SECONDS)))
            session.commit()

    async def _refetch(self, event: Any, remote_id: str, occurred: datetime | None = None) -> bool:
        """Store the provider's current version of a record an event could not
        be ordered against (another version of the same second is stored), and
        count the event as processed: what the provider holds now is at least
        as new as both. It is stored as a pull stores what it lists, as of
        when it was asked for (less :data:`~hub.sync.engine.PULLED_AS_OF_MARGIN`),
        so that a late delivery of an event from before is not applied over
        it. A failure counts as one of the event's attempts; the event is
        looked at again after its backoff. Returns whether it was stored."""
        from hub.sync.engine import PULLED_AS_OF_MARGIN

        provider = self.hub.registry.providers[event.provider]

        def connection_of() -> Connection | None:
            with self.hub.session() as session:
                return session.get(Connection, event.connection_id)

        connection = await self.hub.db(connection_of)
        if connection is None:
            return False  # deleted meanwhile: its events go with it
        asked = utcnow()
        try:
            record = await self.hub.call(provider, "get_record", self.hub.context(provider, connection),
                                         entity=event.entity, record_id=remote_id)
        except NotFound:
            record = None  # deleted there since
        except RateLimited as exc:
            await asyncio.to_thread(self._refetch_failed, event,
                                    f"fetching {event.entity} {remote_id}: {_failure(exc)}", exc.retry_after)
            return False
        except Exception as exc:
            await asyncio.to_thread(self._refetch_failed, event,
                                    f"fetching {event.entity} {remote_id}: {_failure(exc)}")
            return False
        version = max(filter(None, (occurred or event.occurred_at, asked - PULLED_AS_OF_MARGIN)))
        try:
            await asyncio.to_thread(self._settle, provider, event, remote_id, record, version)
        except Exception as exc:  # (a database error too: the event is tried again)
            await asyncio.to_thread(self._refetch_failed, event, _failure(exc))
            return False
        return True

    def _settle(self, provider: Provider, event: Any, remote_id: str, record: dict[str, Any] | None,
                version: datetime) -> None:
        """Store the fetched ``record`` (None: gone there) as of ``version``,
        unless its sync config was disabled meanwhile, and count the event as
        processed."""
        from hub.sync.store import Changes, apply_deletions, apply_records, entity_key, write_transaction

        with write_transaction(self.hub, entity_key(event.connection_id, event.entity)) as session:
            config = session.exec(select(SyncConfig).where(SyncConfig.connection_id == event.connection_id,
                                                           SyncConfig.entity == event.entity)).first()
            policy = config.conflict_policy if config else "provider_wins"
            now = utcnow()
            changes = Changes()
            if not self._synced(session, event.connection_id, event.entity, config, {}):
                pass  # no longer synced
            elif record is None:
                apply_deletions(session, connection_id=event.connection_id, entity=event.entity, policy=policy,
                                remote_ids=[remote_id], now=now, version=version, changes=changes)
            else:  # (an equal version with other content is applied: this one is the later)
                apply_records(session, connection_id=event.connection_id, schema=provider.schemas[event.entity],
                              policy=policy, records=[record], now=now, fallback_version=version, changes=changes)
            _tell_changes(session, session.get(Connection, event.connection_id), config, event, changes)
            self._mark_processed(session, event, now)

    def _settled_with_another(self, event: Any) -> None:
        """Count an event processed whose record was fetched and stored for another of its batch."""
        with self.hub.session() as session:
            self._mark_processed(session, event, utcnow())
            session.commit()

    @staticmethod
    def _mark_processed(session: Session, event: Any, now: datetime) -> None:
        events = WebhookEvent.__table__
        session.execute(sa.update(events).where(events.c.id == event.id, events.c.status == "pending")
                        .values(status="processed", processed_at=now, error=None))

    def _refetch_failed(self, event: Any, message: str, limited_for: float | None = None) -> None:
        """The fetch failed: one attempt more, tried again after its backoff; or, refused
        by a rate limit that lasts longer than backoffs grow (``limited_for`` seconds: a
        daily quota), none, tried again once it frees: no fault of the event, whose attempts
        would run out in about an hour and a quarter. For a week since it arrived at most."""
        log.warning("webhook event %s: %s", event.id, message)
        events, states = WebhookEvent.__table__, WebhookEventState.__table__
        now = utcnow()
        # (received_at is read back in UTC, as every UTCDateTime.)
        waits = limited_for is not None and math.isfinite(limited_for) and limited_for > BACKOFF_CAP_SECONDS and (
            now - event.received_at < timedelta(days=RATE_LIMIT_WAIT_DAYS))
        attempts = event.attempts + (0 if waits else 1)
        later = timedelta(seconds=min(limited_for, 86400)) if waits else backoff(attempts)
        with self.hub.session() as session:
            session.execute(sa.update(events).where(events.c.id == event.id, events.c.status == "pending").values(
                attempts=attempts, error=message[:2000], status="failed" if attempts >= MAX_ATTEMPTS else "pending"))
            session.execute(sa.update(states).where(states.c.event_id == event.id).values(
                next_attempt_at=now + later, last_attempt_at=now))
            session.commit()

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
                               events.c.type, events.c.action, events.c.record_id, events.c.payload, events.c.attempts,
                               events.c.error, events.c.received_at, states.c.occurred_at,
                               states.c.last_attempt_at, states.c.event_id.label("state_id"))
                     .select_from(events.outerjoin(states, states.c.event_id == events.c.id))
                     .where(events.c.status == "pending",
                            sa.or_(states.c.next_attempt_at.is_(None), states.c.next_attempt_at <= now))
                     .order_by(events.c.received_at, events.c.id).limit(BATCH_SIZE))
            rows = session.execute(query).all()
            if rows and dialect == "postgresql":
                # The records' locks first, then the events' rows (skipping those another
                # processor has): a connection's deletion takes them in that order too,
                # and the other order deadlocks with it.
                lock(session, *{entity_key(e.connection_id or "", e.entity or "") for e in rows})
                rows = session.execute(query.where(events.c.id.in_([e.id for e in rows]))
                                       .with_for_update(skip_locked=True, of=events)).all()
            if not rows:
                return result
            # Read once the locks are held: a time read before a full pass began would
            # leave the records this batch touches looking unseen to that pass's sweep.
            now = utcnow()
            context: dict[Any, Any] = {}
            event_changes, state_changes, new_states = [], [], []
            for event in rows:
                attempts, error, next_attempt, processed = event.attempts + 1, None, None, now
                try:
                    with session.begin_nested():
                        outcome = self._apply(session, event, now, result, context)
                except Exception as exc:
                    context.clear()
                    error = _failure(exc)
                    log.warning("webhook event %s failed (attempt %d): %s", event.id, attempts, error)
                    status = "failed" if attempts >= MAX_ATTEMPTS else "pending"
                    next_attempt, processed = now + backoff(attempts), None
                    result.failed += 1
                else:
                    if isinstance(outcome, Waiting):
                        # Waiting is no attempt: only a failed run counts against the event.
                        status, attempts, error = "pending", event.attempts, outcome.reason or event.error
                        next_attempt, processed = now + outcome.delay, None
                    else:
                        status = outcome
                result.handled += 1
                event_changes.append({"b_id": event.id, "b_status": status, "b_attempts": attempts,
                                      "b_error": error and error[:2000], "b_processed": processed})
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
               context: dict[Any, Any]) -> str | Waiting:
        from hub.sync.store import Changes, apply_deletions, apply_records, erase, is_erased

        provider = self.hub.registry.providers.get(event.provider)
        if provider is None:
            # Not the event's failure: uninstalled for a while (an upgrade, a broken release),
            # its plugin back later applies it. Counted as attempts, its tries would run out
            # within the hour and leave it failed.
            return Waiting(timedelta(seconds=BACKOFF_CAP_SECONDS),
                           f"the {event.provider} plugin is not loaded: the event waits for it")
        if event.connection_id not in context:
            context[event.connection_id] = session.get(Connection, event.connection_id) if event.connection_id else None
        connection = context[event.connection_id]
        if connection is not None and event.action in _CONNECTION_ACTIONS:
            return self._connection_news(session, connection, event, now)
        if connection is not None and event.action == REDACTED:
            # (Whatever the sync configs say: the law asks it of every copy the hub keeps.)
            if event.entity is not None and (event.entity not in provider.schemas or not event.record_id):
                return "ignored"
            erase(session, connection_id=connection.id, entity=event.entity, remote_id=event.record_id, now=now,
                  id_field=provider.schemas[event.entity].id_field if event.entity else "id")
            # (The app's copies are the tenant's to erase: it is told which, in the erasure's transaction.)
            emit(session, connection.organization_id, "records.erased",
                 {"connection_id": connection.id, "provider": connection.provider, "entity": event.entity,
                  "remote_id": event.record_id if event.entity else None})
            return "processed"
        if connection is not None and event.entity in provider.schemas and event.record_id and is_erased(
                session, connection_id=connection.id, entity=event.entity, remote_id=event.record_id):
            # A delivery about a record erased for privacy (a retry arriving late): its body goes too.
            session.execute(sa.update(WebhookEvent).where(WebhookEvent.id == event.id).values(raw=None, payload=None))
            return "ignored"
        if connection is None or not event.entity or event.entity not in provider.schemas:
            return "ignored"
        schema = provider.schemas[event.entity]
        key = (connection.id, schema.name)
        if key not in context:
            context[key] = session.exec(select(SyncConfig).where(SyncConfig.connection_id == connection.id,
                                                                 SyncConfig.entity == schema.name)).first()
        config = context[key]
        if not self._synced(session, connection.id, schema.name, config, context):
            return "ignored"  # the tenant stopped syncing this entity: its events change nothing
        policy = config.conflict_policy if config else "provider_wins"
        occurred = event.occurred_at
        record = event.payload if isinstance(event.payload, dict) else None
        if event.action == "deleted":
            remote_id = event.record_id or (record or {}).get(schema.id_field)
            if remote_id in (None, ""):
                return "ignored"
            changes = Changes()
            apply_deletions(session, connection_id=connection.id, entity=schema.name, policy=policy,
                            remote_ids=[str(remote_id)], now=now, version=occurred, changes=changes)
            _tell_changes(session, connection, config, event, changes)
            return "processed"
        if record and record.get(schema.id_field) not in (None, ""):
            undecided: list[str] = []
            changes = Changes()
            apply_records(session, connection_id=connection.id, schema=schema, policy=policy, records=[record],
                          now=now, fallback_version=occurred, only_new=event.action == "created",
                          undecided=undecided, changes=changes)
            _tell_changes(session, connection, config, event, changes)
            if not undecided:
                return "processed"
            # Another version of the same second is stored: which is the later cannot be told
            # from the two; the provider's current version can.
            if "get_record" in provider.hooks:
                result.refetch.append((event, undecided[0]))
                return Waiting(timedelta(seconds=REFETCH_HOLD_SECONDS))
        return self._await_sync(session, event, connection, schema.name, config, now, result, context)

    @staticmethod
    def _synced(session: Session, connection_id: str, entity: str, config: SyncConfig | None,
                context: dict[Any, Any]) -> bool:
        """Whether the entity's events are applied: its ``config`` is enabled,
        or it has none and the tenant did not delete one (stored, or pulled,
        its events would undo that: :class:`DroppedSyncEntity`). ``context``
        keeps the connection's dropped entities for the batch."""
        if config is not None:
            return config.enabled
        key = ("dropped", connection_id)
        if key not in context:
            context[key] = set(session.exec(select(DroppedSyncEntity.entity).where(
                DroppedSyncEntity.connection_id == connection_id)))
        return entity not in context[key]

    @staticmethod
    def _connection_news(session: Session, connection: Connection, event: Any, now: datetime) -> str:
        """The provider says the connection broke, works again, or will stop
        working unless its user acts: its status follows.

        A broken connection is ``error`` with the provider's reason as
        ``last_error`` (a disconnected one stays as it is, an expired one
        stays expired, with the provider's reason); a
        warned one keeps its status and shows the ``warning``; a repaired one
        is ``connected`` again if it was in ``error``, and loses its warning.
        News overtaken by newer news of the same kind already stored is
        ``ignored``: the newer (applied, or to be) says how it is now. (Two
        deliveries cross: an error delivered after the repair that followed it
        must not break the connection again.) A breakage is overtaken by a
        newer breakage or repair, a warning by a newer warning or repair; a
        warning says nothing of whether the connection works.
        """
        overtaking = (CONNECTION_WARNING, CONNECTION_REPAIRED) if event.action == CONNECTION_WARNING else (
            CONNECTION_BROKEN, CONNECTION_REPAIRED)
        if event.occurred_at is not None:
            events, states = WebhookEvent.__table__, WebhookEventState.__table__
            newer = session.execute(sa.select(events.c.id).join(states, states.c.event_id == events.c.id).where(
                events.c.connection_id == connection.id, events.c.action.in_(overtaking),
                events.c.id != event.id, states.c.occurred_at > event.occurred_at).limit(1)).first()
            if newer is not None:
                return "ignored"
        message = ((event.payload or {}).get("message") or f"{event.provider} reports {event.type}")[:2000]
        # Decided on the status as it is now, held until the batch commits (the connection was
        # read when the batch began: a call may have made it expired since).
        current = Hub.locked_status(session, connection.id)
        if current is None:
            return "ignored"
        status = current.status
        values: dict[str, Any]
        if event.action == CONNECTION_BROKEN:
            if status == "disconnected":
                return "ignored"
            # An expired one stays expired (its user must authorize again either way), with the
            # provider's reason, which says more than the refused refresh (an uninstalled app).
            values = {"status": "error", "last_error": message} if status != "expired" else {"last_error": message}
        elif event.action == CONNECTION_WARNING:
            if status == "disconnected":
                return "ignored"
            values = {"warning": message}
        else:
            if status != "error" and connection.warning is None:
                return "ignored"
            values = {"warning": None}
            if status == "error":
                values.update(status="connected", last_error=None)
        if "status" in values:
            status_changed(session, organization_id=connection.organization_id, connection_id=connection.id,
                           provider=connection.provider, status=values["status"], previous=status,
                           last_error=values.get("last_error"))
        session.execute(sa.update(Connection).where(Connection.id == connection.id).values(updated_at=now, **values))
        log.info("connection %s: %s event %s (%s)", connection.id, event.provider, event.type,
                 ", ".join(f"{key} {'set' if value else 'cleared'}" if key in ("warning", "last_error") else
                           f"{key} {value}" for key, value in values.items()))
        return "processed"

    def _await_sync(self, session: Session, event: Any, connection: Connection, entity: str,
                    config: SyncConfig | None, now: datetime, result: BatchResult,
                    context: dict[Any, Any]) -> str | Waiting:
        """``processed`` once a pull of the entity that started after the event
        was received has succeeded; waiting while one is queued or running.

        :raises HubError: the last such run failed since the event was last
            looked at (the event backs off); after the backoff a new run is queued.
        """
        covering = sa.or_(SyncRun.entity == entity, _whole_connection_run(config))
        runs = session.exec(select(SyncRun).where(
            SyncRun.connection_id == connection.id, SyncRun.direction.in_(("pull", "both")), covering,
            sa.or_(SyncRun.status == "queued", SyncRun.started_at >= event.received_at),
        ).order_by(SyncRun.queued_at.desc()).limit(20)).all()
        if any(r.status == "succeeded" for r in runs):
            return "processed"
        last = event.last_attempt_at
        queued_now = {r.id for r in result.runs}
        if any(r.status in ("queued", "running") for r in runs):
            if last is None or any(r.id in queued_now for r in runs):
                return Waiting(timedelta(seconds=BACKOFF_BASE_SECONDS))
            seconds = min(WAIT_CAP_SECONDS, max(BACKOFF_BASE_SECONDS, 2 * (now - last).total_seconds()))
            return Waiting(timedelta(seconds=seconds))
        failed = next((r for r in runs if r.status == "failed"), None)
        if failed is not None and (last is None or (failed.finished_at is not None and failed.finished_at > last)):
            raise HubError(f"sync run {failed.id} of {entity} failed: {failed.error or 'no reason given'}",
                           code=failed.error_code or "sync_failed")
        run, context[(connection.id, entity)] = self._queue_sync(session, connection, entity, config)
        if run.id not in queued_now:
            result.runs.append(run)
        return Waiting(timedelta(seconds=BACKOFF_BASE_SECONDS))

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
            SyncRun.direction.in_(("pull", "both")),
            SyncRun.owner.is_(None))).first()  # (not hub sync's: it is submitted, hub sync executes its own)
        if queued is not None:
            return queued, config
        run = SyncRun(organization_id=connection.organization_id, connection_id=connection.id, entity=entity,
                      direction="pull", trigger="webhook")
        session.add(run)
        return run, config


def _whole_connection_run(config: SyncConfig | None) -> Any:
    """Runs of every enabled config that include this entity's (a scheduled
    one leaves out the configs with their own schedule)."""
    if config is None or not config.enabled:
        return sa.false()
    whole = SyncRun.entity.is_(None)
    if config.schedule_minutes is not None:
        whole = sa.and_(whole, SyncRun.trigger != "schedule")
    return whole


# ---------------------------------------------------------------- operators

class NotRetryable(HubError):
    code = "webhook_event_not_retryable"
    status = 409


def event_out(event: WebhookEvent, state: WebhookEventState | None) -> dict[str, Any]:
    """What an operator sees of an event: where it stands, never its payload."""
    return {"id": event.id, "connection_id": event.connection_id, "provider": event.provider,
            "dedup_key": event.dedup_key, "type": event.type, "entity": event.entity, "action": event.action,
            "record_id": event.record_id, "status": event.status, "attempts": event.attempts,
            "error": event.error, "received_at": event.received_at, "processed_at": event.processed_at,
            "occurred_at": state.occurred_at if state else None,
            "last_attempt_at": state.last_attempt_at if state else None,
            "next_attempt_at": state.next_attempt_at if state else None}


def list_events(hub: Hub, connection_id: str | None, *, status: str | None = None, cursor: str | None = None,
                limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
    """Stored events (of one connection, or all), newest first, a page at a time.

    :returns: the page and the cursor of the next one (``None`` at the end).
    :raises InvalidCursor: a cursor this function did not return.
    """
    from hub.sync.stored import page_newest_first

    query = select(WebhookEvent, WebhookEventState).outerjoin(
        WebhookEventState, WebhookEventState.event_id == WebhookEvent.id)
    if connection_id is not None:
        query = query.where(WebhookEvent.connection_id == connection_id)
    if status:
        query = query.where(WebhookEvent.status == status)
    with hub.session() as session:
        page, next_cursor = page_newest_first(session, query, WebhookEvent.received_at, WebhookEvent.id, cursor,
                                              limit, time_key="r",
                                              position_of=lambda row: (row[0].received_at, row[0].id),
                                              of=f"webhook-events:{connection_id or '*'}")
    return [event_out(event, state) for event, state in page], next_cursor


def retry_event(hub: Hub, connection_id: str | None, event_id: str) -> dict[str, Any]:
    """Put a ``failed`` event back in the queue, due now with its attempts
    reset (a ``pending`` one too, without waiting for its backoff).

    :raises NotFound: no such event (of this connection).
    :raises NotRetryable: the event was processed or ignored.
    """
    events = WebhookEvent.__table__
    with hub.session() as session:
        event = session.get(WebhookEvent, event_id)
        if event is None or (connection_id is not None and event.connection_id != connection_id):
            raise NotFound("no such webhook event", code="webhook_event_not_found")
        requeued = session.execute(sa.update(events).where(
            events.c.id == event_id, events.c.status.in_(("pending", "failed"))).values(
            status="pending", attempts=0, processed_at=None))
        if requeued.rowcount != 1:
            session.rollback()
            session.refresh(event)
            raise NotRetryable(f"the event is {event.status}: only failed and pending events are retried")
        state = session.get(WebhookEventState, event_id) or WebhookEventState(event_id=event_id)
        state.next_attempt_at = None
        session.add(state)
        session.commit()
        session.refresh(event)
        return event_out(event, state)
