"""Events for the tenant's app: its endpoints, and what was sent to each (see :mod:`hub.events`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, OrgDep
from hub.api.schemas import (
    EventDeliveriesResponse,
    EventDeliveryResponse,
    EventEndpointCreate,
    EventEndpointResponse,
    EventEndpointsResponse,
    EventEndpointUpdate,
    EventEndpointWithSecret,
    EventTypesResponse,
    Ok,
)
from hub.events import EVENT_TYPES
from hub.models import EventDelivery, EventEndpoint, utcnow
from hub.runtime import Hub
from hub.services import events as service

router = APIRouter(tags=["events"], route_class=HubRoute)


def _endpoints_out(hub: Hub, endpoints: list[EventEndpoint]) -> list[dict[str, Any]]:
    counts = service.delivery_counts(hub, [e.id for e in endpoints])
    now = utcnow()
    return [{**e.model_dump(exclude={"secret_encrypted", "previous_secret_encrypted", "organization_id"}),
             # (Past, the previous secret signs nothing more: shown as no overlap.)
             "previous_secret_until": e.previous_secret_until if e.previous_secret_until and
             e.previous_secret_until > now else None,
             "deliveries": counts[e.id]} for e in endpoints]


def _endpoint_out(hub: Hub, endpoint: EventEndpoint) -> dict[str, Any]:
    return _endpoints_out(hub, [endpoint])[0]


def _delivery_out(delivery: EventDelivery) -> dict[str, Any]:
    return delivery.model_dump(exclude={"endpoint_id", "organization_id"})


@router.get("/event-types", response_model=EventTypesResponse, operation_id="list_event_types")
async def list_event_types(_org: OrgDep):
    """The events the hub sends to the app's endpoints."""
    return {"success": True, "event_types": [{"type": t, "description": d, "subscribable": t != "ping"}
                                             for t, d in EVENT_TYPES.items()]}


@router.get("/event-endpoints", response_model=EventEndpointsResponse, operation_id="list_event_endpoints")
async def list_event_endpoints(hub: HubDep, org: OrgDep):
    def read() -> list[dict[str, Any]]:
        return _endpoints_out(hub, service.list_endpoints(hub, org.id))

    return {"success": True, "endpoints": await hub.db(read)}


@router.post("/event-endpoints", response_model=EventEndpointWithSecret, status_code=201,
             operation_id="create_event_endpoint")
async def create_event_endpoint(hub: HubDep, org: OrgDep, body: EventEndpointCreate):
    """Register a URL of the app to receive events; the answer holds its
    signing secret, shown this once."""
    def create() -> dict[str, Any]:
        endpoint, secret = service.create_endpoint(hub, org.id, url=body.url, events=body.events or [],
                                                   description=body.description, enabled=body.enabled)
        return {"success": True, "endpoint": _endpoint_out(hub, endpoint), "secret": secret}

    return await hub.db(create)


@router.get("/event-endpoints/{endpoint_id}", response_model=EventEndpointResponse, operation_id="get_event_endpoint")
async def get_event_endpoint(hub: HubDep, org: OrgDep, endpoint_id: str):
    def read() -> dict[str, Any]:
        return {"success": True, "endpoint": _endpoint_out(hub, service.find_endpoint(hub, org.id, endpoint_id))}

    return await hub.db(read)


@router.put("/event-endpoints/{endpoint_id}", response_model=EventEndpointResponse,
            operation_id="update_event_endpoint")
async def update_event_endpoint(hub: HubDep, org: OrgDep, endpoint_id: str, body: EventEndpointUpdate):
    """Change the fields given. A disabled endpoint is sent no new events;
    those queued before wait until it is enabled again (or age out)."""
    changes = body.model_dump(exclude_unset=True)
    if "events" in changes:
        changes["events"] = changes["events"] or []

    def update() -> dict[str, Any]:
        endpoint = service.update_endpoint(hub, org.id, endpoint_id, changes)
        return {"success": True, "endpoint": _endpoint_out(hub, endpoint)}

    return await hub.db(update)


@router.delete("/event-endpoints/{endpoint_id}", response_model=Ok, operation_id="delete_event_endpoint")
async def delete_event_endpoint(hub: HubDep, org: OrgDep, endpoint_id: str):
    """Delete the endpoint and its deliveries (those not sent yet are dropped)."""
    await hub.db(service.delete_endpoint, hub, org.id, endpoint_id)
    return {"success": True}


@router.post("/event-endpoints/{endpoint_id}/rotate-secret", response_model=EventEndpointWithSecret,
             operation_id="rotate_event_endpoint_secret")
