"""The tenant's event endpoints, and the deliverer that sends them events.

See :mod:`hub.events` for what an event is and how it is signed. The
endpoint functions here are blocking (run them with ``hub.db``); the
:class:`EventDeliverer` is a part of each API process's background.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlmodel import select

from hub import __version__
from hub.background import BackgroundLoop
from hub.crypto import DecryptionError
from hub.events import EVENT_TYPES, SIGNATURE_HEADER, body_of, emit, new_secret, sign
from hub.http import parse_retry_after
from hub.models import EventDelivery, EventEndpoint, new_id, utcnow
from hub.runtime import Hub
from hub.sync import stored
from hub.sync.store import lock
from hub.types import HubError, NotFound, ValidationFailed

log = logging.getLogger(__name__)

#: Waits after each failed attempt: 30 s to 8 h, ten attempts over about a day.
BACKOFF_SECONDS = (30, 120, 600, 1800, 3600, 7200, 14400, 28800, 28800)
MAX_ATTEMPTS = len(BACKOFF_SECONDS) + 1
#: A claimed delivery is left to the process that claimed it this long (then
#: another takes it: the claimer is taken for dead, and the event may arrive
#: twice). Longer than a batch takes: each attempt is bounded by the timeout.
CLAIM_SECONDS = 120
#: An endpoint has this long to answer; a slower answer counts as a failure.
TIMEOUT_SECONDS = 10.0
#: Deliveries claimed at once, and sent at once.
BATCH_SIZE = 50
CONCURRENCY = 8
#: Most of an endpoint's answer read, and kept in the delivery's ``error``.
ANSWER_BYTES = 300
#: Longest wait an endpoint's ``Retry-After`` sets.
MAX_RETRY_AFTER = 8 * 3600


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    return BACKOFF_SECONDS[min(attempts, len(BACKOFF_SECONDS)) - 1]


# -- endpoints

#: Endpoints an organization may have (each event is written once per endpoint, in its change's transaction).
MAX_ENDPOINTS = 20
#: How long a rotated secret still signs beside the new one.
ROTATION_OVERLAP = timedelta(hours=24)


class EndpointDisabled(HubError):
    code = "event_endpoint_disabled"
    status = 409


class TooManyEndpoints(HubError):
    code = "too_many_event_endpoints"
    status = 409


class EndpointExists(HubError):
    code = "event_endpoint_exists"
    status = 409


def _refuse_a_second_endpoint_at(session: Any, organization_id: str, url: str, other_than: str | None = None) -> None:
    """An app would get each event twice, once per endpoint, with
    different ids of delivery (a create retried after a lost answer makes
    one): one endpoint per URL, carrying every event type it wants."""
    query = sa.select(EventEndpoint.id, EventEndpoint.url).where(EventEndpoint.organization_id == organization_id)
    if other_than is not None:
        query = query.where(EventEndpoint.id != other_than)
    # (An organization has at most MAX_ENDPOINTS: compared here, as the same URL written otherwise.)
    existing = next((row.id for row in session.execute(query) if _same_url(row.url) == _same_url(url)), None)
    if existing is not None:
        raise EndpointExists(f"event endpoint {existing} has this url already: change its events instead (an "
                             "app would get each event twice)", details={"event_endpoint_id": existing},
                             fields=["url"])


def _same_url(url: str) -> tuple[str, str, int | None, str]:
    """What tells one URL from another: scheme and host in any case, the
    scheme's default port written or not, are the same place."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port if parts.port != {"http": 80, "https": 443}.get(scheme) else None
    target = parts.path or "/"
    return scheme, (parts.hostname or "").lower().rstrip("."), port, target + (f"?{parts.query}" if parts.query else "")


def _invalid(message: str) -> ValidationFailed:
    return ValidationFailed(message, code="invalid_url", fields=["url"])


