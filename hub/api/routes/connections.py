from __future__ import annotations

from fastapi import APIRouter, Query

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, OrgDep
from hub.api.schemas import (
    ConnectionCreate,
    ConnectionDeleted,
    ConnectionResponse,
    ConnectionsResponse,
    ConnectionTestResponse,
    ConnectionUpdate,
)
from hub.services import connections as service

router = APIRouter(prefix="/connections", tags=["connections"], route_class=HubRoute)


@router.get("", response_model=ConnectionsResponse, operation_id="list_connections")
async def list_connections(hub: HubDep, org: OrgDep, provider: str | None = Query(default=None, max_length=64)):
    rows = await hub.db(service.list_connections, hub, org.id, provider)
    return {"success": True, "connections": await hub.db(service.public, hub, rows)}


@router.post("", response_model=ConnectionResponse, status_code=201, operation_id="create_connection")
async def create_connection(hub: HubDep, org: OrgDep, body: ConnectionCreate):
    """Connect a provider that authenticates with API keys (OAuth and Link
    providers connect through their flows)."""
    provider = hub.provider(body.provider)
    connection = await service.create_api_key_connection(
        hub, org.id, provider, name=body.name, description=body.description,
        credentials=body.credentials, config=body.config, sync_enabled=body.sync_enabled,
        sync_frequency_minutes=body.sync_frequency_minutes,
    )
    return {"success": True, "connection": await hub.db(service.public_one, hub, connection)}


@router.get("/{connection_id}", response_model=ConnectionResponse, operation_id="get_connection")
async def get_connection(hub: HubDep, org: OrgDep, connection_id: str):
    connection = await hub.db(service.find_connection, hub, org.id, connection_id)
    return {"success": True, "connection": await hub.db(service.public_one, hub, connection)}


@router.put("/{connection_id}", response_model=ConnectionResponse, operation_id="update_connection")
async def update_connection(hub: HubDep, org: OrgDep, connection_id: str, body: ConnectionUpdate):
    connection = await service.update_connection(hub, org.id, connection_id, body.model_dump(exclude_unset=True))
    return {"success": True, "connection": await hub.db(service.public_one, hub, connection)}


@router.delete("/{connection_id}", response_model=ConnectionDeleted, operation_id="delete_connection")
async def delete_connection(hub: HubDep, org: OrgDep, connection_id: str):
    """Delete the connection and revoke its grant at the provider."""
    revocation = await service.delete_connection(hub, org.id, connection_id)
    return {"success": True, "revocation": revocation}


@router.post("/{connection_id}/test", response_model=ConnectionTestResponse, operation_id="test_connection")
async def test_connection(hub: HubDep, org: OrgDep, connection_id: str):
    connection, details = await service.test_connection(hub, org.id, connection_id)
    return {"success": True, "connection": await hub.db(service.public_one, hub, connection), "details": details}
