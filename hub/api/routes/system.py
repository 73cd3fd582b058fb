from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, OrgDep
from hub.api.schemas import HealthResponse, PluginsResponse
from hub.models import utcnow

router = APIRouter(tags=["system"], route_class=HubRoute)


@router.get("/plugins", response_model=PluginsResponse, operation_id="list_plugins")
async def list_plugins(hub: HubDep, _org: OrgDep):
    """Installed plugins, loaded or not, with versions and load errors (which
    name module files: for the hub's users, not for anyone who can reach it)."""
    return {"success": True, "plugins": [r.public() for r in hub.registry.records]}


@router.get("/healthz", response_model=HealthResponse, operation_id="healthz")
async def healthz(hub: HubDep):
    with hub.engine.connect() as connection:
        connection.execute(sa.text("SELECT 1"))
    return {"success": True, "status": "ok", "database": hub.engine.dialect.name,
            "providers": len(hub.registry.providers),
            # How many installed plugins did not load (which and why: GET /plugins, with a key).
            "plugin_errors": sum(1 for r in hub.registry.records if r.error), "time": utcnow()}
