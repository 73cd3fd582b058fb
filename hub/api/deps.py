"""Dependencies shared by the routes.

They are ``async`` so FastAPI runs them on the event loop: each is a dict
lookup or one indexed query, cheaper than a hop to the thread pool.
"""

from __future__ import annotations

import asyncio

from typing import Annotated

from fastapi import Depends, Header, Request

from hub.models import Organization
from hub.plugins import Provider
from hub.runtime import Hub
from hub.services.orgs import KEY_PREFIX, authenticate


async def get_hub(request: Request) -> Hub:
    return request.app.state.hub


HubDep = Annotated[Hub, Depends(get_hub)]


async def current_organization(
    hub: HubDep,
    request: Request,
    authorization: Annotated[str | None, Header(description="`Bearer <API key or JWT>`")] = None,
) -> Organization:
    jwks_client = getattr(request.app.state, "jwks_client", None)

    def lookup() -> Organization:
        with hub.session() as session:
            return authenticate(session, hub.settings, authorization, jwks_client)

    # A JWT may adopt a new organization (a write, which waits for SQLite's write lock) or fetch a
    # new signing key (network I/O): off the event loop whatever the database. An API key is a read.
    token = (authorization or "")[7:].strip()
    return await (hub.db(lookup) if token.startswith(KEY_PREFIX) else asyncio.to_thread(lookup))


OrgDep = Annotated[Organization, Depends(current_organization)]


async def get_provider(hub: HubDep, provider: str) -> Provider:
    return hub.provider(provider)


ProviderDep = Annotated[Provider, Depends(get_provider)]