def _checked_url(hub: Hub, url: str) -> str:
    """``url`` if events can be sent to it: http(s), a host (IDNA-encodable), no
    credentials or fragment, and, unless ``HUB_EVENT_PRIVATE_URLS``, no
    loopback, private or link-local address."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    try:
        if parts is not None:
            parts.port  # noqa: B018  (raises on a port that is no number, or out of range)
    except ValueError:
        raise _invalid("url's port must be a number from 1 to 65535") from None
    try:
        httpx.URL(url).host.encode("idna")  # (what sending needs: a host httpx and IDNA take)
    except (httpx.InvalidURL, UnicodeError) as exc:
        if parts is not None and parts.hostname:
            raise _invalid(f"url's host {parts.hostname!r} is not one events can be sent to ({exc})") from None
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("url must be an http:// or https:// URL with a host")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise _invalid("url must not hold spaces or control characters (percent-encode them)")
    if parts.username is not None or parts.password is not None:
        # (The URL is shown by every answer about the endpoint: no secret belongs in it.)
        raise _invalid("url must not carry credentials (user:password@): the app checks the Hub-Signature of "
                       "each event instead")
    if parts.fragment:
        raise _invalid("url must not have a #fragment")
    if parts.port == 0:
        raise _invalid("url must not name port 0")
    if not hub.settings.event_private_urls:
        address = _private_address(parts.hostname, _resolved(parts.hostname))
        if address:
            raise _invalid(f"url must not be at a loopback, private or link-local address ({address}): this hub "
                           "sends events to public addresses only (HUB_EVENT_PRIVATE_URLS)")
    return url


def _addresses(host: str) -> list[str]:
    """The addresses ``host`` names (itself, when an address).

    :raises OSError: it does not resolve.
    """
    try:
        return [host] if ipaddress.ip_address(host) else []
    except ValueError:
        pass
    try:
        return [info[4][0] for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)]
    except UnicodeError as exc:
        raise OSError(str(exc)) from None


def _resolved(host: str) -> list[str]:
    """The addresses ``host`` names; none when it does not resolve (yet: an
    endpoint may be registered before its name is published)."""
    try:
        return _addresses(host)
    except OSError:
        return []


def _private_address(host: str, addresses: list[str]) -> str | None:
    """The first of ``addresses`` that is not a public one, if any."""
    if host.lower() in ("localhost",) or host.lower().endswith(".localhost"):
        return host
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        # (And the IPv4 address inside an IPv6 one: mapped, 6to4, Teredo.)
        inner = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None] if ip.version == 6 else []
        if not ip.is_global or ip.is_multicast or any(v4 is not None and not v4.is_global for v4 in inner):
            return address
    return None


async def _public_address(host: str) -> tuple[str, str | None]:
    """The address to send to for ``host``, and why not (an error) if it does
    not resolve or any of its addresses is not public."""
    try:
        addresses = await asyncio.to_thread(_addresses, host)
    except OSError as exc:
        return "", f"could not reach the endpoint: its host does not resolve ({exc})"
    private = _private_address(host, addresses)
    if private or not addresses:
        return "", (f"the endpoint's address {private} is not a public one, which this hub does not send to "
                    "(HUB_EVENT_PRIVATE_URLS)")
    return addresses[0].split("%", 1)[0], None


def _checked_events(events: list[str]) -> list[str]:
    if "ping" in events:
        raise ValidationFailed("ping is not an event to subscribe to: POST /event-endpoints/{id}/ping sends one to "
                               "an endpoint whatever it takes", code="unknown_event_type", fields=["events"])
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
    endpoint = EventEndpoint(organization_id=organization_id, url=_checked_url(hub, url),
                             events=_checked_events(events), description=description, enabled=enabled,
                             secret_encrypted=hub.cipher.encrypt(secret))
    with hub.session() as session:
        lock(session, f"event-endpoints/{organization_id}")  # (two creations at once count each other)
        count = session.execute(sa.select(sa.func.count()).select_from(EventEndpoint).where(
            EventEndpoint.organization_id == organization_id)).scalar()
        if count >= MAX_ENDPOINTS:
            raise TooManyEndpoints(f"an organization has at most {MAX_ENDPOINTS} event endpoints: delete one, or "
                                   "send several event types to one endpoint")
        _refuse_a_second_endpoint_at(session, organization_id, endpoint.url)
        session.add(endpoint)
        session.commit()
        session.refresh(endpoint)
    return endpoint, secret


def list_endpoints(hub: Hub, organization_id: str) -> list[EventEndpoint]:
    with hub.session() as session:
        return list(session.exec(select(EventEndpoint).where(EventEndpoint.organization_id == organization_id)
                                 .order_by(EventEndpoint.created_at, EventEndpoint.id)))


def _owned(session: Any, organization_id: str, endpoint_id: str, hold: bool = False) -> EventEndpoint:
    """The organization's endpoint (404 otherwise); ``hold``: held as
    :func:`~hub.events.endpoints_of` holds them (deliveries are written for it)."""
    held = {"read": True, "key_share": True} if hold and session.get_bind().dialect.name == "postgresql" else None
    endpoint = session.get(EventEndpoint, endpoint_id, with_for_update=held)
    if endpoint is None or endpoint.organization_id != organization_id:
        raise NotFound("no such event endpoint", code="event_endpoint_not_found")
    return endpoint


def find_endpoint(hub: Hub, organization_id: str, endpoint_id: str) -> EventEndpoint:
    with hub.session() as session:
        return _owned(session, organization_id, endpoint_id)


def update_endpoint(hub: Hub, organization_id: str, endpoint_id: str, changes: dict[str, Any]) -> EventEndpoint:
    """Change what ``changes`` names (url, events, description, enabled). A
    disabled endpoint's pending deliveries are held (no next attempt), and
    are due again once it is enabled."""
    if "url" in changes:
        changes["url"] = _checked_url(hub, changes["url"])
    if "events" in changes:
        changes["events"] = _checked_events(changes["events"])
    with hub.session() as session:
        if "url" in changes:
            lock(session, f"event-endpoints/{organization_id}")  # (as a creation: one endpoint per url)
        endpoint = _owned(session, organization_id, endpoint_id)
        if "url" in changes:
            _refuse_a_second_endpoint_at(session, organization_id, changes["url"], other_than=endpoint_id)
        was_enabled, now = endpoint.enabled, utcnow()
        changed = {name: value for name, value in changes.items() if getattr(endpoint, name) != value}
        for name, value in changed.items():
            setattr(endpoint, name, value)
        if changed:  # (the same sent again changes nothing, its time included)
            endpoint.updated_at = now
        session.add(endpoint)
        if endpoint.enabled != was_enabled:
            # (Held ones are not due: the deliverer's every look would pass over them.)
            session.execute(sa.update(EventDelivery).where(EventDelivery.endpoint_id == endpoint_id,
                                                           EventDelivery.status == "pending")
                            .values(next_attempt_at=now if endpoint.enabled else None, claim=None))
        session.commit()
        session.refresh(endpoint)
        return endpoint


def rotate_secret(hub: Hub, organization_id: str, endpoint_id: str) -> tuple[EventEndpoint, str]:
    """A new signing secret for the endpoint. The old one still signs beside
    it for :data:`ROTATION_OVERLAP` (each event then carries two ``v1``), so
    the app switches without refusing events."""
    secret = new_secret()
    with hub.session() as session:
        endpoint = _owned(session, organization_id, endpoint_id)
        now = utcnow()
        endpoint.previous_secret_encrypted = endpoint.secret_encrypted
        endpoint.previous_secret_until = now + ROTATION_OVERLAP
        endpoint.secret_encrypted = hub.cipher.encrypt(secret)
        endpoint.updated_at = now
        session.add(endpoint)
        session.commit()
        session.refresh(endpoint)
        return endpoint, secret


def delete_endpoint(hub: Hub, organization_id: str, endpoint_id: str) -> None:
    """Delete the endpoint and its deliveries, sent or not."""
    with hub.session() as session:
        endpoint = _owned(session, organization_id, endpoint_id)
        # (Explicitly: SQLite enforces the cascade only where foreign keys are on.)
        session.execute(sa.delete(EventDelivery).where(EventDelivery.endpoint_id == endpoint_id))
        session.delete(endpoint)
        session.commit()


def ping(hub: Hub, organization_id: str, endpoint_id: str) -> EventDelivery:
    """Queue a ``ping`` event for the endpoint (whatever types it takes)."""
    with hub.session() as session:
        endpoint = _owned(session, organization_id, endpoint_id, hold=True)
        if not endpoint.enabled:
            raise EndpointDisabled("the endpoint is disabled: enable it (PUT with \"enabled\": true) to ping it")
        [delivery] = emit(session, organization_id, "ping", {"endpoint_id": endpoint.id}, endpoints=[endpoint])
        session.commit()
        session.refresh(delivery)
        return delivery


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
    query = select(EventDelivery).where(EventDelivery.endpoint_id == endpoint.id)
    if status:
        query = query.where(EventDelivery.status == status)
    if event_type:
        query = query.where(EventDelivery.type == event_type)
    with hub.session() as session:
        return stored.page_newest_first(session, query, EventDelivery.created_at, EventDelivery.id, cursor, limit,
                                        time_key="c", of=f"deliveries:{endpoint.id}")


def retry_delivery(hub: Hub, endpoint: EventEndpoint, delivery_id: str) -> EventDelivery:
    """Send the delivery again now: one more attempt for a failed one, the
    next at once for a pending one (an attempt under way is not recorded
    over it); a delivered one is sent again. Not to a disabled endpoint."""
    with hub.session() as session:
        delivery = session.get(EventDelivery, delivery_id)
        if delivery is None or delivery.endpoint_id != endpoint.id:
            raise NotFound("no such event delivery", code="event_delivery_not_found")
        if not endpoint.enabled:
            raise EndpointDisabled("the endpoint is disabled: enable it (PUT with \"enabled\": true), and its "
                                   "pending events are sent")
        delivery.status, delivery.next_attempt_at, delivery.claim = "pending", utcnow(), None
        session.add(delivery)
        session.commit()
        session.refresh(delivery)
        return delivery


# -- delivering


@dataclass
class _Claimed:
    id: str
    claim: str
    url: str
    secrets: list[str] | None
    payload: dict[str, Any]
    attempts: int


@dataclass
class _Outcome:
    delivered: bool
    response_status: int | None = None
    error: str | None = None
    retry_after: float | None = None


class EventDeliverer(BackgroundLoop):
    """Sends due deliveries to their endpoints: each is claimed (left to this
    process for :data:`CLAIM_SECONDS`: ``FOR UPDATE SKIP LOCKED`` on
    PostgreSQL, the write lock on SQLite, so processes share the work),
    POSTed signed, and its outcome recorded as soon as it is known:
    ``delivered`` on a 2xx answer, else tried again after :func:`backoff` (or
    the endpoint's ``Retry-After``), ``failed`` after :data:`MAX_ATTEMPTS`.
    An attempt gets :data:`TIMEOUT_SECONDS` in all, and at most
    :data:`ANSWER_BYTES` of the answer are read. Redirects are not followed:
    an endpoint answers itself."""

    def __init__(self, hub: Hub, poll_seconds: float = 1.0, transport: httpx.AsyncBaseTransport | None = None):
        self.hub = hub
        self.poll_seconds = poll_seconds
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False, timeout=TIMEOUT_SECONDS,
                                         headers={"User-Agent": f"hub/{__version__} (events)"})

    task_name = "event-deliverer"

    async def stop(self) -> None:
        await super().stop()
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
        # (In a thread, SQLite too: its write lock, held by a sync writing pages, would stall the
        # API's event loop for as long as it waits.)
        claimed = await asyncio.to_thread(self._claim)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def deliver(delivery: _Claimed) -> None:
            async with gate:
                try:
                    outcome = await self._send(delivery)
                except Exception as exc:  # (a bug of this code: the delivery still gets its outcome)
                    log.exception("sending event %s failed", delivery.payload.get("id"))
                    outcome = _Outcome(False, error=f"the hub could not send it: {type(exc).__name__}")
            await asyncio.to_thread(self._record, delivery, outcome)

        for failure in await asyncio.gather(*(deliver(d) for d in claimed), return_exceptions=True):
            if isinstance(failure, Exception):  # (recording failed: the claim lapses, the event is sent again)
                log.error("recording an event's delivery failed", exc_info=failure)
        return len(claimed)

    def _claim(self) -> list[_Claimed]:
        deliveries, endpoints = EventDelivery.__table__, EventEndpoint.__table__
        with self.hub.session() as session:
            postgresql = session.get_bind().dialect.name == "postgresql"
            now = utcnow()
            query = (sa.select(deliveries.c.id, deliveries.c.payload, deliveries.c.attempts, endpoints.c.url,
                               endpoints.c.secret_encrypted, endpoints.c.previous_secret_encrypted,
                               endpoints.c.previous_secret_until)
                     .select_from(deliveries.join(endpoints, endpoints.c.id == deliveries.c.endpoint_id))
                     .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now,
                            endpoints.c.enabled.is_(True))
                     .order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(BATCH_SIZE))
            if postgresql:
                query = query.with_for_update(skip_locked=True, of=deliveries)
            rows = session.execute(query).all()
            if rows and not postgresql:
                # SQLite: claimed under the write lock, or two processes would claim the same ones
                # (taken only when something is due: this looks every second).
                session.rollback()
                lock(session)
                rows = session.execute(query).all()
            if not rows:
                session.rollback()
                return []
            claim = new_id()
            session.execute(sa.update(deliveries).where(deliveries.c.id.in_([r.id for r in rows]))
                            .values(next_attempt_at=now + timedelta(seconds=CLAIM_SECONDS), claim=claim))
            session.commit()
        claimed = []
        for row in rows:
            try:
                keys: list[str] | None = [self.hub.cipher.decrypt(row.secret_encrypted)]
                if row.previous_secret_encrypted and row.previous_secret_until and row.previous_secret_until > now:
                    keys.append(self.hub.cipher.decrypt(row.previous_secret_encrypted))  # type: ignore[union-attr]
            except DecryptionError:
                keys = None  # (recorded as the delivery's failure: the hub's key changed)
            claimed.append(_Claimed(row.id, claim, row.url, keys, row.payload, row.attempts))
        return claimed

    async def _send(self, delivery: _Claimed) -> _Outcome:
        if delivery.secrets is None:
            return _Outcome(False, error="the endpoint's signing secret cannot be decrypted with this hub's key "
                                         "(restore the key, or rotate the endpoint's secret)")
        body = body_of(delivery.payload)
        headers = {"Content-Type": "application/json", "Hub-Event-Id": delivery.payload["id"],
                   "Hub-Event-Type": delivery.payload["type"], SIGNATURE_HEADER: sign(delivery.secrets, body)}
        url, extensions = httpx.URL(delivery.url), {}
        try:
            async with asyncio.timeout(TIMEOUT_SECONDS):
                if not self.hub.settings.event_private_urls:
                    # Sent to the address checked, not to the host's name: looked up again by the
                    # connection, it could name another address by then (DNS rebinding).
                    address, refused = await _public_address(url.host)
                    if refused:
                        return _Outcome(False, error=refused)
                    headers["Host"] = url.netloc.decode("ascii")
                    if url.scheme == "https":
                        extensions["sni_hostname"] = url.host  # (the certificate is checked against the name)
                    url = url.copy_with(host=address)
                    # A connection is pooled by its address: kept, it would carry another host's events
                    # there over a TLS session whose certificate was checked for this one. Closed.
                    headers["Connection"] = "close"
                async with self._client.stream("POST", url, content=body, headers=headers,
                                               extensions=extensions) as response:
                    status = response.status_code
                    answer = b""
                    if not 200 <= status < 300:
                        async for chunk in response.aiter_raw():
                            answer += chunk
                            if len(answer) >= ANSWER_BYTES:
                                break
        except (TimeoutError, httpx.TimeoutException):
            return _Outcome(False, error=f"no answer within {TIMEOUT_SECONDS:g} s")
        except httpx.HTTPError as exc:
            return _Outcome(False, error=f"could not reach the endpoint: {type(exc).__name__}: {exc}"[:2000])
        if 200 <= status < 300:
            return _Outcome(True, status)
        text = answer[:ANSWER_BYTES].decode("utf-8", "replace").strip()
        if 300 <= status < 400:  # (not followed: the endpoint is where events go)
            text = f"a redirect, which is not followed (Location: {response.headers.get('location', '')[:200]})"
        return _Outcome(False, status, f"the endpoint answered HTTP {status}" + (f": {text}" if text else ""),
                        _retry_after(response))

    def _record(self, delivery: _Claimed, outcome: _Outcome) -> None:
        now = utcnow()
        deliveries = EventDelivery.__table__
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_attempt_at": now, "claim": None,
                                  "response_status": outcome.response_status, "error": outcome.error}
        if outcome.delivered:
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
        elif attempts >= MAX_ATTEMPTS:
            values.update(status="failed", next_attempt_at=None)
        else:
            values.update(next_attempt_at=now + timedelta(seconds=max(backoff(attempts), outcome.retry_after or 0)))
        with self.hub.session() as session:
            # Only while the claim holds: a retry asked for meanwhile, a disabling, or another
            # process's claim after this one's lapsed, is not undone. A delivery the app accepted
            # is recorded whatever became of the claim, while still pending: sent again, it would
            # reach the app twice.
            held = deliveries.c.claim == delivery.claim
            if outcome.delivered:
                held = sa.or_(held, deliveries.c.status == "pending")
            recorded = session.execute(sa.update(deliveries).where(deliveries.c.id == delivery.id, held)
                                       .values(**values)).rowcount
            session.commit()
        if not recorded or outcome.delivered:
            return
        if attempts >= MAX_ATTEMPTS:
            log.warning("event %s (%s) could not be delivered after %d attempts: %s",
                        delivery.payload["id"], delivery.payload["type"], attempts, outcome.error)
        else:
            log.info("event %s (%s) not delivered (attempt %d), next try at %s: %s", delivery.payload["id"],
                     delivery.payload["type"], attempts, values["next_attempt_at"].isoformat(), outcome.error)


def _retry_after(response: httpx.Response) -> float | None:
    """The endpoint's ``Retry-After`` in seconds, at most :data:`MAX_RETRY_AFTER`."""
    seconds = parse_retry_after(response.headers.get("Retry-After"))
    return min(seconds, MAX_RETRY_AFTER) if seconds else None
