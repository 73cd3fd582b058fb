"""The tenant's event endpoints, and the deliverer that sends them events.

See :mod:`hub.events` for what an event is and how it is signed. The
endpoint functions here are blocking (run them with ``hub.db``); the
:class:`EventDeliverer` is a part of each API process's background.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlmodel import select

from hub import __version__
from hub.crypto import DecryptionError
from hub.http import parse_retry_after
from hub.events import EVENT_TYPES, SIGNATURE_HEADER, body_of, emit, new_secret, sign
from hub.models import EventDelivery, EventEndpoint, utcnow
from hub.runtime import Hub
from hub.sync import stored
from hub.types import NotFound, ValidationFailed

log = logging.getLogger(__name__)

#: Waits after each failed attempt: 30 s to 8 h, ten attempts over about a day.
BACKOFF_SECONDS = (30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
#: A claimed delivery is left to the process that claimed it this long (then
#: another takes it: the claimer is taken for dead, and the event may arrive twice).
CLAIM_SECONDS = 60
#: An endpoint has this long to answer; a slower answer counts as a failure.
TIMEOUT_SECONDS = 10.0
#: Deliveries claimed at once, and sent at once.
BATCH_SIZE = 50
CONCURRENCY = 8
#: Most of an endpoint's answer kept in the delivery's ``error``.
ANSWER_CHARS = 300
#: Longest wait an endpoint's ``Retry-After`` sets.
MAX_RETRY_AFTER = 8 * 3600


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    return BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS)) - 1]


# -- endpoints


def _checked_url(url: str) -> str:
    url = url.strip()
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("url must be an http:// or https:// URL with a host", code="invalid_url",
                               fields=["url"])
    if parts.username is not None or parts.password is not None:
        # (The URL is shown by every answer about the endpoint: no secret belongs in it.)
        raise ValidationFailed("url must not carry credentials (user:password@): the app checks the "
                               "Hub-Signature of each event instead", code="invalid_url", fields=["url"])
    if parts.fragment:
        raise ValidationFailed("url must not have a #fragment", code="invalid_url", fields=["url"])
    return url


def _checked_events(events: list[str]) -> list[str]:
    unknown = [e for e in events if e not in EVENT_TYPES]
    if unknown:
        raise ValidationFailed(f"unknown event type{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                               f"the types are {', '.join(EVENT_TYPES)} (GET /event-types)",
                               code="unknown_event_type", fields=["events"])
    return list(dict.fromkeys(events))


def create_endpoint(hub: Hub, organization_id: str, *, url: str, events: list[str], description: str | None,
                    enabled: bool) -> tuple[EventEndpoint, str]:
    """A new endpoint and its signing secret (shown this once)."""
    secret = new_secret()
    endpoint = EventEndpoint(organization_id=organization_id, url=_checked_url(url), events=_checked_events(events),
                             description=description, enabled=enabled,
                             secret_encrypted=hub.cipher.encrypt(secret))
    with hub.session() as session:
        session.add(endpoint)
        session.commit()
        session.refresh(endpoint)
    return endpoint, secret


def list_endpoints(hub: Hub, organization_id: str) -> list[EventEndpoint]:
    with hub.session() as session:
        return list(session.exec(select(EventEndpoint).where(EventEndpoint.organization_id == organization_id)
                                 .order_by(EventEndpoint.created_at, EventEndpoint.id)))


def find_endpoint(hub: Hub, organization_id: str, endpoint_id: str) -> EventEndpoint:
    with hub.session() as session:
        endpoint = session.get(EventEndpoint, endpoint_id)
    if endpoint is None or endpoint.organization_id != organization_id:
        raise NotFound("no such event endpoint", code="event_endpoint_not_found")
    return endpoint


def update_endpoint(hub: Hub, organization_id: str, endpoint_id: str, changes: dict[str, Any]) -> EventEndpoint:
    """Change what ``changes`` names (url, events, description, enabled)."""
    if "url" in changes:
        changes["url"] = _checked_url(changes["url"])
    if "events" in changes:
        changes["events"] = _checked_events(changes["events"])
    with hub.session() as session:
        endpoint = session.get(EventEndpoint, endpoint_id)
        if endpoint is None or endpoint.organization_id != organization_id:
            raise NotFound("no such event endpoint", code="event_endpoint_not_found")
        for name, value in changes.items():
            setattr(endpoint, name, value)
        endpoint.updated_at = utcnow()
        session.add(endpoint)
        session.commit()
        session.refresh(endpoint)
        return endpoint


def rotate_secret(hub: Hub, organization_id: str, endpoint_id: str) -> tuple[EventEndpoint, str]:
    """A new signing secret for the endpoint (the old one signs nothing more)."""
    secret = new_secret()
    with hub.session() as session:
        endpoint = session.get(EventEndpoint, endpoint_id)
        if endpoint is None or endpoint.organization_id != organization_id:
            raise NotFound("no such event endpoint", code="event_endpoint_not_found")
        endpoint.secret_encrypted = hub.cipher.encrypt(secret)
        endpoint.updated_at = utcnow()
        session.add(endpoint)
        session.commit()
        session.refresh(endpoint)
        return endpoint, secret


def delete_endpoint(hub: Hub, organization_id: str, endpoint_id: str) -> None:
    """Delete the endpoint and its deliveries, sent or not."""
    with hub.session() as session:
        endpoint = session.get(EventEndpoint, endpoint_id)
        if endpoint is None or endpoint.organization_id != organization_id:
            raise NotFound("no such event endpoint", code="event_endpoint_not_found")
        # (Explicitly: SQLite enforces the cascade only where foreign keys are on.)
        session.execute(sa.delete(EventDelivery).where(EventDelivery.endpoint_id == endpoint_id))
        session.delete(endpoint)
        session.commit()


def ping(hub: Hub, organization_id: str, endpoint_id: str) -> EventDelivery:
    """Queue a ``ping`` event for the endpoint (whatever types it takes)."""
    with hub.session() as session:
        endpoint = session.get(EventEndpoint, endpoint_id)
        if endpoint is None or endpoint.organization_id != organization_id:
            raise NotFound("no such event endpoint", code="event_endpoint_not_found")
        emit(session, organization_id, "ping", {"endpoint_id": endpoint.id}, endpoints=[endpoint])
        session.commit()
        return session.exec(select(EventDelivery).where(EventDelivery.endpoint_id == endpoint.id)
                            .order_by(EventDelivery.created_at.desc(), EventDelivery.id.desc())).first()


def delivery_counts(hub: Hub, endpoint_ids: list[str]) -> dict[str, dict[str, int]]:
    """Each endpoint's deliveries by status (kept ones: see ``HUB_EVENT_RETENTION_DAYS``)."""
    counts: dict[str, dict[str, int]] = {i: {"pending": 0, "delivered": 0, "failed": 0} for i in endpoint_ids}
    if not endpoint_ids:
        return counts
    with hub.session() as session:
        for endpoint_id, status, count in session.execute(
                sa.select(EventDelivery.endpoint_id, EventDelivery.status, sa.func.count())
                .where(EventDelivery.endpoint_id.in_(endpoint_ids))
                .group_by(EventDelivery.endpoint_id, EventDelivery.status)):
            counts[endpoint_id][status] = count
    return counts


