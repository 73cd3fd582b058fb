from __future__ import annotations

from typing import Any

from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, OrgDep
from hub.api.schemas import (
    ActionRequest,
    ActionResponse,
    ActionsResponse,
    DeletedResponse,
    RecordResponse,
    RecordsResponse,
    RecordWrite,
)
from hub.runtime import Hub
from hub.services.records import MAX_PAGE_SIZE, RecordService
from hub.types import ValidationFailed

router = APIRouter(prefix="/connections/{connection_id}", tags=["records"], route_class=HubRoute)

RESERVED = {"cursor", "limit", "since"}


async def _service(hub: Hub, org_id: str, connection_id: str) -> RecordService:
    def find() -> Any:
        with hub.session() as session:
            return hub.find_connection(session, org_id, connection_id)

    return RecordService(hub, await hub.db(find))


@router.get("/entities/{entity}/records", response_model=RecordsResponse, operation_id="list_records")
async def list_records(
    hub: HubDep, org: OrgDep, connection_id: str, entity: str, request: Request,
    # (Sealed, a provider's cursor of about 3,000 characters is past 4,096.)
    cursor: str | None = Query(default=None, max_length=8192,
                               description="`next_cursor` of the previous page, or the `watermark` of a last page"),
    limit: int = Query(default=50, ge=1, le=MAX_PAGE_SIZE),
    since: datetime | None = Query(default=None, description="only records modified at or after this time"),
):
    """One page of records, straight from the provider. Other query parameters
    are passed to the provider as filters."""
    filters = {k: v for k, v in request.query_params.items() if k not in RESERVED}
    repeated = sorted(k for k in filters if len(request.query_params.getlist(k)) > 1)
    if repeated:
        # (Kept, the last value alone would filter: a listing narrower than asked, without a word.)
        raise ValidationFailed(f"the filter {repeated[0]!r} is given more than once: a filter takes one value",
                               code="invalid_value", fields=repeated)
    service = await _service(hub, org.id, connection_id)
    page = await service.list(entity, cursor, limit, filters, since)
    # Records are provider JSON already: skip re-validating them, just encode.
    return JSONResponse({"success": True, "records": page.records, "next_cursor": page.next_cursor,
                         "has_more": page.next_cursor is not None, "deleted_ids": page.deleted_ids,
                         "restarted": page.restarted, "watermark": page.watermark})


@router.post("/entities/{entity}/records", response_model=RecordResponse, status_code=201,
             operation_id="create_record")
async def create_record(hub: HubDep, org: OrgDep, connection_id: str, entity: str, body: RecordWrite,
                        response: Response):
    """Create a record at the provider. With an `idempotency_key`, the same
    request sent again (its answer lost) answers the record made the first
    time, with `Idempotent-Replayed: true`, instead of making another."""
    service = await _service(hub, org.id, connection_id)
    if not body.idempotency_key:  # ("" as none, as before keys were kept)
        return {"success": True, "record": await service.create(entity, body.data)}
    record, replayed = await service.create_once(entity, body.data, body.idempotency_key)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return {"success": True, "record": record}


@router.get("/entities/{entity}/records/{record_id}", response_model=RecordResponse, operation_id="get_record")
async def get_record(hub: HubDep, org: OrgDep, connection_id: str, entity: str, record_id: str):
    service = await _service(hub, org.id, connection_id)
    record = await service.get(entity, record_id)
    return {"success": True, "record": record}


@router.put("/entities/{entity}/records/{record_id}", response_model=RecordResponse,
            operation_id="update_record")
async def update_record(hub: HubDep, org: OrgDep, connection_id: str, entity: str, record_id: str,
                        body: RecordWrite):
    service = await _service(hub, org.id, connection_id)
    record = await service.update(entity, record_id, body.data)
    return {"success": True, "record": record}


@router.delete("/entities/{entity}/records/{record_id}", response_model=DeletedResponse,
               operation_id="delete_record")
async def delete_record(hub: HubDep, org: OrgDep, connection_id: str, entity: str, record_id: str):
    """Delete the record at the provider. Where the provider keeps it (Stripe
    cancels a subscription), ``record`` is what it now is; else ``null``."""
    service = await _service(hub, org.id, connection_id)
    return {"success": True, "record": await service.delete(entity, record_id)}


@router.get("/actions", response_model=ActionsResponse, operation_id="list_actions")
async def list_actions(hub: HubDep, org: OrgDep, connection_id: str):
    service = await _service(hub, org.id, connection_id)
    return {"success": True, "actions": [a.public() for a in service.provider.actions.values()]}


@router.post("/actions/{action}", response_model=ActionResponse, operation_id="run_action")
async def run_action(hub: HubDep, org: OrgDep, connection_id: str, action: str, body: ActionRequest | None = None):
    """Run a provider-specific operation (see the provider's `actions`)."""
    service = await _service(hub, org.id, connection_id)
    result = await service.action(action, body.params if body is not None else {})
    return {"success": True, "result": result}
