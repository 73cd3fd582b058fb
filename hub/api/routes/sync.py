"""Sync: configs and field mappings, runs and their logs, the stored records
(raw or mapped, writable for push) and conflicts.

Including this router also starts, for the application's lifetime, the sync
executor, the scheduler and the webhook processor
(:func:`hub.sync.scheduler.start_background`)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from sqlmodel import select

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, OrgDep
from hub.api.schemas import (
    ConflictResolve,
    MappingsReplace,
    MappingsResponse,
    Ok,
    StoredRecordDeleted,
    StoredRecordDiscarded,
    StoredRecordResponse,
    StoredRecordsResponse,
    StoredRecordWrite,
    SyncConfigCreate,
    SyncConfigResponse,
    SyncConfigsResponse,
    SyncConfigUpdate,
    SyncConflictResponse,
    SyncConflictsResponse,
    SyncLogsResponse,
    SyncRequest,
    SyncRunResponse,
)
from hub.models import Connection, SyncConfig, SyncRun, SyncState
from hub.runtime import Hub
from hub.services.connections import find_connection
from hub.sync import configs as config_service
from hub.sync import stored
from hub.sync.scheduler import SyncService
from hub.types import NotFound, ValidationFailed


router = APIRouter(prefix="/connections/{connection_id}", tags=["sync"], route_class=HubRoute)

#: Writes to the record store run in a thread: they may wait a moment for a
#: pull's write lock, and the event loop (the pull's own fetches among it) must not.
in_thread = asyncio.to_thread


def organization_connection(hub: HubDep, org: OrgDep, connection_id: str) -> Connection:
    """The organization's connection, found before the body is read: another
    organization's id is a 404 whatever the request carries. (A plain
    function: FastAPI runs it in a worker thread.)"""
    return find_connection(hub, org.id, connection_id)


ConnectionDep = Annotated[Connection, Depends(organization_connection)]


def _config(hub: Hub, connection: Connection, config_id: str) -> SyncConfig:
    with hub.session() as session:
        return config_service.get_config(session, connection.id, config_id)


def _service(request: Request) -> SyncService:
    service = getattr(request.app.state, "sync", None)
    if service is None:
        service = request.app.state.sync = SyncService(request.app.state.hub)
    return service


def _config_out(hub: Hub, config: SyncConfig) -> dict[str, Any]:
    with hub.session() as session:
        state = session.get(SyncState, config.id)
    return {**config.model_dump(), "state": stored.state_out(state)}


async def _queue_push(request: Request, connection: Connection, config: SyncConfig, sync: bool) -> str | None:
    if not sync:
        return None
    run = await _service(request).request(connection, entity=config.entity, direction="push", trigger="push",
                                          coalesce=True)
    return run.id


# ---------------------------------------------------------------- configs


@router.get("/sync-configs", response_model=SyncConfigsResponse, operation_id="list_sync_configs")
async def list_sync_configs(hub: HubDep, connection: ConnectionDep):
    def read() -> list[dict[str, Any]]:
        return [_config_out(hub, c) for c in config_service.list_configs(hub, connection.id)]

    return {"success": True, "sync_configs": await hub.db(read)}


@router.post("/sync-configs", response_model=SyncConfigResponse, status_code=201, operation_id="create_sync_config")
async def create_sync_config(hub: HubDep, connection: ConnectionDep, body: SyncConfigCreate):
    """Sync an entity. Mappings naming unknown fields or impossible casts are
    refused (422); push or both on a read-only entity is refused (405 `read_only`)."""
    mappings = [m.model_dump() for m in body.mappings]
    account_fields = await config_service.account_fields_of(hub, connection, body.entity, mappings)
    config = await in_thread(
        config_service.create_config, hub, connection, entity=body.entity, direction=body.direction,
        enabled=body.enabled, schedule_minutes=body.schedule_minutes, conflict_policy=body.conflict_policy,
        mappings=mappings, account_fields=account_fields)
    return {"success": True, "sync_config": await hub.db(_config_out, hub, config)}


@router.get("/sync-configs/{sync_config_id}", response_model=SyncConfigResponse, operation_id="get_sync_config")
async def get_sync_config(hub: HubDep, connection: ConnectionDep, sync_config_id: str):
    config = await hub.db(_config, hub, connection, sync_config_id)
    return {"success": True, "sync_config": await hub.db(_config_out, hub, config)}


@router.put("/sync-configs/{sync_config_id}", response_model=SyncConfigResponse, operation_id="update_sync_config")
async def update_sync_config(hub: HubDep, connection: ConnectionDep, sync_config_id: str,
                             body: SyncConfigUpdate):
    changes = body.model_dump(exclude_unset=True)
    account_fields = None
    if body.mappings is not None:
        changes["mappings"] = [m.model_dump() for m in body.mappings]
        entity = (await hub.db(_config, hub, connection, sync_config_id)).entity
        account_fields = await config_service.account_fields_of(hub, connection, entity, changes["mappings"])
    config = await in_thread(config_service.update_config, hub, connection, sync_config_id, changes,
                             account_fields)
    return {"success": True, "sync_config": await hub.db(_config_out, hub, config)}


@router.delete("/sync-configs/{sync_config_id}", response_model=Ok, operation_id="delete_sync_config")
async def delete_sync_config(hub: HubDep, connection: ConnectionDep, sync_config_id: str):
    """Stop syncing the entity: the config, its sync state and the records
    stored for it are deleted."""
    await in_thread(config_service.delete_config, hub, connection.id, sync_config_id)
    return {"success": True}


@router.get("/sync-configs/{sync_config_id}/mappings", response_model=MappingsResponse,
            operation_id="list_sync_mappings")
async def list_mappings(hub: HubDep, connection: ConnectionDep, sync_config_id: str):
    config = await hub.db(_config, hub, connection, sync_config_id)
    return {"success": True, "sync_config_id": config.id, "entity": config.entity, "mappings": config.mappings}


@router.put("/sync-configs/{sync_config_id}/mappings", response_model=MappingsResponse,
            operation_id="replace_sync_mappings")
async def replace_mappings(hub: HubDep, connection: ConnectionDep, sync_config_id: str,
                           body: MappingsReplace):
    """Replace the config's field mappings, checked against the entity's fields
    (and the account's own, where the provider tells them)."""
    mappings = [m.model_dump() for m in body.mappings]
    entity = (await hub.db(_config, hub, connection, sync_config_id)).entity
    account_fields = await config_service.account_fields_of(hub, connection, entity, mappings)
    config = await in_thread(config_service.replace_mappings, hub, connection, sync_config_id, mappings,
                             account_fields)
    return {"success": True, "sync_config_id": config.id, "entity": config.entity, "mappings": config.mappings}


# ---------------------------------------------------------------- stored records


_STORED_LISTING_PARAMETERS = frozenset({"mapped", "cursor", "limit", "include_deleted", "pending"})


@router.get("/sync-configs/{sync_config_id}/records", response_model=StoredRecordsResponse,
            operation_id="list_stored_records")
async def list_stored_records(
    request: Request, hub: HubDep, connection: ConnectionDep, sync_config_id: str,
    mapped: bool = Query(default=False, description="Return the tenant's fields (the config's mappings)."),
    cursor: str | None = Query(default=None, max_length=500, description="`next_cursor` of the previous page"),
    limit: int = Query(default=100, ge=1, le=stored.MAX_LIMIT),
    include_deleted: bool = Query(default=False),
    pending: bool = Query(default=False, description="Only records with a change not pushed yet or a conflict."),
):
    """The records the hub stores for this entity, from the hub's database
    (no provider call), in a stable order. Other query parameters are refused
    (`unknown_parameter`): unlike the live records' listing, which passes them
    to the provider as filters, this one has no filters of the record's fields."""
    unknown = sorted(set(request.query_params) - _STORED_LISTING_PARAMETERS)
    if unknown:
        raise ValidationFailed(
            f"the stored records listing takes no parameter {', '.join(unknown)} (it takes "
            f"{', '.join(sorted(_STORED_LISTING_PARAMETERS))}; the live records listing passes filters to the "
            "provider)", code="unknown_parameter", fields=unknown)
    config = await hub.db(_config, hub, connection, sync_config_id)
    records, next_cursor = await hub.db(stored.list_records, hub, connection, config, mapped=mapped, cursor=cursor,
                                        limit=limit, include_deleted=include_deleted, pending_only=pending)
    return {"success": True, "records": records, "mapped": mapped, "next_cursor": next_cursor,
            "has_more": next_cursor is not None}


async def _write(request: Request, hub: Hub, connection: Connection, sync_config_id: str,
                 record_id: str | None, body: StoredRecordWrite) -> dict[str, Any]:
    """Create (``record_id`` None) or change a stored record; queue its push when asked."""
    config = await hub.db(_config, hub, connection, sync_config_id)
    row = await in_thread(stored.write_record, hub, connection, config, record_id, body.data, mapped=body.mapped)
    # A write of the values it has already (a record read, then written whole) leaves nothing to push.
    run_id = await _queue_push(request, connection, config, body.sync) if row.local_op is not None else None
    mapper = stored.mapper_for(hub, connection, config) if body.mapped else None
    return {"success": True, "record": stored.record_out(row, mapper), "run_id": run_id}


@router.post("/sync-configs/{sync_config_id}/records", response_model=StoredRecordResponse, status_code=201,
             operation_id="create_stored_record")
async def create_stored_record(request: Request, hub: HubDep, connection: ConnectionDep,
                               sync_config_id: str, body: StoredRecordWrite):
    """Create a record in the hub; it is created at the provider by the next
    push (queued now with `sync`), and gets its `remote_id` then."""
    return await _write(request, hub, connection, sync_config_id, None, body)


@router.get("/sync-configs/{sync_config_id}/records/{record_id}", response_model=StoredRecordResponse,
            operation_id="get_stored_record")
async def get_stored_record(hub: HubDep, connection: ConnectionDep, sync_config_id: str, record_id: str,
                            mapped: bool = Query(default=False)):
    """One stored record, by the hub's id or the provider's id."""
    config = await hub.db(_config, hub, connection, sync_config_id)
    return {"success": True, "record": await hub.db(stored.get_record, hub, connection, config, record_id,
                                                    mapped=mapped)}


@router.put("/sync-configs/{sync_config_id}/records/{record_id}", response_model=StoredRecordResponse,
            operation_id="update_stored_record")
async def update_stored_record(request: Request, hub: HubDep, connection: ConnectionDep, sync_config_id: str,
                               record_id: str, body: StoredRecordWrite):
    """Change fields of a stored record (a partial update); pushed to the
    provider by the next push (queued now with `sync`)."""
    return await _write(request, hub, connection, sync_config_id, record_id, body)


@router.delete("/sync-configs/{sync_config_id}/records/{record_id}", response_model=StoredRecordDeleted,
               operation_id="delete_stored_record")
async def delete_stored_record(request: Request, hub: HubDep, connection: ConnectionDep, sync_config_id: str,
                               record_id: str, sync: bool = Query(default=True)):
    """Delete a record: at the provider by the next push (queued now with `sync`,
    whose run is `run_id`; none for a record never created there, which just goes)."""
    config = await hub.db(_config, hub, connection, sync_config_id)
    run_id = None
    if await in_thread(stored.delete_record, hub, connection, config, record_id) is not None:
        run_id = await _queue_push(request, connection, config, sync)
    return {"success": True, "run_id": run_id}


@router.post("/sync-configs/{sync_config_id}/records/{record_id}/discard", response_model=StoredRecordDiscarded,
             operation_id="discard_stored_record_change")
async def discard_stored_record_change(hub: HubDep, connection: ConnectionDep, sync_config_id: str, record_id: str,
                                       mapped: bool = Query(default=False)):
    """Drop the change waiting to be pushed (a delete or update the provider
    refused, say): the record is the provider's version again (`record`), or
    gone when it was never created there (`record` null). 422
    `no_pending_change`; 409 `record_being_created` while a create's outcome is
    unknown, `record_being_pushed` while the change is on its way (a run of the
    connection is under way in a live process)."""
    config = await hub.db(_config, hub, connection, sync_config_id)
    row = await in_thread(stored.discard_change, hub, connection, config, record_id)
    mapper = stored.mapper_for(hub, connection, config) if mapped else None
    return {"success": True, "record": stored.record_out(row, mapper) if row is not None else None}


@router.get("/sync-configs/{sync_config_id}/conflicts", response_model=SyncConflictsResponse,
            operation_id="list_sync_conflicts")
async def list_conflicts(hub: HubDep, connection: ConnectionDep, sync_config_id: str,
                         status: Literal["open", "resolved"] | None = Query(default=None),
                         cursor: str | None = Query(default=None, max_length=500,
                                                    description="`next_cursor` of the previous page"),
                         limit: int = Query(default=100, ge=1, le=stored.MAX_LIMIT),
                         mapped: bool = Query(default=False, description=(
                             "Both sides as whole records in the tenant's fields (the hub's: the provider's "
                             "version with the hub's change made to it); raw: the change and the provider's "
                             "version in provider fields."))):
    """Records changed on both sides since the last sync, newest first. Open
    ones wait for a resolution (policy `review`); resolved ones keep the side
    that lost."""
    config = await hub.db(_config, hub, connection, sync_config_id)
    conflicts, next_cursor = await hub.db(stored.list_conflicts, hub, connection, config, status, cursor=cursor,
                                          limit=limit)
    mapper = stored.mapper_for(hub, connection, config) if mapped else None
    return {"success": True, "conflicts": await hub.db(stored.conflicts_out, hub, conflicts, mapper),
            "next_cursor": next_cursor, "has_more": next_cursor is not None}


@router.post("/sync-configs/{sync_config_id}/conflicts/{conflict_id}/resolve", response_model=SyncConflictResponse,
             operation_id="resolve_sync_conflict")
async def resolve_conflict(request: Request, hub: HubDep, connection: ConnectionDep, sync_config_id: str,
                           conflict_id: str, body: ConflictResolve):
    config = await hub.db(_config, hub, connection, sync_config_id)
    conflict = await in_thread(stored.resolve_conflict, hub, connection, config, conflict_id, body.resolution,
                               body.data, body.mapped)
    run_id = None
    if body.resolution != "provider" and config.direction != "pull":
        run_id = await _queue_push(request, connection, config, body.sync)
    return {"success": True, "conflict": conflict.model_dump(), "run_id": run_id}


# ---------------------------------------------------------------- runs


@router.post("/sync", response_model=SyncRunResponse, status_code=202, operation_id="start_sync")
async def start_sync(request: Request, hub: HubDep, connection: ConnectionDep,
                     body: SyncRequest | None = None):
    """Start a sync run and return it at once (queued); follow it at
    `GET /sync/runs/{run_id}` or in `GET /sync/logs`. While a run that does
    at least as much (same entity, same direction or both, a full refresh if
    one is asked for) is still queued, that run is the answer: clicks on
    "sync now" queue one run, not one each."""
    body = body or SyncRequest()
    run = await _service(request).request(connection, entity=body.entity, full_refresh=body.full_refresh,
                                          direction=body.direction, coalesce=True)
    return {"success": True, "run": stored.run_out(run)}


@router.get("/sync/logs", response_model=SyncLogsResponse, operation_id="list_sync_logs")
async def sync_logs(hub: HubDep, connection: ConnectionDep,
                    cursor: str | None = Query(default=None, max_length=500),
                    limit: int = Query(default=50, ge=1, le=200),
                    status: Literal["queued", "running", "succeeded", "failed"] | None = Query(default=None),
                    entity: str | None = Query(default=None, max_length=64)):
    """The connection's sync runs, newest first."""
    return await hub.db(_sync_logs, hub, connection, cursor, limit, status, entity)


def _sync_logs(hub: Hub, connection: Connection, cursor: str | None, limit: int, status: str | None,
               entity: str | None) -> dict[str, Any]:
    with hub.session() as session:
        query = select(SyncRun).where(SyncRun.connection_id == connection.id)
        if status:
            query = query.where(SyncRun.status == status)
        if entity:
            query = query.where(SyncRun.entity == entity)
        rows, next_cursor = stored.page_newest_first(session, query, SyncRun.queued_at, SyncRun.id, cursor, limit,
                                                     time_key="q", of=f"runs:{connection.id}")
    return {"success": True, "runs": [stored.run_out(r) for r in rows], "next_cursor": next_cursor,
            "has_more": next_cursor is not None}


@router.get("/sync/runs/{run_id}", response_model=SyncRunResponse, operation_id="get_sync_run")
async def get_sync_run(hub: HubDep, connection: ConnectionDep, run_id: str):
    def read() -> SyncRun | None:
        with hub.session() as session:
            return session.get(SyncRun, run_id)

    run = await hub.db(read)
    if run is None or run.connection_id != connection.id:
        raise NotFound("no such sync run", code="sync_run_not_found")
    return {"success": True, "run": stored.run_out(run)}

