"""Every error becomes ``{"success": false, "error": ..., "code": ...}``."""

from __future__ import annotations

import logging
import math
import re
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.services.orgs import Unauthorized
from hub.types import HubError, RateLimited

log = logging.getLogger("hub.api")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_UNPARSABLE_BODY = "There was an error parsing the body"


def error_body(message: str, code: str, details: object = None, fields: tuple[str, ...] = ()) -> dict:
    body: dict = {"success": False, "error": message, "code": code}
    if details is not None:
        body["details"] = details
    if fields:
        body["fields"] = list(fields)
    return body


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, str, list, list[str]]:
    """``(status, code, message, details, fields)``: ``fields`` are the
    request's fields at fault as dotted paths into the body (``data.email``),
    or a query parameter's name (whose ``details`` say ``query.<name>``)."""
    errors = exc.errors()
    invalid = [e for e in errors if e.get("type") == "json_invalid"]
    if invalid:
        why = (invalid[0].get("ctx") or {}).get("error")
        return 400, "invalid_json", "the request body is not valid JSON" + (f": {why}" if why else ""), [], []
    parts, details, fields = [], [], []
    for e in errors[:10]:
        loc = tuple(e.get("loc", ()))
        where = ".".join(str(p) for p in loc if p != "body") or "body"
        parts.append(f"{where}: {e.get('msg')}")
        details.append({"field": where, "message": e.get("msg"), "type": e.get("type")})
        if loc[:1] == ("body",) and len(loc) > 1:
            field = ".".join(str(p) for p in loc[1:])
        elif loc[:1] in (("query",), ("path",)) and len(loc) > 1:
            field = str(loc[1])
        else:
            continue
        if field not in fields:
            fields.append(field)
    return 422, "validation_error", "invalid request: " + "; ".join(parts), details, fields


#: SQLite's OperationalError texts of a database unavailable for now; its others ("no such table",
#: a syntax error) are bugs, as PostgreSQL's ProgrammingError is.
_SQLITE_UNAVAILABLE = ("database is locked", "database table is locked", "unable to open database",
                       "disk i/o error", "database or disk is full")


def _unavailable(exc: Exception) -> bool:
    """Whether a database error is the database being unavailable for now
    (rather than a bug of the hub's statement)."""
    if isinstance(exc, (PoolTimeout, InterfaceError)):
        return True
    cause = getattr(exc, "orig", None)
    if isinstance(cause, sqlite3.Error):
        return any(text in str(cause).lower() for text in _SQLITE_UNAVAILABLE)
    return True  # (PostgreSQL's drivers raise OperationalError for the connection and the server only)


#: GET routes that act rather than read (the OAuth flow's): HEAD is not answered as GET there.
ACTING_GETS = re.compile(r"^/api/v1/integrations/oauth/[^/]+/(authorize|callback)/?$")


def _allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document lists for the request's path (and
    HEAD beside GET: :class:`hub.api.main.HeadAsGet` answers it)."""
    paths = getattr(request.app.state, "allowed_methods", None)
    if paths is None:
        paths = request.app.state.allowed_methods = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"),
             {method.upper() for method in operations})
            for template, operations in request.app.openapi().get("paths", {}).items()]
    allowed = {method for pattern, methods in paths if pattern.match(request.url.path) for method in methods}
    head = "GET" in allowed and not ACTING_GETS.match(request.url.path)
    return sorted(allowed | {"HEAD"} if head else allowed)


def install(app: FastAPI) -> None:
    @app.exception_handler(HubError)
    async def hub_error(_request: Request, exc: HubError) -> JSONResponse:
        headers = {}
        # (A plugin's own error class may set anything there: only a finite number is a wait.)
        wait = exc.retry_after if isinstance(exc.retry_after, (int, float)) and not isinstance(
            exc.retry_after, bool) and math.isfinite(exc.retry_after) else None
        if isinstance(exc, RateLimited) and wait is None:
            wait = 1.0  # always there for a rate limit: one second when the provider said nothing
        if wait is not None:
            headers["Retry-After"] = str(max(1, math.ceil(min(max(wait, 0.0), 86400.0))))  # whole seconds, rounded up
        if isinstance(exc, Unauthorized):  # (RFC 9110: a 401 names the scheme to authenticate with)
            headers["WWW-Authenticate"] = "Bearer" if exc.code == "missing_credentials" else (
                'Bearer error="invalid_token"')
        details = exc.details if isinstance(exc.details, (dict, list)) else None
        return JSONResponse(error_body(exc.message, exc.code, details, exc.fields), status_code=exc.status,
                            headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        maintype, _, subtype = content_type.partition("/")
        # What FastAPI reads as JSON: application/json and application/*+json, no other.
        read_as_json = maintype == "application" and (subtype == "json" or subtype.endswith("+json"))
        if not read_as_json and any(tuple(e.get("loc", ())) == ("body",) and e.get("type") != "missing"
                                              for e in exc.errors()):
            # A body not read as JSON: a form (curl -d without -H 'Content-Type: application/json'),
            # or no content type at all.
            return JSONResponse(error_body(f"the request body must be JSON sent as Content-Type: application/json, "
                                           f"not {content_type or 'without a content type'}",
                                           "unsupported_media_type"), status_code=415)
        status, code, message, details, fields = _describe_validation(exc)
        return JSONResponse(error_body(message, code, details or None, tuple(fields)), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 400 and message == _UNPARSABLE_BODY:
            # FastAPI's answer to a body json cannot decode (nested too deeply, for one).
            code, message = "invalid_json", ("the request body could not be read as JSON (not UTF-8, nested too "
                                             "deeply, or a number of more than 4,300 digits)")
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only (GET of /connections,
            # though POST is there too): the document knows them all.
            allowed = _allowed_methods(request)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                message = f"{request.method} is not allowed here (allowed: {headers['Allow']})"
        return JSONResponse(error_body(message, code), status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(DataError)
    async def unstorable(_request: Request, exc: DataError) -> JSONResponse:
        # A value the database refuses to compare or store (PostgreSQL: a NUL character).
        log.info("request refused by the database: %s", type(exc.orig).__name__)
        return JSONResponse(error_body("the request holds a value that cannot be stored or looked up "
                                       "(too long for its field, or a NUL character)", "invalid_value"),
                            status_code=422)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    @app.exception_handler(PoolTimeout)
    async def database_unavailable(request: Request, exc: Exception) -> JSONResponse:
        if not _unavailable(exc):
            return await unexpected(request, exc)
        # The database is down, unreachable, busy (no pooled connection free) or (SQLite) locked past
        # the busy timeout: the request is fine, and may be sent again. (/healthz answers so too: that
        # is what it is asked.) The driver's message only: the statement and its values stay out of the log.
        cause = getattr(exc, "orig", None) or exc
        log.error("the database could not serve a request: %s: %s", type(cause).__name__, str(cause)[:500])
        return JSONResponse(error_body("the hub's database is unavailable for now; try again shortly",
                                       "database_unavailable"), status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(error_body("internal error; the hub logged the details", "internal_error"),
                            status_code=500)
