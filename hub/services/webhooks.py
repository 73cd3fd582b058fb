"""Webhook intake: route a raw delivery to its connection, verify, store once."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from hub.models import Connection, WebhookEvent
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
        action=event.action, record_id=event.record_id, payload=event.record,
    )
    with hub.session() as session:
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
    return row.id