async def rotate_event_endpoint_secret(hub: HubDep, org: OrgDep, endpoint_id: str):
    """A new signing secret, shown this once. For 24 hours events are signed
    with both (two `v1` in `Hub-Signature`), so the app can switch without
    refusing any; `previous_secret_until` says until when. Only the one
    previous secret is kept: rotating again drops the first's at once."""
    def rotate() -> dict[str, Any]:
        endpoint, secret = service.rotate_secret(hub, org.id, endpoint_id)
        return {"success": True, "endpoint": _endpoint_out(hub, endpoint), "secret": secret}

    return await hub.db(rotate)


@router.post("/event-endpoints/{endpoint_id}/ping", response_model=EventDeliveryResponse, status_code=202,
             operation_id="ping_event_endpoint")
async def ping_event_endpoint(hub: HubDep, org: OrgDep, endpoint_id: str):
    """Send the endpoint a `ping` event (whatever types it takes); the
    delivery's status tells how it went (GET .../deliveries)."""
    delivery = await hub.db(service.ping, hub, org.id, endpoint_id)
    return {"success": True, "delivery": _delivery_out(delivery)}


@router.get("/event-endpoints/{endpoint_id}/deliveries", response_model=EventDeliveriesResponse,
            operation_id="list_event_deliveries")
async def list_event_deliveries(hub: HubDep, org: OrgDep, endpoint_id: str,
                                status: Literal["pending", "delivered", "failed"] | None = Query(default=None),
                                type: Literal[tuple(EVENT_TYPES)] | None = Query(default=None),  # type: ignore[valid-type]
                                cursor: str | None = Query(default=None, max_length=500),
                                limit: int = Query(default=50, ge=1, le=200)):
    """The events sent (or to send) to the endpoint, newest first."""
    def read() -> dict[str, Any]:
        endpoint = service.find_endpoint(hub, org.id, endpoint_id)
        rows, next_cursor = service.list_deliveries(hub, endpoint, status=status, event_type=type, cursor=cursor,
                                                    limit=limit)
        return {"success": True, "deliveries": [_delivery_out(d) for d in rows], "next_cursor": next_cursor,
                "has_more": next_cursor is not None}

    return await hub.db(read)


@router.post("/event-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry", response_model=EventDeliveryResponse,
             status_code=202, operation_id="retry_event_delivery")
async def retry_event_delivery(hub: HubDep, org: OrgDep, endpoint_id: str, delivery_id: str):
    """Send the event again now. It is an attempt like the others: one more
    for a failed delivery; for a pending one it counts toward the ten, and
    the next automatic one follows the backoff from it."""
    def retry() -> dict[str, Any]:
        endpoint = service.find_endpoint(hub, org.id, endpoint_id)
        return {"success": True, "delivery": _delivery_out(service.retry_delivery(hub, endpoint, delivery_id))}

    return await hub.db(retry)


def document_events(app: Any) -> None:
    """Describe each event the app's endpoints receive as an OpenAPI 3.1
    ``webhooks`` entry (its body, headers and expected answer). Documentation
    only: these are requests the hub sends, not routes it serves."""
    from typing import Annotated

    from fastapi import Header
    from pydantic import create_model

    from hub.api.schemas import EVENT_DATA

    for event_type, description in EVENT_TYPES.items():
        name = "".join(part.title() for part in event_type.replace(".", "_").split("_")) + "Event"
        body = create_model(name, id=(str, ...), type=(Literal[event_type], ...), created_at=(datetime, ...),
                            organization_id=(str, ...), data=(EVENT_DATA[event_type], ...))

        def receive(event, hub_event_id, hub_event_type, hub_signature) -> None:  # noqa: ANN001
            """(documentation only)"""

        # (Set here, as objects: this module's annotations are text, and these types are local.)
        receive.__annotations__ = {
            "event": body, "hub_event_id": Annotated[str, Header(alias="Hub-Event-Id")],
            "hub_event_type": Annotated[str, Header(alias="Hub-Event-Type")],
            "hub_signature": Annotated[str, Header(alias="Hub-Signature", description=(
                "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.' + the raw body under the endpoint's secret> "
                "(two v1 for a day after a rotation)"))],
            "return": None}
        app.webhooks.add_api_route(
            event_type, receive, methods=["POST"], operation_id=f"event_{event_type.replace('.', '_')}",
            summary=event_type, description=description + " Answer 2xx within 10 s; anything else is sent again "
            "with backoff for about a day. The same event (its id) may come more than once.",
            responses={200: {"description": "Received (any 2xx)."}})
