"""Events for the tenant's app (outbound webhooks): what happened in the hub,
POSTed to the app's endpoints, signed.

The app registers endpoints (``POST /api/v1/integrations/event-endpoints``)
and learns, without polling, that a sync run ended, that a connection's
status changed (its user must connect again), or that a conflict awaits
review. Each event is a JSON body::

    {"id": "evt_...", "type": "sync.failed", "created_at": "2026-11-28T10:00:00Z",
     "organization_id": "...", "data": {...}}

sent with ``Hub-Event-Id``, ``Hub-Event-Type`` and ``Hub-Signature:
t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" under the endpoint's
secret>`` (Stripe's scheme, so receivers may reuse what they know). An
endpoint that does not answer 2xx gets the event again, with backoff, for
about a day; the same event may arrive more than once (its ``id`` is the
same) and events may arrive out of order (``created_at`` orders them; the
API tells the current state).

:func:`emit` writes an event's deliveries in the caller's transaction (an
outbox): the event is sent if and only if the change it tells of commits.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from hub.models import EventDelivery, EventEndpoint, new_id, utcnow

#: Every event type, with what it tells (``GET /event-types`` shows them).
EVENT_TYPES: dict[str, str] = {
    "sync.succeeded": "A sync run succeeded: data.run is the run as GET /connections/{id}/sync/logs shows it "
                      "(its counts; a note of what it skipped or did not push in run.error).",
    "sync.failed": "A sync run failed: data.run says why (run.error, run.error_code).",
    "connection.created": "A connection was made (an API key, an OAuth or Link flow completed, by anyone of the "
                          "organization): data.connection_id, data.provider, data.name, data.status.",
    "connection.deleted": "A connection was deleted (its records and sync state with it; its grant is then "
                          "given back to the provider, or queued to be): data.connection_id, data.provider, "
                          "data.name, data.status (as it was).",
    "connection.status_changed": "A connection's status changed (connected, error, expired): "
                                 "data.status, data.previous_status and data.last_error. `expired` or an "
                                 "authorization error means its user must connect again.",
    "records.erased": "The provider asked for records to be erased for privacy (Shopify's customers/redact, "
                      "shop/redact): the hub erased its copies; erase the app's too. data.entity and "
                      "data.remote_id name one record; both null: every record of the connection.",
    "conflict.opened": "A record changed on both sides since the last sync, under the flag-for-review policy: "
                       "data.conflict_id is to be resolved (POST /connections/{connection_id}/sync-configs/"
                       "{sync_config_id}/conflicts/{conflict_id}/resolve).",
    "records.changed": "Records of a connection were created, changed or deleted at the provider, as a sync "
                       "(a page at a time) or a webhook stored them: data.entity, data.sync_config_id, and the "
                       "provider ids in data.created, data.updated (the stored version changed) and data.deleted "
                       "(read them at /connections/{connection_id}/sync-configs/{sync_config_id}/records/{id}).",
    "ping": "Sent by POST /event-endpoints/{id}/ping (to that endpoint, whatever types it takes), to check that "
            "the endpoint receives and verifies events.",
}

SIGNATURE_HEADER = "Hub-Signature"
#: A signature older (or newer) than this is refused by :func:`verify_signature`: a replay.
DEFAULT_TOLERANCE_SECONDS = 300
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A signing secret for an endpoint, shown to its owner once."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secrets_: str | list[str], body: bytes, timestamp: int | None = None) -> str:
    """The ``Hub-Signature`` header of ``body`` sent at ``timestamp`` (now by
    default): a ``v1`` for each secret (two while a rotated one is still honoured)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    keys = [secrets_] if isinstance(secrets_, str) else secrets_
    return ",".join([f"t={timestamp}"] + [f"v1={_digest(key, body, timestamp)}" for key in keys])


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None, *,
                     tolerance: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> bool:
    """Whether ``header`` (a ``Hub-Signature``) signs ``body`` (the raw bytes
    received) under ``secret``, within ``tolerance`` seconds of ``now``: what a
    receiving app checks before trusting an event. Never raises: a header
    that is not one is False."""
    if not header or not isinstance(header, str):
        return False
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
        if abs((time.time() if now is None else now) - timestamp) > tolerance:
            return False
        expected = _digest(secret, body, timestamp).encode()
        return any(hmac.compare_digest(expected, given.encode()) for given in parts.get("v1", []))
    except (ValueError, OverflowError, UnicodeError):
        return False


def body_of(payload: dict[str, Any]) -> bytes:
    """The bytes POSTed for an event (and signed)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it: times in ISO 8601 UTC."""
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def subscribed(endpoint: EventEndpoint, event_type: str) -> bool:
    return endpoint.enabled and (not endpoint.events or event_type in endpoint.events)


def endpoints_of(session: Session, organization_id: str, event_type: str) -> list[EventEndpoint]:
    """The organization's endpoints taking ``event_type``. On PostgreSQL they
    are held (``FOR KEY SHARE``) until the transaction ends: an endpoint
    deleted meanwhile waits for it, rather than failing the change that
    writes its deliveries."""
    query = select(EventEndpoint).where(EventEndpoint.organization_id == organization_id)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(read=True, key_share=True)
    return [e for e in session.exec(query) if subscribed(e, event_type)]


def emit(session: Session, organization_id: str, event_type: str, data: dict[str, Any],
         endpoints: list[EventEndpoint] | None = None) -> list[EventDelivery]:
    """Queue an event for each of the organization's enabled endpoints taking
    its type (:func:`endpoints_of`), in ``session``'s transaction (the caller
    commits); given ``endpoints`` (held as :func:`endpoints_of` holds them),
    to those, whatever they take. Returns the deliveries queued.

    :raises KeyError: ``event_type`` is not one of :data:`EVENT_TYPES` (a bug).
    """
    if event_type not in EVENT_TYPES:
        raise KeyError(f"unknown event type {event_type!r}")
    targets = endpoints_of(session, organization_id, event_type) if endpoints is None else endpoints
    if not targets:
        return []
    now = utcnow()
    payload = {"id": "evt_" + new_id(), "type": event_type, "created_at": _plain(now),
               "organization_id": organization_id, "data": _plain(data)}
    deliveries = [EventDelivery(endpoint_id=endpoint.id, organization_id=organization_id, event_id=payload["id"],
                                type=event_type, payload=payload, next_attempt_at=now, created_at=now)
                  for endpoint in targets]
    session.add_all(deliveries)
    return deliveries


def status_changed(session: Session, *, organization_id: str, connection_id: str, provider: str, status: str,
                   previous: str, last_error: str | None) -> None:
    """Tell the app a connection's status went from ``previous`` to ``status``
    (nothing if it did not change), in the transaction that changes it; the
    caller read ``previous`` under the row's lock (see ``Hub.locked_status``)."""
    if status != previous:
        emit(session, organization_id, "connection.status_changed",
             {"connection_id": connection_id, "provider": provider, "status": status, "previous_status": previous,
              "last_error": last_error})
