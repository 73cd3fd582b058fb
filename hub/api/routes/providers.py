from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response

from hub.api.bodies import HubRoute
from hub.api.deps import HubDep, ProviderDep
from hub.api.schemas import EntitiesResponse, EntityResponse, ProviderResponse, ProvidersResponse

router = APIRouter(prefix="/providers", tags=["providers"], route_class=HubRoute)


@router.get("", response_model=ProvidersResponse, operation_id="list_providers")
async def list_providers(request: Request, hub: HubDep,
                         category: str | None = Query(default=None, max_length=64)):
    """The installed providers, optionally of one category."""
    # Plugins are fixed for the process's life: serialise each listing once.
    cache = request.app.state.__dict__.setdefault("providers_json", {})
    body = cache.get(category)
    if body is None:
        providers = hub.registry.list(category)
        body = ProvidersResponse(providers=[p.public() for p in providers]).model_dump_json().encode()
        if providers or category is None:  # not every unknown category a client names
            cache[category] = body
    return Response(body, media_type="application/json")


@router.get("/{provider}", response_model=ProviderResponse, operation_id="get_provider")
async def get_provider(provider: ProviderDep):
    return {"success": True, "provider": provider.public()}


@router.get("/{provider}/entities", response_model=EntitiesResponse, operation_id="list_entities")
async def list_entities(provider: ProviderDep):
    return {"success": True, "entities": [s.public() for s in provider.schemas.values()]}


@router.get("/{provider}/entities/{entity}", response_model=EntityResponse, operation_id="get_entity")
async def get_entity(provider: ProviderDep, entity: str):
    return {"success": True, "entity": provider.schema(entity).public()}