def list_deliveries(hub: Hub, endpoint: EventEndpoint, *, status: str | None, event_type: str | None,
                    cursor: str | None, limit: int) -> tuple[list[EventDelivery], str | None]:
    """The endpoint's deliveries, newest first, and the cursor of the next page."""
    position = stored.decode_cursor(cursor)
    query = select(EventDelivery).where(EventDelivery.endpoint_id == endpoint.id)
    if status:
        query = query.where(EventDelivery.status == status)
    if event_type:
        query = query.where(EventDelivery.type == event_type)
    if position:
        try:
            created, delivery_id = stored.cursor_time(str(position["c"])), str(position["id"])
        except KeyError:
            raise stored.InvalidCursor("the cursor is not one this API returned") from None
        query = query.where(stored.after_newest_first(EventDelivery.created_at, created, EventDelivery.id,
                                                      delivery_id))
    with hub.session() as session:
        rows = list(session.exec(query.order_by(EventDelivery.created_at.desc(), EventDelivery.id.desc())
                                 .limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, stored.encode_cursor({"c": rows[-1].created_at.isoformat(), "id": rows[-1].id})


def retry_delivery(hub: Hub, endpoint: EventEndpoint, delivery_id: str) -> EventDelivery:
    """Send the delivery again now: one more attempt for a failed one, the
    next at once for a pending one; a delivered one is sent again."""
    with hub.session() as session:
        delivery = session.get(EventDelivery, delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint.id:
            raise NotFound("no such event delivery", code="event_delivery_not_found")
        delivery.status, delivery.next_attempt_at = "pending", utcnow()
        session.add(delivery)
        session.commit()
        session.refresh(delivery)
        return delivery


# -- delivering


@dataclass
class _Claimed:
    id: str
    url: str
    secret: str | None
    payload: dict[str, Any]
    attempts: int


@dataclass
class _Outcome:
    delivered: bool
    response_status: int | None = None
    error: str | None = None
    retry_after: float | None = None


class EventDeliverer:
    """Sends due deliveries to their endpoints: each is claimed (left to this
    process for :data:`CLAIM_SECONDS`; ``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL, so several processes share the work), POSTed signed, and
    recorded: ``delivered`` on a 2xx answer, else tried again after
    :func:`backoff` (or the endpoint's ``Retry-After``), ``failed`` after
    :data:`MAX_ATTEMPTS`. Redirects are not followed: an endpoint answers itself."""

    def __init__(self, hub: Hub, poll_seconds: float = 1.0, transport: httpx.AsyncBaseTransport | None = None):
        self.hub = hub
        self.poll_seconds = poll_seconds
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False, timeout=TIMEOUT_SECONDS,
                                         headers={"User-Agent": f"hub/{__version__} (events)"})
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> EventDeliverer:
        self._task = asyncio.create_task(self._loop(), name="event-deliverer")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                sent = await self.deliver_once()
            except Exception:
                log.exception("delivering events failed")
                sent = 0
            if sent < BATCH_SIZE:
                await asyncio.sleep(self.poll_seconds)

    async def deliver_once(self) -> int:
        """Send one batch of due deliveries; returns how many were tried."""
        claimed = await self.hub.db(self._claim)
        if not claimed:
            return 0
        gate = asyncio.Semaphore(CONCURRENCY)

        async def send(delivery: _Claimed) -> _Outcome:
            async with gate:
                return await self._send(delivery)

        outcomes = await asyncio.gather(*(send(d) for d in claimed))
        await self.hub.db(self._record, list(zip(claimed, outcomes)))
        return len(claimed)

    def _claim(self) -> list[_Claimed]:
        now = utcnow()
        deliveries, endpoints = EventDelivery.__table__, EventEndpoint.__table__
        with self.hub.session() as session:
            query = (sa.select(deliveries.c.id, deliveries.c.payload, deliveries.c.attempts, endpoints.c.url,
                               endpoints.c.secret_encrypted)
                     .select_from(deliveries.join(endpoints, endpoints.c.id == deliveries.c.endpoint_id))
                     # (A disabled endpoint's events wait for it to be enabled again, or to age out.)
                     .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now,
                            endpoints.c.enabled.is_(True))
                     .order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(BATCH_SIZE))
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True, of=deliveries)
            rows = session.execute(query).all()
            if not rows:
                return []
            session.execute(sa.update(deliveries).where(deliveries.c.id.in_([r.id for r in rows]))
                            .values(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS)))
            session.commit()
        claimed = []
        for row in rows:
            try:
                secret: str | None = self.hub.cipher.decrypt(row.secret_encrypted)
            except DecryptionError:
                secret = None  # (recorded as the delivery's failure: the hub's key changed)
            claimed.append(_Claimed(row.id, row.url, secret, row.payload, row.attempts))
        return claimed

    async def _send(self, delivery: _Claimed) -> _Outcome:
        if delivery.secret is None:
            return _Outcome(False, error="the endpoint's signing secret cannot be decrypted with this hub's key "
                                         "(restore the key, or rotate the endpoint's secret)")
        body = body_of(delivery.payload)
        headers = {"Content-Type": "application/json", "Hub-Event-Id": delivery.payload["id"],
                   "Hub-Event-Type": delivery.payload["type"], SIGNATURE_HEADER: sign(delivery.secret, body)}
        try:
            response = await self._client.post(delivery.url, content=body, headers=headers)
        except httpx.TimeoutException:
            return _Outcome(False, error=f"no answer within {TIMEOUT_SECONDS:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(False, error=f"could not reach the endpoint: {type(exc).__name__}: {exc}"[:2000])
        if 200 <= response.status_code < 300:
            return _Outcome(True, response.status_code)
        answer = response.text[:ANSWER_CHARS].strip()
        return _Outcome(False, response.status_code,
                        f"the endpoint answered HTTP {response.status_code}" + (f": {answer}" if answer else ""),
                        _retry_after(response))

    def _record(self, results: list[tuple[_Claimed, _Outcome]]) -> None:
        now = utcnow()
        deliveries = EventDelivery.__table__
        with self.hub.session() as session:
            for delivery, outcome in results:
                attempts = delivery.attempts + 1
                values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now,
                                          "response_status": outcome.response_status, "error": outcome.error}
                if outcome.delivered:
                    values.update(status="delivered", delivered_at=now, next_attempt_at=None)
                elif attempts >= MAX_ATTEMPTS:
                    values.update(status="failed", next_attempt_at=None)
                    log.warning("event %s (%s) could not be delivered after %d attempts: %s",
                                delivery.payload["id"], delivery.payload["type"], attempts, outcome.error)
                else:
                    wait = max(backoff(attempts), outcome.retry_after or 0)
                    values.update(next_attempt_at=now + timedelta(seconds=wait))
                    log.info("event %s (%s) not delivered (attempt %d), next try in %g s: %s",
                             delivery.payload["id"], delivery.payload["type"], attempts, wait, outcome.error)
                # (Still pending: a retry asked for meanwhile, or a claim taken over, is not undone.)
                session.execute(sa.update(deliveries).where(deliveries.c.id == delivery.id,
                                                            deliveries.c.status == "pending",
                                                            deliveries.c.attempts == delivery.attempts)
                                .values(**values))
            session.commit()


def _retry_after(response: httpx.Response) -> float | None:
    """The endpoint's ``Retry-After`` in seconds, at most :data:`MAX_RETRY_AFTER`."""
    seconds = parse_retry_after(response.headers.get("Retry-After"))
    return min(seconds, MAX_RETRY_AFTER) if seconds else None
