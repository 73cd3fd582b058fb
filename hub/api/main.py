"""The FastAPI application: gathers the routers, installs error handling and
the body-size limit, and owns the :class:`~hub.runtime.Hub` for its lifetime."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub import __version__
from hub.api import errors
from hub.api.routes import auth_flows, connections, events, providers, records, sync, system, webhooks
from hub.api.schemas import ErrorResponse
from hub.config import Settings, SettingsError, get_settings
from hub.plugins import PluginRegistry
from hub.runtime import Hub
from hub.services.secrets import unreadable_connections, unreadable_endpoints
from hub.sync.scheduler import STOP_SECONDS, start_background

log = logging.getLogger("hub")

PREFIX = "/api/v1/integrations"

ERROR_RESPONSES = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Bad request (malformed JSON, wrong flow for this provider)",
        401: "Missing or invalid API key, or a webhook that failed verification",
        403: "The provider refuses this to the connection's credentials (provider_permission_denied), or an "
             "OAuth flow is confirmed by another user than the one who started it (binding_mismatch)",
        404: "Unknown provider, entity, connection or record",
        405: "The entity is read-only for this operation",
        409: "The connection already exists, or its stored credentials cannot be decrypted "
             "(credentials_unreadable: the hub's secret key changed)",
        413: "Body too large",
        415: "The body is not sent as JSON (Content-Type: application/json)",
        422: "Invalid input",
        424: "The provider refused the connection's credentials",
        429: "The provider's rate limit is exhausted",
        500: "Internal error",
        502: "The provider answered with an error",
        503: "The provider is unavailable (provider_unavailable), or the hub's database is, for now "
             "(database_unavailable)",
    }.items()
}


class BodySizeLimit:
    """Refuse bodies larger than ``limit`` bytes with 413, before reading them all."""

    def __init__(self, app, limit: int):  # noqa: ANN001
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._reject(send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send)

    async def _reject(self, send):  # noqa: ANN001
        from fastapi.responses import JSONResponse

        response = JSONResponse(errors.error_body(f"request body larger than {self.limit} bytes",
                                                  "payload_too_large"), status_code=413)
        await response({"type": "http"}, None, send)


class HeadAsGet:
    """Answer ``HEAD`` as ``GET`` without the body (RFC 9110 9.3.2: a server
    that answers GET answers HEAD), with GET's status and headers, its
    ``Content-Length`` among them. FastAPI's routes take only the methods they
    declare: a HEAD, a link checker's or a monitor's, was a 405.

    Not the OAuth routes, whose GETs act (an authorization begun, a
    callback's single-use state spent): a link scanner's HEAD of a callback
    URL would connect the account and leave the user's own GET refused."""

    def __init__(self, app):  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] != "HEAD" or errors.ACTING_GETS.match(scope["path"]):
            return await self.app(scope, receive, send)

        async def without_body(message):  # noqa: ANN001
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


class _TooLarge(StarletteHTTPException):
    """A body past the limit. An HTTP exception, so that FastAPI, reading a
    JSON body, passes it on as it is (another error there becomes a 400)."""

    def __init__(self, limit: int = 0):
        super().__init__(413, f"request body larger than {limit} bytes")


def create_app(settings: Settings | None = None, registry: PluginRegistry | None = None,
               hub: Hub | None = None) -> FastAPI:
    """Build the API. Tests pass their own settings, registry or hub."""
    settings = settings or get_settings()
    hub = hub or Hub(settings, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        hub.migrate()
        app.state.hub = hub
        for weak in hub.settings.weak_secrets():
            log.warning(weak)
        for count, message in (
                (unreadable_connections, "%d connection%s credentials this hub's secret key cannot decrypt: "
                 "HUB_SECRET_KEY (or secret.key in the data directory) is not the key that encrypted them. Restore "
                 "that key, or set it as HUB_PREVIOUS_SECRET_KEY; until then those connections answer "
                 "credentials_unreadable"),
                (unreadable_endpoints, "%d event endpoint%s a signing secret this hub's secret key cannot decrypt: "
                 "their events fail until the key that encrypted them is restored (or set as "
                 "HUB_PREVIOUS_SECRET_KEY), or their secrets are rotated (POST /event-endpoints/{id}/rotate-secret)")):
            unreadable = await asyncio.to_thread(count, hub)
            if unreadable:
                log.error(message, unreadable, " has" if unreadable == 1 else "s have")
        background = await start_background(app)  # sync executor, scheduler, webhook processor, event deliverer
        try:
            yield
        finally:
            await background.stop()
            # (Bounded, as each part of the background is: a stuck close must not keep the process up.)
            closing = asyncio.ensure_future(hub.close())
            if not (await asyncio.wait({closing}, timeout=STOP_SECONDS))[0]:
                log.error("closing the provider clients took more than %g s: stopping without them", STOP_SECONDS)
                closing.cancel()
            elif closing.exception() is not None:
                raise closing.exception()  # type: ignore[misc]

    app = FastAPI(
        title="hub",
        version=__version__,
        description="A plugin-based integration hub: providers are installed plugins.",
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.hub = hub
    if settings.jwt_jwks_url:
        import jwt

        # One client for the app's life: it caches the identity provider's key set (five minutes),
        # not each key for ever (cache_keys): a key withdrawn from the set must stop authenticating.
        try:
            app.state.jwks_client = jwt.PyJWKClient(settings.jwt_jwks_url)
        except jwt.PyJWKClientError as exc:
            raise SettingsError(f"HUB_JWT_JWKS_URL={settings.jwt_jwks_url!r}: {exc}") from None
    errors.install(app)
    api = APIRouter(prefix=PREFIX)
    for module in (providers, connections, records, auth_flows, webhooks, sync, events, system):
        api.include_router(module.router)
    app.include_router(api)
    events.document_events(app)  # (the events the app's endpoints receive, in the document)
    # Where load balancers probe by default, beside the API's own.
    app.add_api_route("/healthz", system.healthz, methods=["GET"], response_model=system.HealthResponse,
                      include_in_schema=False)
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(HeadAsGet)
    origins = Settings.origins_of(settings.cors_origins)
    if origins:
        # Outermost but for the 500 handler: a preflight is answered before authentication, and
        # 4xx answers carry the headers too (the integrations page can read their JSON and code). No cookies: credentials travel in
        # the Authorization header.
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"],
                           expose_headers=["Retry-After", "Idempotent-Replayed"],
                           max_age=600)
    return app


def app_factory() -> FastAPI:
    """Entry point for ``uvicorn --factory hub.api.main:app_factory``."""
    return create_app()
