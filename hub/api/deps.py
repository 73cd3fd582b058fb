"""Dependencies shared by the routes.

They are ``async`` so FastAPI runs them on the event loop: each is a dict
lookup or one indexed query, cheaper than a hop to the thread pool.
"""

from __future__ import annotations

import asyncio

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from hub.models import Organization
from hub.plugins import Provider
from hub.runtime import Hub
from hub.services.orgs import KEY_PREFIX, authenticate


async def get_hub(request: Request) -> Hub:
    return request.app.state.hub


HubDep = Annotated[Hub, Depends(get_hub)]


#: ``Authorization: Bearer <API key or JWT>``, declared as the OpenAPI
#: document's security scheme (an "Authorize" button in /docs, and generated
#: clients that take the key once). Checked by :func:`authenticate`, which
#: answers its own errors: not the scheme's own 403.
bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="An organization's API key (`hub_...`, from `hub org create` or `hub org new-key`), "
                                "or a JWT where the hub is configured for them.")


async def current_organization(
    hub: HubDep,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> Organization:
    jwks_client = getattr(request.app.state, "jwks_client", None)
    authorization = f"Bearer {credentials.credentials}" if credentials is not None else None

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

